"""The run dir is never left half-written: atomic checkpoint writes, and a sweep of a killed run's staging."""

import os

import pytest
import torch

from edlm.config import load_config
from edlm.training.callbacks import AtomicCheckpointIO, sweep_staging
from edlm.training.run import build_trainer, prepare_run_dir


def _plant_leftovers(run_dir):
    """What a kill leaves mid-write: a half model export, a half checkpoint, a half metrics.json."""
    (run_dir / ".model.tmp-0123abcd").mkdir(parents=True)
    (run_dir / ".model.tmp-0123abcd" / "model.safetensors").write_bytes(b"half")
    (run_dir / ".metrics.json.k2j_3h4x.tmp").write_text("{")
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / ".last.ckpt.ab12cd34.tmp").write_bytes(b"half")
    return {".model.tmp-0123abcd", ".metrics.json.k2j_3h4x.tmp", ".last.ckpt.ab12cd34.tmp"}


def test_sweep_removes_staging_leftovers_and_nothing_else(tmp_path):
    planted = _plant_leftovers(tmp_path)
    keep = [tmp_path / "model" / "config.json", tmp_path / ".notes", tmp_path / "notes.tmp",
            tmp_path / ".model.tmp-notes", tmp_path / "checkpoints" / "last.ckpt", tmp_path / "csv" / ".x.1.tmp"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep")
    removed = sweep_staging(tmp_path, tmp_path / "checkpoints", tmp_path / "absent")
    assert {p.name for p in removed} == planted
    assert all(p.exists() for p in keep)
    left = {p.name for p in tmp_path.rglob("*")}
    assert not left & planted


def test_sweep_moves_back_an_export_caught_between_its_renames(tmp_path):
    # save_pretrained_atomic: model/ -> .model.old-*, then .model.tmp-* -> model/; a kill in between
    (tmp_path / ".model.old-89abcdef").mkdir()
    (tmp_path / ".model.old-89abcdef" / "config.json").write_text("{}")
    (tmp_path / ".model.tmp-0123abcd").mkdir()
    removed = sweep_staging(tmp_path)
    assert [p.name for p in removed] == [".model.tmp-0123abcd"]
    assert (tmp_path / "model" / "config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_new_or_resumed_run_sweeps_its_run_dir(mdlm_run, copy_run, cache_dir, micro, tmp_path):
    run_dir = copy_run(mdlm_run[0])
    planted = _plant_leftovers(run_dir)
    cfg = load_config("tiny", micro(run_dir, cache_dir, **{"train.resume": "true"}))
    assert prepare_run_dir(cfg, "mdlm") == (run_dir, run_dir / "checkpoints" / "last.ckpt")
    assert not {p.name for p in run_dir.rglob("*")} & planted
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "metrics.json").is_file()

    fresh = tmp_path / "killed_before_its_first_checkpoint"
    planted = _plant_leftovers(fresh)
    assert prepare_run_dir(load_config("tiny", micro(fresh, cache_dir)), "mdlm") == (fresh, None)
    assert not {p.name for p in fresh.rglob("*")} & planted


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 10, "w": torch.arange(1000)}, path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    real_save = torch.save

    def dies_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # half the bytes are out, then the process "dies"
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"global_step": 20, "w": torch.arange(2000)}, path)
    monkeypatch.undo()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] == 10 and torch.equal(ckpt["w"], torch.arange(1000))
    assert os.listdir(path.parent) == ["last.ckpt"]  # no temp file left
    io.save_checkpoint({"global_step": 30}, path)  # and the next write replaces it
    assert torch.load(path, weights_only=True) == {"global_step": 30}


def test_the_trainer_writes_checkpoints_atomically(tmp_path, cache_dir, micro):
    trainer = build_trainer(load_config("tiny", micro(tmp_path, cache_dir)), tmp_path, [])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
