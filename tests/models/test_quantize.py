"""Int8 and int4 checkpoints: error within half a step, small tensors and vectors kept, loaded like any."""

import runpy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import edlm
from edlm.errors import CheckpointError
from edlm.models import DiT, from_pretrained, load_tokenizer_from
from edlm.models.checkpoints import WEIGHTS_NAME, load_denoiser, save_pretrained
from edlm.models.quantize import (
    GROUP,
    INT4_SCALE_SUFFIX,
    INT4_SHAPE_SUFFIX,
    MIN_NUMEL,
    SCALE_SUFFIX,
    dequantize,
    dequantize_int4,
    dequantize_int8,
    pack_nibbles,
    quantize,
    quantize_int4,
    quantize_int8,
    unpack_nibbles,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(edlm.__file__).parent / "assets" / "tiny-shakespeare" / "mdlm"


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
    model = DiT(vocab_size=300, length=16, hidden_size=64, n_blocks=1, n_heads=4, cond_dim=32)
    save_pretrained(model, tmp_path, dtype=torch.int8)
    state = load_file(str(tmp_path / WEIGHTS_NAME))
    key = next(k for k in state if k.endswith(SCALE_SUFFIX))
    state[key] = state[key][:-1]  # one scale short
    save_file(state, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match="int8"):
        from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- int4
def _random_dit(n_blocks: int = 2) -> DiT:
    torch.manual_seed(0)
    model = DiT(vocab_size=300, length=16, hidden_size=64, n_blocks=n_blocks, n_heads=4, cond_dim=32).eval()
    for p in model.parameters():  # adaLN starts at zero: give every weight a value to quantise
        torch.nn.init.normal_(p, std=0.05)
    return model


def test_nibbles_are_packed_low_first_as_q_plus_8():
    q = torch.tensor([[-7, 7, 0, -1, 3, -4]])
    packed = pack_nibbles(q)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0xF1, 0x78, 0x4B]]  # (-7+8) | (7+8) << 4, (0+8) | (-1+8) << 4, (3+8) | (-4+8) << 4
    assert torch.equal(unpack_nibbles(torch.tensor([[0xF1, 0x78, 0x4B]], dtype=torch.uint8)), q.to(torch.int8))
    pairs = torch.cartesian_prod(torch.arange(-7, 8), torch.arange(-7, 8))  # every (even, odd) pair of values
    assert torch.equal(unpack_nibbles(pack_nibbles(pairs)), pairs.to(torch.int8))


def test_int4_loading_reads_the_pinned_layout():
    # one row of 70 entries: two groups, the second holding 6 entries and 58 of padding
    packed = torch.full((1, GROUP), 0x78, dtype=torch.uint8)  # every (even, odd) pair is (0, -1)
    packed[0, 0] = 0xF1  # entries 0, 1 are (-7, 7)
    state = {"w": packed, "w" + INT4_SCALE_SUFFIX: torch.tensor([[0.5, 2.0]], dtype=torch.float16),
             "w" + INT4_SHAPE_SUFFIX: torch.tensor([1, 70])}
    w = dequantize_int4(state)["w"]
    want = torch.tensor([0.0, -1.0] * 35)
    want[:GROUP] *= 0.5
    want[GROUP:] *= 2.0
    want[:2] = torch.tensor([-3.5, 3.5])
    assert w.dtype == torch.float32 and w.shape == (1, 70)
    assert torch.equal(w[0], want)


def test_int4_round_trip_error_is_at_most_half_a_group_step():
    g = torch.Generator().manual_seed(0)
    rows, cols = 40, 200  # 200 = 3 * 64 + 8: the last group is padded
    w = torch.randn(rows, cols, generator=g) * torch.logspace(-7, 1, rows)[:, None]  # float16 subnormal scales too
    w[3, GROUP:2 * GROUP] = 0.0  # an all-zero group
    w[5] = 0.0  # an all-zero row
    w[7, 5] = 100.0  # one outlier: only its own group gets the coarse step
    state = quantize_int4({"w": w, "b": torch.randn(64), "small": torch.randn(8, 8)}, {"w", "b", "small"})
    assert state["w"].dtype == torch.uint8 and state["w"].shape == (rows, 4 * GROUP // 2)
    scale = state["w" + INT4_SCALE_SUFFIX]
    assert scale.dtype == torch.float16 and scale.shape == (rows, 4)
    assert state["w" + INT4_SHAPE_SUFFIX].tolist() == [rows, cols]
    assert state["b"].dtype == torch.float32 and state["small"].dtype == torch.float32

    padded = torch.nn.functional.pad(w, (0, 4 * GROUP - cols)).view(rows, 4, GROUP)
    exact = padded.abs().amax(dim=2) / 7  # (rows, groups)
    assert (scale.float() >= exact).all()  # rounded up to float16: no entry clips
    normal = exact > torch.finfo(torch.float16).tiny
    assert (scale.float()[normal] <= exact[normal] * (1 + 2**-10)).all()  # and by at most a float16 ulp

    back = dequantize(state)
    assert set(back) == {"w", "b", "small"} and back["w"].dtype == torch.float32 and back["w"].shape == (rows, cols)
    step = scale.float().repeat_interleave(GROUP, dim=1)[:, :cols]  # (rows, cols): each entry's own step
    err = (back["w"] - w).abs()
    assert (err <= step / 2 * (1 + 1e-6)).all()
    assert (err / step).max() > 0.45  # the bound is nearly reached: the data really is 4-bit
    assert torch.equal(back["w"][3, GROUP:2 * GROUP], torch.zeros(GROUP))
    assert torch.equal(back["w"][5], torch.zeros(cols))
    assert err[7, GROUP:].max() < 1e-3 * 100  # the outlier's step stays in its group


def test_int4_refuses_weights_that_float16_scales_cannot_hold():
    w = torch.ones(64, 128)
    w[0, 0] = float("nan")
    with pytest.raises(ValueError, match="float16"):
        quantize_int4({"w": w}, {"w"})


def test_quantize_dispatch_names_its_formats():
    w = torch.randn(64, 128)
    assert quantize({"w": w}, {"w"}, "int8")["w"].dtype == torch.int8
    assert quantize({"w": w}, {"w"}, "int4")["w"].dtype == torch.uint8
    with pytest.raises(ValueError, match="int8, int4"):
        quantize({"w": w}, {"w"}, "int3")


def test_int4_checkpoint_is_small_and_gives_nearly_the_same_logits(tmp_path):
    model = _random_dit()
    save_pretrained(model, tmp_path / "i8", dtype=torch.int8)
    save_pretrained(model, tmp_path / "i4", dtype="int4")
    state = load_file(str(tmp_path / "i4" / WEIGHTS_NAME))
    assert state["vocab_embed.embedding"].dtype == torch.uint8  # tables follow the int8 rule: 2-D, >= MIN_NUMEL
    assert state["output_layer.linear.weight"].dtype == torch.uint8
    quantised = sum(int(v[0] * v[1]) for k, v in state.items() if k.endswith(INT4_SHAPE_SUFFIX))
    size = (tmp_path / "i4" / WEIGHTS_NAME).stat().st_size
    assert size <= 0.3 * 4 * quantised  # 4.25 bits a weight, plus float16 vectors and the header: 0.17 measured
    loaded = from_pretrained(tmp_path / "i4")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randint(0, 300, (4, 16))
    sigma = torch.rand(4)
    with torch.no_grad():
        ref, got, got8 = model(x, sigma), loaded(x, sigma), from_pretrained(tmp_path / "i8")(x, sigma)
    # a step of max|w_group| / 7 is ~15x int8's max|w_row| / 127: int8 is off by 0.4-0.6 % of max|logit| on
    # seeds 0-4, int4 by 7.5-9.9 %; weights read in a wrong order would be off by ~100 %
    err, err8 = (got - ref).abs().max() / ref.abs().max(), (got8 - ref).abs().max() / ref.abs().max()
    assert 0 < err8 < err < 0.15


def test_int8_as_torch_dtype_or_string_writes_the_same_file(tmp_path):
    model = _random_dit(n_blocks=1)
    save_pretrained(model, tmp_path / "a", dtype=torch.int8)
    save_pretrained(model, tmp_path / "b", dtype="int8")
    assert (tmp_path / "a" / WEIGHTS_NAME).read_bytes() == (tmp_path / "b" / WEIGHTS_NAME).read_bytes()
    with pytest.raises(CheckpointError, match="int8, int4"):
        save_pretrained(model, tmp_path / "c", dtype="int3")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("corrupt", ["short scale", "no shape", "wrong shape"])
def test_a_corrupt_int4_checkpoint_is_a_checkpoint_error(tmp_path, corrupt):
    save_pretrained(_random_dit(n_blocks=1), tmp_path, dtype="int4")
    state = load_file(str(tmp_path / WEIGHTS_NAME))
    key = next(k for k in state if k.endswith(INT4_SCALE_SUFFIX))[: -len(INT4_SCALE_SUFFIX)]
    if corrupt == "short scale":
        state[key + INT4_SCALE_SUFFIX] = state[key + INT4_SCALE_SUFFIX][:-1]
    elif corrupt == "no shape":
        del state[key + INT4_SHAPE_SUFFIX]
    else:
        state[key + INT4_SHAPE_SUFFIX] = state[key + INT4_SHAPE_SUFFIX] * 2
    save_file(state, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match="int4"):
        from_pretrained(tmp_path)


TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\nFirst Citizen:\n"
        "You are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\nFirst Citizen:\n"
        "First, you know Caius Marcius is chief enemy to the people.\n")


def _masked_nll(directory: Path) -> float:
    """Mean NLL (nats/char) of the denoiser on TEXT's masked characters, half masked, 20 fixed draws."""
    denoiser = load_denoiser(directory).eval()
    ids = torch.tensor(load_tokenizer_from(directory)(TEXT)["input_ids"][:128])[None]  # (1, 128)
    ids = ids.expand(20, -1)  # (20, 128)
    masked = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    with torch.no_grad():
        logp = denoiser.backbone(ids.masked_fill(masked, denoiser.mask_id), torch.zeros(20)).log_softmax(-1)
    nll = -logp.gather(-1, ids[..., None])[..., 0]  # (20, 128)
    return ((nll * masked).sum(1) / masked.sum(1)).mean().item()


def test_the_tiny_shakespeare_denoiser_exported_as_int4_predicts_nearly_as_well(tmp_path):
    export = runpy.run_path(str(ROOT / "benchmarks" / "wiki" / "export_weights.py"))["main"]
    export(str(TINY), str(tmp_path / "i4"), "int4")
    int8_bytes, int4_bytes = (TINY / WEIGHTS_NAME).stat().st_size, (tmp_path / "i4" / WEIGHTS_NAME).stat().st_size
    assert int4_bytes < 0.55 * int8_bytes  # 303794 vs 575586 bytes measured
    nll8, nll4 = _masked_nll(TINY), _masked_nll(tmp_path / "i4")
    # the shipped weights are int8 already; re-stored as int4 they cost 0.015 nats/char here (2.580 -> 2.595)
    assert 2.4 < nll8 < 2.8 and abs(nll4 - nll8) < 0.05
