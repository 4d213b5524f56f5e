"""Percentile-bootstrap intervals over samples: for a mean, for any statistic, and for gen-PPL.

Each resample draws as many samples as there are, with replacement, and recomputes the statistic; the interval
is the (1 − c)/2 and (1 + c)/2 quantiles of those values (the percentile bootstrap, Efron & Tibshirani 1993,
ch. 13). Seeded: the same seed gives the same interval. gen-PPL is token-weighted on each resample,
exp(Σ NLL / Σ tokens) over the resampled samples, as ``generative_perplexity`` weights the whole set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BootstrapInterval", "bootstrap_interval", "bootstrap_mean", "bootstrap_gen_ppl"]


@dataclass
class BootstrapInterval:
    """A statistic on the full set and its percentile-bootstrap interval."""

    estimate: float  # the statistic on the samples as given
    low: float
    high: float
    confidence: float
    num_resamples: int

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}] ({100 * self.confidence:g} % bootstrap)"


def bootstrap_interval(data: Sequence | np.ndarray, statistic: Callable[[np.ndarray], float],
                       num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> BootstrapInterval:
    """Percentile-bootstrap interval of ``statistic`` over the rows of ``data`` (N, ...) resampled with replacement.

    ``statistic`` takes an array of rows (the resampled set) and returns a float.
    """
    rows = np.asarray(data, dtype=np.float64)
    if rows.ndim == 0 or rows.shape[0] == 0:
        raise ValueError("`data` is empty: nothing to resample.")
    if not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"`num_resamples` must be a positive integer, got {num_resamples!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence!r}.")
    rng = np.random.default_rng(seed)
    n = rows.shape[0]
    idx = rng.integers(0, n, size=(num_resamples, n))  # (R, N) one resample per row
    values = np.array([statistic(rows[i]) for i in idx])
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return BootstrapInterval(float(statistic(rows)), float(low), float(high), confidence, num_resamples)


def bootstrap_mean(values: Sequence[float], num_resamples: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> BootstrapInterval:
    """Percentile-bootstrap interval of the mean of per-sample values (e.g. entropy, MAUVE per seed)."""
    return bootstrap_interval(values, lambda v: float(v.mean()), num_resamples, confidence, seed)


def bootstrap_gen_ppl(nll_per_token: Sequence[float], num_tokens: Sequence[int], num_resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> BootstrapInterval:
    """Interval of gen-PPL = exp(Σ_i n_i·nll_i / Σ_i n_i) over resampled samples (token-weighted).

    Args:
        nll_per_token: each sample's mean NLL per judge token (``GenPPLOutput.per_sample_nll``).
        num_tokens: each sample's number of judge tokens scored.
    """
    nll, count = np.asarray(nll_per_token, dtype=np.float64), np.asarray(num_tokens, dtype=np.float64)
    if nll.shape != count.shape:
        raise ValueError(f"`nll_per_token` and `num_tokens` differ in length: {nll.shape} vs {count.shape}.")
    keep = np.isfinite(nll) & (count > 0)  # empty samples (NaN) carry no tokens
    rows = np.stack([nll[keep] * count[keep], count[keep]], axis=1)  # (N, 2): total NLL, tokens

    def gen_ppl(r: np.ndarray) -> float:
        return math.exp(r[:, 0].sum() / r[:, 1].sum())

    return bootstrap_interval(rows, gen_ppl, num_resamples, confidence, seed)
