"""Local corpus files: plain text, JSONL and FASTA, one file or a folder of them, read into a `datasets.Dataset`.

Formats, picked by file name:

- ``.txt`` / ``.txt.gz``: the **whole file is one document**. tinyshakespeare is one stream of speeches,
  and "wrap" packing must not put separators inside it. For many documents, use JSONL or a folder.
- ``.jsonl`` / ``.jsonl.gz``: one JSON object per line, the document in its text column (``text`` unless
  told otherwise; other fields are dropped, empty texts skipped).
- FASTA (``.fa``, ``.fasta``, ``.fna``, each optionally ``.gz``): one document per ``>`` record, the header
  skipped, its sequence lines joined and uppercased (ACGT, N and the other IUPAC letters; the DNA tokenizer
  maps all but ACGT to ``[UNK]``).

Several files (a folder) are read in sorted path order, each file's documents in turn. A corpus that is not
already split (one file, or a folder without ``train.<ext>``) holds out its last `SINGLE_FILE_VALID` as
valid (`single_file_part`).
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import datasets
from datasets import Dataset, Features, Value

from edlm.data.tokenizers import text8_normalize
from edlm.errors import DataError

__all__ = ["TXT", "JSONL", "FASTA", "EXTENSIONS", "SINGLE_FILE_SPLITS", "SINGLE_FILE_VALID", "file_kind",
           "folder_files", "split_file", "load_files", "single_file_part"]

TXT = (".txt", ".txt.gz")
JSONL = (".jsonl", ".jsonl.gz")
FASTA = (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz")
EXTENSIONS = TXT + JSONL + FASTA
SINGLE_FILE_SPLITS = ("train", "valid", "all")
SINGLE_FILE_VALID = 0.05  # a corpus not split into files holds out its last 5 % (documents, or characters) as valid
FEATURES = Features({"text": Value("string")})


def file_kind(path: Path) -> str | None:
    """"txt", "jsonl" or "fasta" by the file's name; None for any other name."""
    name = path.name.lower()
    for kind, extensions in (("txt", TXT), ("jsonl", JSONL), ("fasta", FASTA)):
        if name.endswith(extensions):
            return kind
    return None


def split_file(directory: Path, split: str) -> Path | None:
    """``<directory>/<split>.<ext>`` for one of `EXTENSIONS`; None if there is none; several are an error."""
    found = [directory / f"{split}{ext}" for ext in EXTENSIONS if (directory / f"{split}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(
            f"directory {directory} has several {split} files ({', '.join(p.name for p in found)}); keep one."
        )
    return found[0] if found else None


def folder_files(directory: Path) -> list[Path]:
    """Every corpus file under ``directory`` (sub-folders included, hidden ones not), in sorted path order."""
    files = sorted(
        p for p in directory.rglob("*")
        if p.is_file() and file_kind(p) is not None
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    if not files:
        raise DataError(f"directory {directory} holds no corpus file (names ending in {', '.join(EXTENSIONS)}).")
    return files


# ----------------------------------------------------------------------------- into a Dataset
def load_files(
    paths: list[Path],
    *,
    text_column: str = "text",
    normalize: str | None = None,
    max_docs: int | None = None,
    max_chars: int | None = None,
    cache_dir: str | None = None,
    part: str | None = None,
) -> Dataset:
    """The documents of ``paths`` as a `Dataset` with one column ``text``.

    Args:
        paths: corpus files, read in this order.
        text_column: the JSONL field that holds each document.
        normalize: "text8" maps each document to lowercase a-z + single spaces.
        max_docs, max_chars: keep only a prefix (the last document cut).
        cache_dir: where `datasets` keeps its Arrow copy; the same files (same sizes and mtimes) and options
            reuse it.
        part: None = every document; "train" or "valid" = that part of them (`single_file_part`).
    """
    for path in paths:
        if file_kind(path) is None:
            raise DataError(f"cannot tell the format of {path}: use .txt, .jsonl, .jsonl.gz or FASTA "
                            "(.fa/.fasta/.fna, optionally .gz).")
    gen_kwargs = {
        "paths": tuple(str(p.resolve()) for p in paths),  # a tuple: `datasets` would shard a list across calls
        "text_column": text_column,
        "normalize": normalize,
        "max_docs": max_docs,
        "max_chars": max_chars,
        "stamps": tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths),  # changed file: new cache entry
        "part": part,
    }
    try:
        return Dataset.from_generator(_generate, features=FEATURES, gen_kwargs=gen_kwargs, cache_dir=cache_dir)
    except datasets.exceptions.DatasetGenerationError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, DataError):
            raise cause from None
        raise DataError(f"could not read {paths[0] if len(paths) == 1 else paths[0].parent}: {cause or exc}"
                        ) from exc


def single_file_part(docs: list[str], part: str) -> list[str]:
    """The ``part`` ("train" or "valid") of a corpus that is not split into files: with several documents the
    last `SINGLE_FILE_VALID` of them (at least one) are valid; one document is cut at the first line break after
    (1 − `SINGLE_FILE_VALID`) of its characters (at that point if it has none), the tail being valid."""
    if len(docs) >= 2:
        n_valid = max(1, round(SINGLE_FILE_VALID * len(docs)))
        return docs[: len(docs) - n_valid] if part == "train" else docs[len(docs) - n_valid:]
    text = docs[0] if docs else ""
    at = int(len(text) * (1.0 - SINGLE_FILE_VALID))
    newline = text.find("\n", max(at - 1, 0))  # the first line that starts at or after that point
    cut = newline + 1 if 0 <= newline < len(text) - 1 else at
    return [text[:cut]] if part == "train" else [text[cut:]]


def _generate(paths: tuple[str, ...], text_column: str, normalize: str | None, max_docs: int | None,
              max_chars: int | None, stamps, part: str | None = None) -> Iterator[dict]:
    """Yield ``{"text": doc}`` rows of every file in turn."""
    docs: Iterator[str] = (doc for path in paths for doc in _documents(path, text_column))
    if part is not None:
        docs = iter(single_file_part([d for d in docs if d], part))
    n_docs = n_chars = 0
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
        if (max_docs is not None and n_docs >= max_docs) or (max_chars is not None and n_chars >= max_chars):
            break
    if n_docs == 0:
        where = paths[0] if len(paths) == 1 else f"{len(paths)} files under {Path(paths[0]).parent}"
        raise DataError(f"corpus file {where} holds no text (0 documents); check the file and its format.")


def _documents(path: str, text_column: str) -> Iterator[str]:
    """The documents of one file, decoding faults turned into DataErrors that name it."""
    kind = file_kind(Path(path))
    try:
        if kind == "txt":
            with _open_text(path) as f:
                yield f.read()
        elif kind == "jsonl":
            yield from _read_jsonl(path, text_column)
        else:
            yield from _read_fasta(path)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text (invalid byte at offset {_first_bad_byte(path)}); "
                        "re-encode it as UTF-8.") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc}); it is corrupt or truncated, copy it "
                        "again.") from None


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


def _read_jsonl(path: str, text_column: str) -> Iterator[str]:
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
            if not isinstance(record, dict) or text_column not in record:
                fields = f" (its fields: {', '.join(list(record)[:8])})" if isinstance(record, dict) else ""
                raise DataError(f"{path} line {lineno} has no {text_column!r} field{fields}; name the field that "
                                "holds the text with --text-column (data.text_column).")
            text = record[text_column]
            if not isinstance(text, str):
                raise DataError(f"{path} line {lineno}: {text_column!r} must be a string, got {type(text).__name__}.")
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
