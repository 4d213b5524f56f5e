"""A training run dir has one owner (edlm.locks) and a run that cannot write there stops with one line.

A second `edlm train` into a run dir in use stops at once; a lock left by a dead run does not block its
--resume; the lock is gone after a normal run and after a failed one; only DDP rank 0 takes it. A run dir
that is a file, read-only or on a full disk is one `edlm: error:` line, and what the run dir held before is
byte-identical afterwards.
"""

import errno
import os
import socket
import subprocess
import sys

import pytest

import edlm.training.trainer as trainer_module
from edlm.cli import main
from edlm.config import load_config
from edlm.locks import LOCK_NAME, DirectoryInUseError, read_lock
from edlm.training.run import own_run_dir


def _one_line(capsys, code, *fragments):
    err = capsys.readouterr().err
    assert code != 0, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("edlm: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _train_argv(micro, run_dir, cache_dir, *extra, **overrides):
    return ["train", "mdlm", "--preset", "tiny", *extra, *micro(run_dir, cache_dir, **overrides)]


def test_a_finished_run_leaves_no_lock(mdlm_run):
    assert not (mdlm_run[0] / LOCK_NAME).exists()


def test_a_second_train_into_a_run_dir_in_use_stops_at_once(tmp_path, cache_dir, micro, hold_lock):
    run_dir = tmp_path / "run"
    with hold_lock(run_dir) as pid:
        proc = subprocess.run([sys.executable, "-m", "edlm.cli", *_train_argv(micro, run_dir, cache_dir)],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert proc.returncode != 0
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1 and err.startswith("edlm: error:"), proc.stderr
        assert f"{run_dir} is in use by pid {pid} on host {socket.gethostname()} since " in err
        assert "use another --run-dir" in err
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # the second run wrote nothing


def test_a_dead_runs_lock_does_not_block_its_resume(mdlm_run, copy_run, cache_dir, micro, capsys, plant_lock):
    run_dir = copy_run(mdlm_run[0])
    plant_lock(run_dir)  # what a killed `edlm train` leaves: its lock, with its (now dead) pid
    assert main(_train_argv(micro, run_dir, cache_dir, "--resume", max_steps=20)) == 0
    err = capsys.readouterr().err
    assert "edlm: warning:" in err and "no longer running" in err
    assert not (run_dir / LOCK_NAME).exists()


def test_the_lock_is_gone_after_a_failed_run(tmp_path, cache_dir, micro, monkeypatch, capsys):
    def fails(*args, **kwargs):
        raise ValueError("the data broke")

    monkeypatch.setattr(trainer_module, "build_datamodule", fails)
    run_dir = tmp_path / "run"
    _one_line(capsys, main(_train_argv(micro, run_dir, cache_dir)), "the data broke")
    assert not (run_dir / LOCK_NAME).exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "build_datamodule", interrupted)
    assert main(_train_argv(micro, run_dir, cache_dir)) == 130
    assert not (run_dir / LOCK_NAME).exists()


def test_only_rank_zero_takes_the_lock(tmp_path, cache_dir, micro, monkeypatch, plant_lock):
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    run_dir = tmp_path / "run"
    planted = plant_lock(run_dir, pid=os.getppid())  # rank 0 of this DDP run (alive)
    cfg = load_config("tiny", micro(run_dir, cache_dir))
    with pytest.raises(DirectoryInUseError):
        with own_run_dir(cfg, "mdlm"):
            pass
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with own_run_dir(cfg, "mdlm") as got:
        assert got == run_dir
    assert read_lock(run_dir)["pid"] == os.getppid() and planted.is_file()


# ----------------------------------------------------------------------------- a run dir that cannot be written
def test_run_dir_is_a_file(tmp_path, cache_dir, micro, capsys):
    occupied = tmp_path / "run"
    occupied.write_text("my notes")
    _one_line(capsys, main(_train_argv(micro, occupied, cache_dir)), f"cannot use {occupied} as a directory",
              "it is a file")
    _one_line(capsys, main(_train_argv(micro, occupied / "sub", cache_dir)), f"{occupied} is a file")
    assert occupied.read_text() == "my notes"


def test_read_only_run_dir(mdlm_run, copy_run, cache_dir, micro, capsys, monkeypatch):
    # root ignores chmod 0o555: the file system's EROFS is simulated for every file created under the run dir
    run_dir = copy_run(mdlm_run[0])
    before = _snapshot(run_dir)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(path).startswith(str(run_dir)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    _one_line(capsys, main(_train_argv(micro, run_dir, cache_dir, "--resume", max_steps=20)),
              f"cannot write {run_dir}: read-only file system")
    monkeypatch.undo()
    assert _snapshot(run_dir) == before


def test_full_disk_while_writing_the_run_dir(mdlm_run, copy_run, cache_dir, micro, capsys, monkeypatch):
    # the disk fills up once the run has started: the first file it writes (config.yaml) fails to sync
    run_dir = copy_run(mdlm_run[0])
    before = _snapshot(run_dir)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    _one_line(capsys, main(_train_argv(micro, run_dir, cache_dir, "--resume", max_steps=20)),
              f"cannot write {run_dir / 'config.yaml'}: no space left on device")
    monkeypatch.undo()
    assert _snapshot(run_dir) == before  # config.yaml, last.ckpt, metrics.json, model/: byte-identical
    assert not (run_dir / LOCK_NAME).exists()
