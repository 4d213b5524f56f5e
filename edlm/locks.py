"""One owner per output directory: a training run dir, a sweep dir.

    with dir_lock("runs/tiny-mdlm", flag="--run-dir"):   # checks the dir, creates it, takes <dir>/.edlm.lock
        ...                                               # write into it; the lock goes when the block ends

The lock is a small JSON file (pid, host, command, start time) created with ``O_CREAT | O_EXCL``, so of two
processes that start together exactly one gets it. It is removed when the block ends, by a return, an exception
or Ctrl-C. A second run into a directory in use stops at once with one line that says who holds it::

    runs/x is in use by pid 1234 on host h since 2025-01-02T03:04:05+00:00 (edlm train mdlm ...); wait for it
    to end or use another --run-dir

It does not wait: a training run holds its directory for hours or days, and a second command that sits queued
that long is better written as ``wait``/``&&`` in a shell.

Stale locks. A process killed with SIGKILL (or a machine that lost power) leaves its lock behind. A lock of
*this* host whose pid is gone (or is now another process, or the machine has rebooted since) is stale: a warning
line says so and the lock is taken over, so ``--resume`` after a crash just works. A lock of *another* host is
never taken over, however old: edlm cannot see that machine's processes, and a run may rightly hold its
directory for weeks; the message names the lock file to delete once that run is known to be gone.

Under DDP or torchrun several processes write one directory: only the one that owns it (global rank 0) takes
the lock (``enabled=False`` for the others). Within one process the lock is re-entrant: the sweep's final
``merge_results`` runs under the sweep's own lock.

Before the lock, the directory itself is checked: a file in its place, a file in its path, a directory that
cannot be created or written (read-only file system, full disk, no permission) is an ``OutputError`` of one
line, before any long work starts. An ``OSError`` that names no file (a buffered write of a logger on a full
disk) escaping the block is re-raised naming the directory. A directory the block created and left empty is
removed again, so a run that failed at once leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from edlm.errors import OutputError, os_error_reason

__all__ = ["LOCK_NAME", "DirectoryInUseError", "dir_lock", "read_lock"]

LOCK_NAME = ".edlm.lock"
_UNREADABLE_GRACE_S = 2.0  # a lock file being written by its owner is unreadable for microseconds, not seconds
_HELD: dict[str, list] = {}  # resolved lock path -> [token, depth]: the locks this process holds


class DirectoryInUseError(OutputError):
    """Another process owns the directory (its lock is live)."""

    def __init__(self, message: str, holder: dict | None = None):
        super().__init__(message)
        self.holder = holder or {}


# ----------------------------------------------------------------------------- this process
def _command() -> str:
    argv = [Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)] if sys.argv else []
    return shlex.join(argv) or "python"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after "pid (comm)": state, ppid, ...; None where unreadable (not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def _process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None where unknown."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    fields = _proc_stat(pid)
    return not (fields and fields[0] == "Z")  # a zombie has ended, only its parent has not reaped it


# ----------------------------------------------------------------------------- the lock file
def read_lock(directory: str | os.PathLike) -> dict | None:
    """The lock record of ``directory`` (pid, host, command, started, ...), or None if it has none / unreadable."""
    try:
        record = json.loads((Path(directory) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _stale_reason(record: dict, path: Path) -> str | None:
    """Why a lock is stale (its owner is gone), or None when it may be live."""
    if record.get("host") != socket.gethostname():
        return None  # another machine: its processes cannot be seen from here
    if record.get("boot_id") and _boot_id() and record["boot_id"] != _boot_id():
        return "which is no longer running (the machine has restarted since)"
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return "which names no process"
    if not _alive(pid):
        return "which is no longer running"
    start = record.get("pid_start")
    if start is not None and _process_start(pid) not in (None, start):
        return f"which is no longer running (pid {pid} is now another process)"
    if pid == os.getpid() and str(path) not in _HELD:
        return "which is no longer running (this process holds no such lock)"
    return None


def _describe(record: dict) -> str:
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')} since {record.get('started', '?')} "
            f"({record.get('command', '?')})")


def _in_use(directory: Path, path: Path, record: dict, flag: str) -> DirectoryInUseError:
    msg = f"{directory} is in use by {_describe(record)}; wait for it to end or use another {flag}"
    if record.get("host") != socket.gethostname():
        msg += (f" (a lock from another machine is never taken over: if that run is gone, delete {path})")
    return DirectoryInUseError(msg, record)


def _take_over(path: Path, seen: bytes) -> bool:
    """Remove the stale lock whose bytes are ``seen``; False if it changed meanwhile (someone else took it)."""
    aside = path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)  # atomic: of two processes taking over, one moves it
    except FileNotFoundError:
        return False
    try:
        if aside.read_bytes() == seen:
            return True
        with contextlib.suppress(OSError):  # a fresh lock that another process had just taken: put it back
            os.link(aside, path)
        return False
    finally:
        with contextlib.suppress(OSError):
            aside.unlink()


def _read_for_takeover(path: Path) -> tuple[bytes, dict | None] | None:
    """(bytes, record) of an existing lock file; record None when it stays unreadable past a short grace; None when
    the file has gone."""
    while True:
        try:
            data = path.read_bytes()
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            record = json.loads(data.decode("utf-8"))
            if isinstance(record, dict):
                return data, record
        except (UnicodeDecodeError, ValueError):
            pass
        if age > _UNREADABLE_GRACE_S:
            return data, None  # its owner died between creating and writing it
        time.sleep(0.05)


def _acquire(directory: Path, flag: str, command: str | None, warn) -> str:
    path = directory / LOCK_NAME
    key = str(path.resolve())
    token = uuid.uuid4().hex
    pid = os.getpid()
    record = {"pid": pid, "host": socket.gethostname(), "command": command or _command(),
              "started": datetime.now(timezone.utc).replace(microsecond=0).isoformat(), "boot_id": _boot_id(),
              "pid_start": _process_start(pid), "token": token}
    data = (json.dumps(record, indent=2) + "\n").encode("utf-8")
    for _ in range(100):  # each turn: create it, or find a live holder, or remove a stale one and retry
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            found = _read_for_takeover(path)
            if found is None:
                continue  # released meanwhile
            seen, holder = found
            if holder is None:
                stale = "an unreadable lock (its owner died while taking it)"
            else:
                reason = _stale_reason(holder, Path(key))
                if reason is None:
                    raise _in_use(directory, path, holder, flag) from None
                stale = f"the lock of {_describe(holder)}, {reason}"
            if _take_over(path, seen):
                warn(f"edlm: warning: {directory} held {stale}; taking it over")
            continue
        except OSError as exc:
            raise OutputError(f"cannot write {directory}: {os_error_reason(exc)}") from None
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a short write: the disk is full
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise OutputError(f"cannot write {directory}: {os_error_reason(exc)}") from None
        os.close(fd)
        return token
    holder = read_lock(directory) or {}
    raise _in_use(directory, path, holder, flag)


def _release(directory: Path, token: str) -> None:
    record = read_lock(directory)
    if record is not None and record.get("token") == token:  # ours still (never another owner's)
        with contextlib.suppress(OSError):
            (directory / LOCK_NAME).unlink()


# ----------------------------------------------------------------------------- the directory
def _make_directory(directory: Path) -> list[Path]:
    """Check that ``directory`` is (or can be) a directory and create it; returns the folders it created."""
    if directory.exists():
        if not directory.is_dir():
            raise OutputError(f"cannot use {directory} as a directory: it is a file")
        return []
    missing = []
    for folder in (directory, *directory.parents):
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(f"cannot create {directory}: {folder} is a file")
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise OutputError(f"cannot create {directory}: {folder} is a file") from None
        except OSError as exc:
            _remove_empty(missing)
            raise OutputError(f"cannot create {directory}: {os_error_reason(exc)}") from None
    return missing  # deepest first


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; stops at the first that is not empty
        try:
            folder.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike, *, flag: str = "--run-dir", command: str | None = None,
             enabled: bool = True, warn=None) -> Iterator[Path]:
    """Own ``directory`` for the block: check it, create it, take its lock (module doc); yields it as a Path.

    Args:
        directory: the run or sweep directory.
        flag: the option that picks another directory, for the message (``--run-dir``, ``--out``).
        command: what the lock records as the owner's command; default: this process's command line.
        enabled: False neither creates nor locks the directory: a DDP rank > 0 writes where rank 0 owns it.
        warn: called with the one-line warning of a stale lock taken over; default: print it to stderr.

    Raises:
        DirectoryInUseError: another live process holds the lock.
        OutputError: the directory cannot be created or written.
    """
    directory = Path(directory)
    created = _make_directory(directory) if enabled else []  # a rank > 0 leaves the directory to rank 0
    key = str((directory / LOCK_NAME).resolve())
    token = None
    try:
        if enabled:
            if key in _HELD:  # re-entrant within this process
                _HELD[key][1] += 1
            else:
                token = _acquire(directory, flag, command, warn or (lambda line: print(line, file=sys.stderr)))
                _HELD[key] = [token, 1]
        try:
            yield directory
        except OSError as exc:
            if exc.filename is None and exc.errno is not None and not isinstance(exc, OutputError):
                raise OutputError(f"cannot write in {directory}: {os_error_reason(exc)}") from exc
            raise
    finally:
        if enabled and key in _HELD:
            _HELD[key][1] -= 1
            if _HELD[key][1] == 0:
                token = _HELD.pop(key)[0]
                _release(directory, token)
        if created:
            _remove_empty(created)

