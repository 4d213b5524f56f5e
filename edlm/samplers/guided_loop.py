"""The loops of the SMC, adaptive and remasking samplers: they call the denoiser and the energy, the samplers
(``smc.py``, ``adaptive.py``, ``remask.py``) decide. ``generate(sampler=...)`` (``loop.py``) comes here."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from edlm.diffusion.subs import raise_on_faults
from edlm.samplers.adaptive import PRIOR_DISAGREEMENT, AdaptiveSampler
from edlm.samplers.base import GenerateOutput, Ticks
from edlm.samplers.calls import NetworkCalls
from edlm.samplers.remask import RemaskSampler
from edlm.samplers.smc import SMCSampler
from edlm.samplers.smc_loop import generate_smc

__all__ = ["generate_guided"]


def generate_guided(denoiser, energy, x: Tensor, kind: str, steps: int, options: dict, *, vocab_size: int, mask_id: int,
                    temperature: float, cache: bool, generator, schedule, noise_removal: bool, eps: float,
                    top_p: float, energy_batch_size: int | None, device: torch.device, progress) -> GenerateOutput:
    """``generate`` with ``sampler`` = "smc", "adaptive" or "remask", from the start ``x`` (B, L); ``options``: the
    checked settings of ``check_sampler_options``."""
    common = dict(temperature=temperature, schedule=schedule, noise_removal=noise_removal, eps=eps, top_p=top_p)
    if energy is None and kind in ("smc", "adaptive"):
        raise ValueError(f"sampler {kind!r} weights proposals by an energy; pass one (--energy), or use "
                         "sampler='importance' for MDLM.")
    ticks = Ticks(progress, steps)
    try:
        if kind == "smc":
            sampler = SMCSampler(mask_id, particles=options["particles"], ess_threshold=options["ess_threshold"],
                                 **common)
            return generate_smc(denoiser, energy, x, sampler, steps, vocab_size=vocab_size, generator=generator,
                                device=device, energy_batch_size=energy_batch_size, progress=ticks)
        start = time.perf_counter()
        out = GenerateOutput(tokens=x, nfe_denoiser=0, nfe_energy=0, steps=steps)
        calls = NetworkCalls(denoiser, energy, out, vocab_size=vocab_size, mask_id=mask_id, device=device,
                             energy_batch_size=energy_batch_size)
        cache = cache and not getattr(denoiser, "time_conditioned", False)
        if kind == "adaptive":
            sampler = AdaptiveSampler(mask_id, budget=options["budget"], k_choices=options["k_choices"], **common)
            x = _adaptive(calls, sampler, x, steps, generator, cache, ticks)
        else:
            sampler = RemaskSampler(mask_id, k=options["k"], window=options["window"],
                                    remask_eta=options["remask_eta"], remask_window=options["remask_window"], **common)
            x = _remask(calls, sampler, x, steps, generator, cache, ticks)
        raise_on_faults(calls.faults)
        return out.done(x, start, device)
    finally:
        ticks.finish()


def _finish(calls: NetworkCalls, sampler, x: Tensor, log_p_x0, t_end) -> Tensor:
    """Noise removal (SPEC 1.6): the argmax of x_θ at any mask left."""
    if not bool((x == sampler.mask_id).any()):
        return x
    if log_p_x0 is None:
        log_p_x0 = calls.denoise(x, t_end)
    return sampler.finish(log_p_x0, x)


def _adaptive(calls: NetworkCalls, sampler: AdaptiveSampler, x: Tensor, steps: int, generator, cache: bool,
              ticks: Ticks) -> Tensor:
    """The adaptive sampler's steps; ``calls.out.energy_spent`` gets each sequence's evaluations."""
    out, mask_id = calls.out, sampler.mask_id
    B, K = x.shape[0], sampler.k
    timesteps = sampler.set_timesteps(steps, device="cpu")
    spent = torch.zeros(B, dtype=torch.long, device=x.device)
    disagreement = torch.full((B,), PRIOR_DISAGREEMENT, dtype=torch.float64, device=x.device)
    filtered = sampler.proposal_log_probs if sampler.top_p < 1.0 else None
    columns = torch.arange(K, device=x.device)[None]  # (1, K)
    log_p_x0 = None
    for i in range(steps):
        ticks.update(1)
        masked = x == mask_id
        if not bool(masked.any()):
            break
        t, s = timesteps[i], timesteps[i + 1]
        if log_p_x0 is None or not cache:
            log_p_x0 = calls.denoise(x, t)
        reveal, proposals = sampler.propose_step(log_p_x0, x, t, s, generator)  # (B, L), (B, K, L)
        raise_on_faults(calls.faults)
        k = sampler.choose_k(reveal, masked, i, sampler.budget - spent, disagreement)  # (B,)
        use = k >= 2
        energies = torch.where(columns == 0, 0.0, float("inf")).double().expand(B, K).clone()  # rows with k = 1
        if bool(use.any()):
            chosen = (columns < k[:, None]) & use[:, None]  # (B, K): the proposals each sequence scores
            rows = chosen.nonzero()[:, 0]
            energies[chosen] = calls.score(proposals[chosen], x[rows], t, log_p_x0, rows, filtered)
            spent += torch.where(use, k, 0)
            out.is_steps += 1
        step = sampler.resample_step(proposals, energies, x, reveal, generator)
        if bool(use.any()):
            disagreement = torch.where(use, sampler.disagreement(step.ess, k), disagreement)
            out.ess.append(float(step.ess[use].mean()))
        if step.changed:
            log_p_x0 = None
        x = step.x_s
    out.energy_spent = spent
    return _finish(calls, sampler, x, log_p_x0 if cache else None, timesteps[-1])


def _remask(calls: NetworkCalls, sampler: RemaskSampler, x: Tensor, steps: int, generator, cache: bool,
            ticks: Ticks) -> Tensor:
    """The remasking sampler's steps: an importance-sampled step, then re-masking inside ``remask_window``."""
    out, mask_id, k = calls.out, sampler.mask_id, sampler.k
    B = x.shape[0]
    timesteps = sampler.set_timesteps(steps, device="cpu")
    free = x == mask_id  # generated positions: the only ones ever re-masked
    confidence = torch.zeros(x.shape, dtype=torch.float64, device=x.device)  # ψ: log x_θ of each token when revealed
    filtered = sampler.proposal_log_probs if sampler.top_p < 1.0 else None
    weigh = calls.energy is not None and k > 1
    log_p_x0 = None
    for i in range(steps):
        ticks.update(1)
        t, s = timesteps[i], timesteps[i + 1]
        sigma = sampler.remask_probability(t, s)
        masked = x == mask_id
        if not bool(masked.any()) and sigma == 0.0:
            continue  # nothing to reveal, nothing to re-mask
        if log_p_x0 is None or not cache:
            log_p_x0 = calls.denoise(x, t)
        reveal, proposals = sampler.propose_step(log_p_x0, x, t, s, generator)  # (B, L), (B, k, L)
        raise_on_faults(calls.faults)
        energies = torch.zeros(B, k, dtype=torch.float64, device=x.device)  # outside the window: equal weights
        active = reveal.any(-1)
        if weigh and sampler.in_window(t) and bool(active.any()):
            rows = active.nonzero().squeeze(-1)
            n = rows.numel()
            e = calls.score(proposals[rows].reshape(n * k, -1), x[rows].repeat_interleave(k, 0), t, log_p_x0,
                            rows.repeat_interleave(k), filtered)
            energies[rows] = e.reshape(n, k)
            out.is_steps += 1
        step = sampler.resample_step(proposals, energies, x, reveal, generator)
        if weigh and step.ess is not None and bool(active.any()):
            out.ess.append(float(step.ess[active].mean()))
        x_hat = step.x_0  # (B, L) the proposal revealed from
        new = reveal & masked
        if bool(new.any()):
            psi = log_p_x0.gather(-1, x_hat[..., None]).squeeze(-1).double()  # (B, L), read at new positions only
            confidence = torch.where(new, psi, confidence)
        x_s = step.x_s
        candidates = free & ~masked  # generated tokens unmasked before this step
        if sigma > 0.0 and bool(candidates.any()):
            log_lik = calls.token_log_likelihoods(x_hat) if calls.energy is not None else None
            x_s, _ = sampler.remask(x_s, sampler.token_scores(confidence, log_lik), candidates, sigma, generator)
        if not torch.equal(x_s, x):
            log_p_x0 = None
        x = x_s
    return _finish(calls, sampler, x, log_p_x0 if cache else None, timesteps[-1])
