"""Importance sampling under a budget of energy evaluations (docs/samplers.md).

The fixed window of SPEC 2.5 spends k energy evaluations on every step inside it, whether the proposals of that
step disagree or not. This sampler gets a budget of energy evaluations per sequence and, at each step and for each
sequence, picks k from ``k_choices`` (k = 1: no energy call, the plain MDLM step) after the step's reveal is drawn:

- the need of a step is what the factorised x_θ gets wrong there: the pairs of tokens it reveals together, whose
  dependence the product of marginals misses, plus a small term per token for x_θ's own marginal errors:
  r(r − 1) + λ·r for r revealed tokens (λ = 0.25); a step that reveals nothing needs nothing;
- it is scaled by how much the proposals disagreed at the sequence's last importance-sampled step,
  d = 1 − (ESS − 1)/(k − 1) (0: equal weights, the energy changed nothing; 1: one proposal took all the weight);
  a sequence with no history yet has d = ``PRIOR_DISAGREEMENT``, as have the future steps;
- the remaining budget R is split between this step and the expected need of the steps still to come (from the
  tokens left masked after this step and the schedule's reveal probabilities): this step gets
  a = R · need / (need + expected future need), rounded to the allowed k nearest to it on a log scale (k ≤ √2·a),
  never above R.

A sequence never spends more than its budget: ``GenerateOutput.energy_spent`` (B,) records what it spent.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edlm.diffusion.schedules import NoiseSchedule
from edlm.samplers.importance import ImportanceSampler
from edlm.samplers.settings import (
    DEFAULT_BUDGET,
    DEFAULT_K_CHOICES,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    check_budget,
    check_k_choices,
)

__all__ = ["AdaptiveSampler", "PRIOR_DISAGREEMENT", "TOKEN_NEED"]

PRIOR_DISAGREEMENT = 0.5  # d of a sequence before its first importance-sampled step, and of future steps
TOKEN_NEED = 0.25  # λ: a revealed token's own share of need, against 1 per ordered pair revealed together


class AdaptiveSampler(ImportanceSampler):
    """Per step and sequence, k ∈ ``k_choices`` under ``budget`` energy evaluations per sequence.

    Args:
        mask_id, temperature, schedule, noise_removal, eps, top_p: as ``ImportanceSampler``.
        budget: energy evaluations per sequence over the whole run.
        k_choices: the allowed k, 1 included (a step without the energy).
    """

    def __init__(self, mask_id: int, budget: int = DEFAULT_BUDGET, k_choices: tuple[int, ...] = DEFAULT_K_CHOICES,
                 temperature: float = DEFAULT_TEMPERATURE, schedule: NoiseSchedule | None = None,
                 noise_removal: bool = True, eps: float = 1e-5, top_p: float = DEFAULT_TOP_P):
        k_choices = check_k_choices(k_choices)
        super().__init__(mask_id, k=k_choices[-1], window=(0.0, 1.0), temperature=temperature, schedule=schedule,
                         noise_removal=noise_removal, eps=eps, top_p=top_p)
        self.budget = check_budget(budget)
        self.k_choices = k_choices

    def future_reveal_moments(self, step: int) -> tuple[float, float]:
        """(Σ_l π_l², Σ_l π_l) over the steps l after ``step``, where π_l is the probability that a token still
        masked after ``step`` is revealed at step l (SPEC 1.4): E[r_l] = n π_l and E[r_l(r_l − 1)] = n(n − 1) π_l²
        for the n tokens left."""
        grid = self.timesteps
        alpha = self.schedule.alpha(grid).double()  # (T + 1,)
        left = 1.0 - float(alpha[step + 1])  # P(masked at s_step)
        if left <= 0.0:
            return 0.0, 0.0
        pi = (alpha[step + 2:] - alpha[step + 1:-1]) / left  # (T − step − 1,)
        return float((pi ** 2).sum()), float(pi.sum())

    def choose_k(self, reveal: Tensor, masked: Tensor, step: int, remaining: Tensor, disagreement: Tensor) -> Tensor:
        """k (B,) for this step: ``reveal``, ``masked`` (B, L) bool; ``remaining`` (B,) evaluations left;
        ``disagreement`` (B,) d of each sequence's last importance-sampled step (module docstring)."""
        r = reveal.sum(-1).double()  # (B,)
        n = masked.sum(-1).double() - r  # tokens left masked after this step
        sq, lin = self.future_reveal_moments(step)
        need = (r * (r - 1) + TOKEN_NEED * r) * disagreement.double()
        future = (n * (n - 1) * sq + TOKEN_NEED * n * lin) * PRIOR_DISAGREEMENT
        share = torch.where(need > 0, need / (need + future).clamp_min(1e-300), torch.zeros_like(need))
        alloc = remaining.double() * share  # (B,)
        ks = torch.tensor(self.k_choices, dtype=torch.float64, device=reveal.device)  # (K,) ascending, 1 first
        fits = (ks[None] <= 2 ** 0.5 * alloc[:, None]) & (ks[None] <= remaining.double()[:, None])  # (B, K)
        index = torch.where(fits, torch.arange(len(ks), device=reveal.device)[None], 0).amax(-1)  # largest that fits
        k = torch.tensor(self.k_choices, device=reveal.device)[index]
        return torch.where(r > 0, k, torch.ones_like(k))

    @staticmethod
    def disagreement(ess: Tensor, k: Tensor) -> Tensor:
        """d = 1 − (ESS − 1)/(k − 1) ∈ [0, 1] for k ≥ 2 (0: the energy weighted the proposals equally)."""
        return (1.0 - (ess.double() - 1.0) / (k.double() - 1.0).clamp_min(1.0)).clamp(0.0, 1.0)
