"""DiT: MDLM's key names, numerics against an independent re-derivation, dependence structure, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from edlm.diffusion.schedules import get_schedule
from edlm.models import Denoiser, DiT, layers
from edlm.models.layers import LayerNorm, TimestepEmbedder, apply_rotary, attention


# ----------------------------------------------------------------------------- golden keys
def mdlm_small_golden() -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of kuleshov-group/mdlm's ``DIT`` with configs/model/small.yaml and GPT-2 + mask (50258)."""
    V, D, C, F4, H6 = 50258, 768, 128, 3072, 4608
    head = [
        ("vocab_embed.embedding", (V, D)),
        ("sigma_map.mlp.0.weight", (C, 256)),
        ("sigma_map.mlp.0.bias", (C,)),
        ("sigma_map.mlp.2.weight", (C, C)),
        ("sigma_map.mlp.2.bias", (C,)),
        ("rotary_emb.inv_freq", (32,)),
    ]
    block = [
        ("norm1.weight", (D,)),
        ("attn_qkv.weight", (3 * D, D)),
        ("attn_out.weight", (D, D)),
        ("norm2.weight", (D,)),
        ("mlp.0.weight", (F4, D)),
        ("mlp.0.bias", (F4,)),
        ("mlp.2.weight", (D, F4)),
        ("mlp.2.bias", (D,)),
        ("adaLN_modulation.weight", (H6, C)),
        ("adaLN_modulation.bias", (H6,)),
    ]
    tail = [
        ("output_layer.norm_final.weight", (D,)),
        ("output_layer.linear.weight", (V, D)),
        ("output_layer.linear.bias", (V,)),
        ("output_layer.adaLN_modulation.weight", (2 * D, C)),
        ("output_layer.adaLN_modulation.bias", (2 * D,)),
    ]
    blocks = [(f"blocks.{i}.{k}", s) for i in range(12) for k, s in block]
    return head + blocks + tail


def test_dit_defaults_have_mdlm_small_keys_and_shapes():
    with torch.device("meta"):
        model = DiT(vocab_size=50258)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == mdlm_small_golden()
    assert len(got) == 131
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 169_627_218  # MDLM-small, "169M" in the paper
    assert (model.length, model.time_conditioned, model.causal) == (1024, False, False)


# ----------------------------------------------------------------------------- an independent reference
def mdlm_reference(sd: dict, x, sigma, n_heads: int, causal: bool = False):
    """MDLM's forward re-derived in float64 from its description, reading MDLM's key names.

    Rotary as MDLM's ``Rotary`` builds it: angles duplicated to the full head (cat(f, f)), applied as
    q·cos + rotate_half(q)·sin; attention with an explicit softmax; adaLN order shift, scale, gate.
    """
    sd = {k: v.double() for k, v in sd.items()}
    ln = lambda h, w: F.layer_norm(h, h.shape[-1:]) * w
    n_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    h = sd["vocab_embed.embedding"][x]  # (B, L, D)
    B, L, D = h.shape
    Dh = D // n_heads
    half = 128
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float64) / half)
    t_freq = torch.cat([torch.cos(sigma.double()[:, None] * freqs), torch.sin(sigma.double()[:, None] * freqs)], -1)
    c = F.silu(t_freq @ sd["sigma_map.mlp.0.weight"].T + sd["sigma_map.mlp.0.bias"])
    c = F.silu(c @ sd["sigma_map.mlp.2.weight"].T + sd["sigma_map.mlp.2.bias"])
    inv = 1.0 / (10_000 ** (torch.arange(0, Dh, 2, dtype=torch.float64) / Dh))
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv[None]
    emb = torch.cat([ang, ang], -1)  # (L, Dh)
    cos, sin = emb.cos()[None, :, None], emb.sin()[None, :, None]
    rot_half = lambda q: torch.cat([-q[..., Dh // 2:], q[..., : Dh // 2]], -1)
    for i in range(n_blocks):
        p = f"blocks.{i}."
        mod = c @ sd[p + "adaLN_modulation.weight"].T + sd[p + "adaLN_modulation.bias"]
        sh1, sc1, g1, sh2, sc2, g2 = (m[:, None] for m in mod.chunk(6, -1))
        a = ln(h, sd[p + "norm1.weight"]) * (1 + sc1) + sh1
        qkv = (a @ sd[p + "attn_qkv.weight"].T).reshape(B, L, 3, n_heads, Dh)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = q * cos + rot_half(q) * sin, k * cos + rot_half(k) * sin
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(Dh)
        if causal:
            scores = scores.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
        out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, L, D)
        h = h + g1 * (out @ sd[p + "attn_out.weight"].T)
        m = ln(h, sd[p + "norm2.weight"]) * (1 + sc2) + sh2
        m = F.gelu(m @ sd[p + "mlp.0.weight"].T + sd[p + "mlp.0.bias"], approximate="tanh")
        h = h + g2 * (m @ sd[p + "mlp.2.weight"].T + sd[p + "mlp.2.bias"])
    shift, scale = (m[:, None] for m in (c @ sd["output_layer.adaLN_modulation.weight"].T
                                         + sd["output_layer.adaLN_modulation.bias"]).chunk(2, -1))
    f = ln(h, sd["output_layer.norm_final.weight"]) * (1 + scale) + shift
    return f @ sd["output_layer.linear.weight"].T + sd["output_layer.linear.bias"]


@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_independent_reference(tiny_sizes, randomize, tokens, causal):
    model = randomize(DiT(**tiny_sizes, cond_dim=16, dropout=0.0, time_conditioning=True, causal=causal)).eval()
    sigma = torch.tensor([0.0, 0.7, 3.0])
    with torch.no_grad():
        got = model(tokens, sigma)
    ref = mdlm_reference(model.state_dict(), tokens, sigma, n_heads=tiny_sizes["n_heads"], causal=causal)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, atol=2e-4, rtol=1e-4)


def test_reference_is_sensitive_to_a_wrong_layout(tiny_dit, tokens):
    """Guard for the test above: swapping q and k rows of attn_qkv must change the output."""
    sd = tiny_dit.state_dict()
    D = tiny_dit.hidden_size
    w = sd["blocks.0.attn_qkv.weight"].clone()
    swapped = dict(sd)
    swapped["blocks.0.attn_qkv.weight"] = torch.cat([w[D:2 * D], w[:D], w[2 * D:]])
    with torch.no_grad():
        got = tiny_dit(tokens).double()
    ref_ok = mdlm_reference(sd, tokens, torch.zeros(3), n_heads=4)
    ref_bad = mdlm_reference(swapped, tokens, torch.zeros(3), n_heads=4)
    assert torch.allclose(got, ref_ok, atol=2e-4)
    assert not torch.allclose(got, ref_bad, atol=1e-2)


# ----------------------------------------------------------------------------- parts, checked by hand
def test_rotary_is_half_split_with_base_10000():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)  # (B, L, H, Dh)
    rotary = layers.Rotary(4)
    cos, sin = rotary(3, torch.device("cpu"))
    out = apply_rotary(x, cos, sin)[0, :, 0]  # (L, 4)
    for p in range(3):
        a, b = p * 1.0, p * 0.01  # ω = (1, 10000^(-1/2))
        expect = [1 * math.cos(a) - 3 * math.sin(a), 2 * math.cos(b) - 4 * math.sin(b),
                  3 * math.cos(a) + 1 * math.sin(a), 4 * math.cos(b) + 2 * math.sin(b)]
        assert out[p].tolist() == pytest.approx(expect, abs=1e-6)
    assert rotary.inv_freq.tolist() == pytest.approx([1.0, 0.01])


def test_rotary_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)
    cos, sin = layers.Rotary(8)(40, torch.device("cpu"))
    rq = lambda pos: apply_rotary(q, cos[pos:pos + 1], sin[pos:pos + 1])
    rk = lambda pos: apply_rotary(k, cos[pos:pos + 1], sin[pos:pos + 1])
    score = lambda i, j: float((rq(i) * rk(j)).sum())
    assert score(3, 7) == pytest.approx(score(30, 34), abs=1e-5)
    assert score(3, 7) != pytest.approx(score(3, 8), abs=1e-3)


def test_timestep_embedding_is_cos_then_sin():
    emb = TimestepEmbedder(cond_dim=8).sinusoidal(torch.tensor([0.0, 1.0]))  # (2, 256)
    assert emb.shape == (2, 256)
    assert torch.equal(emb[0], torch.cat([torch.ones(128), torch.zeros(128)]))  # σ = 0: MDLM's unconditioned input
    assert emb[1, 0].item() == pytest.approx(math.cos(1.0))
    assert emb[1, 128].item() == pytest.approx(math.sin(1.0))
    assert emb[1, 1].item() == pytest.approx(math.cos(10_000 ** (-1 / 128)))


def test_sigma_map_at_zero_is_its_forward_of_zeros_and_its_tables_stay_float32():
    torch.manual_seed(0)
    emb = TimestepEmbedder(cond_dim=8)
    for prm in emb.parameters():
        torch.nn.init.normal_(prm)
    sigma = torch.tensor([0.0, 0.0, 0.7])
    expect = emb.mlp(emb.sinusoidal(sigma))  # the frequencies from their formula, as the forward computed them
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(128, dtype=torch.float32) / 128)
    assert torch.equal(emb._freqs, freqs)
    torch.testing.assert_close(emb(sigma), expect, rtol=0, atol=0)
    assert torch.equal(emb.at_zero(2), emb(torch.zeros(2)))  # what an unconditioned network feeds
    tables = emb._freqs, emb._zero_features
    half = emb.to(torch.bfloat16)
    assert half._freqs is tables[0] and half._zero_features is tables[1]  # same device: the same tensors
    assert half.mlp[0].weight.dtype == torch.bfloat16
    assert half._freqs.dtype == half._zero_features.dtype == torch.float32  # never cast: positions stay exact
    assert half.at_zero(3).dtype == torch.bfloat16 and half.at_zero(3).shape == (3, 8)
    assert list(emb.state_dict()) == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]  # MDLM's keys only


def test_layernorm_has_no_bias_and_normalises_in_float32():
    norm = LayerNorm(6)
    assert list(norm.state_dict()) == ["weight"]
    x = torch.randn(2, 3, 6).to(torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), F.layer_norm(x.float(), (6,)).to(torch.bfloat16).float())


def test_attention_matches_explicit_softmax():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 4, generator=g) for _ in range(3))  # (B, L, H, Dh)
    for causal in (False, True):
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
        if causal:
            s = s.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
        expect = torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v)
        torch.testing.assert_close(attention(q, k, v, causal=causal), expect, atol=1e-5, rtol=1e-5)


def test_flash_attn_is_never_looked_up_on_cpu(tiny_dit, tokens, monkeypatch):
    """flash-attn is only for CUDA fp16/bf16: the CPU path must not even look it up."""
    layers._flash_attn_func.cache_clear()

    def boom():
        raise AssertionError("flash-attn looked up for a CPU fp32 input")

    monkeypatch.setattr(layers, "_HAS_FLASH_ATTN", True)  # as if installed: the device check must hold
    monkeypatch.setattr(layers, "_flash_attn_func", boom)
    with torch.no_grad():
        tiny_dit(tokens)


def test_importing_edlm_models_does_not_import_flash_attn_transformers_triton_or_inductor():
    import subprocess
    import sys

    heavy = ("flash_attn", "transformers", "triton", "torch._inductor")  # triton: on the CUDA path only
    code = f"import sys, edlm.models; print(*[int(m in sys.modules) for m in {heavy!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0"] * len(heavy)


# ----------------------------------------------------------------------------- behaviour
def test_mdlm_init_predicts_zero_logits_and_blocks_start_as_identity(tiny_sizes, tokens):
    model = DiT(**tiny_sizes, cond_dim=16, dropout=0.0).eval()  # MDLM's own init (adaLN-Zero)
    with torch.no_grad():
        assert torch.equal(model(tokens), torch.zeros(3, 12, tiny_sizes["vocab_size"]))
        h = torch.randn(3, 12, tiny_sizes["hidden_size"])
        rot = model.rotary_emb(12, h.device)
        c = torch.randn(3, 16)
        assert torch.equal(model.blocks[0](h, rot, c), h)


def test_forward_shape_and_raw_logits(tiny_dit, tokens):
    """The backbone returns raw logits: no SUBS zero-masking or carry-over (SPEC 1.3 is applied later)."""
    mask_id = tiny_dit.vocab_size - 1
    x_t = tokens.clone()
    x_t[:, ::2] = mask_id
    with torch.no_grad():
        logits = tiny_dit(x_t)
    assert logits.shape == (3, 12, tiny_dit.vocab_size)
    assert torch.isfinite(logits).all()  # the [MASK] logit is not −∞
    p_carry = logits.softmax(-1).gather(-1, x_t[..., None])[:, 1::2]  # unmasked positions
    assert (p_carry < 0.99).all()  # not one-hot at unmasked positions


def test_dit_is_bidirectional(tiny_dit, tokens):
    x2 = tokens.clone()
    x2[:, 8] = (x2[:, 8] + 1) % 36
    with torch.no_grad():
        a, b = tiny_dit(tokens), tiny_dit(x2)
    assert not torch.allclose(a[:, :8], b[:, :8], atol=1e-4)  # earlier positions see a later change


def test_causal_dit_does_not_look_ahead(tiny_sizes, randomize, tokens):
    model = randomize(DiT(**tiny_sizes, cond_dim=16, dropout=0.0, causal=True)).eval()
    x2 = tokens.clone()
    x2[:, 8] = (x2[:, 8] + 1) % 36
    with torch.no_grad():
        a, b = model(tokens), model(x2)
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-4)


def test_logits_ignore_sigma_without_time_conditioning(tiny_dit, tokens):
    with torch.no_grad():
        a = tiny_dit(tokens, torch.full((3,), 0.1))
        b = tiny_dit(tokens, torch.full((3,), 5.0))
        c = tiny_dit(tokens)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert tiny_dit.time_conditioned is False


def test_logits_depend_on_sigma_with_time_conditioning(tiny_dit_tc, tokens):
    with torch.no_grad():
        a = tiny_dit_tc(tokens, torch.full((3,), 0.1))
        b = tiny_dit_tc(tokens, torch.full((3,), 5.0))
    assert not torch.allclose(a, b, atol=1e-3)
    assert tiny_dit_tc.time_conditioned is True
    with pytest.raises(ValueError, match="time-conditioned"):
        tiny_dit_tc(tokens)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        tiny_dit_tc(tokens, torch.zeros(3, 1))


def test_length_overflow_is_a_clear_value_error(tiny_dit):
    with pytest.raises(ValueError, match="sequence length 17 exceeds the model's maximum length 16"):
        tiny_dit(torch.zeros(1, 17, dtype=torch.long))
    with torch.device("meta"):
        big = DiT(vocab_size=50258)
        x = torch.zeros(1, 2048, dtype=torch.long)
    with pytest.raises(ValueError, match="sequence length 2048 exceeds the model's maximum length 1024"):
        big(x)


def test_bad_inputs_and_arguments_are_rejected(tiny_dit, tiny_sizes):
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        tiny_dit(torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        DiT(**{**tiny_sizes, "n_heads": 5})
    with pytest.raises(ValueError, match="even"):
        DiT(**{**tiny_sizes, "hidden_size": 12, "n_heads": 4})
    with pytest.raises(ValueError, match="dropout"):
        DiT(**tiny_sizes, dropout=1.0)


def test_dropout_is_active_only_in_training(tiny_sizes, randomize, tokens):
    model = randomize(DiT(**tiny_sizes, cond_dim=16, dropout=0.5))
    model.train()
    assert not torch.equal(model(tokens), model(tokens))
    model.eval()
    assert torch.equal(model(tokens), model(tokens))


def test_bfloat16_weights_run_and_stay_close(tiny_dit, tokens):
    with torch.no_grad():
        ref = tiny_dit(tokens)
        out = tiny_dit.to(torch.bfloat16)(tokens)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


# ----------------------------------------------------------------------------- Denoiser adapter
def test_denoiser_feeds_sigma_of_t_only_when_time_conditioned(tiny_dit, tiny_dit_tc, tokens):
    schedule = get_schedule("loglinear")
    t = torch.tensor([0.1, 0.5, 0.9])
    den = Denoiser(tiny_dit_tc, schedule, mask_id=36)
    with torch.no_grad():
        assert torch.equal(den(tokens, t), tiny_dit_tc(tokens, schedule.sigma(t)))
        assert not torch.allclose(den(tokens, t), tiny_dit_tc(tokens, torch.zeros(3)), atol=1e-3)
    assert (den.time_conditioned, den.vocab_size, den.mask_id, den.length) == (True, 37, 36, 16)

    plain = Denoiser(tiny_dit, schedule, mask_id=36)
    with torch.no_grad():
        assert torch.equal(plain(tokens, t), tiny_dit(tokens, torch.zeros(3)))
    assert plain.time_conditioned is False


def test_denoiser_rejects_bad_mask_id_and_t_shape(tiny_dit, tokens):
    with pytest.raises(ValueError, match="mask_id"):
        Denoiser(tiny_dit, get_schedule("loglinear"), mask_id=37)
    den = Denoiser(tiny_dit, get_schedule("loglinear"), mask_id=36)
    with pytest.raises(ValueError, match="t must have shape"):
        den(tokens, torch.tensor(0.5))


def test_dit_compiles_to_one_graph(tiny_dit, tokens):
    """torch.compile sees the whole forward as one graph (not a few graphs per block)."""
    import torch._dynamo

    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(tiny_dit)(tokens)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
