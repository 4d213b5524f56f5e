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
Numerics follow it too; the layers, and how they compute, are in ``edlm.models.layers``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edlm.diffusion.schedules import NoiseSchedule
from edlm.models.layers import DiTBlock, FinalLayer, Rotary, TimestepEmbedder, TokenEmbedding

__all__ = ["DiT", "Denoiser", "check_length", "check_sizes", "check_tokens"]


# ----------------------------------------------------------------------------- input checks
def check_length(seq_len: int, max_len: int) -> None:
    """Raise a clear ValueError when a sequence is longer than the model's context."""
    if seq_len > max_len:
        raise ValueError(f"sequence length {seq_len} exceeds the model's maximum length {max_len}; "
                         "use semi-autoregressive sampling for longer text (SPEC 1.6).")


def check_tokens(x: Tensor) -> None:
    """Raise a clear ValueError unless ``x`` is a (B, L) tensor of integer token ids."""
    if x.dim() != 2 or x.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"expected token ids of shape (B, L) and an integer dtype, got shape "
                         f"{tuple(x.shape)} and dtype {x.dtype}.")


def check_sizes(**sizes) -> None:
    """Raise a clear ValueError for a bad transformer size (non-positive, or heads that do not fit)."""
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
        check_sizes(vocab_size=vocab_size, length=length, hidden_size=hidden_size, n_blocks=n_blocks,
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
        check_tokens(x)
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
