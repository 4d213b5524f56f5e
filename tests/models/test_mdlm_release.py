"""MDLM's released checkpoints in every form (Lightning .ckpt with EMA, bare state dict, hub port with prefixed
or bare keys) load into the same weights; a pickle that would run code is refused before anything runs."""

import json
import os

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from test_checkpoints import tiny_tokenizer, write_mdlm_hub_dir

from edlm.cli import main
from edlm.errors import CheckpointError
from edlm.models import DiT, from_pretrained, load_denoiser, read_checkpoint_config
from edlm.models.mdlm_layout import convert_mdlm_hub, mdlm_hub_config, mdlm_keys, mdlm_parameter_keys
from edlm.models.mdlm_release import Opaque, convert_mdlm_checkpoint, lightning_weights, read_plain_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

# MDLM-small's key names (12 blocks) at a width that keeps the files small: 131 keys, a few hundred kB
SMALL_KEYS = dict(vocab_size=41, length=32, hidden_size=16, n_blocks=12, n_heads=2, cond_dim=8, dropout=0.0)


def mdlm_config(length: int = 32, n_heads: int = 2, time_conditioning: bool = False, **top) -> dict:
    """The parts of MDLM's Hydra config (configs/config.yaml + model/small.yaml) that the conversion reads."""
    return {"backbone": "dit", "parameterization": "subs", "time_conditioning": time_conditioning,
            "model": {"name": "small", "type": "ddit", "hidden_size": 16, "cond_dim": 8, "length": length,
                      "n_blocks": 12, "n_heads": n_heads, "scale_by_sigma": True, "dropout": 0.1},
            "noise": {"type": "loglinear"}, **top}


def write_lightning_ckpt(path, raw: DiT, ema: DiT | None, config: dict | None = None, tokenizer=None):
    """What MDLM's Lightning trainer writes: its module's state_dict (DiT under ``backbone.``), the EMA's shadow
    parameters as a list, the hyper-parameters as pickled objects (an OmegaConf config, a tokenizer), optimizer
    and loop states."""
    ckpt = {
        "epoch": 3, "global_step": 1000, "pytorch-lightning_version": "2.2.1",
        "state_dict": {"backbone." + k: v for k, v in raw.state_dict().items()},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(1000.0)}}, "param_groups": [{"lr": 3e-4}]}],
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "hyper_parameters": {"config": OmegaConf.create(config or mdlm_config()), "tokenizer": tokenizer},
    }
    if ema is not None:
        ckpt["ema"] = {"decay": 0.9999, "num_updates": 1000,
                       "shadow_params": [p.detach().clone() for p in ema.parameters()]}
    torch.save(ckpt, path)
    return path


@pytest.fixture
def raw_and_ema(randomize):
    raw = randomize(DiT(**SMALL_KEYS), seed=1).eval()
    ema = randomize(DiT(**SMALL_KEYS), seed=2).eval()  # other weights: a mix-up of the two shows
    return raw, ema


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- MDLM-small at full size
def test_mdlm_small_has_131_keys_and_maps_at_full_size():
    with torch.device("meta"):  # shapes only: no memory for the 170 M parameters
        dit = DiT(vocab_size=50258, length=1024, hidden_size=768, n_blocks=12, n_heads=12, cond_dim=128)
    state = {"backbone." + k: v for k, v in dit.state_dict().items()}
    assert len(mdlm_keys(12)) == 131 and mdlm_keys(12) == list(state)
    assert mdlm_parameter_keys(12) == ["backbone." + n for n, _ in dit.named_parameters()]  # the EMA's order
    hub = mdlm_hub_config(state, length=1024, dropout=0.1, time_conditioning=False)
    assert hub == {"vocab_size": 50258, "model_length": 1024, "hidden_dim": 768, "n_blocks": 12, "n_heads": 12,
                   "cond_dim": 128, "dropout": 0.1, "time_conditioning": False}
    args, ours = convert_mdlm_hub(hub, state)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in dit.state_dict().items()}
    bare = {k.removeprefix("backbone."): v for k, v in state.items()}
    assert list(convert_mdlm_hub(hub, bare)[1]) == list(ours)
    shadow = [torch.empty(p.shape, device="meta") for p in dit.parameters()]
    picked = lightning_weights({"state_dict": state, "ema": {"shadow_params": shadow}}, "ema")
    assert len(picked) == 131 and picked["backbone.rotary_emb.inv_freq"] is state["backbone.rotary_emb.inv_freq"]
    assert all(picked[name] is t for name, t in zip(mdlm_parameter_keys(12), shadow))


# ----------------------------------------------------------------------------- every form, the same weights
def test_every_form_loads_into_the_same_weights(raw_and_ema, tmp_path):
    raw, ema = raw_and_ema
    assert len(raw.state_dict()) == 131
    ckpt = write_lightning_ckpt(tmp_path / "mdlm.ckpt", raw, ema, tokenizer=tiny_tokenizer(38))
    hub_prefixed = write_mdlm_hub_dir(ema, tmp_path / "hub")
    hub_bare = tmp_path / "hub-bare"
    hub_bare.mkdir()
    (hub_bare / "config.json").write_text((hub_prefixed / "config.json").read_text())
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, hub_bare / "model.safetensors")
    torch.save({k: v for k, v in ema.state_dict().items()}, tmp_path / "bare.pt")  # MDLM's DIT.state_dict()

    for src in (hub_prefixed, hub_bare):
        assert same_weights(from_pretrained(src), ema)
    for i, src in enumerate((ckpt, hub_prefixed, hub_bare, tmp_path / "bare.pt")):
        out = convert_mdlm_checkpoint(src, tmp_path / f"out{i}", length=32)
        den = load_denoiser(out)
        assert same_weights(den.backbone, ema), src
        assert den.mask_id == 40 and den.schedule.name == "loglinear" and not den.time_conditioned
        assert den.backbone.get_config()["n_heads"] == 2 and den.length == 32
    raw_out = convert_mdlm_checkpoint(ckpt, tmp_path / "raw", weights="raw")
    assert same_weights(load_denoiser(raw_out).backbone, raw)
    assert read_checkpoint_config(raw_out)["extra"] == {"converted_from": "mdlm.ckpt", "weights": "raw"}
    x = torch.randint(0, 40, (2, 32))
    with torch.no_grad():  # the converted model computes what the original does
        assert torch.equal(load_denoiser(tmp_path / "out0").backbone(x), ema(x))


def test_lightning_config_sets_length_heads_and_time_conditioning(raw_and_ema, tmp_path):
    raw, ema = raw_and_ema
    ckpt = write_lightning_ckpt(tmp_path / "a.ckpt", raw, ema, mdlm_config(length=24, time_conditioning=True))
    dit = from_pretrained(convert_mdlm_checkpoint(ckpt, tmp_path / "a"))
    assert (dit.length, dit.n_heads, dit.time_conditioned) == (24, 2, True)
    assert from_pretrained(convert_mdlm_checkpoint(ckpt, tmp_path / "b", length=64)).length == 64  # given wins
    torch.save({"state_dict": {"backbone." + k: v for k, v in ema.state_dict().items()}}, tmp_path / "b.ckpt")
    dit = from_pretrained(convert_mdlm_checkpoint(tmp_path / "b.ckpt", tmp_path / "c", weights="raw"))
    assert (dit.length, dit.time_conditioned) == (1024, False)  # no config: MDLM-small's context
    assert same_weights(dit, ema)


def test_hyper_parameter_objects_stay_inert(raw_and_ema, tmp_path):
    raw, ema = raw_and_ema
    ckpt = read_plain_checkpoint(write_lightning_ckpt(tmp_path / "m.ckpt", raw, ema, tokenizer=tiny_tokenizer(38)))
    assert isinstance(ckpt["hyper_parameters"]["config"], Opaque)  # never an OmegaConf object: nothing ran
    assert isinstance(ckpt["hyper_parameters"]["tokenizer"], Opaque)
    assert all(type(v) is torch.Tensor for v in ckpt["state_dict"].values())


# ----------------------------------------------------------------------------- refusals
class _Planted:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


class _OwnClass:
    pass


@pytest.mark.parametrize("payload, named", [("reduce", "posix.mkdir"), ("class", "_OwnClass")])
def test_a_pickle_that_would_run_code_is_refused(raw_and_ema, tmp_path, capsys, payload, named):
    raw, _ = raw_and_ema
    marker = tmp_path / "ran"
    planted = _Planted(str(marker)) if payload == "reduce" else _OwnClass()
    torch.save({"state_dict": {"backbone." + k: v for k, v in raw.state_dict().items()}, "x": planted},
               tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=rf"refusing .*evil.ckpt: its pickle would call .*{named}"):
        convert_mdlm_checkpoint(tmp_path / "evil.ckpt", tmp_path / "out")
    assert main(["convert", str(tmp_path / "evil.ckpt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "edlm: error: refusing" in err and "code, not data" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_conversion_errors_are_one_line(raw_and_ema, tmp_path):
    raw, ema = raw_and_ema
    no_ema = write_lightning_ckpt(tmp_path / "noema.ckpt", raw, None)
    with pytest.raises(CheckpointError, match="holds no EMA weights.*--weights raw"):
        convert_mdlm_checkpoint(no_ema, tmp_path / "a")
    sedd = write_lightning_ckpt(tmp_path / "sedd.ckpt", raw, ema, mdlm_config(parameterization="sedd"))
    with pytest.raises(CheckpointError, match="parameterization='sedd'"):
        convert_mdlm_checkpoint(sedd, tmp_path / "b")
    (tmp_path / "junk.ckpt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a torch.save checkpoint"):
        convert_mdlm_checkpoint(tmp_path / "junk.ckpt", tmp_path / "c")
    with pytest.raises(CheckpointError, match="weights must be one of ema, raw"):
        convert_mdlm_checkpoint(no_ema, tmp_path / "d", weights="best")
    out = convert_mdlm_checkpoint(no_ema, tmp_path / "e", weights="raw")
    with pytest.raises(CheckpointError, match="already holds a model"):
        convert_mdlm_checkpoint(no_ema, out, weights="raw")
    with pytest.raises(CheckpointError, match="the model has 41 ids but the tokenizer has 39"):
        convert_mdlm_checkpoint(no_ema, tmp_path / "f", weights="raw", tokenizer=tiny_tokenizer(36))


def test_edlm_convert_command_writes_a_loadable_denoiser(raw_and_ema, tmp_path, capsys):
    raw, ema = raw_and_ema
    ckpt = write_lightning_ckpt(tmp_path / "mdlm.ckpt", raw, ema)
    tok_dir = tmp_path / "tok"
    tiny_tokenizer(38).save_pretrained(str(tok_dir))
    assert main(["convert", str(ckpt), str(tmp_path / "model"), "--tokenizer", str(tok_dir)]) == 0
    assert "edlm convert:" in capsys.readouterr().out
    assert json.loads((tmp_path / "model" / "config.json").read_text())["denoiser"]["mask_id"] == 40
    assert (tmp_path / "model" / "tokenizer.json").is_file()
    assert same_weights(load_denoiser(tmp_path / "model").backbone, ema)
