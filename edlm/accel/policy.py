"""Where the fast paths run: one predicate per decision, read off the tensors' device and dtype.

Nothing here is a switch to flip: the same inputs always take the same path. Each fast path gives its reference's
output (bit for bit, or as its docstring says), so the predicates decide speed, not results.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["half_cuda_inference", "pads_output_gemm", "reveals_on_side_stream", "fast_draw", "captures_steps"]

_HALF = (torch.bfloat16, torch.float16)


def half_cuda_inference(h: Tensor, weight: Tensor | None = None) -> bool:
    """A CUDA half-precision forward without autograd, with ``weight`` (if given) in h's dtype (so not under
    autocast). There a transformer block's GEMMs run through ``ops.tuned_linear``, the MLP's up projection with its
    bias and tanh-GELU in the GEMM's epilogue (one pass less over the (B, L, 4D) activations; the epilogue has no
    backward, and autocast does not cover it)."""
    return (h.is_cuda and not torch.is_grad_enabled() and h.dtype in _HALF
            and (weight is None or weight.dtype == h.dtype))


def pads_output_gemm(h: Tensor) -> bool:
    """On CUDA the output layer's GEMM runs padded to ``ops.OUTPUT_PAD_MULTIPLE`` columns (``ops.padded_linear``):
    cuBLAS's kernels for a width that is not a multiple of 8 are ~3 times slower. On the CPU it is the plain layer."""
    return h.is_cuda


def reveals_on_side_stream(device: torch.device) -> bool:
    """On a CUDA device the sampling loop's plain steps decide their reveals on a side stream, so the host does not
    wait for the denoiser call queued before them (the same tokens; T = 128 MDLM on an H200: 2.51 → 2.37 s)."""
    return device.type == "cuda"


def fast_draw(device: torch.device) -> bool:
    """On a CUDA device several draws per row take the fast exact draw (float32 block bounds, `block_bounds`, and an
    exact float64 accept / redraw): there float64 exps cost ~25 times float32's; on a CPU about twice, and the eager
    float64 inversion makes fewer temporaries."""
    return device.type == "cuda"


def captures_steps(device: torch.device) -> bool:
    """On a CUDA device ``generate(..., graph=True)`` captures its planned step as a CUDA graph and replays it (one
    launch per step instead of the denoiser's and the draw's kernels); elsewhere the same step runs eagerly."""
    return device.type == "cuda"
