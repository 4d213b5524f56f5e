"""``train_energy(cfg, denoiser_path)``: NCE training of an EDLM energy against a frozen denoiser (SPEC 2.4).

The run directory has the layout of ``edlm.training.trainer`` (``config.yaml``, ``tokenizer/``,
``checkpoints/last.ckpt`` for resume, ``model/`` with the EMA energy as ``save_pretrained`` writes it,
``csv/``, ``tb/``, ``metrics.json``), plus ``energy.yaml`` (the ``EnergyConfig``, with the denoiser path);
both trainers build it with ``edlm.training.run``.
The tokenizer is the denoiser's: an energy must share it (docs/design.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from edlm.atomic import atomic_write_text
from edlm.config import EnergyConfig, RunConfig, save_config
from edlm.data import load_tokenizer, save_tokenizer
from edlm.energy.nce_energy import NCEEnergy
from edlm.errors import CheckpointError, ConfigError
from edlm.models import DiT, check_vocab, compile_networks, load_denoiser, load_tokenizer_from
from edlm.models.checkpoints import resolve_checkpoint_dir
from edlm.training.callbacks import SavePretrained, Throughput
from edlm.training.nce_module import NCEModule
from edlm.training.run import (
    build_datamodule,
    build_trainer,
    fit_and_export,
    own_run_dir,
    prepare_run_dir,
    quiet_lightning,
    tokens_per_step,
    write_json,
)

__all__ = ["EnergyTrainResult", "train_energy", "build_energy"]

KIND = "energy"


@dataclass
class EnergyTrainResult:
    """What ``train_energy`` reports (also written to ``<run_dir>/metrics.json``)."""

    kind: str
    run_dir: str
    model_dir: str
    denoiser: str  # path of the frozen denoiser
    n_neg: int
    start_step: int  # global step the run started from (> 0 when resumed)
    global_step: int
    model_step: int  # the step whose EMA weights model/ holds: global_step, or the best validation's (train.keep)
    val_nce_loss: float | None  # NCE loss on the validation split (2 log 2 ≈ 1.386 for E ≡ 0)
    val_nce_acc: float | None  # balanced accuracy of "data iff E < 0" (chance 0.5)
    val_nce_acc_se: float | None  # its standard error over validation sequences
    val_energy_margin: float | None  # mean E(negative) − E(data)
    tokens_seen: int  # data tokens over the whole run (each also scored with n_neg negatives)
    tokens_per_s: float
    wall_time_s: float
    num_params: int  # trainable parameters of the energy
    rank: int

    @property
    def acc_z(self) -> float | None:
        """(accuracy − 0.5) / standard error: how many SEs above chance."""
        if self.val_nce_acc is None or not self.val_nce_acc_se:
            return None
        return (self.val_nce_acc - 0.5) / self.val_nce_acc_se

    def summary(self) -> str:
        """One line for the console."""
        fmt = lambda x, d=4: "n/a" if x is None else f"{x:.{d}f}"
        z = "" if self.acc_z is None else f", {self.acc_z:.1f} SE above chance"
        return (f"edlm train energy: step {self.global_step}, val NCE acc {fmt(self.val_nce_acc)} ± "
                f"{fmt(self.val_nce_acc_se)}{z}, loss {fmt(self.val_nce_loss)} (E≡0: {2 * math.log(2):.4f}), "
                f"margin {fmt(self.val_energy_margin, 3)}, {self.wall_time_s:.0f} s; energy in {self.model_dir}")


def _denoiser_tokenizer(cfg: RunConfig, directory: Path):
    """The tokenizer saved with the denoiser (``data.tokenizer`` may name it when the checkpoint lacks one)."""
    saved = load_tokenizer_from(directory)
    if saved is not None:
        return saved
    if cfg.data.tokenizer:
        return load_tokenizer(cfg.data.tokenizer)
    raise CheckpointError(f"the denoiser checkpoint {directory} holds no tokenizer; set data.tokenizer to the "
                          "tokenizer it was trained with.")


def build_energy(denoiser, energy_cfg: EnergyConfig) -> NCEEnergy:
    """``NCEEnergy.from_denoiser`` (SPEC 2.4), or the same architecture randomly initialised."""
    energy = NCEEnergy.from_denoiser(denoiser, dropout=energy_cfg.dropout,
                                     time_conditioning=energy_cfg.time_conditioning, n_blocks=energy_cfg.n_blocks)
    if not energy_cfg.init_from_denoiser:
        energy = NCEEnergy(**energy.get_config())  # same shape, fresh weights
    return energy


def train_energy(cfg: RunConfig, denoiser_path: str | None = None,
                 energy_cfg: EnergyConfig | None = None) -> EnergyTrainResult:
    """Train an NCE energy (SPEC 2.4) for the denoiser at ``denoiser_path``, with ``cfg``'s data and optimizer.

    Args:
        cfg: run settings; ``data.*``, ``optim.*``, ``ema.*``, ``train.*`` and ``diffusion.t_min/antithetic``
            are used. ``train.run_dir`` defaults to ``runs/<preset>-nce``.
        denoiser_path: a ``save_pretrained`` directory (or hub id) of the frozen denoiser, with its
            tokenizer; default ``energy_cfg.denoiser``.
        energy_cfg: NCE settings; default ``cfg.energy`` if the RunConfig has that field, else defaults.

    Raises:
        ConfigError: no denoiser given, data.length longer than the denoiser's, a run dir that already
            holds a run (without resume), nothing to resume.
        CheckpointError: the denoiser or its tokenizer cannot be loaded or do not match.
        OutputError: the run dir is a file, cannot be written, or another live run holds it
            (``edlm.locks.DirectoryInUseError``).
    """
    # edlm's own progress and summary lines, not Lightning's banners and tips; the run dir owned (edlm.locks)
    with quiet_lightning(), own_run_dir(cfg, KIND):
        return _train_energy(cfg, denoiser_path, energy_cfg)


def _train_energy(cfg: RunConfig, denoiser_path: str | None, energy_cfg: EnergyConfig | None) -> EnergyTrainResult:
    energy_cfg = energy_cfg or getattr(cfg, "energy", None) or EnergyConfig()
    denoiser_path = denoiser_path or energy_cfg.denoiser
    if not denoiser_path:
        raise ConfigError("`edlm train energy` needs --denoiser (the trained MDLM run or model directory, e.g. "
                          "runs/tiny-mdlm), or energy.denoiser=PATH.")
    denoiser_path = str(denoiser_path)
    energy_cfg = replace(energy_cfg, denoiser=denoiser_path)
    started = time.perf_counter()
    run_dir, resume_from = prepare_run_dir(cfg, KIND)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)

    directory = resolve_checkpoint_dir(denoiser_path, train_kind="mdlm")  # a run dir's model/; a missing path says so
    denoiser = load_denoiser(directory)
    if not isinstance(denoiser.backbone, DiT):  # SPEC 2.4: the energy is a copy of the denoiser's DiT
        raise ConfigError(f"{denoiser_path} holds a {type(denoiser.backbone).__name__} backbone, not a DiT; `edlm train "
                          "energy` builds the NCE energy from a DiT's weights. Pair it with an AR energy instead (`edlm "
                          "train ar data.tokenizer=RUN/tokenizer`, then --energy ar:PATH).")
    tokenizer = _denoiser_tokenizer(cfg, directory)
    check_vocab(denoiser, tokenizer)
    if cfg.data.length > denoiser.length:
        raise ConfigError(f"data.length={cfg.data.length} exceeds the denoiser's maximum length {denoiser.length}.")
    datamodule = build_datamodule(cfg, tokenizer)
    module = NCEModule(build_energy(denoiser, energy_cfg), denoiser, denoiser.schedule, denoiser.mask_id,
                       n_neg=energy_cfg.n_neg, optim=cfg.optim, ema_decay=cfg.ema.decay, ema_warmup=cfg.ema.warmup,
                       val_seed=cfg.train.seed, t_min=cfg.diffusion.t_min, antithetic=cfg.diffusion.antithetic)
    if cfg.train.compile:
        compile_networks(module.model, denoiser, options={})  # inductor's defaults: multi-kernel is measured on forwards only
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        atomic_write_text(run_dir / "energy.yaml", OmegaConf.to_yaml(OmegaConf.structured(energy_cfg)))
        save_tokenizer(tokenizer, run_dir / "tokenizer")
        datamodule.prepare_data()

    throughput = Throughput()
    record = {"kind": KIND, "energy_config": asdict(energy_cfg), "run_config": asdict(cfg)}
    saver = SavePretrained(run_dir / "model", tokenizer=tokenizer, extra=record,
                           monitor="val/nce_loss" if cfg.train.keep == "best" else None)
    trainer = build_trainer(cfg, run_dir, [saver, throughput], label="edlm train energy")
    fit_and_export(cfg, trainer, module, datamodule, resume_from, saver)

    result = _result(cfg, energy_cfg, run_dir, trainer, module, throughput, started, saver)
    if trainer.is_global_zero:
        write_json(run_dir / "metrics.json", asdict(result))
    return result


def _result(cfg, energy_cfg, run_dir: Path, trainer, module, throughput, started, saver) -> EnergyTrainResult:
    m = saver.best_metrics or trainer.callback_metrics  # train.keep=best: the kept weights' validation
    get = lambda key: float(m[key]) if key in m else None
    step_tokens = tokens_per_step(cfg, trainer.world_size)
    run_steps = trainer.global_step - (throughput.start_step or 0)
    return EnergyTrainResult(
        kind=KIND,
        run_dir=str(run_dir),
        model_dir=str(run_dir / "model"),
        denoiser=energy_cfg.denoiser,
        n_neg=energy_cfg.n_neg,
        start_step=throughput.start_step or 0,
        global_step=trainer.global_step,
        model_step=trainer.global_step if saver.best_step is None else saver.best_step,
        val_nce_loss=get("val/nce_loss"),
        val_nce_acc=get("val/nce_acc"),
        val_nce_acc_se=get("val/nce_acc_se"),
        val_energy_margin=get("val/energy_margin"),
        tokens_seen=trainer.global_step * step_tokens,
        tokens_per_s=run_steps * step_tokens / max(throughput.train_seconds, 1e-9),
        wall_time_s=time.perf_counter() - started,
        num_params=sum(p.numel() for p in module.model.parameters() if p.requires_grad),
        rank=trainer.global_rank,
    )
