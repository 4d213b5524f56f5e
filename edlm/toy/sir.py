"""The EDLM sampler with k proposals, computed exactly on the toy (SPEC 2.5, §3; docs/likelihood.md).

One importance-sampling step draws k proposals c_1 … c_k ~ q = Π_{i∈M} x_θⁱ(· | x_t), picks c_j with
probability w(c_j) / Σ_l w(c_l), w = exp(−E/τ), and reveals each masked position with probability r from
the pick. The pick is sampling–importance–resampling (SIR); its law, for a candidate c, is

    P_k(c | x_t) = k q(c) E_S[ w(c) / (w(c) + S) ],   S = Σ_{l=1}^{k−1} w(Y_l),  Y_l ~ q,

and 1/a = ∫_0^∞ e^{−λa} dλ turns the expectation over the k − 1 other proposals into one integral of the
Laplace transform φ(λ) = E_q[e^{−λ w(Y)}]:  E_S[w/(w + S)] = ∫_0^∞ w e^{−λw} φ(λ)^{k−1} dλ. Likewise
log a = ∫_0^∞ (e^{−λ} − e^{−λa}) / λ dλ (Frullani) gives E_S[log(w + S)]. Both integrals are taken on
λ = e^s with the trapezoid rule, which is spectrally accurate for these smooth, fast-decaying integrands.

With these, everything about the sampler is exact for the toy: its output distribution after T steps, the
T-step NELBO of each sequence (the bound ``edlm_bound`` estimates) and the expectation of that estimator.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor

from edlm.diffusion.schedules import LogLinearSchedule, NoiseSchedule
from edlm.toy.joint import ToyJoint

__all__ = ["SIRLaw", "sir_law", "ExactSIR"]


def _log_lambda_grid(w_min: float, ds: float = 0.03) -> tuple[Tensor, float]:
    """s grid for λ = e^s (float64) and its spacing, for scaled weights in [w_min, 1].

    Below λ = e^{−35} the integrands are O(λ); above 60 / w_min every e^{−λ w} has vanished.
    """
    lo, hi = -35.0, math.log(60.0 / w_min)
    n = int(math.ceil((hi - lo) / ds)) + 1
    s = torch.linspace(lo, hi, n, dtype=torch.float64)
    return s, float(s[1] - s[0])


class SIRLaw(NamedTuple):
    """What SIR with k proposals does with the candidates of one x_t, each (C,) float64."""

    pick: Tensor  # P_k(c): the probability that the pick is c
    log_sum: Tensor  # E_S[log(w(c) + S)] − max log w: S = the weights of the k − 1 other proposals


def sir_law(q: Tensor, log_w: Tensor, k: int) -> SIRLaw:
    """The SIR law of candidates with proposal probabilities q (C,) and log-weights log_w (C,), k proposals."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive integer, got {k!r}.")
    q = q.double()
    w = (log_w.double() - log_w.double().max()).exp()  # the law does not change with a common scale: w ≤ 1
    s, ds = _log_lambda_grid(float(w.min()))
    lam = s.exp()  # (G,)
    decay = torch.exp(-lam[None] * w[:, None])  # (C, G) e^{−λ w(c)}
    phi_k = (q @ decay) ** (k - 1)  # (G,) φ(λ)^{k−1}, φ(λ) = E_q[e^{−λ w}]
    tail = decay * phi_k[None]  # (C, G)
    # P_k(c) = k q(c) ∫ w e^{−λw} φ^{k−1} dλ, with dλ = λ ds
    pick = k * q * w * torch.trapezoid(tail * lam[None], dx=ds, dim=-1)
    # E log(w + S) = ∫ (e^{−λ} − e^{−λw} φ^{k−1}) dλ / λ, with dλ / λ = ds
    log_sum = torch.trapezoid(torch.exp(-lam)[None] - tail, dx=ds, dim=-1)
    return SIRLaw(pick=pick, log_sum=log_sum)


class ExactSIR:
    """The k-proposal EDLM sampler on a ``ToyJoint``, exactly (no Monte Carlo).

    Args:
        toy: the joint; its exact factorised denoiser is the proposal.
        energy: ``energy(x_0 (N, L), x_t (N, L), t (N,), log_p_x0 (N, L, V+1)) -> (N,)``, lower = more likely.
        k: proposals per step (k = 1: MDLM).
        temperature: τ in w = exp(−E/τ).
        schedule: default log-linear with ε = 0 (α_1 = 0, so the NELBO has no prior term).
    """

    def __init__(self, toy: ToyJoint, energy, k: int, temperature: float = 1.0,
                 schedule: NoiseSchedule | None = None):
        self.toy, self.energy, self.k, self.temperature = toy, energy, k, temperature
        self.schedule = schedule or LogLinearSchedule(eps=0.0)
        self._cache: dict = {}
        self._laws: dict = {}

    def _state(self, x_t: tuple[int, ...], t: float) -> dict:
        """For one x_t: its completions c (C, L), log q(c), log w(c), the SIR law P_k(c) and, per completion,
        E_S[log(w(c) + S)] (in units where the largest weight is 1)."""
        key = (x_t, round(t, 12))
        if key in self._cache:
            return self._cache[key]
        toy = self.toy
        xt = torch.tensor(x_t)[None]  # (1, L)
        keep = ((toy.sequences == xt) | (xt == toy.mask_id)).all(-1)
        comps = toy.sequences[keep]  # (C, L)
        xt_c = xt.expand_as(comps)
        lp = torch.full((*comps.shape, toy.vocab_size + 1), -math.inf, dtype=torch.float64)  # (C, L, V+1)
        lp[..., : toy.vocab_size] = toy.marginals(xt_c).log()  # x_θ in float64 (SPEC 1.3 at masked positions)
        lp = torch.where((xt_c != toy.mask_id)[..., None], torch.full_like(lp, -math.inf).scatter(
            -1, xt_c[..., None].clamp(max=toy.vocab_size - 1), 0.0), lp)  # carried positions: one-hot(x_t)
        log_q = lp.gather(-1, comps[..., None]).squeeze(-1).sum(-1)  # (C,) carried positions add log 1
        tt = torch.full((comps.shape[0],), t, dtype=torch.float64)
        log_w = -self.energy(comps, xt_c, tt, lp).double() / self.temperature
        law_key = (x_t, log_w.numpy().tobytes())  # an energy that ignores t gives the same law at every step
        if law_key not in self._laws:
            self._laws[law_key] = sir_law(log_q.exp(), log_w, self.k)
        law = self._laws[law_key]
        out = {"comps": comps, "log_q": log_q, "log_w": log_w, "pick": law.pick, "log_sum": law.log_sum}
        self._cache[key] = out
        return out

    def _grid(self, num_steps: int) -> list[tuple[float, float, float]]:
        """(t, s, reveal probability r) for the steps t = j/T → s = (j − 1)/T."""
        out = []
        for j in range(num_steps, 0, -1):
            t, s = j / num_steps, (j - 1) / num_steps
            a_t = float(self.schedule.alpha(torch.tensor(t, dtype=torch.float64)))
            a_s = float(self.schedule.alpha(torch.tensor(s, dtype=torch.float64)))
            out.append((t, s, (a_s - a_t) / (1 - a_t)))
        return out

    def _code(self, x: Tensor) -> Tensor:
        """Base-(V+1) code of states x (..., L) with ids in [0, V]."""
        L = self.toy.length
        return (x * (self.toy.vocab_size + 1) ** torch.arange(L - 1, -1, -1)).sum(-1)

    # ------------------------------------------------------------------ the sampler's output
    def distribution(self, num_steps: int) -> Tensor:
        """The law of the T-step sampler's output over ``toy.sequences`` (N,), from all-masked at t = 1."""
        toy, m, L = self.toy, self.toy.mask_id, self.toy.length
        states = torch.tensor(list(itertools.product(range(m + 1), repeat=L)))  # (S, L), row = its code
        p = torch.zeros(states.shape[0], dtype=torch.float64)
        p[-1] = 1.0  # all masked
        for t, _, r in self._grid(num_steps):
            nxt = torch.zeros_like(p)
            for code in p.nonzero().squeeze(-1).tolist():
                x_t = states[code]
                st = self._state(tuple(x_t.tolist()), t)
                masked = (x_t == m).nonzero().squeeze(-1)
                for bits in itertools.product([False, True], repeat=masked.numel()):
                    reveal = masked[list(bits)]
                    p_r = r ** reveal.numel() * (1 - r) ** (masked.numel() - reveal.numel())
                    if p_r == 0:
                        continue
                    x_s = x_t.repeat(st["comps"].shape[0], 1)  # (C, L)
                    x_s[:, reveal] = st["comps"][:, reveal]
                    nxt.index_add_(0, self._code(x_s), p[code] * p_r * st["pick"])
            p = nxt
        return p[self._code(toy.sequences)]

    # ------------------------------------------------------------------ the T-step NELBO and its estimator
    def _terms(self, x_0: Tensor, num_steps: int, estimator: bool) -> float:
        """Σ over steps of E_{x_t, R}[term]: term = −log P_k(x_0^R | x_t) (the NELBO), or with ``estimator``
        the expectation of the one-draw estimate −log x_θ^R(x_0^R) − log ρ̂ (docs/likelihood.md)."""
        m, L = self.toy.mask_id, self.toy.length
        x0 = x_0.tolist()
        total = 0.0
        for t, _, r in self._grid(num_steps):
            a_t = float(self.schedule.alpha(torch.tensor(t, dtype=torch.float64)))
            for mbits in itertools.product([False, True], repeat=L):
                n_m = sum(mbits)
                p_m = (1 - a_t) ** n_m * a_t ** (L - n_m)
                if n_m == 0 or p_m == 0:
                    continue
                st = self._state(tuple(m if b else v for v, b in zip(x0, mbits)), t)
                masked = [i for i in range(L) if mbits[i]]
                for bits in itertools.product([False, True], repeat=n_m):
                    reveal = [i for i, b in zip(masked, bits) if b]
                    p_r = r ** len(reveal) * (1 - r) ** (n_m - len(reveal))
                    if not reveal or p_r == 0:
                        continue
                    match = (st["comps"][:, reveal] == x_0[reveal]).all(-1)  # completions c with c^R = x_0^R
                    if estimator:
                        term = self._estimator_term(st, match)
                    else:
                        term = -math.log(float(st["pick"][match].sum()))
                    total += p_m * p_r * term
        return total

    def _estimator_term(self, st: dict, match: Tensor) -> float:
        """E[−log x_θ^R(x_0^R) − log ρ̂] with one draw, ρ̂ = k w(c) / (w(c) + S), c = x_0^R ⊕ u, u ~ x_θ^{M∖R}."""
        log_q, log_w = st["log_q"][match], st["log_w"][match]
        log_q_r = torch.logsumexp(log_q, 0)  # log x_θ^R(x_0^R): the q-mass of the matching completions
        q_u = (log_q - log_q_r).exp()  # law of u given the revealed tokens
        shift = st["log_w"].max()
        # −log ρ̂ = −log k − (log w(c) − shift) + (log(w(c) + S) − shift)
        e_term = -math.log(self.k) - (q_u * (log_w - shift)).sum() + (q_u * st["log_sum"][match]).sum()
        return float(e_term - log_q_r)

    def nelbo(self, x_0: Tensor, num_steps: int) -> float:
        """The T-step NELBO (nats) of one sequence under the k-proposal sampler: ≥ −log of ``distribution``."""
        return self._terms(torch.as_tensor(x_0, dtype=torch.long), num_steps, estimator=False)

    def expected_estimate(self, x_0: Tensor, num_steps: int) -> float:
        """The expectation of ``edlm_bound``'s estimate (one draw, ``n_draws=1``) for one sequence: ≥ ``nelbo``."""
        return self._terms(torch.as_tensor(x_0, dtype=torch.long), num_steps, estimator=True)
