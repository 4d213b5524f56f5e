"""EDLM-NCE: a bidirectional transformer energy E_φ(x_0, x_t, t), trained by NCE (SPEC 2.4).

Architecture (Xu et al. 2025, §4.2, in the shape SPEC 2.4 describes): one token-embedding table reads
both x_t and x_0; the two embeddings are concatenated and projected (2H → H); the denoiser's DiT
blocks (adaLN, rotary) run over the result; the hidden states are mean-pooled over real tokens; a small
MLP (LayerNorm, H → H → 1) gives one scalar per sequence. Lower energy = more data-like.

The blocks, the embedding table, the σ-embedding and the rotary buffer have the DiT's parameter
names, so ``from_denoiser`` copies them from any DiT checkpoint (MDLM's hub layout included).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edlm.diffusion.schedules import get_schedule
from edlm.models.checkpoints import from_pretrained, register_model_type
from edlm.models.dit import DiT, check_length, check_sizes, check_tokens
from edlm.models.layers import DiTBlock, LayerNorm, Rotary, TimestepEmbedder, TokenEmbedding

__all__ = ["NCEEnergy"]


class NCEEnergy(nn.Module):
    """``energy(x_0 (N, L), x_t (N, L), t (N,), log_p_x0=None) -> E (N,)``, float32, lower = more likely.

    Satisfies the energy signature of ``edlm.generate`` (``log_p_x0`` is accepted and unused).

    Args:
        vocab_size: ids including ``[MASK]`` (V + 1), as the denoiser's.
        length: longest sequence accepted.
        hidden_size, n_blocks, n_heads, cond_dim, dropout: as ``DiT`` (copy the denoiser's to initialise
            from it).
        time_conditioning: condition the blocks on σ(t) (else σ = 0, a learned constant, as MDLM's
            denoiser; x_t's mask count already tells the noise level).
        mask_id: the ``[MASK]`` id; default ``vocab_size - 1`` (the edlm convention, docs/design.md).
        schedule: name of the noise schedule that maps t to σ(t) (only used when time-conditioned).

    The input projection starts as [I | 0] (x_0 passes through, x_t is read through a zero map that
    learns), and the last layer of the head starts at zero, so a fresh energy is 0 everywhere: EDLM with
    it samples exactly as MDLM, and the NCE loss starts at 2 log 2.
    """

    uses_log_p_x0 = False  # generate() then passes log_p_x0=None (saves a (N, L, V+1) copy per call)

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
        mask_id: int | None = None,
        schedule: str = "loglinear",
    ):
        super().__init__()
        check_sizes(vocab_size=vocab_size, length=length, hidden_size=hidden_size, n_blocks=n_blocks,
                     n_heads=n_heads, cond_dim=cond_dim, dropout=dropout)
        mask_id = vocab_size - 1 if mask_id is None else int(mask_id)
        if not 0 <= mask_id < vocab_size:
            raise ValueError(f"`mask_id` must be in [0, vocab_size={vocab_size}), got {mask_id}.")
        self.vocab_size = vocab_size
        self.length = length
        self.hidden_size = hidden_size
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.cond_dim = cond_dim
        self.dropout = dropout
        self.time_conditioned = bool(time_conditioning)
        self.mask_id = mask_id
        self.schedule_name = schedule
        self.schedule = get_schedule(schedule)

        # the DiT's names, so that from_denoiser copies them key for key
        self.vocab_embed = TokenEmbedding(hidden_size, vocab_size)  # one table for x_t and x_0
        self.sigma_map = TimestepEmbedder(cond_dim)
        self.rotary_emb = Rotary(hidden_size // n_heads, max_len=length)
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, n_heads, cond_dim, dropout=dropout)
                                    for _ in range(n_blocks))
        # energy-only parts
        self.input_proj = nn.Linear(2 * hidden_size, hidden_size)  # [e(x_0) | e(x_t)] -> H
        self.head = nn.Sequential(
            LayerNorm(hidden_size),
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(approximate="tanh"),
            nn.Linear(hidden_size, 1),
        )
        with torch.no_grad():
            self.input_proj.weight.zero_()
            self.input_proj.weight[:, :hidden_size].copy_(torch.eye(hidden_size))  # [I | 0]
            self.input_proj.bias.zero_()
            nn.init.zeros_(self.head[-1].weight)  # E ≡ 0 at init
            nn.init.zeros_(self.head[-1].bias)

    def get_config(self) -> dict:
        """The constructor arguments (what ``save_pretrained`` writes to config.json)."""
        return dict(vocab_size=self.vocab_size, length=self.length, hidden_size=self.hidden_size,
                    n_blocks=self.n_blocks, n_heads=self.n_heads, cond_dim=self.cond_dim, dropout=self.dropout,
                    time_conditioning=self.time_conditioned, mask_id=self.mask_id, schedule=self.schedule_name)

    # ------------------------------------------------------------------------- construction
    @classmethod
    def from_denoiser(
        cls,
        source: nn.Module | str | os.PathLike,
        *,
        mask_id: int | None = None,
        dropout: float | None = None,
        time_conditioning: bool | None = None,
        schedule: str | None = None,
        n_blocks: int | None = None,
    ) -> NCEEnergy:
        """An energy with the denoiser's architecture whose embedding, σ-map, rotary and blocks are copies
        of the denoiser's (SPEC 2.4: initialise from the denoiser's weights).

        Args:
            source: a ``DiT``, a ``Denoiser`` wrapping one, or a checkpoint path / hub id that
                ``from_pretrained(..., expected_type="dit")`` loads (MDLM's released layout included).
            mask_id: default: the Denoiser's ``mask_id``, else ``vocab_size - 1``.
            dropout, time_conditioning: default: the DiT's.
            schedule: default: the Denoiser's schedule name, else log-linear.
            n_blocks: a cheaper energy of the denoiser's first ``n_blocks`` blocks (copied); default: all of them.
        """
        if isinstance(source, (str, os.PathLike)):
            source = from_pretrained(source, expected_type="dit")
        backbone = getattr(source, "backbone", source)
        if not isinstance(backbone, DiT):
            raise TypeError(f"from_denoiser needs a DiT, a Denoiser or a DiT checkpoint, got {type(source).__name__}.")
        if mask_id is None:
            mask_id = getattr(source, "mask_id", None)
        if schedule is None:
            schedule = getattr(getattr(source, "schedule", None), "name", "loglinear")
        if n_blocks is not None and not 0 < n_blocks <= backbone.n_blocks:
            raise ValueError(f"n_blocks must be in [1, {backbone.n_blocks}] (the denoiser's blocks), got {n_blocks}.")
        energy = cls(
            vocab_size=backbone.vocab_size, length=backbone.length, hidden_size=backbone.hidden_size,
            n_blocks=backbone.n_blocks if n_blocks is None else n_blocks, n_heads=backbone.n_heads, cond_dim=backbone.cond_dim,
            dropout=backbone.dropout if dropout is None else dropout,
            time_conditioning=backbone.time_conditioned if time_conditioning is None else time_conditioning,
            mask_id=mask_id, schedule=schedule,
        )
        device = next(backbone.parameters()).device
        energy.to(device)
        for name in ("vocab_embed", "sigma_map", "rotary_emb"):
            getattr(energy, name).load_state_dict(getattr(backbone, name).state_dict(), strict=True)
        for mine, theirs in zip(energy.blocks, backbone.blocks):  # the first n_blocks
            mine.load_state_dict(theirs.state_dict(), strict=True)
        return energy

    # ------------------------------------------------------------------------- forward
    def forward(
        self,
        x_0: Tensor,
        x_t: Tensor,
        t: Tensor,
        log_p_x0: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Energies (N,) float32 of clean sequences ``x_0`` (N, L) given noisy ``x_t`` (N, L) at times ``t`` (N,).

        ``log_p_x0`` (the denoiser's SUBS log-probabilities) is part of the decoder's signature and unused.
        ``attention_mask`` (N, L), 1 at real tokens, restricts the mean-pooling to them.
        """
        check_tokens(x_0)
        check_tokens(x_t)
        N, L = x_0.shape
        if x_t.shape != x_0.shape:
            raise ValueError(f"x_0 {tuple(x_0.shape)} and x_t {tuple(x_t.shape)} must have the same shape.")
        check_length(L, self.length)
        t = torch.as_tensor(t, dtype=torch.float32, device=x_0.device)
        if t.dim() == 0:
            t = t.expand(N)
        if t.shape != (N,):
            raise ValueError(f"t must have shape (N,) = ({N},), got {tuple(t.shape)}.")
        sigma = self.schedule.sigma(t) if self.time_conditioned else None  # SPEC 1.1: σ(t) = −log α_t

        h = torch.cat((self.vocab_embed(x_0), self.vocab_embed(x_t)), dim=-1)  # (N, L, 2H)
        h = self.input_proj(h)  # (N, L, H)
        # (N, cond_dim); unconditioned: σ = 0, as MDLM's denoiser (SPEC 1.3)
        c = F.silu(self.sigma_map(sigma) if sigma is not None else self.sigma_map.at_zero(N))
        rotary = self.rotary_emb(L, x_0.device)
        for block in self.blocks:
            h = block(h, rotary, c)  # (N, L, H)
        if attention_mask is None:
            pooled = h.mean(dim=1)  # (N, H)
        else:
            w = attention_mask.to(h.dtype)[..., None]  # (N, L, 1)
            pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)  # (N, H), mean over real tokens
        return self.head(pooled).squeeze(-1).float()  # (N,)


register_model_type("nce_energy", NCEEnergy)
