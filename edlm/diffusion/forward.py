"""The forward (masking) process q(x_t | x_0) of absorbing-state diffusion (SPEC 1.2)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["q_sample"]


def q_sample(
    x_0: Tensor,
    alpha_t: Tensor,
    mask_id: int,
    attention_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mask each position of ``x_0`` independently: keep it with probability α_t, else ``mask_id``.

    Args:
        x_0: clean tokens, LongTensor (B, L).
        alpha_t: α_t per sequence, (B,) or (B, 1), or a scalar.
        mask_id: the ``[MASK]`` id m.
        attention_mask: optional (B, L), 1/True at real tokens, 0/False at padding. Padding is
            never masked (SPEC 1.2).
        generator: random stream for the masking draws.

    Returns:
        x_t, LongTensor (B, L).
    """
    alpha_t = torch.as_tensor(alpha_t, dtype=torch.float32, device=x_0.device)
    if alpha_t.dim() == 1:
        alpha_t = alpha_t[:, None]  # (B, 1)
    u = torch.rand(x_0.shape, generator=generator, device=x_0.device)  # (B, L)
    masked = u >= alpha_t  # masked with probability 1 − α_t
    if attention_mask is not None:
        masked &= attention_mask.bool()
    return torch.where(masked, torch.full_like(x_0, mask_id), x_0)
