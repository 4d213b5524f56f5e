"""The parallel importance-sampling step of EDLM (SPEC 2.5).

Inside the window [t_lo, t_hi]: draw k proposals x̂_0^(1..k) ~ Π_i x_θⁱ(· | x_t) in one batched
draw, let the caller score them with the energy in one batched call, weight
w_j ∝ exp(−E(x̂_0^(j)) / τ) normalised over j with log-sum-exp, draw j* ~ Categorical(w), set
x_θ := one-hot(x̂_0^(j*)) and take the reverse step 1.4. Each sequence of the batch has its own k
proposals and its own weights: nothing is shared across rows.

Sign: lower energy = more likely, so the weight is exp(−E). (The published EDLM code uses
softmax(+E); that variant is kept, labelled, in ``edlm.baselines``.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from edlm.diffusion.categorical import sample_categorical, uniform64
from edlm.diffusion.posterior import reverse_step
from edlm.diffusion.schedules import NoiseSchedule
from edlm.samplers.ancestral import AncestralSampler
from edlm.samplers.base import StepOutput
from edlm.samplers.settings import (
    DEFAULT_K,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    DEFAULT_WINDOW,
    check_k,
    check_temperature,
    check_window,
)

__all__ = ["ImportanceSampler", "importance_log_weights", "effective_sample_size"]


def importance_log_weights(energies: Tensor, temperature: float = 1.0) -> Tensor:
    """Normalised log-weights log w_j = −E_j/τ − logsumexp_j(−E/τ) over the last dim (SPEC 2.5)."""
    logits = -energies.double() / temperature
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


def effective_sample_size(log_w: Tensor) -> Tensor:
    """1 / Σ_j w_j² for normalised log-weights (..., k): k for equal weights, 1 for a single winner."""
    return 1.0 / torch.exp(2 * log_w).sum(-1)


class ImportanceSampler(AncestralSampler):
    """Ancestral sampler with importance-sampled steps inside ``window`` (SPEC 2.5).

    Args:
        mask_id, schedule, noise_removal, eps, top_p: as ``AncestralSampler``.
        k: proposals per sequence and step (k = 1, the default, reproduces MDLM exactly).
        window: (t_lo, t_hi) ⊂ [0, 1]; a step t → s is importance-sampled when t_lo ≤ t ≤ t_hi.
        temperature: τ > 0 in exp(−E/τ).

    The settings are checked here and in ``set_timesteps`` (``edlm.samplers.settings``), once for every
    sampling path.
    """

    def __init__(self, mask_id: int, k: int = DEFAULT_K, window: tuple[float, float] = DEFAULT_WINDOW,
                 temperature: float = DEFAULT_TEMPERATURE, schedule: NoiseSchedule | None = None,
                 noise_removal: bool = True, eps: float = 1e-5, top_p: float = DEFAULT_TOP_P):
        super().__init__(mask_id, schedule=schedule, noise_removal=noise_removal, eps=eps, top_p=top_p)
        self.k = check_k(k)
        self.window = check_window(window)
        self.temperature = check_temperature(temperature)

    def in_window(self, t: float | Tensor) -> bool:
        return self.window[0] <= float(t) <= self.window[1]

    def propose_step(self, log_p_x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Stream parts 1–2: the reveal draw (B, L) and k proposals (B, k, L) from the filtered x_θ."""
        reveal = self.reveal(x_t, t, s, generator)
        token_u = self.token_uniforms(x_t, self.k, generator)  # (B, L, k)
        proposals = self.propose(self.proposal_log_probs(log_p_x0), x_t, token_u)
        return reveal, proposals

    def resample_step(self, proposals: Tensor, energies: Tensor | None, x_t: Tensor, reveal: Tensor,
                      generator: torch.Generator | None = None) -> StepOutput:
        """Stream part 3: pick x̂_0^(j*) per row with weights ∝ exp(−E/τ); take the reverse step.

        Args:
            proposals: (B, k, L). energies: (B, k) (lower = more likely); ignored when k = 1; None
                when no row reveals anything (the step is then the identity, whatever is picked).
            x_t: (B, L). reveal: (B, L) from ``propose_step``.
        """
        B, k, L = proposals.shape
        if energies is None and k > 1:
            if reveal.any():
                raise ValueError("energies are needed when the step reveals tokens and k > 1.")
            energies = torch.zeros(B, k, dtype=torch.float64, device=x_t.device)
        if k == 1:  # a single proposal has weight 1: no draw, so the stream equals MDLM's
            chosen, ess = proposals[:, 0], torch.ones(B, dtype=torch.float64, device=x_t.device)
        else:
            log_w = importance_log_weights(energies, self.temperature)  # (B, k), SPEC 2.5
            u = uniform64((B,), generator, x_t.device)
            j_star = sample_categorical(log_w, u)  # (B,)
            chosen = proposals[torch.arange(B, device=x_t.device), j_star]  # (B, L)
            ess = effective_sample_size(log_w)
        x_s = reverse_step(x_t, chosen, reveal, self.mask_id)  # x_θ := one-hot(x̂_0^(j*)), SPEC 1.4
        return StepOutput(x_s=x_s, changed=bool(reveal.any()), ess=ess, x_0=chosen)
