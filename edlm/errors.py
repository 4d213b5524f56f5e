"""Errors that the CLI turns into one clear line (no traceback unless ``--debug``)."""

import errno
import os


class EdlmError(Exception):
    """A user-facing error: bad input, a bad path, a mismatch between models, a numerical fault.

    The message should say what was wrong and how to fix it, in one line.
    """


class ConfigError(EdlmError, ValueError):
    """An unknown preset or key, or a value of the wrong type."""


class CheckpointError(EdlmError, ValueError):
    """A missing, truncated, unsafe or mismatched checkpoint."""


class DataError(EdlmError, ValueError):
    """A missing, empty, corrupt or undecodable data file."""


class NumericalError(EdlmError, FloatingPointError):
    """NaN or inf found in logits, energies or losses."""


class OutputError(EdlmError, OSError):
    """An output location that cannot be written: a file where a directory should be, a read-only file system,
    a full disk, a directory another run owns (``edlm.locks``)."""


# errno values that only a write raises: "cannot write PATH: REASON"; any other error: "cannot access PATH: REASON"
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EEXIST}


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first line of an exception's message, for a one-line error; ``default`` (else the exception's type
    name) when the message is empty."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if default is None else default


def os_error_reason(exc: OSError) -> str:
    """What the system said, in lower case: "read-only file system", "no space left on device"."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else first_line(exc))
    return reason[:1].lower() + reason[1:]


def describe_os_error(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for a failed file operation: ``cannot write runs/x/config.yaml: read-only file system``.

    ``path`` defaults to the file the error names (``filename2`` of a rename is where it was going); an error
    that names no file and has no errno (a network error, say) keeps its own first line."""
    if path is None:
        path = exc.filename2 if exc.filename2 is not None else exc.filename
    if exc.errno is None and exc.strerror is None:
        return first_line(exc) if path is None else f"{path}: {first_line(exc)}"
    if path is None:
        return os_error_reason(exc)
    verb = "cannot write" if exc.errno in _WRITE_ERRNOS else "cannot access"
    return f"{verb} {os.fsdecode(path)}: {os_error_reason(exc)}"
