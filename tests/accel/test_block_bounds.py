"""edlm.accel.block_bounds: the fast exact draw's stage 1. Its bounds against the exact float64 block masses, the op
against its torch reference, and the Triton kernel against the same reference in triton's CPU interpreter."""

import pytest
import torch

from edlm.accel import block_bounds as bb

GAP = 17.0


def _hard_rows(g, n=300, C=50_258):
    """bf16 logits (n, C) with the cases blocks can get wrong: −∞ stretches, mass only in the last (partial) block,
    a single class with mass, mass on both sides of a block boundary, a heavy tail."""
    logits = (3 * torch.randn(n, C, generator=g)).bfloat16()
    logits[0, : C - 5] = float("-inf")  # all mass in the last, partial block
    logits[1, :] = float("-inf")
    logits[1, 777] = 0.0  # one class only
    logits[2, :] = float("-inf")
    logits[2, [bb.BLOCK - 1, bb.BLOCK]] = 0.0  # two classes, either side of the first block boundary
    logits[3, 1000:20000] = float("-inf")  # empty blocks in the middle
    logits[4] = -GAP
    logits[4, 0] = 0.0  # a heavy tail
    return logits


def _exact_block_masses(rows, exclude):
    lp = rows.double()
    if exclude >= 0:
        lp[:, exclude] = float("-inf")
    m = torch.exp(lp - lp.amax(-1, keepdim=True))
    m = torch.nn.functional.pad(m, (0, -m.shape[1] % bb.BLOCK))
    return m.reshape(m.shape[0], -1, bb.BLOCK).sum(-1), torch.logsumexp(lp, -1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_block_bounds_are_upper_bounds_close_to_the_masses(dtype):
    """U_b ≥ the exact float64 block mass S_b for every block (what makes the accept / redraw exact), and not by much
    more than the stated bound (the redraw rate); lse as logsumexp. Rows chosen to stress the float32 masses:
    values far from 0 (x − m_b rounds), spreads around the e^-40 floor, −∞ stretches, one-class blocks."""
    g = torch.Generator().manual_seed(21)
    C = 5_000
    base = torch.randn(12, C, generator=g, dtype=torch.float64)
    rows = torch.cat([
        3 * base[:3],
        (1000 if dtype != torch.float16 else 60) + 3 * base[3:5],  # large values: x − m_b is not exact in fp32
        -45 * base[5:7].abs(),  # masses on both sides of the e^-40 floor
        torch.where(base[7:9] > 0.5, float("-inf"), 8 * base[7:9]),  # −∞ stretches
        _hard_rows(g, n=5, C=C).double(),
    ]).to(dtype)
    U, top, lse = bb.block_bounds(rows, None, exclude=7)
    S, ref_lse = _exact_block_masses(rows, 7)
    assert torch.equal(U == 0, S == 0)  # no mass, no bound
    assert (U >= S).all(), (S - U).max()
    excess = (U - S)[S > 0] / S[S > 0]
    assert excess.max() < 2 ** -20 + 40 * 2 ** -21 + 1e-6, excess.max()  # the bound's own size, plus the e^-40 floor
    torch.testing.assert_close(lse, ref_lse, atol=2e-6, rtol=0)  # float32 masses: ~1e-7 in log space


def test_the_op_is_its_reference_on_the_cpu_with_and_without_a_row_index():
    g = torch.Generator().manual_seed(3)
    rows = _hard_rows(g, n=9, C=1_300)
    index = torch.tensor([8, 0, 3, 3])
    for idx in (None, index):
        got = bb.block_parts(rows, idx, 12)
        want = bb.block_parts_reference(rows if idx is None else rows[idx], 12)
        assert [t.shape for t in got] == [(rows.shape[0] if idx is None else 4, 6)] * 3
        assert [t.dtype for t in got] == [torch.float64, torch.float32, torch.float32]
        for a, b in zip(got, want):
            assert torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))


_BOUNDS_KERNEL_CHECK = """
import json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch, triton
sys.path.insert(0, sys.argv[1])
from test_block_bounds import _hard_rows, _exact_block_masses
from edlm.accel import block_bounds as bb
from edlm.accel.triton_kernels import block_bounds_kernel

g = torch.Generator().manual_seed(22)
C = 1_300  # 6 blocks, the last one partial: one program of 4 blocks, then one of 2
rows = torch.cat([_hard_rows(g, n=5, C=C), (3 * torch.randn(4, C, generator=g)).bfloat16()])
rows[6, 100] = float("nan")
rows[7, 700] = float("inf")
index = torch.tensor([8, 0, 1, 2, 3, 4, 5, 6, 7, 8])
out = {}
for name, src, idx in (("bf16", rows, index), ("fp32_all_rows", rows.float(), None)):
    n = src.shape[0] if idx is None else idx.shape[0]
    nb = triton.cdiv(C, bb.BLOCK)
    up, asum, mb = (torch.empty(n, nb, dtype=d) for d in (torch.float64, torch.float32, torch.float32))
    block_bounds_kernel[(n, triton.cdiv(nb, 4))](
        src, src if idx is None else idx, up, asum, mb, src.stride(0), C, nb, 12, FLOOR=bb._FLOOR,
        REL=bb._REL, SLOPE=bb._SLOPE, HAS_INDEX=idx is not None, BLOCK=bb.BLOCK, BLOCKS=4)
    ref = bb.block_parts_reference(src if idx is None else src[idx], 12)
    ok_rows = [i for i in range(n) if not torch.isnan(ref[2][i]).any()]
    S, _ = _exact_block_masses((src if idx is None else src[idx])[ok_rows], 12)
    top = mb[ok_rows].amax(-1, keepdim=True).double()
    U = up[ok_rows] * torch.exp(mb[ok_rows].double() - top)
    out[name] = {
        "mb_equal": bool(torch.equal(torch.nan_to_num(mb, nan=7.0), torch.nan_to_num(ref[2], nan=7.0))),
        "nan_blocks": int(torch.isnan(mb).sum()), "nan_blocks_ref": int(torch.isnan(ref[2]).sum()),
        "up_rel": float(((up - ref[0]).abs() / ref[0].clamp_min(1e-300))[~torch.isnan(ref[0])].max()),
        "asum_rel": float(((asum - ref[1]).abs() / ref[1].clamp_min(1e-30))[~torch.isnan(ref[1])].max()),
        "bound_holds": bool((U >= S).all()), "zero_blocks_agree": bool(torch.equal(U == 0, S == 0)),
    }
print(json.dumps(out))
"""


def test_block_bounds_kernel_matches_the_torch_reference_in_the_interpreter():
    """The Triton kernel (triton's CPU interpreter) against `block_parts_reference`: the same block maxima (NaN blocks
    flagged alike), the same sums up to float32 rounding, upper bounds on the exact masses; with a row index and
    without, a bf16 and a float32 source, a partial last program and block."""
    pytest.importorskip("triton")
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, TRITON_INTERPRET="1")
    here = str(Path(__file__).resolve().parent)
    res = subprocess.run([sys.executable, "-c", _BOUNDS_KERNEL_CHECK, here], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert r["mb_equal"] and r["nan_blocks"] == r["nan_blocks_ref"] > 0, (name, r)
        assert r["up_rel"] < 1e-6 and r["asum_rel"] < 1e-5, (name, r)  # float32 exps of two libraries, ~1 ulp apart
        assert r["bound_holds"] and r["zero_blocks_agree"], (name, r)
