"""Int8 checkpoints: row-wise scales, error within half a step, small tensors and vectors kept, loaded like any."""

import pytest
import torch

from edlm.errors import CheckpointError
from edlm.models import DiT, from_pretrained
from edlm.models.checkpoints import WEIGHTS_NAME, save_pretrained
from edlm.models.quantize import MIN_NUMEL, SCALE_SUFFIX, dequantize_int8, quantize_int8


def test_round_trip_error_is_at_most_half_a_step_per_row():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 128, generator=g) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different size
    state = quantize_int8({"w": w, "b": torch.randn(64), "small": torch.randn(8, 8)}, {"w", "b", "small"})
    assert state["w"].dtype == torch.int8 and state["w" + SCALE_SUFFIX].shape == (64,)
    assert state["b"].dtype == torch.float32 and state["small"].dtype == torch.float32  # vector; < MIN_NUMEL
    assert 8 * 8 < MIN_NUMEL <= 64 * 128
    back = dequantize_int8(state)
    step = w.abs().amax(dim=1, keepdim=True) / 127
    assert ((back["w"] - w).abs() <= step / 2 + 1e-7 * w.abs()).all()
    assert (back["w"] - w).abs().max() > 0  # it really is quantised
    assert set(back) == {"w", "b", "small"}


def test_a_scale_without_its_matrix_is_refused():
    with pytest.raises(ValueError, match="no int8 matrix"):
        dequantize_int8({"w" + SCALE_SUFFIX: torch.ones(3)})


def test_int8_checkpoint_loads_as_float32_and_gives_nearly_the_same_logits(tmp_path):
    torch.manual_seed(0)
    model = DiT(vocab_size=300, length=16, hidden_size=64, n_blocks=2, n_heads=4, cond_dim=32).eval()
    for p in model.parameters():  # adaLN starts at zero: give every weight a value to quantise
        torch.nn.init.normal_(p, std=0.05)
    save_pretrained(model, tmp_path / "f16", dtype=torch.float16)
    save_pretrained(model, tmp_path / "i8", dtype=torch.int8)
    assert (tmp_path / "i8" / WEIGHTS_NAME).stat().st_size < 0.6 * (tmp_path / "f16" / WEIGHTS_NAME).stat().st_size
    loaded = from_pretrained(tmp_path / "i8")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randint(0, 300, (4, 16))
    sigma = torch.rand(4)
    with torch.no_grad():
        ref, got = model(x, sigma), loaded(x, sigma)
    assert not torch.equal(ref, got)
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_a_corrupt_int8_checkpoint_is_a_checkpoint_error(tmp_path):
    from safetensors.torch import load_file, save_file

    model = DiT(vocab_size=300, length=16, hidden_size=64, n_blocks=1, n_heads=4, cond_dim=32)
    save_pretrained(model, tmp_path, dtype=torch.int8)
    state = load_file(str(tmp_path / WEIGHTS_NAME))
    key = next(k for k in state if k.endswith(SCALE_SUFFIX))
    state[key] = state[key][:-1]  # one scale short
    save_file(state, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match="int8"):
        from_pretrained(tmp_path)
