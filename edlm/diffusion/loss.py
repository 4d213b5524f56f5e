"""Training loss: the Rao–Blackwellised NELBO of masked diffusion (SPEC 1.5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from edlm.diffusion.schedules import NoiseSchedule

__all__ = ["NELBOOutput", "antithetic_times", "continuous_nelbo", "discrete_nelbo", "discrete_weight"]


@dataclass
class NELBOOutput:
    """Per-sequence NELBO terms. ``nll_sum / num_tokens`` bounds the NLL per token (nats)."""

    nll_sum: Tensor  # (B,) Σ over masked positions of weight · (−log x_θ(x_0ⁱ | x_t))
    num_tokens: Tensor  # (B,) number of real (non-padding) tokens

    @property
    def loss(self) -> Tensor:
        """Token-averaged NELBO over the batch (the training objective)."""
        return self.nll_sum.sum() / self.num_tokens.sum().clamp_min(1)

    @property
    def ppl_bound(self) -> float:
        """exp of the token-averaged NELBO: the "PPL ≤" figure."""
        return math.exp(float(self.loss))


def antithetic_times(
    batch_size: int,
    t_min: float = 1e-3,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Stratified times t_b = ((u + b/B) mod 1), mapped to [t_min, 1] (SPEC 1.5). Returns (B,)."""
    u = torch.rand((), generator=generator, device=device)
    t = (u + torch.arange(batch_size, device=device) / batch_size) % 1.0  # (B,) one per stratum
    return t_min + (1.0 - t_min) * t


def _masked_term(log_lik: Tensor, x_t: Tensor, mask_id: int, attention_mask: Tensor | None) -> Tensor:
    """Σ_{i: x_tⁱ = m} log x_θⁱ(x_0ⁱ | x_t), per sequence (B,). Padding is never counted."""
    masked = x_t == mask_id
    if attention_mask is not None:
        masked &= attention_mask.bool()
    return torch.where(masked, log_lik, torch.zeros_like(log_lik)).sum(-1)


def _num_tokens(x_0: Tensor, attention_mask: Tensor | None) -> Tensor:
    if attention_mask is None:
        return torch.full((x_0.shape[0],), x_0.shape[1], device=x_0.device, dtype=torch.float32)
    return attention_mask.float().sum(-1)


def continuous_nelbo(
    log_lik: Tensor,
    x_0: Tensor,
    x_t: Tensor,
    t: Tensor,
    schedule: NoiseSchedule,
    mask_id: int,
    attention_mask: Tensor | None = None,
) -> NELBOOutput:
    """One-sample estimate of the continuous-time NELBO (SPEC 1.5).

    L = E_t E_{x_t} [ (α'_t / (1 − α_t)) · Σ_{i: x_tⁱ = m} log x_θⁱ(x_0ⁱ | x_t) ]  (≥ 0).

    Args:
        log_lik: log x_θⁱ(x_0ⁱ | x_t) at every position, (B, L) — e.g. ``log_likelihood_of``.
        x_0, x_t: clean and noisy tokens, (B, L).
        t: the time of each sequence, (B,) (draw with ``antithetic_times``).
        schedule: the noise schedule.
        mask_id: the ``[MASK]`` id.
        attention_mask: (B, L), 1 at real tokens; padding is neither masked nor counted.
    """
    weight = schedule.loss_weight(t)  # (B,) α'_t / (1 − α_t) < 0
    nll_sum = weight * _masked_term(log_lik, x_t, mask_id, attention_mask)  # SPEC 1.5
    return NELBOOutput(nll_sum=nll_sum, num_tokens=_num_tokens(x_0, attention_mask))


def discrete_weight(t: Tensor, schedule: NoiseSchedule, num_steps: int) -> Tensor:
    """(α_s − α_t) / (1 − α_t) with s = t − 1/T: the KL weight of one discrete reverse step."""
    s = (t - 1.0 / num_steps).clamp_min(0.0)
    return (schedule.alpha(s) - schedule.alpha(t)) / (1.0 - schedule.alpha(t))


def discrete_nelbo(
    log_lik: Tensor,
    x_0: Tensor,
    x_t: Tensor,
    t: Tensor,
    schedule: NoiseSchedule,
    mask_id: int,
    num_steps: int,
    attention_mask: Tensor | None = None,
) -> NELBOOutput:
    """One-sample estimate of the discrete-time NELBO with T = ``num_steps`` (SPEC 1.5).

    L_T = Σ_{j=1..T} E_{x_t} [ (α_s − α_t)/(1 − α_t) · Σ_{i: x_tⁱ = m} −log x_θⁱ(x_0ⁱ | x_t) ],
    t = j/T, s = (j − 1)/T. Each term is the KL between the true and the model reverse step (SPEC
    1.4) at one masked position. With ``t`` drawn uniformly from the grid {1/T, …, 1}, T times this
    is unbiased. L_T approaches the continuous bound from above as T grows.
    """
    if num_steps <= 0:
        raise ValueError(f"`num_steps` must be > 0, got {num_steps}.")
    weight = -num_steps * discrete_weight(t, schedule, num_steps)  # (B,) < 0, T × one grid term
    nll_sum = weight * _masked_term(log_lik, x_t, mask_id, attention_mask)
    return NELBOOutput(nll_sum=nll_sum, num_tokens=_num_tokens(x_0, attention_mask))
