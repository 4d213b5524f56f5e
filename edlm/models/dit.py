"""The DiT denoiser of MDLM (Sahoo et al. 2024, arXiv 2406.07524, App. B), key-compatible with its checkpoints.

A diffusion transformer (Peebles & Xie 2023) adapted to text: token embedding, rotary position
embeddings, N pre-norm blocks whose LayerNorms are modulated by a conditioning vector c (adaLN:
shift, scale and a residual gate per sub-layer), and a final adaLN layer to logits over V + 1 ids.
c is computed from the total noise σ(t) (SPEC 1.1) by a sinusoidal embedding and an MLP; a model
that is not time-conditioned (MDLM's released OWT model, SPEC 1.3) feeds σ = 0, so c is a learned
constant.

Module and parameter names follow kuleshov-group/mdlm ``models/dit.py`` exactly (``vocab_embed.embedding``,
``sigma_map.mlp.0.weight``, ``rotary_emb.inv_freq``, ``blocks.{i}.attn_qkv.weight``,
``output_layer.linear.weight``, ...), so its weights load without renaming (``edlm.models.checkpoints``).
Numerics follow it too: LayerNorms without bias computed in float32, rotary on the two halves of each
head (GPT-NeoX layout, not interleaved), q/k/v packed as (3, heads, head_dim) in the qkv projection,
tanh-GELU MLP, dropout on each residual branch before its gate.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention``; ``flash_attn`` is used only
when it is installed and the input is a CUDA fp16/bf16 tensor, and it is imported on first use, never at
import time.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edlm.diffusion.schedules import NoiseSchedule
from edlm.models.ops import (
    add_norm_modulate,
    addmm_gelu,
    fused_norm_ready,
    rotary_cos_sin,
    rotary_inv_freq,
    tuned_linear,
)

__all__ = [
    "LayerNorm",
    "TokenEmbedding",
    "TimestepEmbedder",
    "Rotary",
    "apply_rotary",
    "attention",
    "late_bias_linear",
    "DiTBlock",
    "FinalLayer",
    "DiT",
    "Denoiser",
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


# Looked up once, at import, so that a compiled forward never traces the lookup: dynamo (torch 2.11) will not
# trace importlib's find_spec and broke the graph there in every block, so a 12-block forward ran as 36 calls of
# 7 distinct graphs instead of one graph (benchmarks/results/speed_notes.md, session 4)
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


_gelu_epilogue = addmm_gelu  # what DiTBlock._mlp calls (benchmarks/gpu/probe_s4.py swaps it to compare)


def _half_cuda_inference(h: Tensor, weight: Tensor | None = None) -> bool:
    """A CUDA half-precision forward without autograd (and, with ``weight``, the weight in h's dtype: not under
    autocast), where the blocks' fused and tuned paths apply."""
    return (h.is_cuda and not torch.is_grad_enabled() and h.dtype in (torch.bfloat16, torch.float16)
            and (weight is None or weight.dtype == h.dtype))


def _late_bias_here(h: Tensor) -> bool:
    """Whether `late_bias_linear` splits off the bias: ``DiTBlock.late_bias`` on, while torch.compile traces a CUDA
    half-precision forward without autograd (in eager mode and for training nothing changes)."""
    return DiTBlock.late_bias and _half_cuda_inference(h) and torch.compiler.is_compiling()


def _tuned_here(h: Tensor, weight: Tensor) -> bool:
    """Whether a block's GEMM goes through ``tuned_linear``: ``DiTBlock.tuned_gemms`` on, a CUDA half-precision
    forward without autograd, the weight in the activations' dtype (not under autocast)."""
    return DiTBlock.tuned_gemms and _half_cuda_inference(h, weight)


def block_linear(h: Tensor, linear: nn.Linear, epilogue: str | None = None) -> Tensor:
    """``linear(h)`` for h (..., k); where `_tuned_here`, through ``tuned_linear``: the fastest of torch's GEMM and
    cuBLASLt's other candidates with the same output (benchmarks/results/speed_notes.md, session 10). ``epilogue``
    "gelu_bias" is for `DiTBlock._mlp` alone, which checks `_tuned_here` first."""
    if epilogue is None and not _tuned_here(h, linear.weight):
        return linear(h)
    epilogue = epilogue or ("none" if linear.bias is None else "bias")
    out = tuned_linear(h.reshape(-1, h.shape[-1]), linear.weight, linear.bias, epilogue)
    return out.view(*h.shape[:-1], out.shape[-1])


def late_bias_linear(h: Tensor, linear: nn.Linear) -> Tensor:
    """``linear(h)``, or, where `_late_bias_here`, a GEMM without bias followed by the bias add, which inductor fuses
    into the next pointwise kernel (for the MLP's down projection: the block's residual add and the next block's
    LayerNorm, which pass over the activations anyway), so cuBLAS runs its plain GEMM instead of the one with a
    bias epilogue (benchmarks/results/speed_notes.md, session 8). One rounding more: the GEMM's output is rounded
    to half precision before the bias is added."""
    if linear.bias is not None and _late_bias_here(h):
        return F.linear(h, linear.weight) + linear.bias
    return block_linear(h, linear)


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
    A forward then launches no kernels for the table: at B = 32 the seven small kernels that computed it ran
    before the first large one and left the GPU idle for ~0.3 ms per call (speed_notes.md, session 5).
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
        if self.fuse_norm:
            fused_norm_ready()  # registers the Triton op now, outside any torch.compile trace
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
        if self._fuse_norm_here(x):  # one pass: x + gate · attn_out(h), norm2, modulate
            x, h = add_norm_modulate(x, block_linear(h, self.attn_out), gate_msa, self.norm2.weight, shift_mlp,
                                     scale_mlp)
        else:
            x = self._attn_residual(x, h, gate_msa)  # x + gate · attn_out(h)
            h = self.norm2(x)
            if self.adaLN_modulation is not None:
                h = modulate(h, shift_mlp, scale_mlp)

        # MLP
        h = self.dropout2(self._mlp(h))
        return x + (h if gate_mlp is None else gate_mlp * h)

    fuse_gelu = True  # class-wide switch (benchmarks/gpu/probe_s3.py, section H, measures both)
    fuse_residual = False  # class-wide switch, off: measured no gain (speed_notes.md, session 4)
    fuse_norm = False  # class-wide switch, off: measured no gain on an H200 (probe_s5.py F / G, speed_notes.md session 5)
    late_bias = False  # class-wide switch: the MLP's down projection through `late_bias_linear`
    tuned_gemms = True  # class-wide switch: GEMMs through `block_linear` (speed.py --no-tuned-gemms turns it off)

    def _fuse_norm_here(self, x: Tensor) -> bool:
        """Whether the attention residual, norm2 and its modulation go through ``add_norm_modulate``: on CUDA, half
        precision, no autograd (the kernel has no backward) and no dropout on the branch. Whether the kernel can run
        (triton, op registered) is ``add_norm_modulate``'s own check; without it the op is the same eager formula."""
        return (self.fuse_norm and not self.fuse_residual and _half_cuda_inference(x)
                and not (self.training and self.dropout1.p > 0))

    def _attn_residual(self, x: Tensor, h: Tensor, gate: Tensor | None) -> Tensor:
        """x + gate · attn_out(h) (dropout on the branch when training). With ``fuse_residual`` the gate scales
        the weight's output columns per sequence and the residual enters as the GEMM's C operand (β = 1):
        ``baddbmm(x, h, Wᵀ·diag(gate))``, so no separate pass over (B, L, D) for the gate and the add."""
        if self.fuse_residual and not (self.training and self.dropout1.p > 0):
            w = self.attn_out.weight.t()  # (D_in, D_out); attn_out has no bias
            if gate is None:
                return torch.addmm(x.reshape(-1, x.shape[-1]), h.reshape(-1, h.shape[-1]), w).view_as(x)
            return torch.baddbmm(x, h, w[None] * gate)  # gate (B, 1, D_out) scales columns: (B, D_in, D_out)
        h = self.dropout1(block_linear(h, self.attn_out))
        return x + (h if gate is None else gate * h)

    def _mlp(self, h: Tensor) -> Tensor:
        """``self.mlp(h)``; on CUDA without autograd the first layer's bias and tanh-GELU run in the GEMM's
        epilogue (``addmm_gelu`` over ``aten._addmm_activation``, cuBLASLt GELU_BIAS: the same tanh approximation as
        ``nn.GELU(approximate="tanh")``), saving one pass over the (B, L, 4D) activations. Only for half
        weights and activations: autocast does not cover ``_addmm_activation``, and it has no backward."""
        up, _, down = self.mlp
        if self.fuse_gelu and up.bias is not None and _tuned_here(h, up.weight) and _gelu_epilogue is addmm_gelu:
            return late_bias_linear(block_linear(h, up, "gelu_bias"), down)  # (probe_s4 swaps _gelu_epilogue)
        if self.fuse_gelu and up.bias is not None and _half_cuda_inference(h, up.weight):  # not under autocast
            a = _gelu_epilogue(up.bias, h.reshape(-1, h.shape[-1]), up.weight.t())
            return late_bias_linear(a.view(*h.shape[:-1], -1), down)
        return self.mlp(h)


def padded_linear(h: Tensor, linear: nn.Linear, multiple: int, bias: Tensor | None = None) -> Tensor:
    """``linear(h)`` computed with the output width rounded up to ``multiple`` and sliced back.

    cuBLAS picks a slow, 2-element-aligned kernel for an output width such as 50258 that is not a
    multiple of 8 (240 vs ~720 TFLOP/s on an H100, benchmarks/results/speed_notes.md 1b). Padding the
    weight with zero rows at call time (a 77 MB copy for MDLM-small, ~50 µs) keeps the parameter, its
    checkpoint key and shape unchanged; the result is a view of width ``out_features``. ``bias``
    replaces ``linear.bias`` when given.
    """
    out = linear.out_features
    pad = -out % multiple
    bias = linear.bias if bias is None else bias
    if pad == 0:
        return F.linear(h, linear.weight, bias)
    weight = F.pad(linear.weight, (0, 0, 0, pad))
    bias = None if bias is None else F.pad(bias, (0, pad))
    return F.linear(h, weight, bias)[..., :out]


class FinalLayer(nn.Module):
    """LayerNorm (adaLN-modulated when ``cond_dim`` is given) and a linear map to ``out_dim`` logits.

    MDLM's ``DDitFinalLayer``: the linear layer and the modulation start at zero, so a fresh model
    predicts uniform logits. On CUDA the output GEMM runs padded to a multiple of ``pad_multiple``
    columns (`padded_linear`); on CPU it is the plain layer.
    """

    pad_multiple = 64  # class-wide switch; 1 turns padding off (benchmarks/speed.py --no-pad-vocab)

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
        if h.is_cuda and self.pad_multiple > 1:
            return padded_linear(h, self.linear, self.pad_multiple, bias)
        return F.linear(h, self.linear.weight, bias)


def check_length(seq_len: int, max_len: int) -> None:
    """Raise a clear ValueError when a sequence is longer than the model's context."""
    if seq_len > max_len:
        raise ValueError(f"sequence length {seq_len} exceeds the model's maximum length {max_len}; "
                         "use semi-autoregressive sampling for longer text (SPEC 1.6).")


def _check_tokens(x: Tensor) -> None:
    if x.dim() != 2 or x.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"expected token ids of shape (B, L) and an integer dtype, got shape "
                         f"{tuple(x.shape)} and dtype {x.dtype}.")


def _check_sizes(**sizes) -> None:
    for name in ("vocab_size", "length", "hidden_size", "n_blocks", "n_heads", "cond_dim"):
        if name in sizes and (not isinstance(sizes[name], int) or isinstance(sizes[name], bool) or sizes[name] <= 0):
            raise ValueError(f"`{name}` must be a positive integer, got {sizes[name]!r}.")
    if sizes["hidden_size"] % sizes["n_heads"]:
        raise ValueError(f"`hidden_size`={sizes['hidden_size']} must be divisible by `n_heads`={sizes['n_heads']}.")
    if (sizes["hidden_size"] // sizes["n_heads"]) % 2:
        raise ValueError(f"head dimension hidden_size / n_heads = {sizes['hidden_size'] // sizes['n_heads']} "
                         "must be even for rotary embeddings.")
    if not 0.0 <= sizes["dropout"] < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {sizes['dropout']}.")


# ----------------------------------------------------------------------------- the model
class DiT(nn.Module):
    """MDLM's diffusion transformer: ``forward(x, sigma) -> raw logits (B, L, vocab_size)``.

    The defaults are MDLM-small, the architecture of ``kuleshov-group/mdlm-owt`` (≈170M parameters).
    The logits are raw: SUBS (SPEC 1.3) is applied by ``edlm.diffusion.subs``, not here.

    Args:
        vocab_size: ids including ``[MASK]`` (V + 1); 50258 = GPT-2's 50257 + mask, as MDLM.
        length: longest sequence accepted (MDLM-OWT: 1024). Rotary positions need no table, so this is a
            check, not a parameter shape.
        hidden_size: model width D (MDLM-small: 768).
        n_blocks: number of blocks (MDLM-small: 12).
        n_heads: attention heads (MDLM-small: 12, head_dim 64).
        cond_dim: width of the adaLN conditioning vector (MDLM: 128).
        dropout: residual-branch dropout (MDLM-OWT: 0.1).
        time_conditioning: condition on σ(t); when False, σ is replaced by 0 (SPEC 1.3), which makes the
            output independent of t and allows the cached sampler (SPEC 1.6).
        causal: causal attention (MDLM's AR baseline uses ``ARTransformer`` instead; this is for
            ablations).
    """

    def __init__(
        self,
        vocab_size: int,
        length: int = 1024,
        hidden_size: int = 768,
        n_blocks: int = 12,
        n_heads: int = 12,
        cond_dim: int = 128,
        dropout: float = 0.1,
        time_conditioning: bool = False,
        causal: bool = False,
    ):
        super().__init__()
        _check_sizes(vocab_size=vocab_size, length=length, hidden_size=hidden_size, n_blocks=n_blocks,
                     n_heads=n_heads, cond_dim=cond_dim, dropout=dropout)
        self.vocab_size = vocab_size
        self.length = length
        self.hidden_size = hidden_size
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.cond_dim = cond_dim
        self.dropout = dropout
        self.time_conditioned = bool(time_conditioning)
        self.causal = bool(causal)

        # registration order = state_dict order = MDLM's DIT
        self.vocab_embed = TokenEmbedding(hidden_size, vocab_size)
        self.sigma_map = TimestepEmbedder(cond_dim)
        self.rotary_emb = Rotary(hidden_size // n_heads, max_len=length)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, n_heads, cond_dim, dropout=dropout, causal=self.causal) for _ in range(n_blocks)
        )
        self.output_layer = FinalLayer(hidden_size, vocab_size, cond_dim)

    def get_config(self) -> dict:
        """The constructor arguments (what ``save_pretrained`` writes to config.json)."""
        return dict(vocab_size=self.vocab_size, length=self.length, hidden_size=self.hidden_size,
                    n_blocks=self.n_blocks, n_heads=self.n_heads, cond_dim=self.cond_dim,
                    dropout=self.dropout, time_conditioning=self.time_conditioned, causal=self.causal)

    def forward(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        """Raw logits (B, L, vocab_size) for tokens ``x`` (B, L) at total noise ``sigma`` (B,) = σ(t).

        ``sigma`` is ignored (replaced by zeros, as MDLM does) unless the model is time-conditioned.
        """
        _check_tokens(x)
        B, L = x.shape
        check_length(L, self.length)
        if not self.time_conditioned:
            sigma = None  # MDLM feeds σ = 0 (SPEC 1.3): sigma_map.at_zero
        elif sigma is None:
            raise ValueError("this DiT is time-conditioned: pass sigma = σ(t) of shape (B,).")
        elif sigma.shape != (B,):
            raise ValueError(f"sigma must have shape (B,) = ({B},), got {tuple(sigma.shape)}.")

        h = self.vocab_embed(x)  # (B, L, D)
        c = F.silu(self.sigma_map(sigma) if sigma is not None else self.sigma_map.at_zero(B))  # (B, cond_dim)
        rotary = self.rotary_emb(L, x.device)
        for block in self.blocks:
            h = block(h, rotary, c)
        return self.output_layer(h, c)  # (B, L, V+1)


# ----------------------------------------------------------------------------- denoiser adapter
class Denoiser(nn.Module):
    """Adapts a DiT to the toolkit's ``denoiser(x_t, t) -> logits (B, L, V+1)`` call (docs/design.md).

    Converts diffusion time t to the backbone's input σ(t) = −log α_t (SPEC 1.1) when the backbone is
    time-conditioned; otherwise passes zeros, as MDLM does (SPEC 1.3). Returns raw logits; SUBS is
    applied by the caller.

    Args:
        backbone: a ``DiT`` (or any module with ``forward(x, sigma)``, ``vocab_size``, ``length`` and
            ``time_conditioned``).
        schedule: the noise schedule that defines σ(t).
        mask_id: the ``[MASK]`` id, in [0, vocab_size).
    """

    def __init__(self, backbone: DiT, schedule: NoiseSchedule, mask_id: int):
        super().__init__()
        vocab_size = backbone.vocab_size
        if not 0 <= mask_id < vocab_size:
            raise ValueError(f"`mask_id` must be in [0, vocab_size={vocab_size}), got {mask_id}.")
        self.backbone = backbone
        self.schedule = schedule
        self.mask_id = int(mask_id)

    @property
    def time_conditioned(self) -> bool:
        return bool(getattr(self.backbone, "time_conditioned", False))

    @property
    def vocab_size(self) -> int:
        return self.backbone.vocab_size

    @property
    def length(self) -> int:
        return self.backbone.length

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Raw logits (B, L, V+1) at noisy tokens ``x_t`` (B, L) and diffusion times ``t`` (B,)."""
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x_t.shape[0]},), got {tuple(t.shape)}.")
        if self.time_conditioned:
            sigma = self.schedule.sigma(t)  # SPEC 1.1: σ(t) = −log α_t
        else:
            sigma = torch.zeros_like(t, dtype=torch.float32)  # SPEC 1.3: no time conditioning
        return self.backbone(x_t, sigma)
