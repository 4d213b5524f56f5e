"""Triton kernels behind ``edlm.models.ops`` (imported only on the CUDA path, or by tests under
``TRITON_INTERPRET=1``; triton is a GPU dependency and is never imported by ``import edlm``)."""

from __future__ import annotations

import triton
import triton.language as tl

# rows per program and warps: D = 768 pads to 1024 columns; a few rows per program keep each thread's share of
# the fp32 row block small. Chosen per (M, D) by triton's autotuner on first use (about a second per shape).
_CONFIGS = [triton.Config({"BLOCK_M": m}, num_warps=w)
            for m, w in ((1, 2), (1, 4), (2, 4), (2, 8), (4, 4), (4, 8), (8, 4), (8, 8), (16, 8), (16, 16))]


@triton.autotune(configs=_CONFIGS, key=["M"])
@triton.jit
def add_norm_modulate_kernel(
    x_ptr, y_ptr, gate_ptr, w_ptr, shift_ptr, scale_ptr, x_out_ptr, h_ptr,
    M, rows_per_cond, cond_stride, eps,
    D: tl.constexpr, HAS_GATE: tl.constexpr, HAS_MOD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Rows r of x, y (M, D): s = x + gate[c]·y (c = r // rows_per_cond), x_out = s, h = LN(s)·w·(1 + scale[c])
    + shift[c], LN without bias over D in fp32 on s as stored (rounded to x's dtype)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    cols = tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    row_ok = rows < M
    col_ok = cols < D
    ok = row_ok[:, None] & col_ok[None, :]  # (BLOCK_M, BLOCK_D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    cond = (rows // rows_per_cond)[:, None].to(tl.int64) * cond_stride + cols[None, :]  # per-sequence rows
    x = tl.load(x_ptr + offs, mask=ok, other=0.0, eviction_policy="evict_first").to(tl.float32)  # read once
    y = tl.load(y_ptr + offs, mask=ok, other=0.0, eviction_policy="evict_first").to(tl.float32)
    if HAS_GATE:  # per-sequence rows, read by every row of the sequence: kept in L2
        y = y * tl.load(gate_ptr + cond, mask=ok, other=0.0, eviction_policy="evict_last").to(tl.float32)
    s = (x + y).to(x_out_ptr.dtype.element_ty)  # the residual stream as stored
    tl.store(x_out_ptr + offs, s, mask=ok)
    s = s.to(tl.float32)
    mean = tl.sum(s, axis=1) / D  # (BLOCK_M,)
    centred = tl.where(ok, s - mean[:, None], 0.0)
    var = tl.sum(centred * centred, axis=1) / D
    h = centred * tl.rsqrt(var + eps)[:, None]
    h = h * tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_MOD:
        scale = tl.load(scale_ptr + cond, mask=ok, other=0.0, eviction_policy="evict_last").to(tl.float32)
        shift = tl.load(shift_ptr + cond, mask=ok, other=0.0, eviction_policy="evict_last").to(tl.float32)
        h = h * (1.0 + scale) + shift
    tl.store(h_ptr + offs, h.to(h_ptr.dtype.element_ty), mask=ok)


@triton.jit
def block_bounds_kernel(
    src_ptr, idx_ptr, up_ptr, asum_ptr, mb_ptr, row_stride, C, nb, exclude,
    FLOOR: tl.constexpr, REL: tl.constexpr, SLOPE: tl.constexpr,
    HAS_INDEX: tl.constexpr, BLOCK: tl.constexpr, BLOCKS: tl.constexpr, SUM64: tl.constexpr = True,
    SUM_SLACK: tl.constexpr = 0.0,
):
    """Stage 1 of ``edlm.diffusion.categorical._draw_fast`` for BLOCKS blocks of BLOCK ids of one row: the block's
    largest value m_b (NaN if it holds NaN or +inf), Σ a and Σ a·(1 + REL + |d|·SLOPE) (float64), a = exp(d),
    d = max(x − m_b, FLOOR) in float32, with a = 0 where x = −∞ (and at the id ``exclude``). ``SUM64`` False: the
    raised masses summed in float32 and raised again by ``SUM_SLACK`` (measured against float64 in session 11)."""
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
