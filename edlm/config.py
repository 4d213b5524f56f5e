"""Typed run configuration: one dataclass per component, packaged YAML presets, ``key=value`` overrides.

    cfg = load_config("tiny", ["model.hidden_size=64", "train.max_steps=100"])

The dataclass defaults are MDLM's OpenWebText settings (Sahoo et al. 2024, App. B / ``configs/`` of
kuleshov-group/mdlm); the presets in ``edlm/configs/*.yaml`` change only what they must. Parsing is done
by OmegaConf structured configs, so an unknown key, an unknown preset or a value of the wrong type is a
``ConfigError`` with one line that lists what is valid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from edlm.atomic import atomic_write_text
from edlm.constants import TRAIN_KINDS  # re-exported: the kinds live where the CLI can read them cheaply
from edlm.diffusion.schedules import SCHEDULES
from edlm.errors import ConfigError

__all__ = [
    "TRAIN_KINDS",
    "ModelConfig",
    "DiffusionConfig",
    "DataConfig",
    "OptimConfig",
    "EMAConfig",
    "TrainConfig",
    "EnergyConfig",
    "RunConfig",
    "available_presets",
    "load_config",
    "save_config",
    "config_keys",
]


BACKBONES = ("dit", "hf")  # MDLM's DiT; a Hugging Face masked LM (edlm.models.hf_mlm), `edlm train mdlm` only


@dataclass
class ModelConfig:
    """The backbone (DiT for MDLM, causal transformer for AR): same arguments for both. ``backbone=hf`` trains a
    Hugging Face masked LM as the MDLM denoiser instead; its own config then sets the sizes (hidden_size, n_blocks,
    n_heads, cond_dim and dropout are not read)."""

    hidden_size: int = 768  # MDLM-small = GPT-2 small width
    n_blocks: int = 12  # MDLM-small depth
    n_heads: int = 12  # MDLM-small: 64-dim heads
    cond_dim: int = 128  # MDLM's adaLN conditioning width (unused by AR)
    dropout: float = 0.1  # MDLM's OWT setting
    time_conditioning: bool = False  # MDLM's released OWT model is not; allows the cached sampler (SPEC 1.6)
    init_from: str | None = None  # a save_pretrained dir to start from; None = random init
    backbone: str = "dit"  # "dit" (MDLM's DiT) or "hf" (the Hugging Face masked LM hf_name, time-unconditioned)
    hf_name: str | None = None  # backbone=hf: a hub name or local folder of an AutoModelForMaskedLM (+ tokenizer)
    hf_pretrained: bool = True  # backbone=hf: start from hf_name's weights; false = random init of its config

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"model.backbone must be one of {list(BACKBONES)}, got {self.backbone!r}.")
        if self.backbone == "hf" and not self.hf_name:
            raise ConfigError("model.backbone=hf needs model.hf_name (a hub name such as "
                              "answerdotai/ModernBERT-base, or a local folder of a masked LM).")
        if self.backbone != "hf" and self.hf_name:
            raise ConfigError(f"model.hf_name={self.hf_name} is read only with model.backbone=hf.")
        if self.backbone == "hf" and self.time_conditioning:
            raise ConfigError("model.time_conditioning=true does not apply to model.backbone=hf: a Hugging Face "
                              "masked LM never sees the diffusion time.")
        if self.hidden_size <= 0 or self.n_blocks <= 0 or self.n_heads <= 0:
            raise ConfigError("model.hidden_size, model.n_blocks and model.n_heads must be positive.")
        if self.hidden_size % self.n_heads:
            raise ConfigError(f"model.hidden_size={self.hidden_size} must be divisible by "
                              f"model.n_heads={self.n_heads}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}.")


@dataclass
class DiffusionConfig:
    """The masked-diffusion process (SPEC 1.1, 1.5); ignored when training an AR model."""

    schedule: str = "loglinear"  # SPEC 1.1 default; also linear_sigma, cosine
    t_min: float = 1e-3  # SPEC 1.5: antithetic times mapped to [t_min, 1]
    antithetic: bool = True  # SPEC 1.5: stratified t lowers the loss variance

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"diffusion.schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}.")
        if not 0.0 <= self.t_min < 1.0:
            raise ConfigError(f"diffusion.t_min must be in [0, 1), got {self.t_min}.")


@dataclass
class DataConfig:
    """Corpus, tokenizer and batching."""

    corpus: str = "wikipedia_en"  # our closest stand-in for MDLM's OpenWebText (a preset name or a path)
    tokenizer: str | None = None  # a saved dir/hub name; None = the preset's kind, or chars of a custom corpus
    tokenizer_vocab_size: int = 50258  # ids of a trained BPE, [MASK] included: GPT-2 50257 + mask, as MDLM
    length: int = 1024  # MDLM's OWT context length
    packing: str = "wrap"  # MDLM's `wrap`: concatenate docs with <|endoftext|>, cut into length-L rows
    batch_size: int = 64  # per device per micro-step: MDLM's 512 global over its 8 GPUs (80 GB each)
    eval_batch_size: int = 64  # same as training: validation is forward-only, so it always fits
    max_train_chars: int | None = None  # None = the whole train split; set it to cap CPU runs and tests
    max_val_chars: int | None = None  # None = the whole validation split (the reported bound covers it all)
    num_workers: int = 0  # rows are packed in memory up front, so workers would only add start-up time
    cache_dir: str | None = None  # None = edlm.data's default ($EDLM_CACHE_DIR or ~/.cache/edlm)
    # DNA only: also train on the reverse complement of every block (the other strand, equally real; off so that a
    # run sees the data as given); checked against the tokenizer by TextDataModule
    reverse_complement: bool = False
    text_column: str = "text"  # the JSONL field or hub dataset column that holds each document
    train_split: str = "train"  # a hub dataset's own split names and slices work too, e.g. "train[:10%]"
    valid_split: str | None = None  # None = edlm.data.held_out_split: "validation" for hf: datasets, else "valid"

    def __post_init__(self) -> None:
        if not self.text_column or not self.train_split or self.valid_split == "":
            raise ConfigError("data.text_column, data.train_split and data.valid_split must not be empty.")
        if self.length <= 0 or self.batch_size <= 0 or self.eval_batch_size <= 0:
            raise ConfigError("data.length, data.batch_size and data.eval_batch_size must be positive.")
        if self.packing not in ("wrap", "pad"):
            raise ConfigError(f"data.packing must be 'wrap' or 'pad', got {self.packing!r}.")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up, then a constant, cosine or linear learning rate."""

    lr: float = 3e-4  # MDLM's OWT setting
    betas: tuple[float, float] = (0.9, 0.999)  # MDLM's OWT setting (torch defaults)
    eps: float = 1e-8  # torch default, as MDLM
    weight_decay: float = 0.0  # MDLM uses none
    warmup_steps: int = 2500  # MDLM's OWT setting
    decay: str = "constant"  # MDLM keeps the lr constant after warm-up; or "cosine", "linear"
    min_lr_ratio: float = 0.1  # floor of the cosine/linear decay, as a fraction of lr
    grad_clip: float = 1.0  # MDLM's gradient_clip_val (norm); 0 = off

    def __post_init__(self) -> None:
        if self.decay not in ("constant", "cosine", "linear"):
            raise ConfigError(f"optim.decay must be 'constant', 'cosine' or 'linear', got {self.decay!r}.")
        if self.lr <= 0 or self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("need optim.lr > 0, optim.warmup_steps >= 0 and 0 <= optim.min_lr_ratio <= 1.")


@dataclass
class EMAConfig:
    """Exponential moving average of the weights, used for validation and the saved model."""

    decay: float = 0.9999  # MDLM's OWT setting; 0 turns EMA off
    warmup: bool = True  # decay_n = min(decay, (1+n)/(10+n)): early averages do not drag in the random init

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"ema.decay must be in [0, 1), got {self.decay}.")


# The largest train.max_steps without train.max_minutes: 10x the default (MDLM's 1M-step OWT run), already weeks of
# a GPU node. A larger count is a typo or an unbounded run; with max_minutes the wall clock bounds it instead.
MAX_TRAIN_STEPS = 10_000_000


@dataclass
class TrainConfig:
    """The Lightning Trainer and the run directory."""

    max_steps: int = 1_000_000  # MDLM's OWT run length (optimizer steps)
    val_check_interval: int = 10_000  # MDLM's OWT setting (optimizer steps between validations)
    limit_val_batches: float = 1.0  # 1.0 = the whole split (the reported number); <= 1 a fraction, > 1 batches
    log_every_n_steps: int = 50  # Lightning's default
    accumulate_grad_batches: int = 1  # raise it to reach a larger global batch on fewer devices
    accelerator: str = "auto"  # CUDA if present, else CPU
    devices: str = "auto"  # "auto", a count like "2", or GPU ids like "0,1" (quoted), as Lightning takes it
    strategy: str = "auto"  # "ddp" for several devices; "auto" picks single-device or DDP
    precision: str = "auto"  # "auto" = bf16-mixed on CUDA, else 32-true; or any Lightning precision
    seed: int = 1  # MDLM's seed
    cpu_threads: int | None = None  # torch's intra-op threads; None = torch's default (one per core)
    deterministic: bool | None = None  # None = deterministic algorithms on CPU only (GPU kernels lack some)
    run_dir: str | None = None  # None = runs/<preset>-<name>: runs/tiny-mdlm, runs/tiny-ar, runs/tiny-nce
    resume: bool = False  # continue from <run_dir>/checkpoints/last.ckpt
    progress_bar: bool = True  # Lightning's bar; turn off in CI logs
    compile: bool = False  # torch.compile the networks (in place: checkpoint keys unchanged); pays off on GPU
    max_minutes: float | None = None  # also stop after this much wall time (the lr schedule still spans max_steps)
    keep: str = "last"  # model/ holds the EMA weights of the "last" step, or of the "best" validation (early stopping)

    def __post_init__(self) -> None:
        if self.max_steps <= 0 or self.val_check_interval <= 0:
            raise ConfigError("train.max_steps and train.val_check_interval must be positive.")
        if self.cpu_threads is not None and self.cpu_threads <= 0:
            raise ConfigError(f"train.cpu_threads must be positive or null, got {self.cpu_threads}.")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"train.max_minutes must be positive or null, got {self.max_minutes}.")
        if self.max_steps > MAX_TRAIN_STEPS and self.max_minutes is None:
            raise ConfigError(f"train.max_steps={self.max_steps} is more than {MAX_TRAIN_STEPS} steps (10x MDLM's "
                              "1M-step OpenWebText run, weeks of a GPU node): lower it, or set train.max_minutes to "
                              "bound the run by time.")
        if self.keep not in ("last", "best"):
            raise ConfigError(f"train.keep must be 'last' or 'best', got {self.keep!r}.")
        if not 0 <= self.seed <= 2**32 - 1:
            raise ConfigError(f"train.seed must be in [0, 2**32 - 1] (the range numpy and Lightning seed), got "
                              f"{self.seed}.")


@dataclass
class EnergyConfig:
    """NCE training of the EDLM energy (``edlm train energy``, SPEC 2.4): what the rest of a ``RunConfig`` does not
    hold. Data, optimizer, EMA, trainer and run dir come from the ``RunConfig``; the energy's architecture is the
    denoiser's (SPEC 2.4: initialise from the denoiser), so ``model.*`` sizes are not read."""

    denoiser: str | None = None  # save_pretrained dir (or hub id) of the frozen denoiser; may be passed apart
    n_neg: int = 1  # negatives per data sequence; the paper's NCE uses one per positive
    init_from_denoiser: bool = True  # SPEC 2.4: copy embedding + blocks from the denoiser; False = random init
    dropout: float | None = None  # None = the denoiser's dropout
    time_conditioning: bool | None = None  # None = as the denoiser (MDLM-OWT: not time-conditioned)
    n_blocks: int | None = None  # None = the denoiser's depth; fewer: a cheaper energy of its first n_blocks blocks

    def __post_init__(self) -> None:
        if self.n_blocks is not None and self.n_blocks < 1:
            raise ConfigError(f"energy.n_blocks must be >= 1 or null, got {self.n_blocks}.")
        if self.n_neg < 1:
            raise ConfigError(f"energy.n_neg must be >= 1, got {self.n_neg}.")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"energy.dropout must be in [0, 1), got {self.dropout}.")


@dataclass
class RunConfig:
    """Everything one ``edlm train`` run needs; saved as ``config.yaml`` in the run dir."""

    preset: str = "default"  # name of the preset this came from (for the run dir name and the record)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)  # read by `edlm train energy` only


# ----------------------------------------------------------------------------- loading
def available_presets() -> list[str]:
    """Names of the packaged presets (``edlm/configs/<name>.yaml``)."""
    root = resources.files("edlm") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def config_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key a ``key=value`` override may name, e.g. ``model.hidden_size``."""
    keys = []
    for f in fields(cls):
        sub = f.default_factory if is_dataclass(f.default_factory) else None  # type: ignore[misc]
        keys += config_keys(sub, f"{prefix}{f.name}.") if sub else [prefix + f.name]
    return keys


def _preset_text(preset: str) -> tuple[str, str]:
    """(name, YAML text) of a packaged preset or a YAML file path."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") or os.sep in preset:
        if not path.is_file():
            raise ConfigError(f"config file {preset!r} does not exist.")
        return path.stem, path.read_text(encoding="utf-8")
    if preset not in available_presets():
        raise ConfigError(f"unknown preset {preset!r}; choose one of {available_presets()} or pass a .yaml path.")
    return preset, (resources.files("edlm") / "configs" / f"{preset}.yaml").read_text(encoding="utf-8")


def _one_line(exc: OmegaConfBaseException) -> str:
    """OmegaConf's first message line plus what is valid, e.g. the keys of the section."""
    msg = str(exc).strip().splitlines()[0]
    key = getattr(exc, "full_key", None) or ""
    if "not in" in msg:
        if "." in key:
            section = key.rsplit(".", 1)[0]
            valid = [k.split(".")[-1] for k in config_keys() if k.startswith(section + ".")]
            return f"unknown config key {key!r}; valid keys in {section}: {', '.join(valid)}"
        return f"unknown config key {key!r}; valid top-level keys: {', '.join(f.name for f in fields(RunConfig))}"
    return f"bad config value for {key!r}: {msg}" if key else f"bad config: {msg}"


def load_config(preset: str = "tiny", overrides: list[str] | None = None) -> RunConfig:
    """Build a ``RunConfig`` from a packaged preset name (or a YAML path) and ``key=value`` overrides.

    Raises:
        ConfigError: unknown preset or key, a value of the wrong type, or an invalid combination.
    """
    overrides = list(overrides or [])
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_steps=100).")
    name, text = _preset_text(preset)
    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(RunConfig),
            OmegaConf.create({"preset": name}),
            OmegaConf.create(text),
            OmegaConf.from_dotlist(overrides),
        )
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(_one_line(exc)) from None
    assert isinstance(cfg, RunConfig)
    return cfg


def save_config(cfg: RunConfig, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML, atomically (a temp file renamed into place). Returns the path."""
    return atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))
