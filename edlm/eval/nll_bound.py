"""An upper bound on the NLL of the EDLM sampler, with a confidence interval (docs/likelihood.md).

The model bounded is the sampler that ``generate`` runs with an energy: at each step t → s it draws k
proposals from Π_i x_θⁱ(· | x_t), picks one with probability w_j / Σ_l w_l (w = exp(−E/τ)), and reveals each
masked position with probability r = (α_s − α_t)/(1 − α_t) from the pick (SPEC 2.5). For T steps its NELBO is

    B_T(x_0) = Σ_steps E_{x_t ~ q(·|x_0), R} [ −log P_k(x_0^R | x_t) ] ≥ −log p_{k,T}(x_0),

R the positions the step reveals, P_k(x_0^R | x_t) the probability that the pick agrees with x_0 on R. With
c = x_0^R ⊕ u (u ~ x_θ on the rest of the masked positions) and S the weights of k − 1 other proposals,

    P_k(x_0^R | x_t) = x_θ^R(x_0^R | x_t) · ρ,   ρ = E_{u, S}[ k w(c) / (w(c) + S) ],

so ρ̂, the mean of that ratio over ``n_draws`` independent (u, S), is unbiased for ρ, and by Jensen
E[−log ρ̂] ≥ −log ρ: every term is biased up, never down. The figure is therefore an upper bound on the NLL
in expectation; its bias shrinks as ``n_draws`` grows (E log ρ̂ rises with n_draws, Burda et al. 2016), and
k = 1 gives ρ̂ = 1: the MDLM bound. The partition function enters as the importance-sampling sum w(c) + S
of the k proposals, inside the unbiased ratio, not as a log Ẑ (whose Jensen bias would point down).

``num_steps=None`` bounds the T → ∞ limit of the sampler: one position revealed at a time, with the
continuous-time weight of SPEC 1.5 and one uniformly chosen masked position per (t, x_t) scaled by |M|
(unbiased for the sum over positions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from edlm.diffusion.forward import q_sample
from edlm.diffusion.loss import antithetic_times
from edlm.diffusion.schedules import LogLinearSchedule, NoiseSchedule
from edlm.diffusion.subs import log_likelihood_of
from edlm.energy.nce_loss import sample_negatives
from edlm.eval.likelihood import LikelihoodOutput, device_of, iter_batches, num_batches, score_energies

__all__ = ["edlm_bound", "log_ratio_estimate"]


def log_ratio_estimate(energy, x_0: Tensor, x_t: Tensor, t: Tensor, logits: Tensor, reveal: Tensor, mask_id: int,
                       k: int, n_draws: int, generator: torch.Generator | None = None, temperature: float = 1.0,
                       energy_batch_size: int | None = None) -> Tensor:
    """log ρ̂ per sequence (B,) float64: ρ̂ = mean over ``n_draws`` of k w(c) / (w(c) + S), an unbiased estimate of
    P_k(x_0^R | x_t) / x_θ^R(x_0^R | x_t) for the revealed positions ``reveal`` (B, L) bool (⊆ masked).

    Each draw: c = x_0 on R, x_θ draws on the other masked positions; k − 1 proposals from x_θ on all masked
    positions; w = exp(−E(·, x_t, t)/τ). 0 where R is empty or k = 1 (no energy call).
    """
    B, L = x_0.shape
    out = torch.zeros(B, dtype=torch.float64, device=x_0.device)
    rows = reveal.any(-1).nonzero().squeeze(-1)
    if k == 1 or rows.numel() == 0:
        return out
    x_0, x_t, t, logits, reveal = x_0[rows], x_t[rows], t[rows], logits[rows], reveal[rows]
    n = rows.numel()
    given = torch.where(reveal, x_0, x_t)  # x_t with the revealed positions set to x_0: draws fill the rest
    comps = sample_negatives(logits, given, mask_id, n_draws, generator)  # (n, n_draws, L)
    props = sample_negatives(logits, x_t, mask_id, n_draws * (k - 1), generator)  # (n, n_draws·(k−1), L)
    seqs = torch.cat([comps, props], 1).reshape(n * n_draws * k, L)  # (n·n_draws·k, L)
    src = torch.arange(n, device=x_0.device).repeat_interleave(n_draws * k)
    log_w = -score_energies(energy, seqs, src, logits, x_t, t, mask_id, energy_batch_size) / temperature
    log_w = log_w.reshape(n, n_draws * k)
    log_w_c = log_w[:, :n_draws]  # (n, n_draws)
    log_w_s = log_w[:, n_draws:].reshape(n, n_draws, k - 1)  # the k − 1 others of each draw
    log_total = torch.logsumexp(torch.cat([log_w_c[..., None], log_w_s], -1), -1)  # log(w(c) + S)
    log_ratio = math.log(k) + log_w_c - log_total  # (n, n_draws) log of k w(c) / (w(c) + S)
    out[rows] = torch.logsumexp(log_ratio, -1) - math.log(n_draws)  # log of their mean
    return out


def _check(k, num_steps, n_draws, num_time_samples, temperature):
    for name, value in (("k", k), ("n_draws", n_draws), ("num_time_samples", num_time_samples)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if num_steps is not None and (not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1):
        raise ValueError(f"`num_steps` must be a positive integer or None (continuous time), got {num_steps!r}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature!r}.")


@torch.no_grad()
def edlm_bound(
    denoiser,
    energy,
    data: Tensor | Iterable,
    schedule: NoiseSchedule | None = None,
    mask_id: int | None = None,
    k: int = 8,
    num_steps: int | None = None,
    n_draws: int = 16,
    num_time_samples: int = 8,
    generator: torch.Generator | None = None,
    *,
    draws_generator: torch.Generator | None = None,
    temperature: float = 1.0,
    confidence: float = 0.95,
    batch_size: int = 32,
    energy_batch_size: int | None = None,
    t_min: float = 1e-3,
    device: torch.device | str | None = None,
    name: str = "EDLM",
    progress: bool = False,
) -> LikelihoodOutput:
    """An upper bound (in expectation) on the NLL per token of the EDLM sampler with ``k`` proposals, and its interval.

    Args:
        denoiser, data, schedule, mask_id, batch_size, t_min, device, progress: as ``mdlm_bound``.
        energy: ``energy(x_0, x_t, t, log_p_x0) -> (N,)``, lower = more likely (``AREnergy``, ``NCEEnergy``).
        k: proposals per step of the bounded sampler (``generate(..., k=k)``, window [0, 1]); k = 1 is MDLM.
        num_steps: T of the bounded sampler (steps t = j/T → (j − 1)/T; one step per (x_0, pass) drawn
            uniformly, stratified over the batch, weighted by T); None: continuous time (the T → ∞ limit).
        n_draws: independent draws inside each log (the Jensen bias shrinks as it grows); cost: n_draws · k
            energy calls per sequence and pass.
        num_time_samples: independent passes; their spread gives the standard error and the interval.
        generator: the (t, x_t, R) stream; with ``num_steps=None``, the seed of ``mdlm_bound`` and a separate
            ``draws_generator``, the same (t, x_t) draws as ``mdlm_bound``.
        draws_generator: the stream of the proposals and of the position picked in continuous time (default:
            ``generator``, which then shifts the next passes' draws).
        temperature: τ in w = exp(−E/τ), as the sampler's.
        confidence: level of the two-sided Student-t interval over passes (reported as ± ``ci``).
        energy_batch_size: sequences per energy call (memory); None = all draws of a batch at once.
        name: the row label.

    Returns:
        ``LikelihoodOutput`` with kind "bound"; ``diffusion_nll`` is the same estimator with k = 1 on the same
        draws (MDLM's bound: continuous, or its T-step form).
    """
    _check(k, num_steps, n_draws, num_time_samples, temperature)
    schedule = schedule or getattr(denoiser, "schedule", None) or LogLinearSchedule()
    mask_id = getattr(denoiser, "mask_id", None) if mask_id is None else mask_id
    if mask_id is None:
        raise ValueError("pass `mask_id`: the denoiser does not carry one.")
    device = device_of(denoiser, device)
    draws_generator = draws_generator if draws_generator is not None else generator
    K = num_time_samples
    total = torch.zeros(K, dtype=torch.float64)
    diffusion = torch.zeros(K, dtype=torch.float64)
    num_tokens = num_sequences = 0
    batches = iter_batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=num_batches(data, batch_size), desc=name, unit="batch", leave=False,
                       dynamic_ncols=True)
    for x_0, attention_mask in batches:
        x_0 = x_0.to(device=device, dtype=torch.long)
        attention_mask = None if attention_mask is None else attention_mask.to(device)
        B = x_0.shape[0]
        num_tokens += x_0.numel() if attention_mask is None else int(attention_mask.sum())
        num_sequences += B
        for p in range(K):
            if num_steps is None:
                t = antithetic_times(B, t_min, generator=generator, device=device)  # (B,) SPEC 1.5
            else:
                u = torch.rand((), generator=generator, device=device)
                strata = (u + torch.arange(B, device=device) / B) % 1.0  # one step per stratum, uniform marginal
                j = (strata * num_steps).long().clamp(max=num_steps - 1) + 1  # (B,) in 1..T
                t = j.to(torch.get_default_dtype()) / num_steps  # (B,) as the sampler's grid
            x_t = q_sample(x_0, schedule.alpha(t), mask_id, attention_mask, generator=generator)  # SPEC 1.2
            logits = denoiser(x_t, t)  # (B, L, V+1)
            log_lik = log_likelihood_of(logits, x_0, mask_id).double()  # (B, L)
            masked = x_t == mask_id
            if num_steps is None:
                # one uniformly chosen masked position per row: R = {i*} (k = 1 needs none: ρ̂ = 1)
                reveal = torch.zeros_like(masked)
                if k > 1:
                    u = torch.rand(x_0.shape, generator=draws_generator, device=device).masked_fill(~masked, -1.0)
                    reveal.scatter_(-1, u.argmax(-1, keepdim=True), True)
                    reveal &= masked
                log_p = torch.where(masked, log_lik, torch.zeros_like(log_lik)).sum(-1)  # Σ_M log x_θ (all of M)
                weight = schedule.loss_weight(t).double()  # (B,) α'_t / (1 − α_t) < 0
                scale = masked.sum(-1).double()  # |M|: the one position stands for all of them
                log_rho = log_ratio_estimate(energy, x_0, x_t, t, logits, reveal, mask_id, k, n_draws,
                                             draws_generator, temperature, energy_batch_size)
                diffusion[p] += float((weight * log_p).sum())  # SPEC 1.5
                total[p] += float((weight * (log_p + scale * log_rho)).sum())
            else:
                t64 = t.double()
                a_t, a_s = schedule.alpha(t64), schedule.alpha(t64 - 1.0 / num_steps)
                r = ((a_s - a_t) / (1 - a_t)).clamp(0, 1)  # SPEC 1.4 reveal probability
                coin = torch.rand(x_0.shape, generator=generator, device=device, dtype=torch.float64)
                reveal = masked & (coin < r[:, None])
                log_p = torch.where(reveal, log_lik, torch.zeros_like(log_lik)).sum(-1)  # log x_θ^R(x_0^R)
                log_rho = log_ratio_estimate(energy, x_0, x_t, t, logits, reveal, mask_id, k, n_draws,
                                             draws_generator, temperature, energy_batch_size)
                diffusion[p] += float((-num_steps * log_p).sum())
                total[p] += float((-num_steps * (log_p + log_rho)).sum())
    if num_tokens == 0:
        raise ValueError("no tokens to evaluate: the data set is empty.")
    total, diffusion = total / num_tokens, diffusion / num_tokens
    se = float(total.std(unbiased=True) / math.sqrt(K)) if K > 1 else None
    steps = "continuous time" if num_steps is None else f"T={num_steps}"
    return LikelihoodOutput(name=name, is_bound=True, kind="bound", nll=float(total.mean()), se=se,
                            num_tokens=num_tokens, num_sequences=num_sequences, num_time_samples=K,
                            samples=total.tolist(), diffusion_nll=float(diffusion.mean()), confidence=confidence,
                            detail=f"k={k}, {steps}" + (f", {n_draws} draws" if k > 1 else ""))
