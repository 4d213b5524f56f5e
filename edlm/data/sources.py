"""Corpora: presets over the shared data folder, local files and folders, and Hugging Face hub datasets.

`load_corpus` always returns a `datasets.Dataset` with one string column ``text``, one row per document. What
it reads (the ``--data`` of ``edlm train`` and ``edlm eval nll``):

- a preset name (`PRESETS`): the bundled corpora, found in the data folder (`find_data_dir`); a missing one
  is built with ``edlm data fetch NAME``;
- a file: ``.txt`` (one document), ``.jsonl`` (one per line, in the text column) or FASTA (one per record),
  each optionally gzipped (`edlm.data.files`); its last 5 % is the valid split;
- a folder: ``<split>.<ext>`` files when it holds ``train.<ext>``, else every corpus file under it, read as
  one corpus whose last 5 % of documents is valid;
- ``hf:NAME[:CONFIG]``: a dataset through `datasets.load_dataset` (`edlm.data.hub`), its splits by their own
  names (the held-out one is usually "validation": `held_out_split`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedTokenizerFast

from edlm.data.files import (
    EXTENSIONS,
    SINGLE_FILE_SPLITS,
    SINGLE_FILE_VALID,
    folder_files,
    load_files,
    split_file,
)
from edlm.data.hub import HUB_PREFIX, load_hub_corpus
from edlm.data.tokenizers import char_tokenizer_from_text, dna_tokenizer, text8_tokenizer, train_bpe_tokenizer
from edlm.errors import DataError

__all__ = ["CorpusPreset", "PRESETS", "find_data_dir", "load_corpus", "corpus_files", "preset_tokenizer",
           "held_out_split"]


# ----------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class CorpusPreset:
    """A corpus in the shared data folder (see shared/data/SOURCES.md for provenance)."""

    name: str
    files: dict[str, str]  # split -> path relative to the data folder
    tokenizer: str  # default tokenizer kind: "bpe" | "char" | "dna" | "text8"
    normalize: str | None = None  # "text8": lowercase a–z + single spaces
    description: str = ""


PRESETS: dict[str, CorpusPreset] = {
    p.name: p
    for p in (
        CorpusPreset(
            "wikipedia_en",
            {"train": "wikipedia_en/train.jsonl.gz", "valid": "wikipedia_en/valid.jsonl.gz"},
            tokenizer="bpe",
            description="English Wikipedia (2015), 5,910 train / 122 valid articles, 96 M chars",
        ),
        CorpusPreset(
            "tinyshakespeare",
            {"train": "tinyshakespeare/train.txt", "valid": "tinyshakespeare/valid.txt"},
            tokenizer="char",
            description="Karpathy's tinyshakespeare, one 1 M-char stream (train) + 56 k (valid)",
        ),
        CorpusPreset(
            "dna_ecoli_k12",
            {"train": "dna_ecoli_k12/train.fa.gz", "valid": "dna_ecoli_k12/valid.fa.gz"},
            tokenizer="dna",
            description="E. coli K-12 MG1655 genome, 4.18 Mbp train / 232 kbp valid, one record each",
        ),
        CorpusPreset(
            "text8_wiki",
            {"train": "wikipedia_en/train.jsonl.gz", "valid": "wikipedia_en/valid.jsonl.gz"},
            tokenizer="text8",
            normalize="text8",
            description="wikipedia_en lowercased to a–z + space (text8-style), one document per article",
        ),
    )
}

_REPO_ROOT = Path(__file__).resolve().parents[2]  # edlm/data/sources.py -> repo root


# ----------------------------------------------------------------------------- data folder
def find_data_dir(corpus_folder: str | None = None) -> Path:
    """The shared data folder: ``$EDLM_DATA_DIR``, else the first existing of ``<cwd>/.data``,
    ``<cwd>/../shared/data``, ``<cwd>/shared/data``, ``<repo root>/../shared/data`` — the first one that
    holds ``corpus_folder`` when it is given and one does (a partial ``.data`` copy does not hide the rest)."""
    env = os.environ.get("EDLM_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(
                f"EDLM_DATA_DIR={env} is not a directory; point it at the shared data folder or unset it."
            )
        return path
    cwd = Path.cwd()
    candidates = [
        cwd / ".data",
        cwd / ".." / "shared" / "data",
        cwd / "shared" / "data",
        _REPO_ROOT / ".." / "shared" / "data",
    ]
    existing = [path.resolve() for path in candidates if path.is_dir()]
    if corpus_folder is not None:
        holding = [path for path in existing if (path / corpus_folder).exists()]
        existing = holding or existing
    if existing:
        return existing[0]
    tried = ", ".join(str(p) for p in candidates)
    raise DataError(
        f"no data folder found (tried {tried}); build one with `edlm data fetch NAME` (into ./.data) or set "
        "EDLM_DATA_DIR to the folder holding the corpora."
    )


def corpus_files(name: str) -> dict[str, Path]:
    """The files of preset ``name`` by split (they need not exist). No data folder at all is a DataError that
    says how to get this corpus."""
    preset = _preset(name)
    try:
        root = find_data_dir(Path(next(iter(preset.files.values()))).parts[0])
    except DataError as exc:
        reason = str(exc).split(";")[0]  # what was looked for, without the generic remedy
        raise DataError(f"bundled corpus {name!r} is not here ({reason}); get it with `edlm data fetch {name}` "
                        "(into ./.data), or train on your own text with --data PATH.") from None
    return {split: root / rel for split, rel in preset.files.items()}


def preset_tokenizer(
    name: str, vocab_size: int = 8192, max_chars: int | None = 20_000_000, cache_dir: str | None = None
) -> PreTrainedTokenizerFast:
    """The default tokenizer of preset ``name`` (`CorpusPreset.tokenizer`), built from its train split.

    "bpe" trains byte-level BPE with ``vocab_size`` ids on the first ``max_chars`` characters
    (20 M chars of wikipedia_en take about a minute); "char" takes the characters of the train
    split; "dna" and "text8" are fixed alphabets. Save the result with `save_tokenizer`: a model
    is tied to the exact tokenizer it was trained with.
    """
    kind = _preset(name).tokenizer
    if kind == "bpe":
        return train_bpe_tokenizer(
            load_corpus(name, "train", max_chars=max_chars, cache_dir=cache_dir)["text"], vocab_size
        )
    elif kind == "char":
        return char_tokenizer_from_text(load_corpus(name, "train", cache_dir=cache_dir)["text"])
    elif kind == "dna":
        return dna_tokenizer()
    elif kind == "text8":
        return text8_tokenizer()
    else:
        raise DataError(
            f"preset {name!r} names unknown tokenizer kind {kind!r}; expected bpe, char, dna or text8."
        )


def _preset(name: str) -> CorpusPreset:
    if name not in PRESETS:
        raise _unknown_corpus(name)
    return PRESETS[name]


def _unknown_corpus(name: str) -> DataError:
    return DataError(f"unknown corpus {name!r}: presets are {', '.join(PRESETS)}; or give a .txt/.jsonl/FASTA "
                     "file (optionally .gz), a folder of them, or a hub dataset hf:NAME[:CONFIG].")




def held_out_split(corpus: str | os.PathLike) -> str:
    """The split that validation reads by default: "validation" for a hub dataset (its usual name there), "valid"
    for a preset, a file or a folder."""
    return "validation" if str(corpus).startswith(HUB_PREFIX) else "valid"


# ----------------------------------------------------------------------------- entry point
def load_corpus(
    name_or_path: str | os.PathLike,
    split: str = "train",
    max_docs: int | None = None,
    max_chars: int | None = None,
    cache_dir: str | None = None,
    text_column: str = "text",
) -> Dataset:
    """Load a corpus as a `Dataset` with one column ``text`` (one row per document).

    Args:
        name_or_path: a preset (`PRESETS`), a file, a folder, or a hub dataset ``hf:NAME[:CONFIG]`` (module
            docstring).
        split: which split. A single file, or a folder without ``train.<ext>``, has "train", "valid" (its last
            5 %, `edlm.data.files.single_file_part`) and "all"; a folder with ``<split>.<ext>`` files has those;
            a hub dataset has its own (e.g. "validation", "train[:1%]").
        max_docs: keep only the first this many documents.
        max_chars: keep only the first this many characters (the last document is cut).
        cache_dir: where `datasets` keeps its Arrow copy (default: its own cache). A second call
            with the same file (same size and mtime) and options reuses that copy.
        text_column: the JSONL field or hub dataset column that holds the text.

    Raises:
        DataError: missing path, unknown preset or split, empty corpus, corrupt gzip, bytes
            that are not UTF-8, a JSON line without the text column.
    """
    for arg, value in (("max_docs", max_docs), ("max_chars", max_chars)):
        if value is not None and value <= 0:
            raise DataError(f"{arg} must be a positive number or None, got {value}.")
    if not text_column:
        raise DataError("text_column must name a field or column, got an empty name.")
    spec = str(name_or_path)
    limits = dict(max_docs=max_docs, max_chars=max_chars, cache_dir=cache_dir)
    if spec.startswith(HUB_PREFIX):
        return load_hub_corpus(spec, split, text_column=text_column, **limits)
    if spec in PRESETS:
        preset = PRESETS[spec]
        if split not in preset.files:
            raise DataError(
                f"corpus {spec!r} has no split {split!r}; its splits are {', '.join(preset.files)}."
            )
        path = corpus_files(spec)[split]
        if not path.exists():
            raise DataError(
                f"corpus {spec!r} split {split!r}: file {path} is missing; build it with `edlm data fetch {spec}` "
                "(into ./.data), or set EDLM_DATA_DIR to a folder that holds it."
            )
        return load_files([path], normalize=preset.normalize, text_column=text_column, **limits)
    path = Path(spec).expanduser()
    if path.is_dir() and split_file(path, "train") is not None:  # a folder split into files
        found = split_file(path, split)
        if found is None:
            raise DataError(f"directory {path} has no {split}.<ext> file (ext one of {', '.join(EXTENSIONS)}); "
                            "name the split its file has (e.g. --valid-split validation).")
        return load_files([found], text_column=text_column, **limits)
    if path.is_dir() or path.is_file():
        if split not in SINGLE_FILE_SPLITS:
            what = "a single file" if path.is_file() else "a folder without train.<ext>, read as one corpus"
            raise DataError(
                f"{spec} is {what}: its splits are train and valid (its last {SINGLE_FILE_VALID:.0%}) and all "
                f"(the whole of it), not {split!r}; for other splits use a folder holding {split}.<ext> files."
            )
        files = folder_files(path) if path.is_dir() else [path]
        return load_files(files, text_column=text_column, part=None if split == "all" else split, **limits)
    if _looks_like_path(spec):
        raise DataError(f"no such corpus file or directory: {spec}")
    if "/" in spec:
        raise DataError(f"no such corpus file or directory: {spec} (for a Hugging Face hub dataset write "
                        f"{HUB_PREFIX}{spec})")
    raise _unknown_corpus(spec)


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~")) or spec.endswith(EXTENSIONS) or spec.count("/") > 1 or "\\" in spec
    )
