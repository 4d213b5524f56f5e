"""The run-directory skeleton both trainers share (``train``, ``train_energy``).

    with own_run_dir(cfg, kind):                             # checked up front, locked (edlm.locks) until the end
    run_dir, resume_from = prepare_run_dir(cfg, kind)       # refuses to overwrite a run; checks a resume
    trainer = build_trainer(cfg, run_dir, [saver, throughput])
    datamodule = build_datamodule(cfg, tokenizer)
    fit_and_export(cfg, trainer, module, datamodule, resume_from, saver)
    write_json(run_dir / "metrics.json", asdict(result))

The layout of a run directory is in ``edlm.training.trainer``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sys
import warnings
from importlib.util import find_spec
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from edlm.atomic import atomic_write, atomic_write_text
from edlm.config import RunConfig
from edlm.constants import default_run_dir
from edlm.data import TextDataModule, held_out_split
from edlm.errors import CheckpointError, ConfigError
from edlm.locks import dir_lock
from edlm.training.callbacks import (
    AtomicCheckpointIO,
    FinalCheckpoint,
    SavePretrained,
    TrainProgress,
    sweep_staging,
)

__all__ = ["run_dir_of", "own_run_dir", "prepare_run_dir", "trainer_settings", "build_trainer", "build_datamodule", "fit_and_export",
           "write_json", "tokens_per_step", "quiet_lightning", "say"]


# ----------------------------------------------------------------------------- console
def say(message: str) -> None:
    """One line of ours on stderr, from global rank 0 only (Lightning's own info lines are silenced)."""
    if rank_zero_only.rank == 0:
        print(message, file=sys.stderr, flush=True)


_QUIET = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


@contextlib.contextmanager
def quiet_lightning():
    """Silence Lightning's info lines while training ("GPU available: False, used: False", "💡 Tip: ...
    litlogger", "`Trainer.fit` stopped", ...) and its deprecation chatter; its warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in _QUIET]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)` is deprecated")
            warnings.filterwarnings("ignore", r".*`weights_only` was not set")
            # a moved (or differently spelled) run dir: ModelCheckpoint keeps no best-k files here, nothing is lost
            warnings.filterwarnings("ignore", r"The dirpath has changed from")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ----------------------------------------------------------------------------- run directory
def write_json(path: Path, payload: dict) -> None:
    """``payload`` as indented JSON, written atomically (``metrics.json``)."""
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def run_dir_of(cfg: RunConfig, kind: str) -> Path:
    """``train.run_dir``, or the default ``runs/<preset>-<name>`` (runs/tiny-mdlm, as the README)."""
    return Path(cfg.train.run_dir or default_run_dir(kind, cfg.preset))


@contextlib.contextmanager
def own_run_dir(cfg: RunConfig, kind: str):
    """Own the run dir for the block (``edlm.locks``); yields it. Up front, before any data or model work: a file in
    its place or a read-only / full file system is one ``OutputError`` line, and a run dir another live ``edlm
    train`` holds stops this one at once (a dead run's lock is taken over, so ``--resume`` after a crash works).
    Only global rank 0 takes the lock (DDP/torchrun ranks share the dir rank 0 owns)."""
    with dir_lock(run_dir_of(cfg, kind), flag="--run-dir", enabled=rank_zero_only.rank == 0) as run_dir:
        yield run_dir


def prepare_run_dir(cfg: RunConfig, kind: str) -> tuple[Path, Path | None]:
    """(run_dir, checkpoint to resume from or None); refuses to overwrite a finished or started run."""
    run_dir = run_dir_of(cfg, kind)
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
            say(f"edlm: removed {path}, left half-written by an interrupted run")
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
        enable_progress_bar=False,  # edlm's own TrainProgress instead (train.progress_bar: a bar, else a line)
        enable_model_summary=False,  # the parameter count is in the final summary and metrics.json
    )


class _AtomicHeaderWriter(ExperimentWriter):
    """Lightning's CSV writer, except that a change of columns (a first validation, a new metric) rewrites
    ``metrics.csv`` through a staged file: a kill or a reader in the middle sees the old rows or the new file,
    never a truncated one. Appends stay appends (a kill mid-append can cut only the last row)."""

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.metrics_file_path, write)


class AtomicCSVLogger(CSVLogger):
    """``CSVLogger`` writing through ``_AtomicHeaderWriter`` (local run directories)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AtomicHeaderWriter(log_dir=self.log_dir)
        return self._experiment


def build_trainer(cfg: RunConfig, run_dir: Path, callbacks: list, label: str = "train") -> L.Trainer:
    """A Trainer writing into ``run_dir``: periodic and final ``checkpoints/last.ckpt`` (atomic; a resumed run
    overwrites it, never adds ``last-v1.ckpt``), CSV and (if installed) TensorBoard logs, the learning rate, edlm's
    progress output (``label``, e.g. "edlm train mdlm") and ``callbacks``; bad device settings are a ConfigError."""
    checkpoints = run_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=cfg.train.val_check_interval, save_top_k=0,
                        save_last=True, enable_version_counter=False),
        FinalCheckpoint(checkpoints / "last.ckpt"),
        LearningRateMonitor("step"),
        TrainProgress(label, bar=cfg.train.progress_bar),
        *callbacks,
    ]
    loggers = [AtomicCSVLogger(run_dir, name="csv")]
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
        eval_batch_size=d.eval_batch_size, reverse_complement=d.reverse_complement, train_split=d.train_split,
        valid_split=d.valid_split or held_out_split(d.corpus), text_column=d.text_column,
    )


def tokens_per_step(cfg: RunConfig, world_size: int) -> int:
    """Training tokens per optimizer step over all processes."""
    return cfg.data.batch_size * cfg.data.length * cfg.train.accumulate_grad_batches * world_size
