"""How ``edlm train`` writes its run directory: the EMA weights (``model/``) and the Lightning checkpoints,
each atomically, the sweep of what a killed run left half-written, and the throughput measurement."""

from __future__ import annotations

import re
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from edlm.atomic import atomic_write
from edlm.models.checkpoints import save_pretrained

__all__ = ["SavePretrained", "FinalCheckpoint", "Throughput", "TrainProgress", "AtomicCheckpointIO",
           "save_pretrained_atomic", "sweep_staging"]

# What the atomic writers of a run dir stage next to their target, all hidden: "<dir>.tmp-<8 hex>" and
# "<dir>.old-<8 hex>" folders (save_pretrained_atomic), ".<file>.<random>.tmp" files (mkstemp in
# edlm.atomic.atomic_write: AtomicCheckpointIO, run.write_json, save_config, save_pretrained).
_STAGING = re.compile(r"\.(?P<target>.+)\.(?:(?P<kind>tmp|old)-[0-9a-f]{8}|[^.]+\.tmp)")


def save_pretrained_atomic(model, directory: Path, tokenizer=None, extra: dict | None = None) -> Path:
    """``save_pretrained`` into a fresh sibling folder, then swap it in: a reader never sees half a model.

    A kill in between leaves the hidden staging folders behind; `sweep_staging` clears them on the next start.
    """
    directory = Path(directory)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        save_pretrained(model, tmp, tokenizer=tokenizer, extra=extra)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return directory


def sweep_staging(*folders: Path) -> list[Path]:
    """Remove what a killed writer left staged in ``folders`` (a run dir, its ``checkpoints/``); return it.

    Only the hidden names of `_STAGING` are touched. A ``.<dir>.old-*`` folder is a complete earlier export
    that a kill caught between its two renames (``<dir>`` is then missing): it is moved back, not removed.
    """
    removed = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir(), key=lambda p: p.lstat().st_mtime, reverse=True):  # newest first
            match = _STAGING.fullmatch(path.name)
            if match is None:
                continue
            target = folder / match["target"]
            if match["kind"] == "old" and path.is_dir() and not target.exists():
                path.rename(target)
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes each checkpoint to a temporary file in its own folder, syncs it, and
    renames it over the target (``os.replace``): ``last.ckpt`` is always either the previous checkpoint or
    the new one, whole, even if the process dies mid-write. (Lightning's own save stages through fsspec,
    whose temporary file lives in the system temp dir: across file systems the final move is a copy.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)

        atomic_write(path, write)


class SavePretrained(Callback):
    """After each validation and at the end of training, write the EMA weights with ``save_pretrained``.

    The folder (``<run_dir>/model``) holds ``config.json`` + ``model.safetensors`` + the tokenizer; the
    run config, the step and the latest validation metrics go into ``config.json``'s "extra". Only
    global rank 0 writes; a step already saved is not saved again.

    With ``monitor`` (a validation metric, lower is better: ``train.keep=best``) only a validation that lowers it
    writes, so the folder keeps the best weights seen (early stopping without stopping: the curve goes on). The best
    value and its step travel in the trainer checkpoint, so a resumed run keeps comparing against them.
    """

    def __init__(self, directory: str | Path, tokenizer=None, extra: dict | None = None, monitor: str | None = None):
        self.directory = Path(directory)
        self.tokenizer = tokenizer
        self.extra = dict(extra or {})
        self.monitor = monitor
        self.saved_step: int | None = None
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}  # the validation metrics of the weights kept (with monitor)

    def _improves(self, trainer: L.Trainer) -> bool:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:  # no validation yet (or validation off): keep the latest, as "last" does
            return self.best is None
        value = float(value)
        if self.best is not None and not value < self.best:
            return False
        self.best, self.best_step = value, trainer.global_step
        return True

    def save(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.global_step == self.saved_step:
            return
        if self.monitor is not None and not self._improves(trainer):
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if self.monitor is not None:
            self.best_metrics = metrics
        if trainer.is_global_zero:
            extra = {**self.extra, "global_step": trainer.global_step, "metrics": metrics}
            with pl_module.ema.averaged() as model:
                save_pretrained_atomic(model, self.directory, tokenizer=self.tokenizer, extra=extra)
        self.saved_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        self.save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.save(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "best_metrics": self.best_metrics}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.best_step = state_dict.get("best"), state_dict.get("best_step")
        self.best_metrics = dict(state_dict.get("best_metrics") or {})


class FinalCheckpoint(Callback):
    """Write ``path`` (``last.ckpt``) after the final optimizer step, from inside the loop.

    ``ModelCheckpoint`` saves every n steps; the last step is rarely one of them. Saving here, rather
    than after ``fit`` returns, stores the loop state exactly as a mid-run save does, so a resumed
    run continues its step count and its logs without a gap.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.save_checkpoint(self.path, weights_only=False)  # every rank calls it; rank 0 writes


class Throughput(Callback):
    """Seconds spent in training batches (validation excluded) and the step range of this run."""

    def __init__(self):
        self.train_seconds = 0.0
        self.start_step: int | None = None
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.start_step = trainer.global_step  # > 0 when resumed from a checkpoint

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.train_seconds += time.perf_counter() - self._t0


# what the progress output calls the metrics the modules log with prog_bar=True
_SHOWN = {"train/loss": "loss", "train/nce_loss": "NCE loss", "train/nce_acc": "NCE acc", "val/ppl_bound": "val PPL <=",
          "val/ppl": "val PPL", "val/nce_acc": "val NCE acc"}


class TrainProgress(Callback):
    """edlm's own training progress, in place of Lightning's bar ("Epoch 0/-2 ..."), on global rank 0 only.

    ``bar=True``: one tqdm bar over the optimizer steps (``step/max_steps``, resumed runs start where they stopped)
    with the loss and the latest validation figure. ``bar=False`` (CI logs, long runs): one line per validation,
    ``<label>: step N/M: loss ..., val ...``, on stderr.
    """

    def __init__(self, label: str = "train", bar: bool = True):
        self.label = label
        self.bar = bar
        self._bar = None

    @staticmethod
    def _figures(trainer: L.Trainer) -> str:
        shown = []
        for key, value in trainer.progress_bar_metrics.items():
            name = _SHOWN.get(key)
            if name is not None:
                shown.append(f"{name} {float(value):.4g}")
        return ", ".join(shown)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if self.bar and trainer.is_global_zero:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=trainer.max_steps if trainer.max_steps > 0 else None, initial=trainer.global_step,
                             desc=self.label, unit="step", dynamic_ncols=True, file=sys.stderr)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._bar is not None and trainer.global_step > self._bar.n:
            self._bar.set_postfix_str(self._figures(trainer), refresh=False)
            self._bar.update(trainer.global_step - self._bar.n)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self._figures(trainer))
        elif not self.bar:
            total = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
            print(f"{self.label}: step {trainer.global_step}{total}: {self._figures(trainer)}", file=sys.stderr,
                  flush=True)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)
