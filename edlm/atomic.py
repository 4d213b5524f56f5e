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
    If ``write`` raises, the temporary file is removed and ``path`` is untouched. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
