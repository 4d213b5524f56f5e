"""`edlm.locks`: one owner per run / sweep directory (a `.edlm.lock` taken with O_CREAT | O_EXCL).

A second owner is refused at once with one line; a lock left by a dead process of this machine is taken over
with a warning; a lock from another machine never is; the lock is gone after the block, however it ends.
"""

import errno
import os
import socket
from pathlib import Path

import pytest

from edlm.errors import EdlmError
from edlm.locks import LOCK_NAME, DirectoryInUseError, dir_lock, read_lock


def test_lock_is_taken_and_released(tmp_path):
    run = tmp_path / "runs" / "x"
    with dir_lock(run, command="edlm train mdlm") as d:
        assert d == run and run.is_dir()
        held = read_lock(run)
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        assert held["command"] == "edlm train mdlm" and held["started"]
        (run / "config.yaml").write_text("x")
    assert not (run / LOCK_NAME).exists() and (run / "config.yaml").is_file()


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_lock_is_released_on_exceptions(tmp_path, error):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(type(error)):
        with dir_lock(run):
            assert (run / LOCK_NAME).is_file()
            raise error
    assert list(run.iterdir()) == []


def test_a_directory_it_created_and_left_empty_is_removed(tmp_path):
    with pytest.raises(RuntimeError):
        with dir_lock(tmp_path / "a" / "b"):
            raise RuntimeError("failed before writing anything")
    assert list(tmp_path.iterdir()) == []


def test_the_same_process_may_nest_it(tmp_path):
    with dir_lock(tmp_path):
        with dir_lock(tmp_path):  # e.g. the sweep's final merge_results, under the sweep's own lock
            pass
        assert (tmp_path / LOCK_NAME).is_file()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_second_process_is_refused_at_once(tmp_path, hold_lock):
    run = tmp_path / "run"
    with hold_lock(run) as pid:
        with pytest.raises(DirectoryInUseError) as info:
            with dir_lock(run, flag="--run-dir"):
                pytest.fail("took a lock another process holds")
        msg = str(info.value)
        assert len(msg.splitlines()) == 1
        assert f"{run} is in use by pid {pid} on host {socket.gethostname()} since " in msg
        assert f"(edlm holder {run})" in msg and "use another --run-dir" in msg
        assert read_lock(run)["pid"] == pid  # untouched


def test_a_stale_lock_of_this_host_is_taken_over_with_a_warning(tmp_path, capsys, plant_lock, dead_pid):
    run = tmp_path / "run"
    plant_lock(run, pid=(pid := dead_pid()))
    with dir_lock(run):
        assert read_lock(run)["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("edlm: warning:"), err
    assert f"pid {pid}" in err and "no longer running" in err and "taking it over" in err
    assert sorted(p.name for p in run.iterdir()) == []  # the stale lock is not kept aside either


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="process start times come from /proc")
def test_a_lock_of_a_reused_pid_is_stale(tmp_path, capsys, plant_lock):
    # the pid is alive (this process) but was started at another time: not the process that took the lock
    run = tmp_path / "run"
    plant_lock(run, pid=os.getppid(), pid_start=1)
    with dir_lock(run):
        pass
    assert "is now another process" in capsys.readouterr().err


def test_a_live_lock_of_this_host_is_not_stale(tmp_path, plant_lock):
    run = tmp_path / "run"
    plant_lock(run, pid=os.getppid())  # pytest's parent: alive
    with pytest.raises(DirectoryInUseError, match=f"in use by pid {os.getppid()}"):
        with dir_lock(run):
            pass


@pytest.mark.parametrize("started", ["2024-01-01T00:00:00+00:00", "2000-01-01T00:00:00+00:00"])
def test_a_lock_from_another_host_is_never_stale(tmp_path, started, plant_lock):
    # however old: edlm cannot see that machine's processes, so it cannot know the run is gone
    run = tmp_path / "run"
    planted = plant_lock(run, host="elsewhere.example", started=started)
    before = planted.read_bytes()
    with pytest.raises(DirectoryInUseError) as info:
        with dir_lock(run, flag="--out"):
            pass
    msg = str(info.value)
    assert "on host elsewhere.example" in msg and "use another --out" in msg and str(planted) in msg
    assert planted.read_bytes() == before


def test_an_unreadable_lock_is_stale(tmp_path, capsys):
    # a process killed between creating the lock and writing it leaves an empty file
    (tmp_path / LOCK_NAME).write_bytes(b"")
    os.utime(tmp_path / LOCK_NAME, (0, 0))
    with dir_lock(tmp_path):
        pass
    assert "edlm: warning:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the directory itself
def test_a_file_in_place_of_the_directory(tmp_path):
    occupied = tmp_path / "run"
    occupied.write_text("notes")
    with pytest.raises(EdlmError, match=f"cannot use {occupied} as a directory: it is a file"):
        with dir_lock(occupied):
            pass
    with pytest.raises(EdlmError, match=f"cannot create {occupied / 'sub'}: {occupied} is a file"):
        with dir_lock(occupied / "sub"):
            pass
    assert occupied.read_text() == "notes"


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_a_directory_that_cannot_be_written(tmp_path, monkeypatch, code):
    # tests run as root, where chmod 0o555 does not stop writes: the file system's answer is simulated
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(path).startswith(str(tmp_path)):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(EdlmError) as info:
        with dir_lock(tmp_path):
            pytest.fail("the block ran")
    reason = os.strerror(code)
    assert str(info.value) == f"cannot write {tmp_path}: {reason[0].lower()}{reason[1:]}"


def test_a_directory_that_cannot_be_created(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(EdlmError, match="cannot create .*new: read-only file system"):
        with dir_lock(tmp_path / "new"):
            pass


def test_an_anonymous_write_error_inside_names_the_directory(tmp_path):
    with pytest.raises(OSError) as info:
        with dir_lock(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")  # e.g. a logger's buffered write
    assert str(info.value) == f"cannot write in {tmp_path}: no space left on device"
    assert isinstance(info.value, EdlmError)
