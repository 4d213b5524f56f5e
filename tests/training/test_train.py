"""End-to-end micro runs of `train`: the run directory, learning, export, resume."""

import csv
import json

import pytest
import torch

from edlm.config import load_config
from edlm.data import load_tokenizer
from edlm.errors import ConfigError
from edlm.models import check_vocab, load_denoiser, read_checkpoint_config
from edlm.training.trainer import train


def test_run_dir_layout_and_metrics(mdlm_run):
    run_dir, result = mdlm_run
    for name in ("config.yaml", "metrics.json", "checkpoints/last.ckpt", "tokenizer/tokenizer.json",
                 "model/config.json", "model/model.safetensors", "model/tokenizer.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == result.global_step == 20
    assert metrics["tokens_seen"] == 20 * 16 * 32
    assert metrics["unigram_ppl"] > 10  # Shakespeare characters: about 28
    assert metrics["val_ppl"] == pytest.approx(torch.tensor(metrics["val_nll"]).exp().item(), rel=1e-6)
    assert load_config(str(run_dir / "config.yaml")).model.hidden_size == 32


def test_training_reduces_the_loss(mdlm_run, logged):
    losses = list(logged(mdlm_run[0]).values())
    assert len(losses) == 20
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.3, losses


def test_exported_model_matches_the_tokenizer_and_loads(mdlm_run):
    run_dir, result = mdlm_run
    tokenizer = load_tokenizer(run_dir / "model")
    denoiser = load_denoiser(run_dir / "model")
    check_vocab(denoiser, tokenizer)
    assert denoiser.mask_id == tokenizer.mask_token_id == len(tokenizer) - 1
    extra = read_checkpoint_config(run_dir / "model")["extra"]
    assert extra["global_step"] == 20 and extra["kind"] == "mdlm"
    assert extra["metrics"]["val/ppl_bound"] == pytest.approx(result.val_ppl, rel=1e-5)


def test_ema_weights_are_what_is_exported(mdlm_run):
    run_dir, _ = mdlm_run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    denoiser = load_denoiser(run_dir / "model")
    params = [p for p in denoiser.parameters() if p.requires_grad]
    assert ckpt["ema"]["num_updates"] == 20
    for p, shadow in zip(params, ckpt["ema"]["shadow"]):
        assert torch.equal(p, shadow)


def test_resume_continues_at_the_right_step(mdlm_run, copy_run, cache_dir, micro):
    run_dir = copy_run(mdlm_run[0])
    cfg = load_config("tiny", micro(run_dir, cache_dir, max_steps=30, **{"train.resume": "true"}))
    result = train(cfg, "mdlm")
    assert (result.start_step, result.global_step) == (20, 30)
    second = sorted((run_dir / "csv").glob("version_*"))[-1] / "metrics.csv"
    steps = sorted({int(r["step"]) for r in csv.DictReader(second.open()) if r.get("train/loss")})
    assert steps[0] == 20 and steps[-1] == 29  # Lightning logs step n for the n-th update, counting from 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 30 and ckpt["ema"]["num_updates"] == 30


def test_ar_trains_and_reports_ppl(tmp_path, cache_dir, micro):
    cfg = load_config("tiny", micro(tmp_path / "ar", cache_dir, max_steps=20))
    result = train(cfg, "ar")
    assert result.kind == "ar" and result.global_step == 20
    assert 1.0 < result.val_ppl < result.unigram_ppl * 1.5
    config = read_checkpoint_config(tmp_path / "ar" / "model")
    assert config["model_type"] == "ar"


@pytest.mark.slow
def test_compiled_training_matches_eager_and_exports_the_same_keys(mdlm_run, tmp_path, cache_dir, micro, logged):
    # train.compile: the same losses as the eager run (same seed), and a checkpoint with unchanged keys
    cfg = load_config("tiny", micro(tmp_path / "compiled", cache_dir, max_steps=3, **{"train.compile": "true"}))
    train(cfg, "mdlm")
    compiled_losses, eager_losses = logged(tmp_path / "compiled"), logged(mdlm_run[0])
    assert [compiled_losses[s] for s in range(3)] == pytest.approx([eager_losses[s] for s in range(3)], rel=1e-4)
    eager = load_denoiser(mdlm_run[0] / "model").state_dict()
    compiled = load_denoiser(tmp_path / "compiled" / "model").state_dict()
    assert list(compiled) == list(eager)


def test_max_minutes_becomes_lightnings_max_time(micro, tmp_path, cache_dir):
    from edlm.training.run import trainer_settings

    assert trainer_settings(load_config("tiny", micro(tmp_path, cache_dir)))["max_time"] is None
    cfg = load_config("tiny", micro(tmp_path, cache_dir, **{"train.max_minutes": 1.5}))
    assert trainer_settings(cfg)["max_time"] == {"seconds": 90}


def test_keep_best_exports_the_lowest_validation_and_a_resume_keeps_it(tmp_path, cache_dir, micro, logged):
    # 800 training characters seen ~40 times: the validation NLL bottoms out early and then climbs
    overfit = {"train.keep": "best", "data.max_train_chars": 800, "model.hidden_size": 64, "model.dropout": 0.0,
               "optim.lr": 1e-2, "ema.decay": 0.5}
    run_dir = tmp_path / "ar"
    result = train(load_config("tiny", micro(run_dir, cache_dir, max_steps=80, **overfit)), "ar")
    val = logged(run_dir, "val/nll")  # CSV step = global step - 1
    best_step = min(val, key=val.get) + 1
    assert val[79] > min(val.values()) + 0.5, val  # the run overfits, so the best is not the last
    extra = read_checkpoint_config(run_dir / "model")["extra"]
    assert result.model_step == extra["global_step"] == best_step < result.global_step == 80
    assert result.val_nll == pytest.approx(min(val.values()), rel=1e-6)
    assert extra["metrics"]["val/nll"] == pytest.approx(min(val.values()), rel=1e-6)
    weights = (run_dir / "model" / "model.safetensors").read_bytes()

    resumed = train(load_config("tiny", micro(run_dir, cache_dir, max_steps=100, **overfit,
                                               **{"train.resume": "true"})), "ar")
    assert resumed.global_step == 100 and resumed.model_step == best_step  # later, worse validations write nothing
    assert (run_dir / "model" / "model.safetensors").read_bytes() == weights


def test_keep_must_be_last_or_best():
    with pytest.raises(ConfigError, match="train.keep must be 'last' or 'best'"):
        load_config("tiny", ["train.keep=first"])
