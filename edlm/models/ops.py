"""The custom ops the networks call: ``addmm_gelu`` (GEMM + bias + GELU in cuBLASLt's epilogue), ``tuned_linear`` (a
block's GEMM through cuBLASLt's fastest candidate with torch's exact output, `edlm.models.cublaslt`), ``rotary_cos_sin``
(the rotary table, opaque to torch.compile) and ``add_norm_modulate`` (a block's residual add, LayerNorm and adaLN
modulation in one pass over the activations).

Between the attention and the MLP of a ``DiTBlock`` the activations are read and written by three steps:
``x = x + gate·attn_out``, ``h = LayerNorm(x)``, ``h = h·(1 + scale) + shift``. torch.compile fuses them, but
into a looped two-pass reduction that also skips storing x, so the next kernel reads x and attn_out again
(1.0 ms of a 15 ms NCE forward at B = 32, L = 1024 on an H200; benchmarks/results/speed_notes.md, session 5).
On CUDA ``add_norm_modulate`` runs one Triton kernel that reads x and attn_out once and writes x and h
(``torch.library.triton_op``, registered on first use: torch.compile launches the kernel from its own code). On CPU
it is the eager formula, which is also the reference the kernel is tested against. Measured on an H200 it did not
make the forward faster (``DiTBlock.fuse_norm`` is off; benchmarks/results/speed_notes.md, session 5).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from edlm.models import cublaslt  # ctypes only: nothing is loaded until the first CUDA call

__all__ = ["addmm_gelu", "tuned_linear", "rotary_cos_sin", "rotary_inv_freq", "add_norm_modulate",
           "add_norm_modulate_reference", "fused_norm_ready", "HAS_TRITON"]

HAS_TRITON = importlib.util.find_spec("triton") is not None  # looked up once, at import (nothing is imported)


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
    give the same output bit for bit, picked on the first call of each shape (`edlm.models.cublaslt.Tuner`); on CPU
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
    0.75 ms for the whole rotary work with a precomputed table (benchmarks/results/speed_notes.md, session 4)."""
    inv_freq = rotary_inv_freq(head_dim, base, positions.device)  # (Dh/2,)
    angles = positions.float()[:, None] * inv_freq[None]  # (L, Dh/2)
    return angles.cos(), angles.sin()


@rotary_cos_sin.register_fake
def _(positions: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    shape = (positions.shape[0], head_dim // 2)
    return positions.new_empty(shape, dtype=torch.float32), positions.new_empty(shape, dtype=torch.float32)


def add_norm_modulate_reference(x: Tensor, y: Tensor, gate: Tensor | None, weight: Tensor, shift: Tensor | None,
                                scale: Tensor | None, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """(x + gate·y, LN(x + gate·y)·weight·(1 + scale) + shift) in x's dtype; x, y (B, L, D); gate, shift, scale
    (B, 1, D) or None (gate 1, no modulation); LayerNorm without bias, in float32 on the sum as stored."""
    x = x + (y if gate is None else gate * y)
    h = (torch.nn.functional.layer_norm(x.float(), (x.shape[-1],), eps=eps) * weight.float()).to(x.dtype)
    if scale is not None:
        h = h * (1.0 + scale) + shift
    return x, h


def _triton_add_norm_modulate(x: Tensor, y: Tensor, gate: Tensor | None, weight: Tensor, shift: Tensor | None,
                              scale: Tensor | None, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """The body of the ``edlm::add_norm_modulate`` triton_op: one kernel launch (fp32 inside, rounded once at each
    store); torch.compile traces it and launches the kernel from its own code."""
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


_FUSED_NORM_OP = None  # the registered op, once fused_norm_ready() has registered it


def fused_norm_ready() -> bool:
    """Whether ``add_norm_modulate`` can run its CUDA kernel: triton is installed and the op is registered.

    ``torch.library.triton_op`` imports torch._inductor and triton (about 1 s), so the op is registered on the first
    eager call, never at ``import edlm``. Inside a torch.compile trace nothing is registered (it answers whether an
    earlier eager call did; ``DiTBlock`` makes that call when built with ``fuse_norm`` on)."""
    global _FUSED_NORM_OP
    if _FUSED_NORM_OP is None and HAS_TRITON and not torch.compiler.is_compiling():
        op = torch.library.triton_op("edlm::add_norm_modulate", mutates_args=())(_triton_add_norm_modulate)
        op.register_kernel("cpu")(add_norm_modulate_reference)
        _FUSED_NORM_OP = op
    return _FUSED_NORM_OP is not None


def add_norm_modulate(x: Tensor, y: Tensor, gate: Tensor | None, weight: Tensor, shift: Tensor | None,
                      scale: Tensor | None, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """``add_norm_modulate_reference``; on CUDA (once ``fused_norm_ready()``) one Triton kernel."""
    if x.is_cuda and fused_norm_ready():
        return _FUSED_NORM_OP(x, y, gate, weight, shift, scale, eps)
    return add_norm_modulate_reference(x, y, gate, weight, shift, scale, eps)
