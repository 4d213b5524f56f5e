"""Errors that the CLI turns into one clear line (no traceback unless ``--debug``)."""


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


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first line of an exception's message, for a one-line error; ``default`` (else the exception's type
    name) when the message is empty."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if default is None else default
