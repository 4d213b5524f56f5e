"""A training run killed with SIGKILL right after a checkpoint resumes with ``--resume``, exactly.

The resumed run starts from the checkpoint's step, reaches ``train.max_steps``, leaves loadable weights, a
readable ``last.ckpt`` and no staging leftovers. Its per-step losses equal those of an uninterrupted
reference run of the same config, before the kill and after it: the checkpoint holds the training data's
position (the next unseen batch of the epoch) and the RNG state of the diffusion times and masks.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edlm.models import from_pretrained

pytestmark = pytest.mark.slow  # three micro training runs in subprocesses, one killed part-way

MAX_STEPS = 40
EVERY = 10  # train.val_check_interval: ModelCheckpoint writes last.ckpt every EVERY steps
HANG_GUARD_S = 600  # a guard against a hung run, not a speed check: a loaded 2-core CI machine can be slow


def _cmd(micro, run_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    overrides = micro(run_dir, cache_dir, max_steps=MAX_STEPS, **{
        "train.val_check_interval": EVERY, "train.cpu_threads": 1, "train.limit_val_batches": 1,
        "data.max_val_chars": 2_000})
    overrides = [o for o in overrides if not o.startswith("train.run_dir=")]
    return [sys.executable, "-m", "edlm.cli", "train", "mdlm", "--preset", "tiny", "--run-dir", str(run_dir),
            *extra, *overrides]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, micro, logged):
    root = tmp_path_factory.mktemp("kill_resume")
    cache = root / "cache"
    ref = root / "ref"
    subprocess.run(_cmd(micro, ref, cache), env=_env(), check=True, capture_output=True, timeout=HANG_GUARD_S)

    killed = root / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_cmd(micro, killed, cache), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        step = None
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file():
                try:
                    step = _ckpt_step(last)  # readable: the write has finished
                except Exception:  # noqa: BLE001 - still being written
                    step = None
                if step is not None:
                    # the CSV logger flushes around the checkpoint, not with it: wait (briefly) for the
                    # pre-checkpoint rows, so the comparison below has them, then kill
                    flush_deadline = time.monotonic() + 3
                    while step - 1 not in logged(killed) and time.monotonic() < flush_deadline:
                        time.sleep(0.01)
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert step is not None, f"no readable checkpoint before the run ended (rc={proc.returncode})"
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; raise MAX_STEPS"
    step = _ckpt_step(last)  # the dead run's last checkpoint (a later one may have landed while waiting)
    killed_losses = logged(killed)
    # what a kill in the middle of a model export or a checkpoint write would have left (the resume sweeps it)
    (killed / ".model.tmp-0badf00d").mkdir()
    (killed / ".model.tmp-0badf00d" / "config.json").write_text("{")
    (killed / "checkpoints" / ".last.ckpt.x1y2z3w4.tmp").write_bytes(b"half a checkpoint")

    assert (killed / ".edlm.lock").is_file()  # SIGKILL: the dead run's lock (edlm.locks) is left behind
    resumed = subprocess.run(_cmd(micro, killed, cache, "--resume"), env=_env(), capture_output=True, text=True,
                             timeout=HANG_GUARD_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return dict(ref=ref, killed=killed, step=step, killed_losses=killed_losses, stdout=resumed.stdout,
                stderr=resumed.stderr, killed_pid=proc.pid)


def test_the_dead_runs_lock_is_taken_over_by_its_resume(runs):
    warnings = [line for line in runs["stderr"].splitlines() if line.startswith("edlm: warning:")]
    assert len(warnings) == 1 and f"pid {runs['killed_pid']}" in warnings[0] and "no longer running" in warnings[0]
    assert not (runs["killed"] / ".edlm.lock").exists()  # and the resumed run released it


def test_killed_run_resumes_from_its_checkpoint_to_max_steps(runs, logged):
    step, killed = runs["step"], runs["killed"]
    assert 0 < step < MAX_STEPS and step % EVERY == 0
    assert f"step {MAX_STEPS}," in runs["stdout"]
    assert _ckpt_step(killed / "checkpoints" / "last.ckpt") == MAX_STEPS  # readable, final
    model = from_pretrained(killed / "model")  # the saved EMA weights load
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # no half-written file in place of a real one, and no staging leftovers: a kill during the atomic model
    # save or a checkpoint write leaves a hidden `.model.tmp-*` / `.last.ckpt.*.tmp`, which the resume sweeps
    stray = [p for p in killed.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name or ".old-" in p.name]
    assert stray == []
    assert sorted(p.name for p in (killed / "model").iterdir() if p.name.startswith(".")) == []
    losses = logged(killed)
    assert set(range(step, MAX_STEPS)) <= set(losses)  # the resumed run logged every later step
    assert all(map(torch.isfinite, torch.tensor(list(losses.values()))))


def test_losses_before_the_kill_match_the_reference(runs, logged):
    ref, killed, step = logged(runs["ref"]), runs["killed_losses"], runs["step"]
    before = [s for s in range(step) if s in ref and s in killed]
    assert before, "no steps logged before the checkpoint"
    torch.testing.assert_close(torch.tensor([killed[s] for s in before]), torch.tensor([ref[s] for s in before]),
                               rtol=0, atol=1e-6)  # the same deterministic run up to the kill


def test_resumed_losses_equal_the_reference(runs, logged):
    """Bit-identical continuation on CPU: same batches in the same order, same t and masks, same weights."""
    ref, res, step = logged(runs["ref"]), logged(runs["killed"]), runs["step"]
    after = list(range(step, MAX_STEPS))
    torch.testing.assert_close(torch.tensor([res[s] for s in after]), torch.tensor([ref[s] for s in after]),
                               rtol=0, atol=0)
