"""The reverse step t → s of masked diffusion (SPEC 1.4)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["unmask_probability", "reverse_step_probs", "reverse_step"]


def unmask_probability(alpha_t: Tensor, alpha_s: Tensor) -> Tensor:
    """(α_s − α_t) / (1 − α_t): the probability that a masked token is revealed on t → s."""
    return (alpha_s - alpha_t) / (1.0 - alpha_t)


def reverse_step_probs(log_p_x0: Tensor, x_t: Tensor, alpha_t: Tensor, alpha_s: Tensor, mask_id: int) -> Tensor:
    """p_θ(x_sⁱ | x_t) for every position, (B, L, V+1) float64 (SPEC 1.4); for tests and analysis.

    Unmasked positions are copied. A masked position stays m with probability (1 − α_s)/(1 − α_t),
    else becomes v with probability (α_s − α_t)/(1 − α_t) · x_θⁱ(v).
    """
    alpha_t = torch.as_tensor(alpha_t, dtype=torch.float64).reshape(-1, 1, 1)  # (B or 1, 1, 1)
    alpha_s = torch.as_tensor(alpha_s, dtype=torch.float64).reshape(-1, 1, 1)
    probs = unmask_probability(alpha_t, alpha_s) * log_p_x0.double().exp()  # (B, L, V+1)
    probs[..., mask_id] = ((1.0 - alpha_s) / (1.0 - alpha_t)).reshape(-1, 1)
    copied = torch.zeros_like(probs).scatter_(-1, x_t[..., None], 1.0)  # one-hot(x_t)
    return torch.where((x_t != mask_id)[..., None], copied, probs)


def reverse_step(x_t: Tensor, x_0_hat: Tensor, reveal: Tensor, mask_id: int) -> Tensor:
    """x_s = x̂_0 where a masked position is revealed, else x_t (SPEC 1.4 with x_θ = one-hot(x̂_0)).

    Drawing ``reveal`` ~ Bernoulli((α_s − α_t)/(1 − α_t)) independently of x̂_0 ~ x_θ is the same
    step as 1.4: the token and the decision to reveal it are independent.
    """
    return torch.where((x_t == mask_id) & reveal, x_0_hat, x_t)
