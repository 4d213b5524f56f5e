"""Triton kernels behind ``edlm.accel.block_bounds`` (imported only on the CUDA path, or by tests under
``TRITON_INTERPRET=1``; triton is a GPU dependency, never imported along with the package)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def block_bounds_kernel(
    src_ptr, idx_ptr, up_ptr, asum_ptr, mb_ptr, row_stride, C, nb, exclude,
    FLOOR: tl.constexpr, REL: tl.constexpr, SLOPE: tl.constexpr,
    HAS_INDEX: tl.constexpr, BLOCK: tl.constexpr, BLOCKS: tl.constexpr, SUM64: tl.constexpr = True,
    SUM_SLACK: tl.constexpr = 0.0,
):
    """``edlm::block_parts`` (stage 1 of the fast exact draw) for BLOCKS blocks of BLOCK ids of one row: the block's
    largest value m_b (NaN if it holds NaN or +inf), Σ a and Σ a·(1 + REL + |d|·SLOPE) (float64), a = exp(d),
    d = max(x − m_b, FLOOR) in float32, with a = 0 where x = −∞ (and at the id ``exclude``). ``SUM64`` False: the
    raised masses summed in float32 and raised again by ``SUM_SLACK`` ≥ their rounding (H200, 32 768 rows: 2.22
    against 2.35 ms, but the slack a worst-case order needs, 2^-16, would raise the redraw rate: the op sums in
    float64)."""
    r = tl.program_id(0)
    blocks = tl.program_id(1) * BLOCKS + tl.arange(0, BLOCKS)  # (BLOCKS,)
    row = tl.load(idx_ptr + r).to(tl.int64) if HAS_INDEX else r.to(tl.int64)
    cols = blocks[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]  # (BLOCKS, BLOCK)
    ok = cols < C
    x = tl.load(src_ptr + row * row_stride + cols, mask=ok, other=float("-inf"),
                eviction_policy="evict_first").to(tl.float32)
    x = tl.where(cols == exclude, float("-inf"), x)
    bad = tl.max(((x != x) | (x == float("inf"))).to(tl.int32), axis=1) > 0
    mb = tl.where(bad, float("nan"), tl.max(x, axis=1))  # (BLOCKS,)
    off = x == float("-inf")
    d = tl.where(off, 0.0, tl.maximum(x - mb[:, None], FLOOR))
    a = tl.where(off, 0.0, tl.exp(d))
    if SUM64:
        up = tl.sum((a * (1.0 + REL - d * SLOPE)).to(tl.float64), axis=1)
    else:  # a float32 sum, raised by SUM_SLACK ≥ its rounding in any order (BLOCK · 2^-24 for positive terms)
        up = (tl.sum(a * (1.0 + REL - d * SLOPE), axis=1) * (1.0 + SUM_SLACK)).to(tl.float64)
    out = r.to(tl.int64) * nb + blocks
    okb = blocks < nb
    tl.store(up_ptr + out, up, mask=okb)
    tl.store(asum_ptr + out, tl.sum(a, axis=1), mask=okb)
    tl.store(mb_ptr + out, mb, mask=okb)
