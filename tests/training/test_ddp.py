"""Two CPU processes train together through DDP (gloo) and finish with one set of outputs."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_ddp_gloo_two_processes(tmp_path, cache_dir, micro):
    run_dir = tmp_path / "ddp"
    overrides = micro(run_dir, cache_dir, max_steps=6, **{
        "train.strategy": "ddp", "train.devices": 2, "train.accelerator": "cpu", "train.val_check_interval": 3,
    })
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, "-m", "edlm.cli", "train", "mdlm", *overrides],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("edlm train mdlm: step 6") == 1  # one summary, from rank 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    assert metrics["tokens_seen"] == 6 * 16 * 32 * 2  # two processes, 16 rows each per step
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
