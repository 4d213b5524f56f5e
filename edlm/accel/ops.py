"""The custom ops the networks call: ``addmm_gelu`` (GEMM + bias + GELU in cuBLASLt's epilogue), ``tuned_linear`` (a
block's GEMM through cuBLASLt's fastest candidate with torch's exact output, `cublaslt`), ``rotary_cos_sin`` (the
rotary table, opaque to torch.compile), and ``padded_linear`` (the output GEMM with its width padded). Each has a
plain-PyTorch reference, which is what it computes on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cublaslt  # ctypes only: nothing is loaded until the first CUDA call

__all__ = ["addmm_gelu", "tuned_linear", "rotary_cos_sin", "rotary_inv_freq", "padded_linear", "OUTPUT_PAD_MULTIPLE"]

OUTPUT_PAD_MULTIPLE = 64
"""The output GEMM's width is padded to a multiple of this on CUDA (`padded_linear`)."""


def rotary_inv_freq(head_dim: int, base: float, device=None) -> Tensor:
    """Rotary frequencies base^(−2j/head_dim), j = 0 … head_dim/2 − 1, in float32 (head_dim/2,)."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))


_addmm_activation = torch.ops.aten._addmm_activation.default


@torch.library.custom_op("edlm::addmm_gelu", mutates_args=())
def addmm_gelu(bias: Tensor, a: Tensor, w_t: Tensor) -> Tensor:
    """GELU(bias + a · w_t) as one opaque op, (n, k) x (k, m) -> (n, m): on CUDA the bias and the tanh-GELU run
    in the cuBLASLt GEMM's epilogue. Opaque so that torch.compile keeps it whole (no graph break, and no
    decomposition into a GEMM and a separate GELU pass over the (n, m) activations)."""
    return _addmm_activation(bias, a, w_t, use_gelu=True)


@addmm_gelu.register_fake
def _(bias: Tensor, a: Tensor, w_t: Tensor) -> Tensor:
    return a.new_empty(a.shape[0], w_t.shape[1])


@torch.library.custom_op("edlm::tuned_linear", mutates_args=())
def tuned_linear(x: Tensor, w: Tensor, bias: Tensor | None, epilogue: str) -> Tensor:
    """``epilogue(x · wᵀ + bias)`` for x (m, k), w (n, k), bias (n,) or None; epilogue "none", "bias" or
    "gelu_bias" (tanh-GELU). On CUDA it runs the fastest of torch's own call and cuBLASLt's other candidates that
    give the same output bit for bit, picked on the first call of each shape (`cublaslt.Tuner`); on CPU
    it is torch's call. Opaque to torch.compile, as ``addmm_gelu``."""
    if x.is_cuda:
        return cublaslt.TUNER(x.contiguous(), w.contiguous(), bias, epilogue)
    return cublaslt.reference(x, w, bias, epilogue)


@tuned_linear.register_fake
def _(x: Tensor, w: Tensor, bias: Tensor | None, epilogue: str) -> Tensor:
    return x.new_empty(x.shape[0], w.shape[0])


@torch.library.custom_op("edlm::rotary_cos_sin", mutates_args=())
def rotary_cos_sin(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """(cos, sin) of the rotary angles p·ω_j at ``positions`` (L,) -> each (L, head_dim/2), float32.

    ``Rotary(max_len=...)`` calls it once per model (and per forward only beyond ``max_len``). It is an opaque op
    so that torch.compile computes the table once where it is called: traced inline, inductor fused the
    angle computation into every block's rotary kernel, evaluating cos and sin of angles up to L radians per
    element (a slow range reduction) — 2 × 5.2 ms per forward at B = 32, L = 1024 on an H200, against
    0.75 ms for the whole rotary work with a precomputed table."""
    inv_freq = rotary_inv_freq(head_dim, base, positions.device)  # (Dh/2,)
    angles = positions.float()[:, None] * inv_freq[None]  # (L, Dh/2)
    return angles.cos(), angles.sin()


@rotary_cos_sin.register_fake
def _(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    shape = (positions.shape[0], head_dim // 2)
    return positions.new_empty(shape, dtype=torch.float32), positions.new_empty(shape, dtype=torch.float32)


def padded_linear(h: Tensor, linear: nn.Linear, multiple: int = OUTPUT_PAD_MULTIPLE,
                  bias: Tensor | None = None) -> Tensor:
    """``linear(h)`` computed with the output width rounded up to ``multiple`` and sliced back.

    cuBLAS picks a slow, 2-element-aligned kernel for an output width such as 50258 that is not a multiple of 8
    (H100: 240 against ~720 TFLOP/s). Padding the weight with zero rows at call time (a 77 MB copy for MDLM-small,
    ~50 µs) keeps the parameter, its checkpoint key and shape unchanged; the result is a view of width
    ``out_features``. ``bias`` replaces ``linear.bias`` when given.
    """
    out = linear.out_features
    pad = -out % multiple
    bias = linear.bias if bias is None else bias
    if pad == 0:
        return F.linear(h, linear.weight, bias)
    weight = F.pad(linear.weight, (0, 0, 0, pad))
    bias = None if bias is None else F.pad(bias, (0, pad))
    return F.linear(h, weight, bias)[..., :out]
