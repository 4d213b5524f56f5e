"""`edlm train mdlm model.backbone=hf`: a tiny random BERT fine-tuned with the MDLM loss, then sampled and evaluated
through the same paths as a DiT run (run dir -> bundle, `generate`, `eval nll`, EDLM with an AR energy)."""

import json
import math

import pytest
import torch

from edlm.cli import main
from edlm.config import load_config
from edlm.errors import CheckpointError, ConfigError
from edlm.loading import load_denoiser_bundle, load_energy
from edlm.models import ARTransformer, HFMaskedLM, save_pretrained
from edlm.pipeline import sample
from edlm.training.trainer import train

VAL_CHARS = 8_000


def _hf(tiny_bert, **extra) -> dict:
    return {"model.backbone": "hf", "model.hf_name": str(tiny_bert), "data.corpus": "wikipedia_en",
            "data.max_val_chars": VAL_CHARS, **extra}


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, tiny_bert, cache_dir, micro):
    """A 40-step MDLM fine-tuning of the tiny BERT on the wikipedia_en slice: (run_dir, TrainResult)."""
    run_dir = tmp_path_factory.mktemp("runs") / "bert-mdlm"
    cfg = load_config("tiny", micro(run_dir, cache_dir, max_steps=40, **_hf(tiny_bert, **{
        "train.val_check_interval": 40})))
    return run_dir, train(cfg, "mdlm")


def test_fine_tuning_with_the_mdlm_loss_reduces_it(hf_run, logged):
    run_dir, result = hf_run
    losses = list(logged(run_dir).values())
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"train/loss: first 5 steps {first:.3f}, last 5 {last:.3f}; val/nll {result.val_nll:.3f}")
    assert last < first - 0.3, losses
    assert result.val_nll < math.log(300)  # beats the uniform distribution over the 300 WordPiece ids
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["model_type"] == "hf_mlm" and config["denoiser"]["mask_id"] == 4
    assert config["config"]["hf_config"]["model_type"] == "bert" and config["config"]["length"] == 32


def test_the_run_dir_samples_like_any_denoiser(hf_run):
    bundle = load_denoiser_bundle(hf_run[0])  # the run dir -> model/ + the BERT tokenizer saved with it
    assert isinstance(bundle.denoiser.backbone, HFMaskedLM)
    assert (bundle.mask_id, bundle.vocab_size, bundle.length) == (4, 299, 32)
    records = sample(bundle, num_samples=6, batch_size=3, length=None, steps=8, progress=False, seed=3)
    tokens = torch.tensor([r.tokens for r in records])  # (6, 32)
    assert tokens.shape == (6, 32)
    assert not (tokens == bundle.mask_id).any() and not (tokens == bundle.tokenizer.pad_token_id).any()
    assert len(set(tokens.flatten().tolist())) > 40  # drawn from the model, not one repeated id
    assert all(r.text == bundle.tokenizer.decode(r.tokens, skip_special_tokens=True) for r in records)


def test_edlm_with_an_ar_energy_that_shares_its_tokenizer(hf_run, tmp_path):
    bundle = load_denoiser_bundle(hf_run[0])
    torch.manual_seed(0)
    ar = ARTransformer(len(bundle.tokenizer), 32, hidden_size=32, n_blocks=1, n_heads=2, dropout=0.0,
                       mask_id=bundle.mask_id)
    save_pretrained(ar, tmp_path / "ar", tokenizer=bundle.tokenizer)
    energy = load_energy("ar:" + str(tmp_path / "ar"), bundle)
    records = sample(bundle, num_samples=3, batch_size=3, length=None, steps=4, energy=energy, k=2,
                     progress=False)
    assert all(bundle.mask_id not in r.tokens for r in records) and records[0].nfe_energy > 0


def test_eval_nll_matches_the_bound_the_trainer_logged(hf_run, cache_dir, tmp_path):
    run_dir, result = hf_run
    out = tmp_path / "nll.json"
    rc = main(["eval", "nll", "--denoiser", str(run_dir), "--data", "wikipedia_en", "--max-chars", str(VAL_CHARS),
               "--cache-dir", str(cache_dir), "--time-samples", "4", "--seed", "5", "--no-progress",
               "--json", str(out)])
    assert rc == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["is_bound"] and row["num_tokens"] == 32 * row["num_sequences"]
    print(f"eval nll {row['nll']:.4f} ± {row['se']:.4f} (4 time samples) vs the trainer's val/nll {result.val_nll:.4f}")
    # two estimates of one bound (4 passes vs the trainer's one, on the same rows): apart by sampling noise only
    assert abs(row["nll"] - result.val_nll) < 4 * row["se"] * math.sqrt(1 + 4), (row, result.val_nll)


def test_a_random_init_of_a_config_trains_with_another_tokenizer(tmp_path, tiny_bert_config, cache_dir, micro):
    # the GPU benchmark's path: a BERT architecture from config.json, the shipped BPE tokenizer, no weights read
    cfg = load_config("tiny", micro(tmp_path / "run", cache_dir, max_steps=3, **{
        "model.backbone": "hf", "model.hf_name": str(tiny_bert_config), "model.hf_pretrained": "false",
        "data.corpus": "wikipedia_en", "data.tokenizer": "edlm/assets/wikipedia_en", "train.val_check_interval": 3}))
    result = train(cfg, "mdlm")
    bundle = load_denoiser_bundle(tmp_path / "run")
    assert (bundle.mask_id, bundle.vocab_size, bundle.denoiser.backbone.pad_id) == (4095, 4095, 1)
    assert bundle.denoiser.backbone.model.config.vocab_size == 4096 and math.isfinite(result.val_nll)


def test_bad_settings_fail_in_one_line(tmp_path, tiny_bert, capsys):
    with pytest.raises(ConfigError, match="model.backbone=hf needs model.hf_name"):
        load_config("tiny", ["model.backbone=hf"])
    with pytest.raises(ConfigError, match="model.hf_name=x is read only with model.backbone=hf"):
        load_config("tiny", ["model.hf_name=x"])
    with pytest.raises(ConfigError, match="applies to `edlm train mdlm` only"):
        train(load_config("tiny", ["model.backbone=hf", f"model.hf_name={tiny_bert}"]), "ar")
    cfg = load_config("tiny", ["model.backbone=hf", f"model.hf_name={tiny_bert}", "data.length=65",
                               f"train.run_dir={tmp_path / 'long'}", "data.max_train_chars=20000"])
    with pytest.raises(CheckpointError, match="within the masked LM's 64 positions"):
        train(cfg, "mdlm")
    rc = main(["train", "mdlm", "--run-dir", str(tmp_path / "x"), "model.backbone=hf", "model.hf_name=./no-such"])
    assert rc == 2 and "no such model directory: ./no-such" in capsys.readouterr().err
