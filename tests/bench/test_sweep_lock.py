"""A sweep directory has one owner: a second sweep (or `edlm bench merge`) into it stops at once; the owner's
final merge runs under its lock; only shard 0 of a sharded sweep takes the lock."""

import errno
import json
import os
import socket
from pathlib import Path

import pytest

import edlm.bench.sweep as sweep_module
from edlm.bench import read_results, run_sweep
from edlm.cli import main
from edlm.locks import LOCK_NAME, read_lock

SMALL = ["grid.energy=[none]", "grid.steps=[2]", "reference.ar_samples=false"]  # 2 cells


def _one_line(capsys, code, *fragments):
    err = capsys.readouterr().err
    assert code != 0, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("edlm: error:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_a_second_sweep_into_the_same_directory_is_refused(tmp_path, sweep_yaml, capsys, hold_lock):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "results.jsonl").write_text('{"cell_key": "a", "judge": "none"}\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with hold_lock(out) as pid:
        code = main(["bench", "sweep", str(sweep_yaml), "--out", str(out), "--judge", "none", "--no-progress"])
        _one_line(capsys, code, f"{out} is in use by pid {pid} on host {socket.gethostname()}", "use another --out")
        code = main(["bench", "merge", str(out)])  # a merge now could drop the owner's next row
        _one_line(capsys, code, f"{out} is in use by pid {pid}")
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_NAME} == before


def test_the_final_merge_runs_under_the_lock_and_the_lock_is_gone_after(tmp_path, sweep_cfg, monkeypatch):
    seen = []
    real_merge = sweep_module.merge_results

    def merge(out):
        seen.append(read_lock(out))
        return real_merge(out)

    monkeypatch.setattr(sweep_module, "merge_results", merge)
    cfg = sweep_cfg(*SMALL)
    run_sweep(cfg, tmp_path, judge="none", progress=False, plot=False)
    assert seen and seen[0]["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_the_lock_is_gone_after_a_failed_sweep(tmp_path, sweep_cfg):
    class Killed(Exception):
        pass

    def die(cell, stage):
        raise Killed

    cfg = sweep_cfg(*SMALL)
    with pytest.raises(Killed):
        run_sweep(cfg, tmp_path, judge="none", progress=False, plot=False, on_cell_done=die)
    assert not (tmp_path / LOCK_NAME).exists()


def test_only_shard_zero_takes_the_lock(tmp_path, sweep_cfg, plant_lock):
    # shard 1 of a torchrun / --shard sweep shares the directory that shard 0 owns
    planted = plant_lock(tmp_path, pid=os.getppid())  # held by a live process: "shard 0"
    before = planted.read_bytes()
    cfg = sweep_cfg(*SMALL)
    report = run_sweep(cfg, tmp_path, judge="none", shard="1/2", stage="generate", progress=False, plot=False)
    assert report.generated == report.cells_mine == 1
    assert planted.read_bytes() == before


def test_a_stale_sweep_lock_is_taken_over(tmp_path, sweep_cfg, capsys, plant_lock):
    plant_lock(tmp_path)
    cfg = sweep_cfg(*SMALL)
    run_sweep(cfg, tmp_path, judge="none", progress=False, plot=False)
    assert "no longer running" in capsys.readouterr().err
    assert len(read_results(tmp_path)) == 2 and not (tmp_path / LOCK_NAME).exists()
    assert json.loads((tmp_path / "meta.json").read_text())["cells_total"] == 2


# ----------------------------------------------------------------------------- a sweep dir that cannot be written
@pytest.fixture(scope="module")
def single_run(tmp_path_factory, sweep_yaml, fake_judge):
    """A finished 2-cell sweep, scored by the fake judge."""
    from edlm.bench import load_sweep_config

    out = tmp_path_factory.mktemp("finished")
    run_sweep(load_sweep_config(sweep_yaml, SMALL), out, judge=fake_judge, progress=False, plot=False)
    return out


def _finished(tmp_path, single_run):
    """A copy of a finished sweep directory, and its files' bytes."""
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(single_run, out)
    return out, {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _argv(sweep_yaml, out):
    return ["bench", "sweep", str(sweep_yaml), "--out", str(out), "--judge", "none", "--no-progress", "--no-plot",
            *SMALL]


def test_sweep_out_is_a_file(tmp_path, sweep_yaml, capsys):
    occupied = tmp_path / "out"
    occupied.write_text("my notes")
    _one_line(capsys, main(_argv(sweep_yaml, occupied)), f"cannot use {occupied} as a directory: it is a file")
    _one_line(capsys, main(_argv(sweep_yaml, occupied / "sub")), f"cannot create {occupied / 'sub'}",
              f"{occupied} is a file")
    assert occupied.read_text() == "my notes"


def test_read_only_sweep_dir(tmp_path, sweep_yaml, single_run, capsys, monkeypatch):
    out, before = _finished(tmp_path, single_run)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # root ignores chmod: simulate the file system's EROFS
        if flags & os.O_CREAT and str(path).startswith(str(out)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    _one_line(capsys, main(_argv(sweep_yaml, out)), f"cannot write {out}: read-only file system")
    monkeypatch.undo()
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_sweep_dir_that_cannot_be_created(tmp_path, sweep_yaml, capsys, monkeypatch):
    def read_only(self, *args, **kwargs):  # a read-only file system under tmp_path
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    out = tmp_path / "new" / "sweep"
    _one_line(capsys, main(_argv(sweep_yaml, out)), f"cannot create {out}: read-only file system")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["config.yaml", "results.jsonl"])
def test_full_disk_during_a_sweep(tmp_path, sweep_yaml, single_run, capsys, monkeypatch, where):
    # the finished sweep was scored by another judge: this run scores every cell again, judge "none"
    out, before = _finished(tmp_path, single_run)
    real_fsync = os.fsync
    calls = []

    def full(fd):  # the disk fills up at the first sync (config.yaml) or the second (the first results row)
        calls.append(fd)
        if len(calls) == (1 if where == "config.yaml" else 2):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    code = main(_argv(sweep_yaml, out))
    monkeypatch.undo()
    _one_line(capsys, code, f"cannot write {out / where}: no space left on device")
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    if where == "results.jsonl":  # config.yaml was rewritten (same settings) before the disk filled up
        after.pop(Path("config.yaml"))
        before.pop(Path("config.yaml"))
    assert after == before  # results.jsonl byte-identical: the torn row was cut back
    assert not (out / LOCK_NAME).exists()
