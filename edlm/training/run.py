"""The run-directory skeleton both trainers share (``train``, ``train_energy``).

    run_dir, resume_from = prepare_run_dir(cfg, kind)       # refuses to overwrite a run; checks a resume
    trainer = build_trainer(cfg, run_dir, [saver, throughput])
    datamodule = build_datamodule(cfg, tokenizer)
    fit_and_export(cfg, trainer, module, datamodule, resume_from, saver)
    write_json(run_dir / "metrics.json", asdict(result))

The layout of a run directory is in ``edlm.training.trainer``.
"""

from __future__ import annotations

import json
import warnings
from importlib.util import find_spec
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from edlm.atomic import atomic_write_text
from edlm.config import RunConfig
from edlm.data import TextDataModule
from edlm.errors import CheckpointError, ConfigError
from edlm.training.callbacks import AtomicCheckpointIO, FinalCheckpoint, SavePretrained, sweep_staging

__all__ = ["prepare_run_dir", "trainer_settings", "build_trainer", "build_datamodule", "fit_and_export",
           "write_json", "tokens_per_step"]


# ----------------------------------------------------------------------------- run directory
def write_json(path: Path, payload: dict) -> None:
    """``payload`` as indented JSON, written atomically (``metrics.json``)."""
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def prepare_run_dir(cfg: RunConfig, kind: str) -> tuple[Path, Path | None]:
    """(run_dir, checkpoint to resume from or None); refuses to overwrite a finished or started run."""
    run_dir = Path(cfg.train.run_dir or Path("runs") / f"{kind}_{cfg.preset}")
    last = run_dir / "checkpoints" / "last.ckpt"
    if cfg.train.resume:
        if not last.is_file():
            raise ConfigError(f"nothing to resume: {last} does not exist; drop --resume to start a new run.")
        _check_resumable(last, kind)
    elif rank_zero_only.rank == 0 and (last.exists() or (run_dir / "metrics.json").exists()):
        raise ConfigError(f"run dir {run_dir} already holds a run; pass --resume to continue it or "
                          "--run-dir to start a new one elsewhere.")
    if rank_zero_only.rank == 0:  # what a killed run left half-written (its model export, a checkpoint)
        for path in sweep_staging(run_dir, run_dir / "checkpoints"):
            rank_zero_info(f"edlm: removed {path}, left half-written by an interrupted run")
    return run_dir, (last if cfg.train.resume else None)


def _load_plain_checkpoint(path: Path) -> dict:
    """Open a trainer checkpoint with ``torch.load(weights_only=True)``: tensors and plain data only.

    A checkpoint that would need to run pickled code (a planted ``__reduce__``, arbitrary classes) is
    refused with a ``CheckpointError``; nothing in it is executed.
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"refusing to resume from {path}: it is not a plain-data checkpoint "
                              f"(torch.load weights_only=True failed: {first[:160]})") from None


def _check_resumable(ckpt: Path, kind: str) -> None:
    info = _load_plain_checkpoint(ckpt).get("edlm", {})  # a planted pickle is refused here, never run
    if info.get("kind") not in (None, kind):
        raise CheckpointError(f"{ckpt} is a {info['kind']!r} run; resume it with `edlm train {info['kind']}`.")


# ----------------------------------------------------------------------------- Lightning
def trainer_settings(cfg: RunConfig) -> dict:
    """The ``lightning.Trainer`` arguments that ``cfg.train`` (and ``optim.grad_clip``) set."""
    t = cfg.train
    on_cuda = t.accelerator in ("cuda", "gpu") or (t.accelerator == "auto" and torch.cuda.is_available())
    precision = t.precision if t.precision != "auto" else ("bf16-mixed" if on_cuda else "32-true")
    deterministic = (not on_cuda) if t.deterministic is None else t.deterministic
    limit_val = int(t.limit_val_batches) if t.limit_val_batches > 1 else t.limit_val_batches
    if on_cuda:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for the fp32 parts of mixed precision
    return dict(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=precision,
        deterministic=deterministic,
        max_steps=t.max_steps,
        max_time=None if t.max_minutes is None else {"seconds": round(60 * t.max_minutes)},
        val_check_interval=t.val_check_interval * t.accumulate_grad_batches,  # counted in batches
        check_val_every_n_epoch=None,  # validate every val_check_interval steps, across epochs
        limit_val_batches=limit_val,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=cfg.optim.grad_clip or None,
        gradient_clip_algorithm="norm",
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
    )


def build_trainer(cfg: RunConfig, run_dir: Path, callbacks: list) -> L.Trainer:
    """A Trainer writing into ``run_dir``: periodic and final ``checkpoints/last.ckpt`` (atomic), CSV and (if
    installed) TensorBoard logs, the learning rate, and ``callbacks``; bad device settings are a ConfigError."""
    checkpoints = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=cfg.train.val_check_interval, save_top_k=0,
                        save_last=True),
        FinalCheckpoint(checkpoints / "last.ckpt"),
        LearningRateMonitor("step"),
        *callbacks,
    ]
    loggers = [CSVLogger(run_dir, name="csv")]
    if find_spec("tensorboard") or find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(run_dir, name="tb"))
    else:
        rank_zero_warn("tensorboard is not installed: logging to CSV only (pip install tensorboard).")
    try:
        return L.Trainer(default_root_dir=run_dir, logger=loggers, callbacks=callbacks,
                         plugins=[AtomicCheckpointIO()], **trainer_settings(cfg))
    except (MisconfigurationException, ImportError, ValueError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"bad train.accelerator/devices/strategy/precision setting: {message}") from exc


def fit_and_export(cfg: RunConfig, trainer: L.Trainer, module, datamodule, resume_from: Path | None,
                    saver: SavePretrained) -> None:
    """Fit (resuming from a checkpoint that ``prepare_run_dir`` checked is plain data), validate the
    last step if the run ended between checks, and export the weights."""
    with warnings.catch_warnings():
        # Lightning warns on a mid-epoch resume unless the DataLoader itself is stateful; TextDataModule's
        # state_dict restores the position instead (the next unseen batch), so the warning would mislead
        warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before the epoch ended")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)  # no pickle code run
    if module.last_val_step != trainer.global_step and cfg.train.limit_val_batches > 0:  # end fell between checks
        trainer.validate(module, datamodule=datamodule, verbose=False)
    saver.save(trainer, module)  # no-op if that validation already saved this step


def build_datamodule(cfg: RunConfig, tokenizer) -> TextDataModule:
    """The training data as ``cfg.data`` says, tokenized with ``tokenizer``."""
    d = cfg.data
    return TextDataModule(
        d.corpus, tokenizer, d.length, d.batch_size, mode=d.packing, max_chars={"train": d.max_train_chars,
        "valid": d.max_val_chars}, num_workers=d.num_workers, cache_dir=d.cache_dir, seed=cfg.train.seed,
        eval_batch_size=d.eval_batch_size,
    )


def tokens_per_step(cfg: RunConfig, world_size: int) -> int:
    """Training tokens per optimizer step over all processes."""
    return cfg.data.batch_size * cfg.data.length * cfg.train.accumulate_grad_batches * world_size
