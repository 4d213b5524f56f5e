"""Energy-guided remasking: a ReMDM-style sampler whose re-masked tokens are those the energy finds least likely.

ReMDM (Wang et al. 2025, arXiv 2503.00307) lets a step t → s re-mask a generated token with probability σ_t and
reveals each masked one with probability (α_s − (1 − σ_t) α_t) / (1 − α_t), so that the expected unmasked fraction
stays α_s; with σ_t ≤ σ_max = (1 − α_s)/α_t both are probabilities. Here:

- σ_t = min(η, σ_max) (ReMDM's "cap" schedule, η = ``remask_eta``) inside ``remask_window`` [t_lo, t_hi]
  (ReMDM-loop's t_off, t_on), 0 outside it, so the last steps never re-mask and the run ends with every token
  revealed;
- which tokens: each generated token unmasked before the step (never a fixed one: prompts and templates survive)
  gets a score, and is re-masked with probability min(1, σ_t · n · softmax(score)_i) over the n candidates of its
  sequence (ReMDM-conf's confidence weighting, with the energy's score in place of the confidence). The expected
  number re-masked is at most σ_t · n, as in ReMDM;
- the score of token i is its per-token energy contribution (SPEC 2.3):
  ψⁱ − log p_AR(x̂ⁱ | x̂^{<i}), where ψⁱ = log x_θⁱ(xⁱ | x_t) is the denoiser's log-probability of the token at the
  step that revealed it and x̂ the complete proposal of this step: high when the AR model finds the token unlikely
  given the others, relative to what the denoiser thought of it. An energy with no per-token split (NCE, or none)
  uses the proxy −ψⁱ: the denoiser's own confidence, ReMDM-conf's choice;
- the step itself is the importance-sampled step of SPEC 2.5 (``k``, ``window``; k = 1: MDLM).

The sampler never calls a network: ``edlm.samplers.guided_loop`` calls the denoiser and the energy (its
``token_log_likelihoods``) and hands it the outputs. Random stream per step: the reveal uniforms (B, L), the token
uniforms (B, k, L), (k > 1) the resampling uniforms (B,), then (σ_t > 0 and candidates) the remasking uniforms (B, L).
"""

from __future__ import annotations

import torch
from torch import Tensor

from edlm.diffusion.categorical import uniform64
from edlm.diffusion.schedules import NoiseSchedule
from edlm.samplers.importance import ImportanceSampler
from edlm.samplers.settings import (
    DEFAULT_K,
    DEFAULT_REMASK_ETA,
    DEFAULT_REMASK_WINDOW,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    DEFAULT_WINDOW,
    check_remask_eta,
    check_sampler_options,
)

__all__ = ["RemaskSampler"]


class RemaskSampler(ImportanceSampler):
    """Importance-sampled steps (SPEC 2.5) with energy-guided re-masking (module docstring).

    Args:
        mask_id, k, window, temperature, schedule, noise_removal, eps, top_p: as ``ImportanceSampler``.
        remask_eta: η, the cap on σ_t.
        remask_window: (t_lo, t_hi): steps starting at t in it may re-mask.
    """

    def __init__(self, mask_id: int, k: int = DEFAULT_K, window: tuple[float, float] = DEFAULT_WINDOW,
                 temperature: float = DEFAULT_TEMPERATURE, remask_eta: float = DEFAULT_REMASK_ETA,
                 remask_window: tuple[float, float] = DEFAULT_REMASK_WINDOW, schedule: NoiseSchedule | None = None,
                 noise_removal: bool = True, eps: float = 1e-5, top_p: float = DEFAULT_TOP_P):
        super().__init__(mask_id, k=k, window=window, temperature=temperature, schedule=schedule,
                         noise_removal=noise_removal, eps=eps, top_p=top_p)
        self.remask_eta = check_remask_eta(remask_eta)
        self.remask_window = check_sampler_options("remask", remask_window=remask_window)["remask_window"]

    def remask_probability(self, t: Tensor, s: Tensor) -> float:
        """σ_t = min(η, (1 − α_s)/α_t) inside ``remask_window``, else 0."""
        if not self.remask_window[0] <= float(t) <= self.remask_window[1]:
            return 0.0
        a_t, a_s = float(self.schedule.alpha(t)), float(self.schedule.alpha(s))
        return 0.0 if a_t <= 0.0 else min(self.remask_eta, max(0.0, (1.0 - a_s) / a_t))

    def reveal(self, x_t: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        """Masked positions revealed on t → s with ReMDM's probability (α_s − (1 − σ_t) α_t) / (1 − α_t)."""
        sigma = self.remask_probability(t, s)
        a_t, a_s = float(self.schedule.alpha(t)), float(self.schedule.alpha(s))
        p = 1.0 if a_t >= 1.0 else min(1.0, max(0.0, (a_s - (1.0 - sigma) * a_t) / (1.0 - a_t)))
        masked = x_t == self.mask_id
        u = uniform64(tuple(masked.shape), generator, masked.device)
        return (u < p) & masked

    @staticmethod
    def token_scores(confidence: Tensor, log_likelihood: Tensor | None) -> Tensor:
        """(B, L) scores, high = re-mask first: ψ − log p_AR with per-token AR log-likelihoods, else −ψ."""
        return -confidence if log_likelihood is None else confidence - log_likelihood.double()

    def remask(self, x_s: Tensor, scores: Tensor, candidates: Tensor, sigma: float,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Re-mask candidates (B, L) bool with probability min(1, σ · n · softmax(score)) per sequence:
        (x_s with them masked, which were re-masked (B, L) bool)."""
        n = candidates.sum(-1, keepdim=True).double()  # (B, 1)
        logits = torch.where(candidates, scores.double(), torch.full_like(scores, float("-inf"), dtype=torch.float64))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # rows without candidates: all 0
        p = (sigma * n * weights).clamp(max=1.0)
        u = uniform64(tuple(x_s.shape), generator, x_s.device)
        hit = (u < p) & candidates
        return torch.where(hit, torch.full_like(x_s, self.mask_id), x_s), hit
