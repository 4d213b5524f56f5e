"""Corpora: presets over the shared data folder, local files, and Hugging Face hub datasets.

`load_corpus` always returns a `datasets.Dataset` with one string column ``text``, one row per
document. Local formats (picked by file name):

- ``.txt`` / ``.txt.gz``: the **whole file is one document**. tinyshakespeare is one stream of
  speeches, and "wrap" packing must not put separators inside it. For many documents, use jsonl.
- ``.jsonl`` / ``.jsonl.gz``: one JSON object per line, the document in its ``text`` field
  (other fields are dropped; empty texts are skipped).
- FASTA (``.fa``, ``.fasta``, ``.fna``, each optionally ``.gz``): one document per ``>`` record,
  its sequence lines joined and uppercased. Non-ACGT letters (N, IUPAC codes) are kept; the DNA
  tokenizer maps them to ``[UNK]``.

A directory is read as ``<dir>/<split>.<ext>`` with any extension above. Anything else that is
not a preset and contains one ``/`` is tried as a hub dataset id (``owner/name`` or
``owner/name:config``) through `datasets.load_dataset`.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import Dataset, Features, Value
from transformers import PreTrainedTokenizerFast

from edlm.data.tokenizers import (
    char_tokenizer_from_text,
    dna_tokenizer,
    text8_normalize,
    text8_tokenizer,
    train_bpe_tokenizer,
)
from edlm.errors import DataError, first_line

__all__ = ["CorpusPreset", "PRESETS", "find_data_dir", "load_corpus", "corpus_files", "preset_tokenizer"]


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

_TXT = (".txt", ".txt.gz")
_JSONL = (".jsonl", ".jsonl.gz")
_FASTA = (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz")
_EXTENSIONS = _TXT + _JSONL + _FASTA
SINGLE_FILE_SPLITS = ("train", "valid", "all")
SINGLE_FILE_VALID = 0.05  # a single corpus file holds out its last 5 % (documents, or characters) as valid
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
    """The files of preset ``name`` by split (they need not exist)."""
    preset = _preset(name)
    root = find_data_dir(Path(next(iter(preset.files.values()))).parts[0])
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
        raise DataError(
            f"unknown corpus {name!r}: presets are {', '.join(PRESETS)}; "
            "or give a .txt/.jsonl(.gz)/FASTA path, a directory, or a hub id owner/name."
        )
    return PRESETS[name]


# ----------------------------------------------------------------------------- entry point
def load_corpus(
    name_or_path: str | os.PathLike,
    split: str = "train",
    max_docs: int | None = None,
    max_chars: int | None = None,
    cache_dir: str | None = None,
) -> Dataset:
    """Load a corpus as a `Dataset` with one column ``text`` (one row per document).

    Args:
        name_or_path: a preset (`PRESETS`), a file, a directory holding ``<split>.<ext>``, or a
            hub dataset id ``owner/name[:config]``.
        split: which split; a single file has "train" and "valid" (its last 5 %, `single_file_part`) and "all".
        max_docs: keep only the first this many documents.
        max_chars: keep only the first this many characters (the last document is cut).
        cache_dir: where `datasets` keeps its Arrow copy (default: its own cache). A second call
            with the same file (same size and mtime) and options reuses that copy.

    Raises:
        DataError: missing path, unknown preset or split, empty corpus, corrupt gzip, bytes
            that are not UTF-8, a JSON line without ``text``.
    """
    for arg, value in (("max_docs", max_docs), ("max_chars", max_chars)):
        if value is not None and value <= 0:
            raise DataError(f"{arg} must be a positive number or None, got {value}.")
    spec = str(name_or_path)
    normalize = None
    part = None  # a single file: "train" (all but its tail) or "valid" (the tail)
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
        normalize = preset.normalize
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            path = _split_file(path, split)
        elif path.is_file():
            if split not in SINGLE_FILE_SPLITS:
                raise DataError(
                    f"{spec} is a single file: its splits are train and valid (its last "
                    f"{SINGLE_FILE_VALID:.0%}) and all (the whole file), not {split!r}; pass a directory "
                    f"holding {split}.* for that."
                )
            part = None if split == "all" else split
        elif _looks_like_path(spec):
            raise DataError(f"no such corpus file or directory: {spec}")
        elif spec.count("/") == 1:
            return _load_hub(spec, split, max_docs, max_chars, cache_dir)
        else:
            _preset(spec)  # raises, listing the presets
    return _load_local(path, normalize, max_docs, max_chars, cache_dir, part)


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~")) or spec.endswith(_EXTENSIONS) or spec.count("/") > 1 or "\\" in spec
    )


def _split_file(directory: Path, split: str) -> Path:
    found = [directory / f"{split}{ext}" for ext in _EXTENSIONS if (directory / f"{split}{ext}").is_file()]
    if not found:
        raise DataError(
            f"directory {directory} has no {split}.<ext> file (ext one of {', '.join(_EXTENSIONS)})."
        )
    if len(found) > 1:
        raise DataError(
            f"directory {directory} has several {split} files ({', '.join(p.name for p in found)}); keep one."
        )
    return found[0]


# ----------------------------------------------------------------------------- local files
_FEATURES = Features({"text": Value("string")})


def _load_local(
    path: Path, normalize: str | None, max_docs: int | None, max_chars: int | None, cache_dir: str | None,
    part: str | None = None,
) -> Dataset:
    name = path.name.lower()
    if name.endswith(_TXT):
        kind = "txt"
    elif name.endswith(_JSONL):
        kind = "jsonl"
    elif name.endswith(_FASTA):
        kind = "fasta"
    else:
        raise DataError(
            f"cannot tell the format of {path}: use .txt, .jsonl, .jsonl.gz or FASTA (.fa/.fasta/.fna, optionally .gz)."
        )
    stat = path.stat()
    gen_kwargs = {
        "path": str(path.resolve()),
        "kind": kind,
        "normalize": normalize,
        "max_docs": max_docs,
        "max_chars": max_chars,
        "stamp": (stat.st_size, stat.st_mtime_ns),  # a changed file gets a new cache entry
        "part": part,
    }
    try:
        return Dataset.from_generator(
            _generate, features=_FEATURES, gen_kwargs=gen_kwargs, cache_dir=cache_dir
        )
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, DataError):
            raise cause from None
        raise DataError(f"could not read {path}: {cause or exc}") from exc


def single_file_part(docs: list[str], part: str) -> list[str]:
    """The ``part`` ("train" or "valid") of a single-file corpus: with several documents the last
    `SINGLE_FILE_VALID` of them (at least one) are valid; one document is cut at the first line break after
    (1 − `SINGLE_FILE_VALID`) of its characters (at that point if it has none), the tail being valid."""
    if len(docs) >= 2:
        n_valid = max(1, round(SINGLE_FILE_VALID * len(docs)))
        return docs[: len(docs) - n_valid] if part == "train" else docs[len(docs) - n_valid:]
    text = docs[0] if docs else ""
    at = int(len(text) * (1.0 - SINGLE_FILE_VALID))
    newline = text.find("\n", max(at - 1, 0))  # the first line that starts at or after that point
    cut = newline + 1 if 0 <= newline < len(text) - 1 else at
    return [text[:cut]] if part == "train" else [text[cut:]]


def _generate(
    path: str, kind: str, normalize: str | None, max_docs: int | None, max_chars: int | None, stamp,
    part: str | None = None,
) -> Iterator[dict]:
    """Yield ``{"text": doc}`` rows, turning decoding faults into DataErrors that name the file."""
    docs = {"txt": _read_txt, "jsonl": _read_jsonl, "fasta": _read_fasta}[kind](path)
    n_docs = n_chars = 0
    try:
        if part is not None:
            docs = single_file_part([d for d in docs if d], part)
        for doc in docs:
            if normalize == "text8":
                doc = text8_normalize(doc)
            if not doc:
                continue
            if max_chars is not None and n_chars + len(doc) > max_chars:
                doc = doc[: max_chars - n_chars]
            yield {"text": doc}
            n_docs += 1
            n_chars += len(doc)
            if (max_docs is not None and n_docs >= max_docs) or (
                max_chars is not None and n_chars >= max_chars
            ):
                break
    except UnicodeDecodeError:
        offset = _first_bad_byte(path)
        raise DataError(
            f"{path} is not UTF-8 text (invalid byte at offset {offset}); re-encode it as UTF-8."
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path} is not a readable gzip file ({exc}); it is corrupt or truncated, copy it again."
        ) from None
    if n_docs == 0:
        raise DataError(f"corpus file {path} holds no text (0 documents); check the file and its format.")


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="strict", newline="")
    return open(path, encoding="utf-8", errors="strict", newline="")  # newline="": keep \r\n as written


def _first_bad_byte(path: str) -> int | str:
    """Offset (in the uncompressed stream) of the first byte that is not valid UTF-8."""
    opener = gzip.open if path.endswith(".gz") else open
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = pending = 0
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(1 << 20):
                pending = len(decoder.getstate()[0])  # bytes of a split character held from the last chunk
                decoder.decode(chunk)
                offset += len(chunk)
            pending = len(decoder.getstate()[0])
            decoder.decode(b"", final=True)  # a cut-off character at the very end
    except UnicodeDecodeError as exc:
        return offset - pending + exc.start
    except (OSError, EOFError, zlib.error):
        pass
    return "unknown"


def _read_txt(path: str) -> Iterator[str]:
    with _open_text(path) as f:
        yield f.read()


def _read_jsonl(path: str) -> Iterator[str]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path} line {lineno} is not valid JSON ({exc.msg}); each line must be one JSON object."
                ) from None
            if not isinstance(record, dict) or "text" not in record:
                raise DataError(
                    f'{path} line {lineno} has no \'text\' field; each line must be an object like {{"text": "..."}}.'
                )
            text = record["text"]
            if not isinstance(text, str):
                raise DataError(f"{path} line {lineno}: 'text' must be a string, got {type(text).__name__}.")
            yield text


def _read_fasta(path: str) -> Iterator[str]:
    with _open_text(path) as f:
        parts: list[str] | None = None
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if line.startswith(">"):
                if parts:
                    yield "".join(parts)
                parts = []
            elif line and not line.startswith(";"):  # ';' = old-style FASTA comment
                if parts is None:
                    raise DataError(
                        f"{path} line {lineno}: sequence before the first '>' header; is this a FASTA file?"
                    )
                parts.append(line.upper())
        if parts:
            yield "".join(parts)


# ----------------------------------------------------------------------------- hub
def _load_hub(
    spec: str, split: str, max_docs: int | None, max_chars: int | None, cache_dir: str | None
) -> Dataset:
    """``owner/name[:config]`` through `datasets.load_dataset`; needs a network (not run in tests)."""
    name, _, config = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split, cache_dir=cache_dir)
    except Exception as exc:
        raise DataError(f"could not load hub dataset {spec!r} split {split!r}: {first_line(exc)}") from exc
    if "text" not in ds.column_names:
        raise DataError(f"hub dataset {spec!r} has no 'text' column (columns: {', '.join(ds.column_names)}).")
    ds = ds.select_columns(["text"])
    if max_docs is not None:
        ds = ds.select(range(min(max_docs, len(ds))))
    if max_chars is not None:
        ds = _take_chars(ds, max_chars)
    if len(ds) == 0:
        raise DataError(f"hub dataset {spec!r} split {split!r} is empty.")
    return ds


def _take_chars(ds: Dataset, max_chars: int) -> Dataset:
    total = 0
    for i, text in enumerate(ds["text"]):
        if total + len(text) >= max_chars:
            head = ds.select(range(i))
            cut = Dataset.from_dict({"text": [text[: max_chars - total]]}, features=_FEATURES)
            return datasets.concatenate_datasets([head, cut])
        total += len(text)
    return ds
