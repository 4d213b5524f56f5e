"""Fetch or rebuild the bundled corpora (`PRESETS`) from their public sources into a data folder.

``fetch_corpus(name, dest)`` downloads a preset's sources and writes ``dest/<folder>/{train,valid}.*`` exactly as
the presets expect. ``edlm.data.prepare`` says what each source is and how it is processed, as documented in
``shared/data/SOURCES.md``. ``text8_wiki`` is derived on the fly from ``wikipedia_en``: fetching it builds
``wikipedia_en``.

``.gz`` files are written with ``gzip`` level 9, mtime 0 and no file name, the same bytes as the reference
build. Each file is written atomically (`edlm.atomic.atomic_write`), and files already present and readable
are kept, so a second call downloads nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from edlm.atomic import atomic_write
from edlm.data.prepare import (
    ECOLI_K12,
    SHAKESPEARE_OUTPUT_SHA256,
    SHAKESPEARE_SHA256,
    SHAKESPEARE_URL,
    WIKI_MIN_CHARS,
    WIKI_REFERENCE_SHA256,
    check_genome,
    fasta_text,
    genome_header,
    parse_fasta_sequence,
    parse_wikiextractor,
    select_wiki_docs,
    split_genome,
    split_shakespeare,
    wiki_jsonl,
    wiki_urls,
)
from edlm.data.sources import PRESETS
from edlm.errors import DataError

__all__ = ["fetch_corpus", "known_corpora", "write_fasta"]

# ============================================================================= files
def _gzip_bytes(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
        f.write(data)
    return buffer.getvalue()


def _write_output(path: Path, text: str) -> Path:
    data = text.encode("utf-8")
    if path.name.endswith(".gz"):
        data = _gzip_bytes(data)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_fasta(path: str | os.PathLike, header: str, seq: str, width: int = 80) -> Path:
    """Write `fasta_text` to ``path`` atomically, gzip-compressed when it ends in ``.gz``."""
    return _write_output(Path(path), fasta_text(header, seq, width))


def _is_complete(path: Path) -> bool:
    """A present, non-empty file that reads to its end (gzip CRC checked) as UTF-8."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                size = 0
                while chunk := f.read(1 << 22):
                    size += len(chunk)
            return size > 0
        return len(path.read_text(encoding="utf-8")) > 0
    except (OSError, EOFError, UnicodeDecodeError, ValueError):
        return False


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ============================================================================= downloads
_USER_AGENT = "edlm-fetch/0.1 (+https://pypi.org/project/edlm/)"
_TIMEOUT_S = 120
_ATTEMPTS = 3


def _download(url: str, expected_sha256: str | None = None, *, progress: bool = True) -> bytes:
    """GET ``url`` (up to 3 tries for network faults and 5xx), with a tqdm byte bar when ``progress``;
    check the sha256 of the bytes if ``expected_sha256`` is given. Raises a one-line `DataError`."""
    for attempt in range(_ATTEMPTS):
        try:
            data = _get(url, progress)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt + 1 == _ATTEMPTS:
                raise _download_error(url, f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if attempt + 1 == _ATTEMPTS:
                raise _download_error(url, getattr(exc, "reason", None) or exc) from None
        time.sleep(2**attempt)
    if expected_sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != expected_sha256:
            raise _download_error(url, f"sha256 {got[:12]}… is not the pinned {expected_sha256[:12]}…")
    return data


def _get(url: str, progress: bool) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        name = url.rsplit("/", 1)[-1].split("?", 1)[0][:40]
        chunks = []
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=name, disable=not progress, leave=False
        ) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    data = b"".join(chunks)
    if total is not None and len(data) != total:
        raise OSError(f"got {len(data)} of {total} bytes")
    return data


def _download_error(url: str, reason: object) -> DataError:
    return DataError(
        f"could not download {url} ({reason}); without network, set EDLM_DATA_DIR to a folder that holds "
        "the corpora, or copy such a folder (e.g. shared/data) to ./.data."
    )


def _decode(data: bytes, url: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{url} is not UTF-8 text (byte {exc.start}); the source is not what was expected."
        ) from None


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


# ============================================================================= builders
def _build_tinyshakespeare(paths: dict[str, Path], progress: bool) -> None:
    raw = _download(SHAKESPEARE_URL, SHAKESPEARE_SHA256, progress=progress)
    text = _decode(raw, SHAKESPEARE_URL)
    train, valid = split_shakespeare(text)
    outputs = {"train": train, "valid": valid}
    if hashlib.sha256(raw).hexdigest() == SHAKESPEARE_SHA256:  # the pinned input: outputs are known too
        for split, content in outputs.items():
            if _sha256_text(content) != SHAKESPEARE_OUTPUT_SHA256[split]:
                raise DataError(
                    f"tinyshakespeare {split}.txt does not match its documented sha256; the split code is wrong."
                )
    for split, path in paths.items():
        _write_output(path, outputs[split])


def _build_wikipedia_en(paths: dict[str, Path], progress: bool) -> None:
    selected: dict[str, list[dict]] = {"train": [], "valid": []}
    n_docs = 0
    urls = wiki_urls()
    for url in tqdm(urls, desc="wikipedia_en", unit="file", disable=not progress):
        docs = parse_wikiextractor(_decode(_download(url, progress=False), url))
        n_docs += len(docs)
        for split, kept in select_wiki_docs(docs).items():
            selected[split].extend(kept)
    if not selected["train"] or not selected["valid"]:
        raise DataError(
            f"wikipedia_en: the {len(urls)} source files gave no train or no valid document "
            f"({n_docs} docs of >= {WIKI_MIN_CHARS} chars); the source is not what was expected."
        )
    for split, path in paths.items():
        text = wiki_jsonl(selected[split])
        reference = WIKI_REFERENCE_SHA256.get(split)
        if reference is not None and _sha256_text(text) != reference:
            warnings.warn(
                f"wikipedia_en {split}: {len(selected[split])} docs, but the content differs from the reference "
                "build in shared/data; it is usable, but results are not comparable byte for byte.",
                stacklevel=3,
            )
        _write_output(path, text)


def _build_dna_ecoli_k12(paths: dict[str, Path], progress: bool) -> None:
    spec = ECOLI_K12
    seq = parse_fasta_sequence(_download(spec.url, progress=progress).decode("ascii", errors="replace"))
    check_genome(seq, spec)
    parts = split_genome(seq, spec.splits)
    for split, path in paths.items():
        start, end, sub = parts[split]
        text = fasta_text(genome_header(split, start, end, spec), sub)
        reference = spec.output_sha256.get(split)
        if reference is not None and _sha256_text(text) != reference:
            raise DataError(
                f"dna_ecoli_k12 {split}: the FASTA differs from the reference build although the genome checks "
                "passed; the split or header code is wrong."
            )
        _write_output(path, text)


_BUILDERS = {
    "tinyshakespeare": _build_tinyshakespeare,
    "wikipedia_en": _build_wikipedia_en,
    "dna_ecoli_k12": _build_dna_ecoli_k12,
}


def _folder(name: str) -> str:
    return Path(next(iter(PRESETS[name].files.values()))).parts[0]


def known_corpora() -> list[str]:
    """The presets that `fetch_corpus` can build."""
    return [name for name in PRESETS if _folder(name) in _BUILDERS]


# ============================================================================= entry point
def fetch_corpus(name: str, dest: str | os.PathLike, *, progress: bool = True) -> Path:
    """Download and build preset ``name`` into ``dest/<folder>/`` (``folder`` = the preset's, e.g.
    ``wikipedia_en`` for both ``wikipedia_en`` and ``text8_wiki``) and return that folder.

    Files already present and readable are kept; if all are, nothing is downloaded. Point
    ``$EDLM_DATA_DIR`` at ``dest`` (or use ``dest = ./.data``) to train on the result.

    Raises:
        DataError (a ValueError): unknown ``name``, a failed or corrupt download, a source that is not
            what SOURCES.md documents.
    """
    if name not in PRESETS or _folder(name) not in _BUILDERS:
        raise DataError(f"unknown corpus {name!r}; known: {', '.join(known_corpora())}.")
    folder = _folder(name)
    root = Path(dest).expanduser()
    paths = {split: root / rel for split, rel in PRESETS[name].files.items()}
    todo = {split: path for split, path in paths.items() if not _is_complete(path)}
    out = root / folder
    if folder != name:
        _say(progress, f"{name} is derived from {folder} when loaded; building {folder}.")
    if not todo:
        _say(
            progress,
            f"{folder}: {', '.join(p.name for p in paths.values())} already in {out}; nothing to do.",
        )
        return out
    _BUILDERS[folder](todo, progress)
    _say(progress, f"{folder}: wrote {', '.join(p.name for p in todo.values())} to {out}.")
    return out
