"""save_pretrained / from_pretrained: exact round trips, MDLM's hub layout, and every failure as a CheckpointError."""

import json
import os
from fnmatch import fnmatch

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edlm.diffusion.schedules import CosineSchedule
from edlm.errors import CheckpointError
from edlm.models import (
    MODEL_TYPES,
    ARTransformer,
    Denoiser,
    DiT,
    check_vocab,
    from_pretrained,
    load_denoiser,
    load_tokenizer_from,
    read_checkpoint_config,
    register_model_type,
    save_pretrained,
)
from edlm.models import checkpoints as ckpt


def tiny_tokenizer(n_words: int):
    """A word-level PreTrainedTokenizerFast with n_words words + <|endoftext|> + [UNK] + [MASK] (last)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<|endoftext|>", "[UNK]"] + [f"w{i}" for i in range(n_words)] + ["[MASK]"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", mask_token="[MASK]",
                                   eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def logits_of(model, x, sigma=None):
    with torch.no_grad():
        return model(x) if sigma is None else model(x, sigma)


# ----------------------------------------------------------------------------- round trips
def test_dit_round_trip_gives_identical_logits(tiny_dit_tc, tokens, tmp_path):
    sigma = torch.tensor([0.2, 1.0, 4.0])
    out = save_pretrained(tiny_dit_tc, tmp_path / "dit", extra={"step": 7, "note": "tiny"})
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]  # no temp files left behind
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "dit" and cfg["extra"] == {"step": 7, "note": "tiny"}
    assert cfg["config"] == dict(vocab_size=37, length=16, hidden_size=32, n_blocks=2, n_heads=4, cond_dim=16,
                                 dropout=0.0, time_conditioning=True, causal=False)

    loaded = from_pretrained(out, expected_type="dit")
    assert type(loaded) is DiT and not loaded.training and loaded.time_conditioned
    assert torch.equal(logits_of(loaded, tokens, sigma), logits_of(tiny_dit_tc, tokens, sigma))
    assert read_checkpoint_config(out)["extra"]["step"] == 7


def test_half_precision_storage_halves_the_file_and_loads_as_float32(tiny_dit_tc, tokens, tmp_path):
    full = save_pretrained(tiny_dit_tc, tmp_path / "fp32") / "model.safetensors"
    half = save_pretrained(tiny_dit_tc, tmp_path / "fp16", dtype=torch.float16) / "model.safetensors"
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.55
    loaded = from_pretrained(half.parent, expected_type="dit")
    params = {name for name, _ in tiny_dit_tc.named_parameters()}
    for name, p in loaded.state_dict().items():  # float32 again: parameters float16-rounded, buffers exact
        ref = tiny_dit_tc.state_dict()[name]
        assert p.dtype == torch.float32
        assert torch.equal(p, ref.half().float() if name in params else ref)
    sigma = torch.tensor([0.2, 1.0, 4.0])
    diff = (logits_of(loaded, tokens, sigma) - logits_of(tiny_dit_tc, tokens, sigma)).abs().max()
    assert 0 < diff < 1e-2  # rounded weights: close, not identical


def test_ar_round_trip_gives_identical_logits(tiny_sizes, randomize, tokens, tmp_path):
    model = randomize(ARTransformer(**tiny_sizes, dropout=0.0, mask_id=36)).eval()
    save_pretrained(model, tmp_path)
    loaded = from_pretrained(tmp_path, expected_type="ar")
    assert type(loaded) is ARTransformer and loaded.mask_id == 36
    assert torch.equal(logits_of(loaded, tokens), logits_of(model, tokens))
    assert torch.equal(loaded.log_prob(tokens), model.log_prob(tokens))


def test_denoiser_round_trip_keeps_mask_id_and_schedule(tiny_dit_tc, tokens, tmp_path):
    den = Denoiser(tiny_dit_tc, CosineSchedule(eps=0.01), mask_id=36)
    save_pretrained(den, tmp_path)
    assert from_pretrained(tmp_path).__class__ is DiT  # the backbone, as for any DiT checkpoint
    back = load_denoiser(tmp_path)
    assert back.mask_id == 36 and isinstance(back.schedule, CosineSchedule) and back.schedule.eps == 0.01
    t = torch.tensor([0.1, 0.5, 0.9])
    assert torch.equal(logits_of(back, tokens, t), logits_of(den, tokens, t))
    assert load_denoiser(tmp_path, schedule="loglinear", mask_id=0).schedule.name == "loglinear"


# ----------------------------------------------------------------------------- failures
def test_wrong_model_type_is_a_checkpoint_error(tiny_ar, tiny_dit, tmp_path):
    save_pretrained(tiny_ar, tmp_path / "ar")
    with pytest.raises(CheckpointError, match="holds a model of type 'ar', but type 'dit' was expected"):
        from_pretrained(tmp_path / "ar", expected_type="dit")
    with pytest.raises(CheckpointError, match="type 'ar', but type 'dit'"):
        load_denoiser(tmp_path / "ar")
    save_pretrained(tiny_dit, tmp_path / "dit")
    with pytest.raises(CheckpointError, match="type 'dit', but type 'ar'"):
        from_pretrained(tmp_path / "dit", expected_type="ar")
    with pytest.raises(ValueError, match="unknown expected_type"):
        from_pretrained(tmp_path / "dit", expected_type="gpt")


def test_truncated_safetensors_is_a_checkpoint_error(tiny_dit, tmp_path):
    save_pretrained(tiny_dit, tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        from_pretrained(tmp_path)
    weights.write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        from_pretrained(tmp_path)


def test_missing_paths_and_files_are_checkpoint_errors(tiny_dit, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        from_pretrained(tmp_path / "nope" / "deeper" / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        from_pretrained(tmp_path / "empty")
    save_pretrained(tiny_dit, tmp_path / "noweights")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        from_pretrained(tmp_path / "noweights")
    (tmp_path / "noweights" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="only pickled weights"):
        from_pretrained(tmp_path / "noweights")
    (tmp_path / "last.ckpt").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match=r"is a pickle and is not loaded as a model; convert .* with `edlm convert SRC DST`"):
        from_pretrained(tmp_path / "last.ckpt")


def test_bad_config_json_is_a_checkpoint_error(tiny_dit, tmp_path):
    save_pretrained(tiny_dit, tmp_path)
    cfg_path = tmp_path / "config.json"
    good = json.loads(cfg_path.read_text())
    cfg_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        from_pretrained(tmp_path)
    cfg_path.write_text(json.dumps({**good, "model_type": "mamba"}))
    with pytest.raises(CheckpointError, match="unknown type 'mamba'"):
        from_pretrained(tmp_path)
    cfg_path.write_text(json.dumps({**good, "config": {**good["config"], "n_layers": 3}}))
    with pytest.raises(CheckpointError, match="cannot build a DiT"):
        from_pretrained(tmp_path)


def test_missing_and_unexpected_keys_are_checkpoint_errors(tiny_dit, tmp_path):
    save_pretrained(tiny_dit, tmp_path)
    state = {k: v.contiguous() for k, v in tiny_dit.state_dict().items()}
    save_file({k: v for k, v in state.items() if k != "blocks.1.attn_out.weight"}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing \(e.g. \['blocks.1.attn_out.weight'\]\)"):
        from_pretrained(tmp_path)
    save_file({**state, "blocks.2.norm1.weight": torch.ones(32)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 unexpected \(e.g. \['blocks.2.norm1.weight'\]\)"):
        from_pretrained(tmp_path)


def test_shape_mismatch_is_a_checkpoint_error(tiny_dit, tmp_path):
    save_pretrained(tiny_dit, tmp_path)
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["config"]["cond_dim"] = 24  # the weights were made with 16
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"shape mismatch .*sigma_map.mlp.0.weight: checkpoint \(16, 256\) "
                                              r"vs model \(24, 256\)"):
        from_pretrained(tmp_path)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tiny_dit, tmp_path, monkeypatch):
    save_pretrained(tiny_dit, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def half_written(state, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ckpt, "save_file", half_written)
    with pytest.raises(CheckpointError, match="disk full"):
        save_pretrained(tiny_dit, tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


# ----------------------------------------------------------------------------- MDLM's hub layout
def write_mdlm_hub_dir(model: DiT, directory, *, with_inv_freq: bool = True, extra_keys: dict | None = None):
    """What ``kuleshov-group/mdlm-owt`` looks like: HF config fields and weights under ``backbone.``."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["MDLM"],
        "auto_map": {"AutoConfig": "configuration_mdlm.MDLMConfig", "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
        "model_type": "mdlm",
        "vocab_size": model.vocab_size,
        "model_length": model.length,
        "hidden_dim": model.hidden_size,
        "cond_dim": model.cond_dim,
        "n_blocks": model.n_blocks,
        "n_heads": model.n_heads,
        "dropout": 0.1,
        "time_conditioning": model.time_conditioned,
        "return_dict": False,
        "torch_dtype": "float32",
        "transformers_version": "4.38.2",
    }
    (directory / "config.json").write_text(json.dumps(config))
    state = {"backbone." + k: v.contiguous() for k, v in model.state_dict().items()}
    if not with_inv_freq:
        del state["backbone.rotary_emb.inv_freq"]
    state.update(extra_keys or {})
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


@pytest.mark.parametrize("with_inv_freq", [True, False])
def test_mdlm_hub_layout_loads_with_identical_logits(tiny_dit, tokens, tmp_path, with_inv_freq):
    write_mdlm_hub_dir(tiny_dit, tmp_path, with_inv_freq=with_inv_freq)
    loaded = from_pretrained(tmp_path, expected_type="dit")
    assert type(loaded) is DiT
    assert loaded.get_config() == {**tiny_dit.get_config(), "dropout": 0.1}
    assert torch.equal(logits_of(loaded, tokens), logits_of(tiny_dit, tokens))
    den = load_denoiser(tmp_path)
    assert den.mask_id == 36 and den.schedule.name == "loglinear" and not den.time_conditioned


def test_mdlm_hub_layout_errors(tiny_dit, tmp_path):
    write_mdlm_hub_dir(tiny_dit, tmp_path / "a", extra_keys={"backbone.lm_head.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="no mapping.*backbone.lm_head.weight"):
        from_pretrained(tmp_path / "a")
    bad_freq = {"backbone.rotary_emb.inv_freq": torch.ones(4)}
    write_mdlm_hub_dir(tiny_dit, tmp_path / "b", with_inv_freq=False, extra_keys=bad_freq)
    with pytest.raises(CheckpointError, match="rotary"):
        from_pretrained(tmp_path / "b")
    write_mdlm_hub_dir(tiny_dit, tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    del cfg["hidden_dim"]
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="lacks the field 'hidden_dim'"):
        from_pretrained(tmp_path / "c")


def test_hub_ids_go_through_snapshot_download(tiny_dit, tokens, tmp_path, monkeypatch):
    import huggingface_hub

    local = write_mdlm_hub_dir(tiny_dit, tmp_path / "snapshot")
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        return str(local)

    monkeypatch.chdir(tmp_path)  # so "kuleshov-group/mdlm-owt" is not a local path
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = from_pretrained("kuleshov-group/mdlm-owt", expected_type="dit")
    assert torch.equal(logits_of(loaded, tokens), logits_of(tiny_dit, tokens))
    repo_id, patterns = calls[0]
    assert repo_id == "kuleshov-group/mdlm-owt"
    wanted = ["config.json", "model.safetensors", "tokenizer.json"]
    pickles = ["pytorch_model.bin", "last.ckpt", "model.pt", "modeling_mdlm.py"]  # nor remote code
    assert all(any(fnmatch(f, p) for p in patterns) for f in wanted)
    assert not any(fnmatch(f, p) for f in pickles for p in patterns)

    def offline(repo_id, **kw):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="downloading it from the Hugging Face hub failed: OSError"):
        from_pretrained("someone/missing-model")


# ----------------------------------------------------------------------------- registry
class Toy(nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.width = width
        self.proj = nn.Linear(width, 1)
        self.vocab_size = 5

    def get_config(self) -> dict:
        return {"width": self.width}

    def forward(self, x):
        return self.proj(x)


@pytest.fixture
def registry():
    """Restore MODEL_TYPES after a test that registers types."""
    saved = dict(MODEL_TYPES)
    yield MODEL_TYPES
    MODEL_TYPES.clear()
    MODEL_TYPES.update(saved)


def test_registered_types_save_and_load(tmp_path, registry):
    with pytest.raises(CheckpointError, match="not a registered model type"):
        save_pretrained(Toy(), tmp_path / "unregistered")
    register_model_type("toy", Toy)
    register_model_type("toy", Toy)  # idempotent
    model = Toy(width=4)
    save_pretrained(model, tmp_path)
    loaded = from_pretrained(tmp_path, expected_type="toy")
    x = torch.randn(2, 4)
    assert type(loaded) is Toy and torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="already registered"):
        register_model_type("dit", Toy)
    with pytest.raises(TypeError, match="get_config"):
        register_model_type("linear", nn.Linear)


def test_registry_contains_every_shipped_model_and_each_constructs():
    assert MODEL_TYPES["dit"] is DiT and MODEL_TYPES["ar"] is ARTransformer
    for cls in (DiT, ARTransformer):
        model = cls(vocab_size=11, length=8, hidden_size=16, n_blocks=1, n_heads=2)
        rebuilt = cls(**model.get_config())
        assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == \
               [(k, v.shape) for k, v in model.state_dict().items()]


# ----------------------------------------------------------------------------- tokenizers
def test_tokenizer_is_saved_loaded_and_checked(tiny_sizes, randomize, tmp_path):
    tok = tiny_tokenizer(34)  # 2 + 34 + 1 = 37 ids = the tiny models' vocab_size
    assert len(tok) == 37 and tok.mask_token_id == 36
    model = randomize(DiT(**tiny_sizes, cond_dim=16))
    save_pretrained(model, tmp_path / "with", tokenizer=tok)
    back = load_tokenizer_from(tmp_path / "with")
    assert back is not None and back.get_vocab() == tok.get_vocab() and back.mask_token == "[MASK]"
    check_vocab(from_pretrained(tmp_path / "with"), back)

    save_pretrained(model, tmp_path / "without")
    assert load_tokenizer_from(tmp_path / "without") is None

    wrong = tiny_tokenizer(10)
    with pytest.raises(CheckpointError, match="the model has 37 ids but the tokenizer has 13"):
        check_vocab(model, wrong)
    with pytest.raises(CheckpointError, match="37 ids"):
        save_pretrained(model, tmp_path / "mismatch", tokenizer=wrong)
    assert not (tmp_path / "mismatch").exists()


def test_loads_onto_the_requested_device(tiny_dit, tmp_path):
    save_pretrained(tiny_dit, tmp_path)
    loaded = from_pretrained(tmp_path, map_location=torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in loaded.parameters())
