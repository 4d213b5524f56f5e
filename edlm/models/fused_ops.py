"""``add_norm_modulate``: a block's residual add, LayerNorm and adaLN modulation in one pass over the activations.

Between the attention and the MLP of a ``DiTBlock`` the activations are read and written by three steps:
``x = x + gate·attn_out``, ``h = LayerNorm(x)``, ``h = h·(1 + scale) + shift``. torch.compile fuses them, but
into a looped two-pass reduction that also skips storing x, so the next kernel reads x and attn_out again
(1.0 ms of a 15 ms NCE forward at B = 32, L = 1024 on an H200; benchmarks/results/speed_notes.md, session 5).
On CUDA ``add_norm_modulate`` runs one Triton kernel that reads x and attn_out once and writes x and h
(``torch.library.triton_op``: torch.compile launches the kernel from its own code). On CPU it is the eager
formula, which is also the reference the kernel is tested against.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

__all__ = ["add_norm_modulate", "add_norm_modulate_reference", "HAS_TRITON"]

HAS_TRITON = importlib.util.find_spec("triton") is not None  # looked up once, at import (nothing is imported)


def add_norm_modulate_reference(x: Tensor, y: Tensor, gate: Tensor | None, weight: Tensor, shift: Tensor | None,
                                scale: Tensor | None, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """(x + gate·y, LN(x + gate·y)·weight·(1 + scale) + shift) in x's dtype; x, y (B, L, D); gate, shift, scale
    (B, 1, D) or None (gate 1, no modulation); LayerNorm without bias, in float32 on the sum as stored."""
    x = x + (y if gate is None else gate * y)
    h = (torch.nn.functional.layer_norm(x.float(), (x.shape[-1],), eps=eps) * weight.float()).to(x.dtype)
    if scale is not None:
        h = h * (1.0 + scale) + shift
    return x, h


@torch.library.triton_op("edlm::add_norm_modulate", mutates_args=())
def add_norm_modulate(x: Tensor, y: Tensor, gate: Tensor | None, weight: Tensor, shift: Tensor | None,
                      scale: Tensor | None, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """``add_norm_modulate_reference`` in one kernel on CUDA (fp32 inside, rounded once at each store)."""
    import triton

    from edlm.models._triton_kernels import add_norm_modulate_kernel

    B, L, D = x.shape
    if (shift is None) != (scale is None):
        raise ValueError("add_norm_modulate needs both shift and scale, or neither.")
    x, y = x.contiguous(), y.contiguous()
    conds = [t for t in (gate, shift, scale) if t is not None]
    if any(t.stride(-1) != 1 or t.stride(0) != conds[0].stride(0) for t in conds):
        gate, shift, scale = (None if t is None else t.contiguous() for t in (gate, shift, scale))
        conds = [t for t in (gate, shift, scale) if t is not None]
    cond_stride = conds[0].stride(0) if conds else 0
    x_out, h = torch.empty_like(x), torch.empty_like(x)
    M = B * L

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]),)

    torch.library.wrap_triton(add_norm_modulate_kernel)[grid](
        x, y, x if gate is None else gate, weight, x if shift is None else shift, x if scale is None else scale,
        x_out, h, M, L, cond_stride, eps,
        D=D, HAS_GATE=gate is not None, HAS_MOD=scale is not None, BLOCK_D=triton.next_power_of_2(D),
    )
    return x_out, h


@add_norm_modulate.register_kernel("cpu")
def _(x, y, gate, weight, shift, scale, eps=1e-5):
    return add_norm_modulate_reference(x, y, gate, weight, shift, scale, eps)
