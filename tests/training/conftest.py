"""Micro training runs shared by the training tests (a 1-block, 32-wide model on 20 k chars)."""

import csv
import shutil

import pytest

from edlm.config import load_config
from edlm.training.trainer import train


def micro_overrides(run_dir, cache_dir, max_steps=30, **extra) -> list[str]:
    """Overrides that turn the tiny preset into a run of a few seconds on CPU."""
    settings = {
        "model.hidden_size": 32,
        "model.n_blocks": 1,
        "model.n_heads": 2,
        "model.cond_dim": 16,
        "data.length": 32,
        "data.batch_size": 16,
        "data.eval_batch_size": 32,
        "data.max_train_chars": 20_000,
        "data.max_val_chars": 4_000,
        "data.cache_dir": str(cache_dir),
        "optim.lr": 3e-3,
        "optim.warmup_steps": 5,
        "ema.decay": 0.9,
        "train.max_steps": max_steps,
        "train.val_check_interval": 10,
        "train.log_every_n_steps": 1,
        "train.progress_bar": False,
        "train.run_dir": str(run_dir),
        **extra,
    }
    return [f"{k}={v}" for k, v in settings.items()]


@pytest.fixture(scope="session")
def micro():
    """`micro(run_dir, cache_dir, max_steps=30, **extra)` -> the override list of a micro run."""
    return micro_overrides


def logged_values(run_dir, key: str = "train/loss") -> dict[int, float]:
    """step -> the logged ``key`` (rank 0's under DDP) over every csv/version_* of a run (a resumed run logs
    into a new version). The CSV ``step`` of a training batch is the global step before its optimizer step."""
    out: dict[int, float] = {}
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        with open(path, newline="") as f:
            out.update({int(r["step"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)})
    return out


@pytest.fixture(scope="session")
def logged():
    """`logged(run_dir, key="train/loss")` -> {step: value} of a run's CSV logs (`logged_values`)."""
    return logged_values


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("edlm-cache")


@pytest.fixture(scope="session")
def mdlm_run(tmp_path_factory, cache_dir):
    """A finished 20-step MDLM run: (run_dir, TrainResult). Do not modify; copy it (see `copy_run`)."""
    run_dir = tmp_path_factory.mktemp("runs") / "mdlm"
    cfg = load_config("tiny", micro_overrides(run_dir, cache_dir, max_steps=20))
    return run_dir, train(cfg, "mdlm")


@pytest.fixture
def copy_run(tmp_path):
    def copy(run_dir):
        target = tmp_path / run_dir.name
        shutil.copytree(run_dir, target)
        return target

    return copy
