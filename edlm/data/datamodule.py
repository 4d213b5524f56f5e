"""`TextDataModule`: a corpus → packed blocks → batches ``{"input_ids", "attention_mask"?}``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from datasets import Dataset
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler
from transformers import PreTrainedTokenizerFast

from edlm.data.dna import ReverseComplementRows, complement_ids
from edlm.data.files import split_file
from edlm.data.packing import tokenize_and_pack
from edlm.data.sources import load_corpus
from edlm.data.tokenizers import load_tokenizer
from edlm.errors import ConfigError, DataError

__all__ = ["TextDataModule", "ResumableSampler"]

PerSplit = int | Mapping[str, int] | None  # one limit for every split, or {"train": n, "valid": m}


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` (a new permutation each epoch, seeded by ``seed + epoch``; this rank's share of
    it) that can start an epoch part-way, so a resumed run sees exactly the rows it had not seen yet.

    ``resume(epoch, start)`` makes the next ``__iter__`` yield that epoch's order without its first ``start``
    indices; later epochs run whole. ``len()`` stays the full share of an epoch, because Lightning goes on
    counting the epoch's batches from where the checkpoint left off. The sampler does not count what it yields
    (the loader and Lightning fetch ahead of training): `TextDataModule.state_dict` records the position.
    Lightning calls ``set_epoch`` at each epoch start, and leaves a ``DistributedSampler`` in place under DDP.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0  # indices of this rank's share of the epoch to skip (already trained on)

    def resume(self, epoch: int, start: int) -> None:
        """Start the next pass at index ``start`` of epoch ``epoch``'s order (this rank's share)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"`start` must be in [0, {self.num_samples}], got {start}.")
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        indices = list(super().__iter__())
        start, self.start = self.start, 0  # only the first pass after a resume is partial
        return iter(indices[start:])


class TextDataModule(L.LightningDataModule):
    """Training and validation batches of packed token blocks.

    Batches are dicts: ``input_ids`` LongTensor (B, L), plus ``attention_mask`` LongTensor (B, L)
    (1 real, 0 pad) in ``"pad"`` mode only. Training batches are shuffled by a `ResumableSampler`
    (a new permutation each epoch, seeded by ``seed`` and the epoch; under DDP each rank takes its
    own share) and drop the last incomplete batch (fixed shapes).

    Exact resume: ``state_dict()``, which Lightning stores in its checkpoints, records the epoch and
    how many of its rows training has consumed; after ``load_state_dict`` the next training loader
    starts at the first batch not yet seen, in the order of the uninterrupted run.

    Args:
        corpus: a preset name, a file, a folder (of ``train.*``/``valid.*`` or of any corpus files), or a hub
            dataset ``hf:NAME[:CONFIG]`` (see `load_corpus`).
        tokenizer: a tokenizer, or a spec for `load_tokenizer`.
        length: L, ids per row.
        batch_size: B for training; also for validation unless ``eval_batch_size`` is given.
        mode: ``"wrap"`` (MDLM) or ``"pad"`` (see `tokenize_and_pack`).
        valid_split: the split used for validation; None = no validation data.
        train_split: the split used for training ("train"; a hub dataset's own names and slices work too).
        text_column: the JSONL field or hub dataset column that holds the text.
        valid_corpus: read validation data from this corpus instead (e.g. a second file).
        max_docs, max_chars: prefix limits, an int for every split or a dict by split name.
        num_workers: DataLoader worker processes.
        cache_dir: root of the packed-data cache (None: ``$EDLM_CACHE_DIR`` or ``~/.cache/edlm``).
        seed: seed of the training shuffle.
        eval_batch_size: B for validation (default ``batch_size``).
        num_proc: processes for tokenising (see `tokenize_and_pack`).
        reverse_complement: DNA only: train on every block and its reverse complement (`ReverseComplementRows`:
            twice the rows per epoch); validation stays one strand. Needs the DNA tokenizer.
    """

    def __init__(
        self,
        corpus: str,
        tokenizer: PreTrainedTokenizerFast | str,
        length: int,
        batch_size: int,
        mode: str = "wrap",
        valid_split: str | None = "valid",
        valid_corpus: str | None = None,
        max_docs: PerSplit = None,
        max_chars: PerSplit = None,
        num_workers: int = 0,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        eval_batch_size: int | None = None,
        num_proc: int | None = None,
        reverse_complement: bool = False,
        train_split: str = "train",
        text_column: str = "text",
    ) -> None:
        super().__init__()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ConfigError(
                f"batch sizes must be >= 1, got batch_size={batch_size}, eval_batch_size={eval_batch_size}."
            )
        self.corpus = str(corpus)
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str | os.PathLike) else tokenizer
        self.length = length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.mode = mode
        self.valid_split = valid_split
        self.train_split = train_split
        self.text_column = text_column
        self.valid_corpus = None if valid_corpus is None else str(valid_corpus)
        self.max_docs = max_docs
        self.max_chars = max_chars
        self.num_workers = num_workers
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.seed = seed
        self.num_proc = num_proc
        # the id table of the other strand; checked here, before any data is read
        self.complement = complement_ids(self.tokenizer) if reverse_complement else None
        self.train_data: Dataset | None = None
        self.valid_data: Dataset | None = None
        self.train_sampler: ResumableSampler | None = None  # that of the latest train_dataloader()
        self._resume_state: dict[str, int] | None = None  # from load_state_dict, for the next train_dataloader()

    # ------------------------------------------------------------------------- vocabulary
    @property
    def mask_id(self) -> int:
        """The ``[MASK]`` id m (last id for edlm tokenizers)."""
        return self.tokenizer.mask_token_id

    @property
    def vocab_size(self) -> int:
        """Ids a model must embed: real tokens + ``[MASK]`` (= ``len(tokenizer)``)."""
        return len(self.tokenizer)

    # ------------------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Runs on one process: tokenise and fill the cache, so `setup` on every rank only reads it."""
        self._build("train")
        if self.valid_split is not None:
            self._build("valid")

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is None and stage in (None, "fit"):
            self.train_data = self._build("train")
        if self.valid_data is None and self.valid_split is not None and stage in (None, "fit", "validate"):
            self.valid_data = self._build("valid")

    def train_dataloader(self) -> DataLoader:
        if self.train_data is None:
            self.setup("fit")
        rows = self.train_rows()
        if len(rows) < self.batch_size:
            raise DataError(
                f"training data has {len(rows)} rows of length {self.length}, fewer than one batch "
                f"of {self.batch_size}; lower batch_size or length, or use more text."
            )
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        self.train_sampler = ResumableSampler(rows, num_replicas=world_size, rank=rank, seed=self.seed)
        if self._resume_state is not None:
            self._resume(self._resume_state)
            self._resume_state = None
        return DataLoader(
            rows,
            batch_size=self.batch_size,
            sampler=self.train_sampler,
            generator=torch.Generator().manual_seed(self.seed),  # worker seeds; keeps the global RNG untouched
            drop_last=True,  # fixed (B, L) shapes for every step
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_rows(self):
        """What training batches are drawn from: the packed train rows, followed by their reverse complements
        when ``reverse_complement`` is on."""
        if self.train_data is None:
            self.setup("fit")
        return self.train_data if self.complement is None else ReverseComplementRows(self.train_data, self.complement)

    def val_dataloader(self) -> DataLoader | list:
        if self.valid_split is None:
            return []
        if self.valid_data is None:
            self.setup("validate")
        return DataLoader(
            self.valid_data,
            batch_size=self.eval_batch_size,
            shuffle=False,
            generator=torch.Generator().manual_seed(self.seed),  # its iterator draws no global random number
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def state_dict(self) -> dict[str, int]:
        """Where training is in its data; Lightning saves it in checkpoints and hands it to `load_state_dict`.

        ``{"epoch", "seen", "rows", "world_size"}``: ``seen`` rows (per rank) of the epoch's order went to
        ``training_step`` (Lightning's own batch count, the one a resumed run continues from); ``rows`` and
        ``world_size`` let a resume on other data or another number of processes notice it.
        """
        trainer = self.trainer
        if self.train_sampler is None or trainer is None:
            return dict(self._resume_state or {})
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # of this epoch, incl. the current one
        epoch = self.train_sampler.epoch
        if batches >= trainer.num_training_batches:  # the epoch is over: resume at the start of the next one
            epoch, batches = epoch + 1, 0
        return {"epoch": epoch, "seen": batches * self.batch_size, "rows": len(self.train_sampler.dataset),
                "world_size": self.train_sampler.num_replicas}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Make the next ``train_dataloader()`` start where ``state_dict`` (from `state_dict`) left off."""
        self._resume_state = dict(state_dict) if state_dict else None

    # ------------------------------------------------------------------------- helpers
    def _resume(self, state: dict[str, int]) -> None:
        sampler = self.train_sampler
        epoch, seen = int(state["epoch"]), int(state["seen"])
        rows = len(sampler.dataset)
        if (state.get("rows"), state.get("world_size")) != (rows, sampler.num_replicas):
            rank_zero_warn(f"the checkpoint was trained on {state.get('rows')} rows by {state.get('world_size')} "
                           f"process(es), this run has {rows} rows and {sampler.num_replicas}: "
                           f"it starts epoch {epoch} from its first batch, not where the checkpoint stopped.")
            seen = 0
        if seen > sampler.num_samples - self.batch_size:  # no full batch left in that epoch
            epoch, seen = epoch + 1, 0
        sampler.resume(epoch, seen)

    def _build(self, role: str) -> Dataset:
        """role "train" → (corpus, train_split); role "valid" → (valid_corpus, its train split, or all of it when
        it is one file or an unsplit folder) or (corpus, valid_split)."""
        if role == "train":
            corpus, split = self.corpus, self.train_split
        elif self.valid_corpus is not None:  # a second corpus is read whole
            corpus = self.valid_corpus
            path = Path(corpus).expanduser()
            whole = path.is_file() or (path.is_dir() and split_file(path, "train") is None)
            split = "all" if whole else "train"
        else:
            corpus, split = self.corpus, self.valid_split
        text = load_corpus(
            corpus,
            split,
            max_docs=_for_split(self.max_docs, role, "max_docs"),
            max_chars=_for_split(self.max_chars, role, "max_chars"),
            cache_dir=None if self.cache_dir is None else os.path.join(self.cache_dir, "corpora"),
            text_column=self.text_column,
        )
        packed = tokenize_and_pack(
            text, self.tokenizer, self.length, self.mode, cache_dir=self.cache_dir, num_proc=self.num_proc
        )
        return packed.with_format("torch")


def _for_split(limit: PerSplit, role: str, name: str) -> int | None:
    if limit is None or isinstance(limit, int):
        return limit
    unknown = set(limit) - {"train", "valid"}
    if unknown:
        raise ConfigError(f"{name} keys must be 'train' and/or 'valid', got {sorted(unknown)}.")
    return limit.get(role)
