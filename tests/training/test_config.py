"""Config loading: presets, key=value overrides, and one-line errors for bad input."""

import pytest

from edlm.config import (
    TRAIN_KINDS,
    RunConfig,
    available_presets,
    config_keys,
    load_config,
    save_config,
)
from edlm.errors import ConfigError


def test_presets_are_packaged():
    assert {"tiny", "small"} <= set(available_presets())


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_loads(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, RunConfig)
    assert cfg.preset == preset
    assert cfg.model.hidden_size % cfg.model.n_heads == 0


def test_tiny_is_char_level_shakespeare():
    cfg = load_config("tiny")
    assert cfg.data.corpus == "tinyshakespeare" and cfg.data.tokenizer is None
    assert cfg.data.length == 128


def test_small_is_mdlm_small():
    m = load_config("small").model
    assert (m.hidden_size, m.n_blocks, m.n_heads, m.cond_dim) == (768, 12, 12, 128)
    assert load_config("small").data.length == 1024


def test_overrides_are_typed():
    cfg = load_config("tiny", ["model.hidden_size=64", "optim.lr=1e-3", "train.resume=true",
                               "data.max_train_chars=null", "optim.betas=[0.9,0.95]"])
    assert cfg.model.hidden_size == 64 and isinstance(cfg.model.hidden_size, int)
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.train.resume is True
    assert cfg.data.max_train_chars is None
    assert tuple(cfg.optim.betas) == (0.9, 0.95)


def test_defaults_are_mdlm_owt():
    cfg = RunConfig()
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.ema.decay, cfg.data.length) == (3e-4, 2500, 0.9999, 1024)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["model.hidden=64"], "unknown config key 'model.hidden'; valid keys in model: hidden_size"),
        (["modle.hidden_size=64"], "valid top-level keys: preset, model"),
        (["model.hidden_size=wide"], "model.hidden_size"),
        (["model.n_heads=7"], "divisible"),
        (["optim.decay=exponential"], "optim.decay"),
        (["train.max_steps"], "key=value"),
        (["train.max_minutes=0"], "train.max_minutes must be positive"),
    ],
)
def test_bad_overrides_raise_one_line(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'.*tiny"):
        load_config("huge")


def test_missing_yaml_path():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/no/such/config.yaml")


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config("tiny", ["model.hidden_size=64", "train.seed=7"])
    path = save_config(cfg, tmp_path / "config.yaml")
    again = load_config(str(path))
    assert again.model == cfg.model and again.train == cfg.train and again.data == cfg.data


def test_config_keys_and_kinds():
    keys = config_keys()
    assert "model.hidden_size" in keys and "train.max_steps" in keys and "ema.decay" in keys
    assert list(TRAIN_KINDS)[:2] == ["mdlm", "ar"]
