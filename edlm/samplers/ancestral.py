"""Ancestral sampling for masked diffusion, with the cache of MDLM's ``ddpm_cache`` (SPEC 1.4, 1.6).

The sampler never calls a network: ``generate`` (``loop.py``) calls the denoiser and hands the
SUBS log-probabilities to ``step``.

Random-stream layout of one step (fixed, so that samplers can be compared bit for bit):
  1. ``reveal_u``: (B, L) float64 uniforms — which masked positions are revealed on t → s;
  2. ``token_u``: (B, k, L) float64 uniforms — the token drawn at each position of each proposal
     (k = 1 for the plain step), by exact float64 inversion (SPEC 1.6);
  3. (importance sampling with k > 1 only) ``resample_u``: (B,) — which proposal is kept.
A plain step uses ``token_u`` only where a token is revealed; an importance-sampling step with
k = 1 draws the same numbers and uses them everywhere, so both give identical tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edlm.diffusion.categorical import sample_categorical, top_p_filter, uniform64
from edlm.diffusion.posterior import unmask_probability
from edlm.diffusion.schedules import LogLinearSchedule, NoiseSchedule
from edlm.diffusion.subs import SubsLogProbs
from edlm.samplers.base import StepOutput
from edlm.samplers.settings import DEFAULT_TOP_P, check_steps, check_top_p

__all__ = ["AncestralSampler"]


def _sample_at(log_p_x0, where, u: Tensor, masked: bool = False) -> Tensor:
    """Exact draws from x_θ at the positions ``where`` ((B, L) bool, or its (b, i) indices): straight
    from the logits for the loop's lazy ``SubsLogProbs`` (no float32 rows in between), else from the
    rows of the tensor. ``masked``: the caller knows every position is masked in x_t."""
    if isinstance(log_p_x0, SubsLogProbs):
        return log_p_x0.sample(where, u, masked=masked)
    return sample_categorical(log_p_x0[where], u)


class AncestralSampler:
    """T uniform reverse steps from t = 1 (SPEC 1.6, "ancestral").

    Args:
        mask_id: the ``[MASK]`` id.
        schedule: the noise schedule (log-linear by default).
        noise_removal: end at t = ``eps`` and replace any mask left by the argmax of x_θ (MDLM's
            default). If False, the last step goes to s = 0, where α_0 = 1 reveals every position by
            sampling — the exact choice for distribution tests.
        eps: the final time when ``noise_removal`` is on.
        top_p: optional nucleus filtering of x_θ before sampling (1.0 = off).
    """

    def __init__(self, mask_id: int, schedule: NoiseSchedule | None = None, noise_removal: bool = True,
                 eps: float = 1e-5, top_p: float = DEFAULT_TOP_P):
        top_p = check_top_p(top_p)
        self.mask_id = mask_id
        self.schedule = schedule or LogLinearSchedule()
        self.noise_removal = noise_removal
        self.eps = eps  # MDLM samples down to t = 1e-5, then removes noise
        self.top_p = top_p
        self.timesteps: Tensor | None = None

    def set_timesteps(self, num_steps: int, device: torch.device | str | None = None) -> Tensor:
        """The grid t_0 = 1 > t_1 > … > t_T (T + 1 float64 times); step i goes t_i → t_{i+1}."""
        check_steps(num_steps)
        end = self.eps if self.noise_removal else 0.0
        self.timesteps = torch.linspace(1.0, end, num_steps + 1, dtype=torch.float64, device=device)
        return self.timesteps

    # ------------------------------------------------------------------ pieces of a step
    def proposal_log_probs(self, log_p_x0: Tensor) -> Tensor:
        """x_θ as the sampler draws from it: with nucleus filtering when ``top_p`` < 1 (a lazy
        ``SubsLogProbs`` is made dense first: the filter reads every class of every row)."""
        if self.top_p == 1.0:
            return log_p_x0
        if not isinstance(log_p_x0, Tensor):
            log_p_x0 = log_p_x0.dense()
        return top_p_filter(log_p_x0, self.top_p)

    def reveal(self, x_t: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        """Which masked positions are revealed on t → s: Bernoulli((α_s − α_t)/(1 − α_t)). (B, L) bool."""
        return self.reveal_masked(x_t == self.mask_id, t, s, generator)

    def reveal_masked(self, masked: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        """``reveal`` from the masked positions (B, L) bool instead of x_t (the same uniforms, the same result)."""
        p = unmask_probability(self.schedule.alpha(t), self.schedule.alpha(s))  # SPEC 1.4
        u = uniform64(tuple(masked.shape), generator, masked.device)  # stream part 1
        return (u < p) & masked

    def token_uniforms(self, x_t: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        """Stream part 2: (B, L, k) float64 uniforms (drawn as (B, k, L))."""
        B, L = x_t.shape
        return uniform64((B, k, L), generator, x_t.device).transpose(1, 2)  # (B, L, k)

    def propose(self, log_p_x0: Tensor, x_t: Tensor, token_u: Tensor) -> Tensor:
        """k full proposals x̂_0 ~ Π_i x_θⁱ(· | x_t), exact, drawn only at masked positions.

        Args:
            log_p_x0: SUBS log-probabilities (B, L, V+1), a tensor or a lazy ``SubsLogProbs``
                (already nucleus-filtered if wanted).
            x_t: (B, L). token_u: (B, L, k) uniforms.

        Returns:
            (B, k, L) proposals; positions unmasked in x_t are copied (SPEC 1.3b).
        """
        k = token_u.shape[-1]
        masked = x_t == self.mask_id  # (B, L)
        out = x_t[:, None, :].repeat(1, k, 1)  # (B, k, L)
        if masked.any():
            drawn = _sample_at(log_p_x0, masked, token_u[masked], masked=True)  # (n_masked, k)
            out.transpose(1, 2)[masked] = drawn  # write through the (B, L, k) view
        return out

    # ------------------------------------------------------------------ the plain step
    def decide(self, masked: Tensor, t: Tensor, s: Tensor,
               generator: torch.Generator | None = None) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """The random part of a plain step t → s, which does not read x_θ: the revealed positions (b, i) among
        ``masked`` (B, L) and their token uniforms (n,) (stream parts 1–2). Its ``nonzero`` is the step's one
        host sync, so ``generate`` runs it on a side CUDA stream, where it does not wait for the denoiser."""
        reveal = self.reveal_masked(masked, t, s, generator)  # (B, L)
        token_u = self.token_uniforms(masked, 1, generator)[..., 0]  # (B, L)
        at = reveal.nonzero(as_tuple=True)  # (b, i) of the revealed positions
        return at, token_u[at]

    def apply(self, log_p_x0: Tensor, x_t: Tensor, at: tuple[Tensor, Tensor], u: Tensor) -> StepOutput:
        """The rest of the plain step: x_s = x_t with exact draws from x_θ at the revealed positions ``at``."""
        n = at[0].numel()
        x_s = x_t.clone()  # SPEC 1.4: revealed (masked) positions take x̂_0, all others keep x_t
        if n and self.top_p < 1.0:
            lp = self.proposal_log_probs(log_p_x0[at])  # (n_reveal, V+1), nucleus-filtered
            x_s[at] = sample_categorical(lp, u)
        elif n:
            x_s[at] = _sample_at(log_p_x0, at, u, masked=True)
        return StepOutput(x_s=x_s, changed=n > 0, revealed=n)

    def step(self, log_p_x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor,
             generator: torch.Generator | None = None) -> StepOutput:
        """One reverse step t → s (SPEC 1.4), sampling tokens only where they are revealed."""
        at, u = self.decide(x_t == self.mask_id, t, s, generator)
        return self.apply(log_p_x0, x_t, at, u)

    def finish(self, log_p_x0: Tensor, x_t: Tensor) -> Tensor:
        """Noise removal: replace any mask left by the argmax of x_θ (SPEC 1.6)."""
        masked = x_t == self.mask_id
        x = x_t.clone()
        if masked.any():
            x[masked] = log_p_x0[masked].argmax(-1)  # only the rows that are still masked
        return x
