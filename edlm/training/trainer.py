"""``train(cfg, kind)``: tokenizer → data → model → Lightning ``Trainer`` → checkpoints and metrics.

A run directory holds::

    config.yaml            the RunConfig of the run
    tokenizer/             the tokenizer the model was trained with
    checkpoints/last.ckpt  Lightning checkpoint (weights, optimizer, EMA, loop and data position, RNG) for
                           --resume, which continues the run exactly; written atomically
    model/                 EMA weights + tokenizer + config (save_pretrained), refreshed at each validation
    csv/, tb/              CSV and TensorBoard logs (a new version folder per start)
    metrics.json           final numbers: val NLL/PPL, the corpus's unigram PPL, tokens, throughput, time
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from edlm.config import RunConfig, save_config
from edlm.data import (
    PRESETS,
    TextDataModule,
    char_tokenizer_from_text,
    load_corpus,
    load_tokenizer,
    preset_tokenizer,
    save_tokenizer,
)
from edlm.diffusion.schedules import get_schedule
from edlm.errors import CheckpointError, ConfigError, DataError
from edlm.models import ARTransformer, DiT, check_vocab, compile_networks, from_pretrained
from edlm.models.hf_mlm import build_hf_masked_lm, check_source
from edlm.training.ar_module import ARModule
from edlm.training.base import LanguageModelModule
from edlm.training.callbacks import SavePretrained, Throughput
from edlm.training.mdlm_module import MDLMModule
from edlm.training.run import (
    build_datamodule,
    build_trainer,
    fit_and_export,
    own_run_dir,
    prepare_run_dir,
    quiet_lightning,
    say,
    tokens_per_step,
    write_json,
)
from edlm.training.unigram import unigram_perplexity

__all__ = ["TrainResult", "MODULE_BUILDERS", "train", "build_tokenizer", "corpus_unigram_perplexity"]


@dataclass
class TrainResult:
    """What ``train`` reports (also written to ``<run_dir>/metrics.json``)."""

    kind: str
    run_dir: str
    model_dir: str
    start_step: int  # global step the run started from (> 0 when resumed)
    global_step: int  # optimizer steps done in total
    model_step: int  # the step whose EMA weights model/ holds: global_step, or the best validation's (train.keep)
    val_nll: float | None  # nats per token: the NELBO bound for MDLM, the exact NLL for AR
    val_ppl: float | None  # exp(val_nll): "PPL ≤" for MDLM, PPL for AR
    val_ppl_name: str  # "ppl_bound" (MDLM: an upper bound) or "ppl" (AR: exact)
    unigram_ppl: float | None  # the same validation tokens under train-split unigram frequencies
    pct_below_unigram: float | None  # 100 · (1 − val_ppl / unigram_ppl)
    tokens_seen: int  # training tokens over the whole run (global batch × steps)
    tokens_per_s: float  # training tokens per second of training batches in this start
    wall_time_s: float  # wall-clock time of this call
    num_params: int
    device: str  # what ran it, e.g. "cuda: NVIDIA H100 80GB HBM3" or "cpu: 2 threads"
    rank: int  # global rank of the process that returns this (only rank 0 writes files)

    def summary(self) -> str:
        """One line for the console."""
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
        name = "PPL <=" if self.val_ppl_name == "ppl_bound" else "PPL"
        pct = self.pct_below_unigram
        below = "" if pct is None else f", {pct:.1f}% below" if pct >= 0 else f", {-pct:.1f}% above"
        best = "" if self.model_step == self.global_step else f" (step {self.model_step}, the best validation)"
        return (f"edlm train {self.kind}: step {self.global_step}, val {name} {fmt(self.val_ppl)} "
                f"(unigram {fmt(self.unigram_ppl)}{below}), {self.tokens_per_s:,.0f} tokens/s, "
                f"{self.wall_time_s:.0f} s; model in {self.model_dir}{best}")


# ----------------------------------------------------------------------------- builders
def _build_mdlm(cfg: RunConfig, tokenizer) -> MDLMModule:
    m = cfg.model
    if m.init_from:
        backbone = from_pretrained(m.init_from, expected_type="hf_mlm" if m.backbone == "hf" else "dit")
        check_vocab(backbone, tokenizer)
    elif m.backbone == "hf":  # time-unconditioned: the Denoiser feeds it no time (SPEC 1.3)
        backbone = build_hf_masked_lm(m.hf_name, tokenizer, cfg.data.length, pretrained=m.hf_pretrained)
    else:
        backbone = DiT(len(tokenizer), cfg.data.length, m.hidden_size, m.n_blocks, m.n_heads, m.cond_dim,
                       m.dropout, m.time_conditioning)
    return MDLMModule(backbone, get_schedule(cfg.diffusion.schedule), tokenizer.mask_token_id, cfg.optim,
                      cfg.ema.decay, cfg.ema.warmup, val_seed=cfg.train.seed, t_min=cfg.diffusion.t_min,
                      antithetic=cfg.diffusion.antithetic)


def _build_ar(cfg: RunConfig, tokenizer) -> ARModule:
    m = cfg.model
    if m.init_from:
        model = from_pretrained(m.init_from, expected_type="ar")
        check_vocab(model, tokenizer)
    else:
        model = ARTransformer(len(tokenizer), cfg.data.length, m.hidden_size, m.n_blocks, m.n_heads, m.dropout,
                              mask_id=tokenizer.mask_token_id)
    return ARModule(model, cfg.optim, cfg.ema.decay, cfg.ema.warmup, val_seed=cfg.train.seed)


# kind -> builder(cfg, tokenizer) -> LanguageModelModule; extend together with edlm.constants.TRAIN_KINDS.
MODULE_BUILDERS: dict[str, Callable[[RunConfig, object], LanguageModelModule]] = {
    "mdlm": _build_mdlm,
    "ar": _build_ar,
}


def build_tokenizer(cfg: RunConfig):
    """``data.tokenizer`` if set (a saved dir, a tokenizer.json or a hub name); else the Hugging Face masked LM's
    own (``model.backbone=hf``); else the corpus preset's own kind trained on its train split; else (a custom
    corpus) a char tokenizer of its train split."""
    d = cfg.data
    if d.tokenizer:
        return load_tokenizer(d.tokenizer)
    if cfg.model.backbone == "hf":
        check_source(cfg.model.hf_name)  # a missing local folder, or pickled weights only: said before anything loads
        try:
            return load_tokenizer(cfg.model.hf_name)
        except DataError as exc:
            raise DataError(f"the tokenizer of model.hf_name={cfg.model.hf_name}: {exc} (or set data.tokenizer)"
                            ) from exc
    if d.corpus in PRESETS:
        return preset_tokenizer(d.corpus, vocab_size=d.tokenizer_vocab_size, cache_dir=_corpus_cache(cfg))
    return char_tokenizer_from_text(
        load_corpus(d.corpus, d.train_split, cache_dir=_corpus_cache(cfg), text_column=d.text_column)["text"])


def _corpus_cache(cfg: RunConfig) -> str | None:
    return None if cfg.data.cache_dir is None else os.path.join(cfg.data.cache_dir, "corpora")


def _token_array(dataset, column: str) -> np.ndarray:
    """A packed column as one flat numpy array, without going through Python lists."""
    return dataset.data.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False).copy()


def corpus_unigram_perplexity(datamodule: TextDataModule) -> float:
    """Unigram PPL of the validation tokens under the train tokens' frequencies ([MASK]/[PAD] excluded)."""
    datamodule.setup("fit")
    tok = datamodule.tokenizer
    arrays = {}
    for name, ds in (("train", datamodule.train_data), ("valid", datamodule.valid_data)):
        ids = torch.from_numpy(_token_array(ds, "input_ids"))
        mask = torch.from_numpy(_token_array(ds, "attention_mask")) if "attention_mask" in ds.column_names else None
        arrays[name] = (ids, mask)
    exclude = tuple(i for i in {tok.mask_token_id, tok.pad_token_id} if i is not None and i != tok.eos_token_id)
    return unigram_perplexity(arrays["train"][0], arrays["valid"][0], len(tok), arrays["train"][1],
                              arrays["valid"][1], exclude_ids=exclude)


# ----------------------------------------------------------------------------- resuming
def _resume_tokenizer(cfg: RunConfig, run_dir: Path, resuming: bool):
    """The run dir's tokenizer when resuming (or on a DDP worker that rank 0 started), else a new one."""
    saved = run_dir / "tokenizer"
    if not (resuming or rank_zero_only.rank != 0) or not saved.is_dir():
        return build_tokenizer(cfg)
    tokenizer = load_tokenizer(saved)
    if resuming and cfg.data.tokenizer:
        asked = load_tokenizer(cfg.data.tokenizer)
        if len(asked) != len(tokenizer):
            raise CheckpointError(f"the checkpoint in {run_dir} was trained with a tokenizer of {len(tokenizer)} "
                                  f"ids, but data.tokenizer={cfg.data.tokenizer} has {len(asked)}; drop "
                                  "data.tokenizer to resume with the run's own tokenizer.")
    return tokenizer


# ----------------------------------------------------------------------------- training
def train(cfg: RunConfig, kind: str) -> TrainResult:
    """Train an MDLM denoiser (``kind="mdlm"``) or an AR model (``"ar"``) as ``cfg`` says.

    Writes the run directory described in this module's docstring and returns the final numbers.
    Every rank of a multi-process (DDP) run calls this; only global rank 0 writes files.

    Raises:
        ConfigError: unknown kind, a run dir that already holds a run (without resume), nothing to resume.
        DataError: a missing or unreadable corpus.
        CheckpointError: ``model.init_from`` or the resumed run does not match the tokenizer or kind.
        OutputError: the run dir is a file, cannot be written, or another live run holds it
            (``edlm.locks.DirectoryInUseError``).
    """
    if kind not in MODULE_BUILDERS:
        raise ConfigError(f"unknown training kind {kind!r}; choose one of {list(MODULE_BUILDERS)}.")
    if kind != "mdlm" and cfg.model.backbone != "dit":
        raise ConfigError(f"model.backbone={cfg.model.backbone} applies to `edlm train mdlm` only (a masked LM is "
                          f"a denoiser); `edlm train {kind}` builds its own network.")
    threads = torch.get_num_threads()
    try:
        if cfg.train.cpu_threads:
            torch.set_num_threads(cfg.train.cpu_threads)
        # edlm's own progress and summary lines, not Lightning's banners and tips; the run dir owned (edlm.locks)
        with quiet_lightning(), own_run_dir(cfg, kind):
            return _train(cfg, kind)
    finally:
        torch.set_num_threads(threads)  # leave the process as it was (tests, notebooks)


def _train(cfg: RunConfig, kind: str) -> TrainResult:
    started = time.perf_counter()
    run_dir, resume_from = prepare_run_dir(cfg, kind)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    throughput = Throughput()
    saver = SavePretrained(run_dir / "model", extra={"kind": kind, "run_config": asdict(cfg)},
                           monitor="val/nll" if cfg.train.keep == "best" else None)
    trainer = build_trainer(cfg, run_dir, [saver, throughput], label=f"edlm train {kind}")  # bad settings fail fast

    tokenizer = _resume_tokenizer(cfg, run_dir, resume_from is not None)
    saver.tokenizer = tokenizer
    datamodule = build_datamodule(cfg, tokenizer)
    module = MODULE_BUILDERS[kind](cfg, tokenizer)
    if cfg.train.compile:
        compile_networks(module.model, options={})  # inductor's defaults: multi-kernel is measured on forwards only
    unigram = None
    if rank_zero_only.rank == 0:  # from the launcher's environment: valid before `fit` sets ranks up
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        save_tokenizer(tokenizer, run_dir / "tokenizer")
        datamodule.prepare_data()
        unigram = corpus_unigram_perplexity(datamodule)
        say(f"edlm: unigram perplexity of the validation split: {unigram:.4f} ({math.log(unigram):.4f} nats/token)")
        for logger in trainer.loggers:
            logger.log_metrics({"data/unigram_ppl": unigram}, step=0)
    fit_and_export(cfg, trainer, module, datamodule, resume_from, saver)

    result = _result(cfg, kind, run_dir, trainer, module, throughput, unigram, started, saver)
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", asdict(result))
    return result


def _device_name(trainer: L.Trainer) -> str:
    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    return f"{device.type}: {name}" + (f" x {trainer.world_size} processes" if trainer.world_size > 1 else "")


def _result(cfg, kind, run_dir, trainer, module, throughput, unigram, started, saver) -> TrainResult:
    metrics = trainer.callback_metrics
    nll = float(metrics["val/nll"]) if "val/nll" in metrics else None
    if saver.best is not None:  # train.keep=best: the exported weights' validation, not the last one's
        nll = saver.best
    ppl = math.exp(nll) if nll is not None else None
    step_tokens = tokens_per_step(cfg, trainer.world_size)
    run_steps = trainer.global_step - (throughput.start_step or 0)
    return TrainResult(
        kind=kind,
        run_dir=str(run_dir),
        model_dir=str(run_dir / "model"),
        start_step=throughput.start_step or 0,
        global_step=trainer.global_step,
        model_step=trainer.global_step if saver.best_step is None else saver.best_step,
        val_nll=nll,
        val_ppl=ppl,
        val_ppl_name=module.ppl_name,
        unigram_ppl=unigram,
        pct_below_unigram=100.0 * (1.0 - ppl / unigram) if ppl is not None and unigram else None,
        tokens_seen=trainer.global_step * step_tokens,
        tokens_per_s=run_steps * step_tokens / max(throughput.train_seconds, 1e-9),
        wall_time_s=time.perf_counter() - started,
        num_params=sum(p.numel() for p in module.model.parameters()),
        device=_device_name(trainer),
        rank=trainer.global_rank,
    )
