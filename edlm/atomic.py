"""Atomic file writes: what edlm writes (weights, configs, checkpoints, samples, results) goes through
`atomic_write`, so a crash or Ctrl-C leaves the previous file or the new one whole, never half of one.

The temporary file is ``.<name>.<random>.tmp`` beside the target (same file system, so the final
``os.replace`` is a rename); `edlm.training.callbacks.sweep_staging` knows that name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Create ``path``'s folder if needed, let ``write(tmp_path)`` fill a temporary file beside ``path``,
    sync it to disk, make it world-readable (0644, as a plain ``open`` would) and rename it over ``path``.
    If ``write`` raises, the temporary file is removed and ``path`` is untouched; an ``OSError`` (a full disk, a
    read-only file system) is raised again naming ``path``. Returns ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # the folder (or a folder above it), or the temporary file: about writing `path`
        raise _naming(exc, path, exc.filename) from exc
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except OSError as exc:
        raise _naming(exc, path, tmp) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _naming(exc: OSError, path: Path, tmp: str | None = None) -> OSError:
    """``exc`` as the same kind of error about ``path`` when it named the temporary file, the folder or no file at
    all, so a full disk or a read-only file system reads "cannot write PATH: ..." (``edlm.errors``); an error about
    another file (one the ``write`` callback read) is left as it is."""
    if exc.errno is None or exc.filename not in (None, tmp, str(path.parent)):
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))  # picks the subclass by errno


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
