"""An enumerable toy joint where every quantity of SPEC §3 is exact.

With V ≤ 4 real tokens and L ≤ 6 positions there are at most 4096 sequences, so the true
posterior p(x_0 | x_t), the exact factorised denoiser x_θⁱ(v | x_t) = p(x_0ⁱ = v | unmasked part
of x_t), the exact AR model and the exact energy are all computed by enumeration.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from edlm.diffusion.schedules import LogLinearSchedule, NoiseSchedule

__all__ = ["ToyJoint", "ancestral_distribution", "total_variation", "total_variation_noise"]


def total_variation(p: Tensor, q: Tensor) -> float:
    """½ Σ |p − q| between two distributions over the same support."""
    return 0.5 * float((p.double() - q.double()).abs().sum())


def total_variation_noise(dist: Tensor, n: int, reps: int = 100, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation, over ``reps`` repeats, of the TV between the empirical law of n iid draws from
    ``dist`` and ``dist``: what an exact sampler shows from sampling noise alone (tests bound a sampler's TV by
    mean + 5σ)."""
    g = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(dist.float(), n * reps, replacement=True, generator=g).reshape(reps, n)
    tvs = torch.tensor([total_variation(torch.bincount(d, minlength=dist.numel()).double() / n, dist) for d in draws])
    return float(tvs.mean()), float(tvs.std())


class ToyJoint:
    """A distribution p(x_0) over all V^L sequences, with exact denoiser, AR model and NELBO.

    The ``[MASK]`` id is V (so the denoiser emits V + 1 logits).
    """

    def __init__(self, probs: Tensor, vocab_size: int, length: int):
        if vocab_size ** length != probs.numel():
            raise ValueError(f"need V^L = {vocab_size ** length} probabilities, got {probs.numel()}.")
        self.vocab_size = vocab_size  # V real tokens
        self.length = length  # L
        self.mask_id = vocab_size  # m = V
        self.probs = (probs.double() / probs.double().sum()).reshape(-1)  # (N,), N = V^L
        grid = itertools.product(range(vocab_size), repeat=length)
        self.sequences = torch.tensor(list(grid), dtype=torch.long)  # (N, L) in base-V order
        self.time_conditioned = False
        self._powers = vocab_size ** torch.arange(length - 1, -1, -1)  # (L,) base-V place values

    # ------------------------------------------------------------------ constructors
    @classmethod
    def markov(cls, vocab_size: int = 3, length: int = 4, stay: float = 0.85, seed: int = 0) -> ToyJoint:
        """A sticky Markov chain: strong correlation between neighbours (x_θ's product misses it)."""
        g = torch.Generator().manual_seed(seed)
        trans = torch.rand(vocab_size, vocab_size, generator=g, dtype=torch.float64)
        trans.fill_diagonal_(0)
        eye = torch.eye(vocab_size, dtype=torch.float64)
        trans = (1 - stay) * trans / trans.sum(-1, keepdim=True) + stay * eye
        init = torch.rand(vocab_size, generator=g, dtype=torch.float64) + 0.5
        init = init / init.sum()
        seqs = torch.tensor(list(itertools.product(range(vocab_size), repeat=length)))  # (N, L)
        logp = init.log()[seqs[:, 0]] + trans.log()[seqs[:, :-1], seqs[:, 1:]].sum(-1)  # (N,)
        return cls(logp.exp(), vocab_size, length)

    # ------------------------------------------------------------------ indexing
    def index_of(self, x: Tensor) -> Tensor:
        """Row index in ``sequences`` of each sequence in x (B, L) → (B,)."""
        return (x.long().cpu() * self._powers).sum(-1)

    def log_prob(self, x_0: Tensor) -> Tensor:
        """Exact log p(x_0), (B,) float64."""
        return self.probs.log()[self.index_of(x_0)].to(x_0.device)

    def empirical(self, samples: Tensor) -> Tensor:
        """Empirical distribution of samples (B, L) over the N sequences."""
        counts = torch.bincount(self.index_of(samples), minlength=self.probs.numel()).double()
        return counts / counts.sum()

    def total_variation(self, samples: Tensor) -> float:
        return total_variation(self.empirical(samples), self.probs)

    def _distinct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The distinct rows of x (B, L) (ids in [0, V]) and each row's index among them: (U, L), (B,)."""
        x = x.long().cpu()
        codes = (x * (self.vocab_size + 1) ** torch.arange(self.length - 1, -1, -1)).sum(-1)  # (B,)
        uniq, inverse = torch.unique(codes, return_inverse=True)
        first = torch.zeros_like(uniq).scatter_(0, inverse, torch.arange(codes.numel()))  # a row of each
        return x[first], inverse

    # ------------------------------------------------------------------ exact posterior and denoiser
    def posterior(self, x_t: Tensor) -> Tensor:
        """p(x_0 | x_t) over all N sequences: p restricted to sequences consistent with x_t. (B, N)."""
        x_t = x_t.cpu()
        seqs = self.sequences[None]  # (1, N, L)
        consistent = ((seqs == x_t[:, None]) | (x_t[:, None] == self.mask_id)).all(-1)  # (B, N)
        w = self.probs[None] * consistent  # (B, N)
        return w / w.sum(-1, keepdim=True)

    # ------------------------------------------------------------------ conditioning on fixed tokens
    def template(self, fixed: Mapping[int, int]) -> Tensor:
        """The start state x_init (L,) for fixed tokens {position: value}: those values, ``[MASK]`` elsewhere.

        Masked diffusion conditions by never masking the fixed positions F (a prompt, an infill template):
        this is the ``x_init`` that ``generate`` keeps.
        """
        x = torch.full((self.length,), self.mask_id, dtype=torch.long)
        for i, v in fixed.items():
            if not (0 <= int(i) < self.length and 0 <= int(v) < self.vocab_size):
                raise ValueError(f"fixed token {v} at position {i} is outside "
                                 f"V = {self.vocab_size}, L = {self.length}.")
            x[int(i)] = int(v)
        return x

    def conditional(self, fixed: Mapping[int, int] | Tensor) -> Tensor:
        """Exact p(x_0 | x_0^F = c) over all N sequences, by enumeration (SPEC §3, conditioned as in 1.6).

        ``fixed`` is {position: value} or a start state x_init (L,) whose non-``[MASK]`` positions are F.
        p restricted to the sequences with x^F = c, renormalised; it is ``posterior`` of that x_init, the
        distribution that conditional sampling (fixed tokens never masked) must reach. (N,) float64.
        """
        x = self.template(fixed) if isinstance(fixed, Mapping) else torch.as_tensor(fixed, dtype=torch.long)
        if x.shape != (self.length,):
            raise ValueError(f"`fixed` must be a mapping or a (L,) = ({self.length},) start state, "
                             f"got {tuple(x.shape)}.")
        return self.posterior(x[None])[0]

    def marginals(self, x_t: Tensor) -> Tensor:
        """Exact x_θⁱ(v | x_t) = p(x_0ⁱ = v | unmasked part of x_t), (B, L, V) float64.

        Computed once per distinct row of x_t (there are at most (V+1)^L): a sampler's batch of
        thousands of rows holds a few dozen states, so the exact denoiser stays cheap.
        """
        rows, inverse = self._distinct(x_t)
        post = self.posterior(rows)  # (U, N)
        onehot = torch.nn.functional.one_hot(self.sequences, self.vocab_size).double()  # (N, L, V)
        return torch.einsum("bn,nlv->blv", post, onehot)[inverse]

    def denoiser(self, x_t: Tensor, t: Tensor | None = None) -> Tensor:
        """The exact factorised denoiser as raw logits (B, L, V+1); the mask logit is −∞."""
        logits = torch.full((*x_t.shape, self.vocab_size + 1), float("-inf"), dtype=torch.float64)
        logits[..., : self.vocab_size] = self.marginals(x_t).log()
        return logits.to(x_t.device)

    __call__ = denoiser

    # ------------------------------------------------------------------ exact AR model
    def token_log_probs(self, x: Tensor) -> Tensor:
        """Exact log p(xⁱ | x^{<i}) at every position, (B, L) float64 (position 0: log p(x⁰)).

        Computed once per distinct sequence of x (at most V^L), like ``marginals``.
        """
        x, inverse = self._distinct(x)
        out = torch.zeros(x.shape, dtype=torch.float64)
        prev = torch.zeros(x.shape[0], dtype=torch.float64)  # log p(x^{<i}) for i = 0
        for i in range(self.length):
            prefix = (self.sequences[None, :, : i + 1] == x[:, None, : i + 1]).all(-1)  # (B, N)
            log_joint = (self.probs[None] * prefix).sum(-1).log()  # log p(x^{≤i})
            out[:, i] = log_joint - prev
            prev = log_joint
        return out[inverse]

    def log_density_ratio(self, x_0: Tensor, x_t: Tensor) -> Tensor:
        """log p(x_0 | x_t) − Σ_i log x_θⁱ(x_0ⁱ | x_t) over masked i: what −E should learn (SPEC 2.4)."""
        post = self.posterior(x_t)  # (B, N)
        log_post = post.gather(-1, self.index_of(x_0)[:, None]).squeeze(-1).log()  # (B,)
        lm = self.marginals(x_t).log().gather(-1, x_0.cpu()[..., None]).squeeze(-1)  # (B, L)
        masked = x_t.cpu() == self.mask_id
        return log_post - torch.where(masked, lm, torch.zeros_like(lm)).sum(-1)

    # ------------------------------------------------------------------ exact NELBO by enumeration
    def _masked_nll_terms(self, x_0: Tensor) -> list[tuple[int, float]]:
        """For every mask subset M of one sequence: (|M|, Σ_{i∈M} −log x_θⁱ(x_0ⁱ | x_0 with M masked))."""
        key = tuple(int(v) for v in x_0)
        cache = self.__dict__.setdefault("_nll_terms_cache", {})
        if key in cache:
            return cache[key]
        terms = []
        for bits in itertools.product([False, True], repeat=self.length):
            m = torch.tensor(bits)
            if not m.any():
                continue
            x_t = torch.where(m, torch.tensor(self.mask_id), x_0)[None]  # (1, L)
            lm = self.marginals(x_t)[0].log().gather(-1, x_0[:, None]).squeeze(-1)  # (L,)
            terms.append((int(m.sum()), float(-lm[m].sum())))
        cache[key] = terms
        return terms

    def exact_nelbo(self, x_0: Sequence[int] | Tensor, num_steps: int | None = None,
                    schedule: NoiseSchedule | None = None, grid: int = 256) -> float:
        """The NELBO (nats) of one sequence under the exact denoiser, with no Monte Carlo (SPEC 1.5).

        ``num_steps=None``: continuous time, integrated by Gauss–Legendre quadrature in t (exact for
        the log-linear schedule, whose integrand is a polynomial of degree L − 1). Otherwise the
        discrete-time bound with T steps.
        The schedule must have α_1 = 0 (e.g. ``LogLinearSchedule(eps=0)``, the default here) so that
        the prior term vanishes and the NELBO is a true bound.
        """
        schedule = schedule or LogLinearSchedule(eps=0.0)
        x_0 = torch.as_tensor(x_0, dtype=torch.long)
        terms = self._masked_nll_terms(x_0)
        L = self.length

        def expected(t: Tensor) -> Tensor:
            """E_{x_t ~ q} Σ_{masked} −log x_θ at times t (n,)."""
            a = schedule.alpha(t)
            return sum(((1 - a) ** k) * (a ** (L - k)) * c for k, c in terms)

        if num_steps is None:
            nodes, weights = _gauss_legendre(grid)
            t = 0.5 * (nodes + 1.0)  # map [−1, 1] → [0, 1]
            integrand = -schedule.loss_weight(t) * expected(t)  # (−α'/(1−α)) · E[...]
            return float(0.5 * (weights * integrand).sum())
        t = torch.arange(1, num_steps + 1, dtype=torch.float64) / num_steps  # (T,)
        s = t - 1.0 / num_steps
        w = (schedule.alpha(s) - schedule.alpha(t)) / (1 - schedule.alpha(t))  # SPEC 1.4 reveal prob
        return float((w * expected(t)).sum())


@functools.lru_cache(maxsize=8)
def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)  # O(n^2) to build: cached
    return torch.from_numpy(x), torch.from_numpy(w)




def ancestral_distribution(toy: ToyJoint, num_steps: int, schedule: NoiseSchedule | None = None,
                           x_init: Tensor | Sequence[int] | None = None) -> Tensor:
    """Exact output distribution of the T-step ancestral sampler with the exact factorised denoiser.

    Propagates a distribution over partially masked states through T reverse steps (SPEC 1.4) on the
    grid t = 1, 1 − 1/T, …, 0 (the last step reveals everything, so no noise removal is needed): the
    process of ``generate(..., noise_removal=False)``. ``x_init`` (L,): an optional start state whose
    non-``[MASK]`` tokens are fixed (SPEC 1.6: conditioning = never masking them); they are copied by
    every step and the exact denoiser conditions on them (x_θⁱ = p(x_0ⁱ | unmasked part of x_t)), so
    the T → ∞ limit is ``toy.conditional(x_init)``. Default: all masked.
    Returns (N,) over ``toy.sequences``. Cost grows as (V+1)^L · T: toys only.
    """
    schedule = schedule or LogLinearSchedule(eps=0.0)
    L, m = toy.length, toy.mask_id
    if x_init is None:
        start = (m,) * L
    else:
        start = tuple(int(v) for v in torch.as_tensor(x_init).reshape(-1))
        if len(start) != L or not all(0 <= v <= m for v in start):
            raise ValueError(f"`x_init` must be {L} ids in [0, {m}], got {start}.")
    states = {start: 1.0}
    grid = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    for t, s in zip(grid[:-1], grid[1:]):
        a_t, a_s = schedule.alpha(t), schedule.alpha(s)
        reveal = float((a_s - a_t) / (1 - a_t))
        nxt: dict[tuple[int, ...], float] = {}
        keys = list(states)
        marg = toy.marginals(torch.tensor(keys))  # (S, L, V)
        for key, mg in zip(keys, marg):
            options = []
            for i, v in enumerate(key):
                if v != m:
                    options.append([(v, 1.0)])
                else:
                    opts = [(m, 1.0 - reveal)] if reveal < 1.0 else []
                    opts += [(u, reveal * float(mg[i, u])) for u in range(toy.vocab_size) if mg[i, u] > 0]
                    options.append(opts)
            for combo in itertools.product(*options):
                p = states[key] * math.prod(q for _, q in combo)
                k = tuple(v for v, _ in combo)
                nxt[k] = nxt.get(k, 0.0) + p
        states = nxt
    out = torch.zeros(toy.probs.numel(), dtype=torch.float64)
    for key, p in states.items():
        out[toy.index_of(torch.tensor([key]))] += p
    return out
