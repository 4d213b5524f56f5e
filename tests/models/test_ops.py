"""edlm.models.ops: add_norm_modulate (the attention residual, norm2 and modulation in one kernel); the cached
rotary table. (addmm_gelu is tested with the DiT, tests/models/test_dit.py.)"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from edlm.models.dit import DiTBlock, Rotary, modulate
from edlm.models.ops import (
    HAS_TRITON,
    add_norm_modulate,
    add_norm_modulate_reference,
    fused_norm_ready,
    rotary_cos_sin,
)


@pytest.mark.parametrize("cond", [True, False])
def test_reference_is_the_blocks_unfused_residual_norm_and_modulation(cond):
    """What the kernel must compute is exactly what DiTBlock did between attention and MLP (eager, CPU)."""
    torch.manual_seed(0)
    block = DiTBlock(32, 4, cond_dim=8 if cond else None, dropout=0.0).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x, a = torch.randn(3, 10, 32), torch.randn(3, 10, 32)
    mod = torch.randn(3, 1, 6 * 32) if cond else None
    _, _, gate, shift, scale, _ = mod.chunk(6, dim=-1) if cond else (None,) * 6
    with torch.no_grad():
        want_x = block._attn_residual(x, a, gate)
        want_h = block.norm2(want_x)
        if cond:
            want_h = modulate(want_h, shift, scale)
        x_new, h = add_norm_modulate_reference(x, block.attn_out(a), gate, block.norm2.weight, shift, scale)
        op_x, op_h = add_norm_modulate(x, block.attn_out(a), gate, block.norm2.weight, shift, scale)  # CPU: reference
    torch.testing.assert_close(x_new, want_x, rtol=0, atol=0)
    torch.testing.assert_close(h, want_h, rtol=0, atol=0)
    torch.testing.assert_close((op_x, op_h), (x_new, h), rtol=0, atol=0)


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_the_registered_op_has_the_reference_as_its_cpu_kernel():
    assert fused_norm_ready()  # registers edlm::add_norm_modulate (eager, outside any trace)
    g = torch.Generator().manual_seed(3)
    x, y, mod = torch.randn(2, 5, 16, generator=g), torch.randn(2, 5, 16, generator=g), torch.randn(2, 1, 96, generator=g)
    gate, shift, scale = mod[..., :16], mod[..., 16:32], mod[..., 32:48]
    w = torch.rand(16, generator=g)
    got = torch.ops.edlm.add_norm_modulate(x, y, gate, w, shift, scale, 1e-5)
    torch.testing.assert_close(got, add_norm_modulate_reference(x, y, gate, w, shift, scale), rtol=0, atol=0)


def test_cpu_blocks_do_not_take_the_fused_path():
    block = DiTBlock(32, 4, cond_dim=8, dropout=0.0).eval()
    with torch.no_grad():
        assert not block._fuse_norm_here(torch.zeros(1, 2, 32, dtype=torch.bfloat16))


_KERNEL_CHECK = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import torch, triton
    from edlm.models._triton_kernels import add_norm_modulate_kernel

    def run(x, y, gate, w, shift, scale, L, block_m):
        M, D = x.shape[0] * x.shape[1], x.shape[-1]
        xo, h = torch.empty_like(x), torch.empty_like(x)
        conds = [t for t in (gate, shift, scale) if t is not None]
        stride = conds[0].stride(0) if conds else 0
        add_norm_modulate_kernel.fn[(triton.cdiv(M, block_m),)](
            x, y, x if gate is None else gate, w, x if shift is None else shift, x if scale is None else scale,
            xo, h, M, L, stride, 1e-5, D=D, HAS_GATE=gate is not None, HAS_MOD=scale is not None,
            BLOCK_M=block_m, BLOCK_D=triton.next_power_of_2(D))
        return xo, h

    out = {}
    g = torch.Generator().manual_seed(0)
    for name, (B, L, D, cond, dtype, block_m) in {
        "bf16_cond": (3, 7, 48, True, torch.bfloat16, 4),    # 21 rows: blocks straddle sequences, last one partial
        "bf16_plain": (2, 5, 40, False, torch.bfloat16, 2),  # the AR block: gate 1, no modulation
        "fp32_cond": (2, 9, 24, True, torch.float32, 8),
    }.items():
        x = torch.randn(B, L, D, generator=g).to(dtype)
        y = torch.randn(B, L, D, generator=g).to(dtype)
        mod = torch.randn(B, 1, 6 * D, generator=g).to(dtype)  # chunks are strided views, as in DiTBlock
        _, _, gate, shift, scale, _ = mod.chunk(6, dim=-1) if cond else (None,) * 6
        w = (1 + 0.5 * torch.randn(D, generator=g)).to(dtype)
        xo, h = run(x, y, gate, w, shift, scale, L, block_m)
        # the exact sum, and the exact LN + modulation of the sum as stored, in float64 from the same inputs
        gy = y.double() if gate is None else gate.double() * y.double()
        s = x.double() + gy
        xs = xo.double()
        ln = torch.nn.functional.layer_norm(xs, (D,), eps=1e-5) * w.double()
        terms = ln.abs() if scale is None else (ln * (1 + scale.double())).abs() + shift.double().abs()
        want_h = ln if scale is None else ln * (1 + scale.double()) + shift.double()
        eps = torch.finfo(dtype).eps  # error bounds in units of eps times the magnitudes that were summed
        out[name] = {
            "x_err_eps": float(((xs - s).abs() / ((x.double().abs() + gy.abs()) * eps)).max()),
            "h_err": float((h.double() - want_h).abs().max()), "h_scale": float(want_h.abs().max()),
            "h_err_eps": float(((h.double() - want_h).abs() / (terms * eps).clamp_min(eps)).max()),
        }
        # a wrong per-sequence row (rows_per_cond off by one) must show
        _, h_wrong = run(x, y, gate, w, shift, scale, L + 1, block_m)
        out[name]["wrong_rows_h_err"] = float((h_wrong.double() - want_h).abs().max())
    print(json.dumps(out))
    """
)


def test_triton_kernel_matches_float64_in_the_interpreter():
    """The kernel itself (triton's CPU interpreter): the stored sum is x + gate·y rounded once, h is LN of that
    sum times w, modulated per sequence, within the dtype's rounding; a wrong sequence index is caught."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", _KERNEL_CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert r["x_err_eps"] <= 1.0, (name, r)  # the fp32 product and sum, one rounding at the store
        assert r["h_err_eps"] <= 2.0, (name, r)  # fp32 LN and modulation, one rounding at the store
        if "cond" in name:
            assert r["wrong_rows_h_err"] > 100 * r["h_err"] + 1e-3, (name, r)
    assert out["fp32_cond"]["h_err"] < 1e-4 * out["fp32_cond"]["h_scale"]


def test_rotary_table_is_the_ops_float32_table_and_follows_the_device():
    rot = Rotary(8, max_len=16)
    want = rotary_cos_sin(torch.arange(16, dtype=torch.float32), 8, 10_000.0)
    cos, sin = rot(11, torch.device("cpu"))
    torch.testing.assert_close((cos, sin), (want[0][:11], want[1][:11]), rtol=0, atol=0)
    rot = rot.to(torch.bfloat16)  # casting the model must not coarsen positions
    cos, sin = rot(16, torch.device("cpu"))
    assert cos.dtype == sin.dtype == torch.float32
    torch.testing.assert_close((cos, sin), want, rtol=0, atol=0)
    longer = rot(20, torch.device("cpu"))  # beyond the table: computed per call
    torch.testing.assert_close(longer[0][:16], want[0], rtol=0, atol=0)
    assert longer[0].shape == (20, 4)
    rot = rot.to("meta")
    assert rot._table[0].device.type == "meta"
    assert list(Rotary(8, max_len=16).state_dict()) == ["inv_freq"]  # the checkpoint layout is unchanged
