"""Stage 1 of the fast exact categorical draw: per block of ``BLOCK`` ids, float32 upper bounds on the block's mass.

``block_parts`` (the custom op ``edlm::block_parts``) reads each row once and gives, per block, its largest value
m_b and its float32 masses a = exp(max(x − m_b, _FLOOR)), summed plain and raised by their error bound; on CUDA it is
one Triton kernel (`triton_kernels.block_bounds_kernel`), elsewhere `block_parts_reference`. ``block_bounds`` turns
them into bounds U_b ≥ the exact float64 block masses, which the draw (``edlm.diffusion.categorical``) picks a block
from and then accepts against the block's exact masses.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BLOCK", "block_parts", "block_parts_reference", "block_bounds"]

BLOCK = 256
"""Ids per block (about √50 258, a multiple of the GPU's vector width); the categorical draw's blocks are the same."""

# The float32 block-mass bounds. A mass below e^_FLOOR of its block's largest is raised to e^_FLOOR (an upper bound;
# a row's total grows by at most C·e^-40 ≈ 2e-13 of its largest mass). Each float32 mass a = exp(d),
# d = fl32(x − block max) ≤ 0, is multiplied by 1 + _REL + |d|·_SLOPE, which bounds its error from above: the
# rounding of d and of d·log2(e) (each |d|·2^-24 relative in exp), the exp itself (≤ 2^-22: ex2.approx) and the
# float32 product (2^-23): 2^-22.4·|d| + 2^-21.4 < 2^-21·|d| + 2^-20 (margin ≥ 2×, which also covers the float64
# block scale and sums, ~1e-13). A draw is rejected with probability ≈ the bound's excess: ~1e-6 per draw.
_FLOOR = -40.0
_REL = 2.0 ** -20
_SLOPE = 2.0 ** -21

_HAS_TRITON = importlib.util.find_spec("triton") is not None  # looked up once (nothing is imported)
# blocks of one row per Triton program (one warp). H200, 32 768 rows: 2.35 ms, against 4.42 ms for 8 blocks over
# 4 warps and 8.28 ms for 16 over 8
_BLOCKS_PER_PROGRAM = 2


def block_parts_reference(rows: Tensor, exclude: int) -> tuple[Tensor, Tensor, Tensor]:
    """``edlm::block_parts`` in torch: for each block of ``BLOCK`` ids of rows (n, C), the float64 sum of its raised
    float32 masses a·(1 + _REL + |d|·_SLOPE), the float32 sum of its masses a = exp(d), d = max(x − m_b, _FLOOR)
    (0 where x = −∞, and at the id ``exclude`` if ≥ 0), and m_b, its largest value (NaN if it holds NaN or +inf):
    (n, nb) each."""
    n, C = rows.shape
    wd = torch.float64 if rows.dtype == torch.float64 else torch.float32  # x − m_b is one rounding in float32
    x = rows.to(wd)
    if exclude >= 0:
        x = torch.where(torch.arange(C, device=x.device) == exclude, float("-inf"), x)
    xb = F.pad(x, (0, -C % BLOCK), value=float("-inf")).reshape(n, -1, BLOCK)  # (n, nb, BLOCK)
    mb = xb.amax(-1)  # (n, nb); −inf for a block without mass, NaN if it holds NaN
    mb = torch.where((xb == float("inf")).any(-1), float("nan"), mb)
    off = xb == float("-inf")  # off the support: mass exactly 0 (also every entry of a block without mass)
    d = torch.where(off, 0.0, (xb - mb[..., None]).float().clamp_min(_FLOOR))  # ≤ 0; NaN in a NaN block
    a = torch.where(off, 0.0, torch.exp(d))  # float32 masses
    return (a * (1.0 + _REL - d * _SLOPE)).double().sum(-1), a.sum(-1), mb


@torch.library.custom_op("edlm::block_parts", mutates_args=())
def block_parts(source: Tensor, index: Tensor | None, exclude: int) -> tuple[Tensor, Tensor, Tensor]:
    """`block_parts_reference` of the rows ``source[index]`` (all rows if None); opaque to torch.compile, so the
    compiled and the eager draw get the same numbers. On CUDA one Triton kernel reads each row once (bf16, fp16 or
    fp32 sources; float64 ones take the torch path)."""
    if source.is_cuda and source.dtype != torch.float64 and _HAS_TRITON:
        return _block_parts_triton(source, index, exclude)
    return block_parts_reference(source if index is None else source[index], exclude)


@block_parts.register_fake
def _(source: Tensor, index: Tensor | None, exclude: int) -> tuple[Tensor, Tensor, Tensor]:
    n = source.shape[0] if index is None else index.shape[0]
    nb = -(-source.shape[1] // BLOCK)
    wd = torch.float64 if source.dtype == torch.float64 else torch.float32
    return (source.new_empty((n, nb), dtype=torch.float64), source.new_empty((n, nb), dtype=torch.float32),
            source.new_empty((n, nb), dtype=wd))


def _block_parts_triton(source: Tensor, index: Tensor | None, exclude: int) -> tuple[Tensor, Tensor, Tensor]:
    import triton

    from .triton_kernels import block_bounds_kernel

    if source.stride(-1) != 1:
        source = source.contiguous()
    n = source.shape[0] if index is None else index.shape[0]
    C = source.shape[1]
    nb = -(-C // BLOCK)
    up = source.new_empty((n, nb), dtype=torch.float64)
    asum = source.new_empty((n, nb), dtype=torch.float32)
    mb = source.new_empty((n, nb), dtype=torch.float32)
    if n:
        grid = (n, triton.cdiv(nb, _BLOCKS_PER_PROGRAM))
        block_bounds_kernel[grid](source, source if index is None else index, up, asum, mb, source.stride(0), C, nb,
                                  exclude, FLOOR=_FLOOR, REL=_REL, SLOPE=_SLOPE, HAS_INDEX=index is not None,
                                  BLOCK=BLOCK, BLOCKS=_BLOCKS_PER_PROGRAM, num_warps=1)
    return up, asum, mb


def block_bounds(source: Tensor, index: Tensor | None, exclude: int) -> tuple[Tensor, Tensor, Tensor]:
    """For the rows ``source[index]`` (n, C): upper bounds U (n, nb) float64 on the blocks' exact masses
    Σ exp(x − top), the rows' largest values top (n, 1) and their log-normalisers lse (n,) float64 (from the
    unraised float32 masses: error ~1e-7 in log space; NaN for a row with NaN, +inf or no mass)."""
    up, asum, mb = block_parts(source, index, exclude)
    top = mb.amax(-1, keepdim=True)  # (n, 1), the row's largest value; NaN if any block holds NaN / +inf
    scale = torch.exp(mb.double() - top.double())  # (n, nb); NaN for a row with no finite entry
    lse = (top.double() + torch.log((asum.double() * scale).sum(-1, keepdim=True))).squeeze(-1)
    return up * scale, top, lse
