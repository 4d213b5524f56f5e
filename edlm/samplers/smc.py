"""Sequential Monte Carlo with persistent particles for EDLM (docs/samplers.md derives the weights).

Each sequence of the batch carries N particles across the reverse steps. A particle is a pair (x_t, x̂): its
partly masked state and the complete sequence x̂ it proposed at its last step (x̂ agrees with x_t wherever x_t
is unmasked). One step t → s of every particle:

  1. propose x̂' ~ Π_i x_θⁱ(· | x_t) and reveal from it (SPEC 1.4): x_s;
  2. weight by the incremental weight  log G = −[E(x̂', x_t) − E(x̂, x_t)] / τ  (both scored at the same x_t;
     at the first step the second term is absent);
  3. resample (systematic, per sequence) when the effective sample size falls below ``ess_threshold`` · N.

With SPEC 2.2's EDLM target p(x_0 | x_t) ∝ Π_i x_θⁱ(x_0ⁱ | x_t) · exp(−E(x_0, x_t)) equal to the restriction of one
joint π to the sequences consistent with x_t (exact for EDLM-AR without carry-over, where π = p_AR, and for an NCE
energy at its optimum), the particles target π(x̂) q_t(x_t | x̂) at every step, the normaliser Z(x_t) of the EDLM
target cancels in G, and the output — one particle per sequence drawn by weight, its x̂ — is a draw from π as
N → ∞, whatever T. The product of the mean incremental weights, ``log_z``, is the unbiased estimate of
Σ_x Π_i x_θⁱ(x | x_init) exp(−E(x, x_init)) (1 for an exact AR energy from all-masked).

The sampler never calls a network: ``edlm.samplers.smc_loop.generate_smc`` does, and hands it the outputs.
Random stream per step: the reveal uniforms (B·N, L), the token uniforms (B·N, 1, L) (the layout of
``AncestralSampler``: with N = 1 the particles are MDLM's sequences bit for bit), then (B,) resampling uniforms
when some sequence resamples; one (B,) draw at the end picks the output particles.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edlm.diffusion.categorical import sample_categorical, uniform64
from edlm.diffusion.schedules import NoiseSchedule
from edlm.samplers.ancestral import AncestralSampler
from edlm.samplers.importance import effective_sample_size
from edlm.samplers.settings import (
    DEFAULT_ESS_THRESHOLD,
    DEFAULT_PARTICLES,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    check_ess_threshold,
    check_particles,
    check_temperature,
)

__all__ = ["SMCSampler", "systematic_resample"]


def systematic_resample(log_w: Tensor, u: Tensor) -> Tensor:
    """Ancestor indices (B, N) of systematic resampling: particle n of row b takes the first j whose cumulative
    weight exceeds (u_b + n) / N. ``log_w`` (B, N) normalised log-weights; ``u`` (B,) uniforms in [0, 1)."""
    B, N = log_w.shape
    cdf = torch.cumsum(log_w.double().exp(), dim=-1)  # (B, N)
    cdf = cdf / cdf[:, -1:]  # exactly 1 at the end despite rounding
    points = (u.double()[:, None] + torch.arange(N, dtype=torch.float64, device=log_w.device)[None]) / N  # (B, N)
    return torch.searchsorted(cdf, points, right=True).clamp_(max=N - 1)


class SMCSampler(AncestralSampler):
    """N persistent particles per sequence, weighted by the energy, resampled when their ESS is low.

    Args:
        mask_id, schedule, noise_removal, eps, top_p: as ``AncestralSampler``.
        particles: N per sequence (1: MDLM).
        ess_threshold: resample a sequence's particles when ESS < ``ess_threshold`` · N (0: never).
        temperature: τ in log G = −ΔE / τ (τ = 1 is the target of the module docstring).
    """

    def __init__(self, mask_id: int, particles: int = DEFAULT_PARTICLES, ess_threshold: float = DEFAULT_ESS_THRESHOLD,
                 temperature: float = DEFAULT_TEMPERATURE, schedule: NoiseSchedule | None = None,
                 noise_removal: bool = True, eps: float = 1e-5, top_p: float = DEFAULT_TOP_P):
        super().__init__(mask_id, schedule=schedule, noise_removal=noise_removal, eps=eps, top_p=top_p)
        self.particles = check_particles(particles)
        self.ess_threshold = check_ess_threshold(ess_threshold)
        self.temperature = check_temperature(temperature)

    def initial_log_weights(self, batch_size: int, device) -> Tensor:
        """Uniform normalised log-weights (B, N)."""
        return torch.full((batch_size, self.particles), -math.log(self.particles), dtype=torch.float64, device=device)

    def propose_step(self, log_p_x0, x_t: Tensor, t: Tensor, s: Tensor,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Stream parts 1–2 for the B·N particles: (reveal (B·N, L), x̂' (B·N, L), x_s (B·N, L))."""
        reveal = self.reveal(x_t, t, s, generator)
        token_u = self.token_uniforms(x_t, 1, generator)  # (B·N, L, 1)
        x_hat = self.propose(self.proposal_log_probs(log_p_x0), x_t, token_u)[:, 0]  # (B·N, L)
        x_s = torch.where(reveal, x_hat, x_t)  # SPEC 1.4
        return reveal, x_hat, x_s

    def reweight(self, log_w: Tensor, e_new: Tensor, e_old: Tensor | None) -> tuple[Tensor, Tensor]:
        """(normalised log-weights (B, N), log of this step's factor of Ẑ (B,)) after the incremental weights
        log G = −(E(x̂', x_t) − E(x̂, x_t)) / τ; ``e_new``, ``e_old``: (B·N,) (``e_old`` None at the first step)."""
        B, N = log_w.shape
        log_g = -(e_new.double() - (0.0 if e_old is None else e_old.double())) / self.temperature
        total = log_w + log_g.reshape(B, N)
        log_step_z = torch.logsumexp(total, dim=-1)  # Σ_n W_n G_n: this step's factor of Ẑ
        return total - log_step_z[:, None], log_step_z

    def resample(self, log_w: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Systematic resampling of the rows whose ESS < threshold · N: (ancestors (B, N), new log-weights, which rows
        resampled (B,) bool). Draws (B,) uniforms only when some row resamples."""
        B, N = log_w.shape
        ess = effective_sample_size(log_w)
        low = ess < self.ess_threshold * N
        keep = torch.arange(N, device=log_w.device).expand(B, N)
        if not bool(low.any()):
            return keep, log_w, low
        ancestors = systematic_resample(log_w, uniform64((B,), generator, log_w.device))
        ancestors = torch.where(low[:, None], ancestors, keep)
        log_w = torch.where(low[:, None], self.initial_log_weights(B, log_w.device), log_w)
        return ancestors, log_w, low

    def select(self, log_w: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The output particle of each sequence, drawn by weight: (B,) indices in [0, N)."""
        return sample_categorical(log_w, uniform64((log_w.shape[0],), generator, log_w.device))
