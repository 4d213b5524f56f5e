"""The layers of MDLM's DiT (``edlm.models.dit``) and of its AR baseline (``edlm.models.ar``), key-compatible with
kuleshov-group/mdlm ``models/dit.py``.

Numerics follow MDLM: LayerNorms without bias computed in float32, rotary on the two halves of each head (GPT-NeoX
layout, not interleaved), q/k/v packed as (3, heads, head_dim) in the qkv projection, tanh-GELU MLP, dropout on each
residual branch before its gate.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention``; ``flash_attn`` is used only when it is
installed and the input is a CUDA fp16/bf16 tensor, and it is imported on first use, never at import time. In a CUDA
half-precision forward without autograd (``edlm.accel.policy``) the blocks' GEMMs run through the tuned GEMMs of
``edlm.accel.ops``, and the output layer's GEMM runs padded; elsewhere they are the plain layers.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edlm.accel.ops import OUTPUT_PAD_MULTIPLE, padded_linear, rotary_cos_sin, rotary_inv_freq, tuned_linear
from edlm.accel.policy import half_cuda_inference, pads_output_gemm

__all__ = [
    "modulate",
    "attention",
    "apply_rotary",
    "block_linear",
    "LayerNorm",
    "TokenEmbedding",
    "TimestepEmbedder",
    "Rotary",
    "DiTBlock",
    "FinalLayer",
]


# ----------------------------------------------------------------------------- helpers
def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation x·(1 + scale) + shift; x (B, L, D), shift and scale (B, 1, D)."""
    return x * (1.0 + scale) + shift


def _flash_attn_installed() -> bool:
    """Whether a ``flash_attn`` package is on the path (a spec lookup: nothing is imported)."""
    try:
        return importlib.util.find_spec("flash_attn") is not None
    except (ImportError, ValueError):
        return False


# Looked up once, at import, so that a compiled forward never traces the lookup: dynamo (torch 2.11) does not
# trace importlib's find_spec and breaks the graph there in every block (a 12-block forward ran as 36 calls of
# 7 distinct graphs instead of one graph)
_HAS_FLASH_ATTN = _flash_attn_installed()


@functools.lru_cache(maxsize=1)
def _flash_attn_func():
    """``flash_attn.flash_attn_func`` if it imports, else None (imported once; called only when
    ``_HAS_FLASH_ATTN`` says the package is there)."""
    try:
        from flash_attn import flash_attn_func  # optional, GPU-only
    except (ImportError, ValueError, OSError):  # a broken CUDA build must not break the CPU path
        return None
    return flash_attn_func


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
    """Softmax attention with scale 1/√head_dim; q, k, v (B, L, H, Dh) -> (B, L, H, Dh).

    Uses flash-attn when it is installed and q is a CUDA fp16/bf16 tensor (what MDLM ran with), else
    PyTorch's SDPA, which picks its own fused kernel. Attention dropout is 0, as in MDLM.
    """
    if _HAS_FLASH_ATTN and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        flash = _flash_attn_func()
        if flash is not None:
            return flash(q, k, v, dropout_p=0.0, causal=causal)  # (B, L, H, Dh)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
    )  # (B, H, L, Dh)
    return out.transpose(1, 2)  # (B, L, H, Dh)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each head's two halves: x (B, L, H, Dh), cos and sin (L, Dh/2) -> (B, L, H, Dh).

    For the pair (x₁, x₂) = (x[..., j], x[..., j + Dh/2]) at position p:
    (x₁ cos pω_j − x₂ sin pω_j,  x₂ cos pω_j + x₁ sin pω_j)  (Su et al. 2021, half-split layout,
    as flash-attn's non-interleaved rotary that MDLM calls). Computed in float32, returned in x's dtype.
    """
    half = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]  # (B, L, H, Dh/2) each
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # (1, L, 1, Dh/2)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def block_linear(h: Tensor, linear: nn.Linear, epilogue: str | None = None) -> Tensor:
    """``linear(h)`` for h (..., k); where ``half_cuda_inference`` holds, through ``tuned_linear``: the fastest of
    torch's GEMM and cuBLASLt's other candidates with the same output. ``epilogue`` "gelu_bias" (GELU(linear(h)),
    tanh form, in the GEMM's epilogue) is for `DiTBlock._mlp` alone, which checks ``half_cuda_inference`` first."""
    if epilogue is None and not half_cuda_inference(h, linear.weight):
        return linear(h)
    epilogue = epilogue or ("none" if linear.bias is None else "bias")
    out = tuned_linear(h.reshape(-1, h.shape[-1]), linear.weight, linear.bias, epilogue)
    return out.view(*h.shape[:-1], out.shape[-1])


# ----------------------------------------------------------------------------- layers
class LayerNorm(nn.Module):
    """LayerNorm with a weight and no bias, normalised in float32 (MDLM's ``LayerNorm``; eps 1e-5)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.float(), (self.dim,)) * self.weight.float()
        return y.to(x.dtype)


class TokenEmbedding(nn.Module):
    """A (vocab_size, dim) table stored as ``embedding`` (MDLM's ``EmbeddingLayer``, not ``nn.Embedding``)."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))  # MDLM's init

    def forward(self, x: Tensor) -> Tensor:
        return self.embedding[x]  # (B, L) -> (B, L, D)


class TimestepEmbedder(nn.Module):
    """σ (B,) -> cond (B, cond_dim): sinusoidal features [cos | sin] of width 256, then Linear-SiLU-Linear.

    The frequencies, and the features of σ = 0 that an unconditioned network feeds (``at_zero``), are computed once
    in float32 on the module's device (recomputed there by ``.to()``, never cast, not in the state dict), as
    `Rotary`'s table. A forward then builds no constants, so a frozen compile (``compile_networks(...,
    freeze=True)``) can fold an unconditioned network's whole σ-map and adaLN modulations into constants.
    """

    def __init__(self, cond_dim: int, frequency_size: int = 256, max_period: float = 10_000.0):
        super().__init__()
        self.frequency_size = frequency_size  # MDLM / DiT's frequency_embedding_size
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, cond_dim, bias=True),
            nn.SiLU(),
            nn.Linear(cond_dim, cond_dim, bias=True),
        )
        self._make_tables(self.mlp[0].weight.device)

    def _make_tables(self, device: torch.device) -> None:
        half = self.frequency_size // 2
        self._freqs = torch.exp(
            -math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=device) / half
        )  # (half,) f_j = max_period^(−j/half)
        self._zero_features = self._features(torch.zeros(1, device=device), self._freqs)  # (1, frequency_size)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self._freqs.device != self.mlp[0].weight.device:  # follows the device, stays float32; the same tensors
            self._make_tables(self.mlp[0].weight.device)  # otherwise, so a compiled forward's guards still hold
        return self

    def _features(self, sigma: Tensor, freqs: Tensor) -> Tensor:
        args = sigma.float()[:, None] * freqs[None]  # (B, half)
        emb = torch.cat((torch.cos(args), torch.sin(args)), dim=-1)  # (B, 2·half)
        if self.frequency_size % 2:
            emb = F.pad(emb, (0, 1))  # (B, frequency_size)
        return emb

    def sinusoidal(self, sigma: Tensor) -> Tensor:
        """(B,) -> (B, frequency_size): [cos(σ·f_j) | sin(σ·f_j)], f_j = max_period^(−j/half) (float32)."""
        freqs = self._freqs if self._freqs.device == sigma.device else self._freqs.to(sigma.device)
        return self._features(sigma, freqs)

    def forward(self, sigma: Tensor) -> Tensor:
        emb = self.sinusoidal(sigma).to(self.mlp[0].weight.dtype)  # (B, frequency_size)
        return self.mlp(emb)  # (B, cond_dim)

    def at_zero(self, batch: int) -> Tensor:
        """``forward(zeros(batch))`` (B, cond_dim), from the stored features of σ = 0 (what MDLM feeds, SPEC 1.3)."""
        emb = self._zero_features.to(self.mlp[0].weight.dtype).expand(batch, -1)  # (B, frequency_size)
        return self.mlp(emb)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021) over the full head dimension, base 10 000.

    ``inv_freq`` is a persistent buffer only so that MDLM's checkpoints (which contain it) load key for key;
    the angles are computed from the same frequencies in float32, so casting the model to bf16 cannot coarsen
    positions. The loader checks that a stored ``inv_freq`` equals them.

    With ``max_len`` the (cos, sin) table of positions 0 … max_len − 1 is computed once, kept in float32 on the
    module's device (recomputed there by ``.to()``, never cast) and sliced per call; it is not in the state dict.
    A forward then launches no kernels for the table: at B = 32 the seven small kernels that would compute it run
    before the first large one and leave the GPU idle for ~0.3 ms per call (H200).
    """

    def __init__(self, head_dim: int, base: float = 10_000.0, max_len: int = 0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}.")
        self.head_dim = head_dim
        self.base = base
        self.max_len = int(max_len)
        self.register_buffer("inv_freq", rotary_inv_freq(head_dim, base))
        self._table = self._make_table(self.inv_freq.device)

    def _make_table(self, device: torch.device) -> tuple[Tensor, Tensor] | None:
        if self.max_len <= 0:
            return None
        positions = torch.arange(self.max_len, device=device, dtype=torch.float32)  # (max_len,)
        return rotary_cos_sin(positions, self.head_dim, self.base)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self._table is not None and self._table[0].device != self.inv_freq.device:  # follows the device, stays
            self._table = self._make_table(self.inv_freq.device)  # float32; kept when the device is the same
        return self

    def forward(self, seq_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(cos, sin) of the angles p·ω_j, each (seq_len, head_dim/2), float32."""
        table = self._table
        if table is not None and seq_len <= self.max_len and table[0].device == device:
            return table[0][:seq_len], table[1][:seq_len]  # (seq_len, Dh/2) views
        positions = torch.arange(seq_len, device=device, dtype=torch.float32)  # (L,)
        return rotary_cos_sin(positions, self.head_dim, self.base)


# ----------------------------------------------------------------------------- blocks
class DiTBlock(nn.Module):
    """Pre-norm transformer block; with ``cond_dim`` it is MDLM's ``DDiTBlock`` (adaLN), without it the
    plain block of MDLM's AR baseline (no ``adaLN_modulation`` weights, gates = 1).

    Args:
        dim: hidden size D.
        n_heads: attention heads H (head_dim = D / H).
        cond_dim: width of the conditioning vector c; None for an unconditioned (AR) block.
        mlp_ratio: MLP width multiple (MDLM: 4).
        dropout: dropout on each residual branch, before its gate (MDLM: 0.1).
        causal: causal self-attention.
    """

    def __init__(self, dim: int, n_heads: int, cond_dim: int | None, mlp_ratio: int = 4,
                 dropout: float = 0.1, causal: bool = False):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"hidden size {dim} must be divisible by the number of heads {n_heads}.")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.causal = causal
        # registration order = state_dict order = MDLM's
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim, bias=True),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_ratio * dim, dim, bias=True),
        )
        self.dropout2 = nn.Dropout(dropout)
        if cond_dim is not None:
            self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim, bias=True)
            nn.init.zeros_(self.adaLN_modulation.weight)  # adaLN-Zero: each block starts as the identity
            nn.init.zeros_(self.adaLN_modulation.bias)
        else:
            self.adaLN_modulation = None

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], c: Tensor | None) -> Tensor:
        """x (B, L, D), rotary (cos, sin) each (L, Dh/2), c (B, cond_dim) or None -> (B, L, D)."""
        B, L, D = x.shape
        if self.adaLN_modulation is not None:
            mod = self.adaLN_modulation(c)[:, None]  # (B, 1, 6D)
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)  # (B, 1, D) each
            h = modulate(self.norm1(x), shift_msa, scale_msa)
        else:
            gate_msa = gate_mlp = shift_mlp = scale_mlp = None
            h = self.norm1(x)

        # attention
        qkv = block_linear(h, self.attn_qkv).view(B, L, 3, self.n_heads, self.head_dim)  # (B, L, 3, H, Dh)
        q, k, v = qkv.unbind(dim=2)  # (B, L, H, Dh) each
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # v is not rotated
        h = attention(q, k, v, causal=self.causal).reshape(B, L, D)  # (B, L, H, Dh) -> (B, L, D)
        h = self.dropout1(block_linear(h, self.attn_out))
        x = x + (h if gate_msa is None else gate_msa * h)
        h = self.norm2(x)
        if self.adaLN_modulation is not None:
            h = modulate(h, shift_mlp, scale_mlp)

        # MLP
        h = self.dropout2(self._mlp(h))
        return x + (h if gate_mlp is None else gate_mlp * h)

    def _mlp(self, h: Tensor) -> Tensor:
        """``self.mlp(h)``; where ``half_cuda_inference`` holds, the first layer's bias and tanh-GELU run in the
        tuned GEMM's epilogue (cuBLASLt GELU_BIAS: the same tanh approximation as ``nn.GELU(approximate="tanh")``),
        saving one pass over the (B, L, 4D) activations. Only for half weights and activations without autograd:
        autocast does not cover the epilogue, and it has no backward."""
        up, _, down = self.mlp
        if up.bias is not None and half_cuda_inference(h, up.weight):
            return block_linear(block_linear(h, up, "gelu_bias"), down)
        return self.mlp(h)


class FinalLayer(nn.Module):
    """LayerNorm (adaLN-modulated when ``cond_dim`` is given) and a linear map to ``out_dim`` logits.

    MDLM's ``DDitFinalLayer``: the linear layer and the modulation start at zero, so a fresh model
    predicts uniform logits. On CUDA the output GEMM runs padded to a multiple of ``OUTPUT_PAD_MULTIPLE``
    columns (``edlm.accel.ops.padded_linear``); on CPU it is the plain layer.
    """

    def __init__(self, hidden_size: int, out_dim: int, cond_dim: int | None):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        if cond_dim is not None:
            self.adaLN_modulation = nn.Linear(cond_dim, 2 * hidden_size, bias=True)
            nn.init.zeros_(self.adaLN_modulation.weight)
            nn.init.zeros_(self.adaLN_modulation.bias)
        else:
            self.adaLN_modulation = None

    def forward(self, x: Tensor, c: Tensor | None, exclude: int | None = None) -> Tensor:
        """x (B, L, D), c (B, cond_dim) or None -> logits (B, L, out_dim); ``exclude``: that id's logit is
        −∞, through a −∞ bias entry added in the GEMM's epilogue (no extra pass over the logits)."""
        h = self.norm_final(x)
        if self.adaLN_modulation is not None:
            shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)  # (B, 1, D) each
            h = modulate(h, shift, scale)
        bias = self.linear.bias
        if exclude is not None:
            bias = torch.zeros(self.linear.out_features, dtype=h.dtype, device=h.device) if bias is None else bias
            bias = bias.index_fill(0, torch.tensor([exclude], device=h.device), float("-inf"))
        if pads_output_gemm(h):
            return padded_linear(h, self.linear, OUTPUT_PAD_MULTIPLE, bias)
        return F.linear(h, self.linear.weight, bias)
