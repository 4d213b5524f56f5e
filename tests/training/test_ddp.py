"""Two CPU processes train together through DDP (gloo) and finish with one set of outputs."""

import json
import os
import subprocess
import sys

import pytest

# A guard against a hung run, not a speed check: two processes on a loaded 2-core CPU (CI runs other jobs
# beside this one) can take minutes, and what these tests check does not depend on how long they take.
HANG_GUARD_S = 900


@pytest.mark.slow
def test_ddp_gloo_two_processes(tmp_path, cache_dir, micro):
    run_dir = tmp_path / "ddp"
    overrides = micro(run_dir, cache_dir, max_steps=6, **{
        "train.strategy": "ddp", "train.devices": 2, "train.accelerator": "cpu", "train.val_check_interval": 3,
    })
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, "-m", "edlm.cli", "train", "mdlm", *overrides],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("edlm train mdlm: step 6") == 1  # one summary, from rank 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    assert metrics["tokens_seen"] == 6 * 16 * 32 * 2  # two processes, 16 rows each per step
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # rank 0 owned the run dir (edlm.locks) while rank 1, started under it, took no lock; and it is released
    assert not (run_dir / ".edlm.lock").exists() and "edlm: warning:" not in proc.stderr
    # each rank draws its own times and masks, and the checkpoint keeps every rank's stream for an exact resume
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    per_rank = ckpt["rng_per_rank"]["cpu"]
    assert per_rank.shape[0] == 2 and not torch.equal(per_rank[0], per_rank[1])
    assert torch.equal(per_rank[0], ckpt["rng"]["cpu"])  # the file's single state is rank 0's


@pytest.mark.slow
def test_ddp_resume_continues_every_rank_stream_exactly(tmp_path, cache_dir, micro, logged):
    """A 2-process run stopped at step 4 and resumed to step 8 logs the losses of an uninterrupted 8-step run:
    each rank gets its own RNG state back (if rank 1's stream were lost, the averaged gradients, hence rank 0's
    later losses, would change). Constant lr, so stopping at 4 does not change the schedule."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    common = {"train.strategy": "ddp", "train.devices": 2, "train.accelerator": "cpu", "train.val_check_interval": 4,
              "train.limit_val_batches": 1, "optim.decay": "constant"}

    def train(run_dir, max_steps, *extra):
        overrides = [o for o in micro(run_dir, cache_dir, max_steps=max_steps, **common) if "train.run_dir=" not in o]
        proc = subprocess.run([sys.executable, "-m", "edlm.cli", "train", "mdlm", "--run-dir", str(run_dir), *extra,
                               *overrides], capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]

    ref, part = tmp_path / "ref", tmp_path / "part"
    train(ref, 8)
    train(part, 4)
    train(part, 8, "--resume")
    a, b = logged(ref), logged(part)
    assert sorted(a) == sorted(b) == list(range(8))
    assert [b[s] for s in range(8)] == [a[s] for s in range(8)]  # exactly, before and after the resume
