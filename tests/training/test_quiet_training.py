"""`edlm train` speaks for itself: its own progress bar or lines, no Lightning banners, tips or "Epoch 0/-2" bar,
and one `checkpoints/last.ckpt` however often a run is resumed (no last-v1.ckpt)."""

from edlm.cli import main

NOISE = ("Epoch 0/-", "💡", "litlogger", "GPU available", "TPU available", "LeafSpec", "`weights_only` was not set",
         "Trainable params")


def test_train_and_resume_print_only_edlm_lines_and_keep_one_checkpoint(tmp_path, cache_dir, micro, capfd):
    run_dir = tmp_path / "run"
    # the first run ends between two periodic checkpoints (every 15 steps): its last.ckpt is the final one
    first = micro(run_dir, cache_dir, max_steps=10, **{"train.val_check_interval": 15, "train.progress_bar": True})
    assert main(["train", "mdlm", *first]) == 0
    out = capfd.readouterr()
    text = out.out + out.err
    assert not [n for n in NOISE if n in text], text
    assert "edlm train mdlm" in out.err and "10/10" in out.err, out.err  # our bar: step / max_steps
    assert "edlm train mdlm: step 10" in out.out  # the summary
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]

    again = micro(run_dir, cache_dir, max_steps=20, **{"train.val_check_interval": 15, "train.progress_bar": False})
    assert main(["train", "mdlm", "--resume", *again]) == 0
    out = capfd.readouterr()
    text = out.out + out.err
    assert not [n for n in NOISE if n in text], text
    assert "edlm train mdlm: step 15/20: loss" in out.err, out.err  # without a bar: one line per validation
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
