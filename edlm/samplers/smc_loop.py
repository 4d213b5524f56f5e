"""``generate_smc``: the loop of the SMC sampler (``edlm.samplers.smc``); it calls the denoiser and the energy."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from edlm.diffusion.subs import raise_on_faults
from edlm.samplers.base import GenerateOutput
from edlm.samplers.calls import NetworkCalls
from edlm.samplers.importance import effective_sample_size
from edlm.samplers.smc import SMCSampler

__all__ = ["generate_smc"]


def generate_smc(denoiser, energy, x: Tensor, sampler: SMCSampler, steps: int, *, vocab_size: int,
                 generator: torch.Generator | None, device: torch.device, energy_batch_size: int | None = None,
                 progress=None) -> GenerateOutput:
    """B sequences from the start ``x`` (B, L) with N particles each (SMC, ``edlm.samplers.smc``).

    Each step calls the denoiser once on the B·N particles and the energy on their new proposals and (after the
    first step) their previous ones, at the same x_t: ``energy_evals`` is ~2·B·N per step. Returns the tokens of one
    particle per sequence drawn by weight, ``log_z`` (B,) and the mean ESS after each step's weighting.
    """
    start = time.perf_counter()
    B, L = x.shape
    N, mask_id = sampler.particles, sampler.mask_id
    timesteps = sampler.set_timesteps(steps, device="cpu")
    out = GenerateOutput(tokens=x, nfe_denoiser=0, nfe_energy=0, steps=steps)
    calls = NetworkCalls(denoiser, energy, out, vocab_size=vocab_size, mask_id=mask_id, device=device,
                         energy_batch_size=energy_batch_size)
    filtered = sampler.proposal_log_probs if sampler.top_p < 1.0 else None
    x_t = x.repeat_interleave(N, dim=0)  # (B·N, L): particle n of sequence b is row b·N + n
    x_hat: Tensor | None = None  # (B·N, L): each particle's last proposal
    log_w = sampler.initial_log_weights(B, device)  # (B, N)
    log_z = torch.zeros(B, dtype=torch.float64, device=device)
    rows = torch.arange(B * N, device=device)
    for i in range(steps):
        if progress is not None:
            progress.update(1)
        if not bool((x_t == mask_id).any()):
            break  # every particle is complete: the remaining steps are identities (G = 1)
        t, s = timesteps[i], timesteps[i + 1]
        log_p_x0 = calls.denoise(x_t, t)
        reveal, proposal, x_s = sampler.propose_step(log_p_x0, x_t, t, s, generator)
        raise_on_faults(calls.faults)
        if x_hat is None:  # the first step: G = exp(−E(x̂', x_init) / τ)
            e_new, e_old = calls.score(proposal, x_t, t, log_p_x0, rows, filtered), None
        else:  # new and previous proposals scored in one call, against the same x_t
            e = calls.score(torch.cat([proposal, x_hat]), x_t.repeat(2, 1), t, log_p_x0, rows.repeat(2), filtered)
            e_new, e_old = e[: B * N], e[B * N:]
        log_w, log_step_z = sampler.reweight(log_w, e_new, e_old)
        log_z += log_step_z
        out.ess.append(float(effective_sample_size(log_w).mean()))
        out.is_steps += 1
        x_t, x_hat = x_s, proposal
        ancestors, log_w, low = sampler.resample(log_w, generator)
        if bool(low.any()):
            flat = (ancestors + torch.arange(B, device=device)[:, None] * N).reshape(-1)  # (B·N,) source rows
            x_t, x_hat = x_t[flat], x_hat[flat]
            out.resampled += int(low.sum())
    raise_on_faults(calls.faults)
    pick = sampler.select(log_w, generator)  # (B,)
    chosen = torch.arange(B, device=device) * N + pick
    # a particle's x̂ agrees with its x_t where unmasked and fills what is left: the target's draw (no argmax)
    tokens = x_t[chosen] if x_hat is None else torch.where(x_t[chosen] == mask_id, x_hat[chosen], x_t[chosen])
    out.log_z = log_z
    return out.done(tokens, start, device)
