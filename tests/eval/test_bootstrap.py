"""Percentile-bootstrap intervals (edlm.eval.bootstrap)."""

import math

import numpy as np
import pytest

from edlm.eval.bootstrap import bootstrap_gen_ppl, bootstrap_interval, bootstrap_mean


def test_mean_interval_matches_the_normal_theory_width():
    values = np.random.default_rng(0).normal(3.0, 2.0, size=400)
    out = bootstrap_mean(values, num_resamples=2000, seed=1)
    se = values.std(ddof=1) / math.sqrt(400)
    assert out.estimate == pytest.approx(values.mean())
    assert out.low < out.estimate < out.high
    assert (out.high - out.low) == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert bootstrap_mean(values, num_resamples=2000, seed=1) == out  # seedable
    assert bootstrap_mean(values, num_resamples=2000, seed=2) != out


def test_interval_covers_the_true_mean_at_about_its_rate():
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(200):
        x = rng.exponential(1.0, size=60)  # skewed: true mean 1
        out = bootstrap_mean(x, num_resamples=400, seed=int(rng.integers(1 << 30)))
        covered += out.low <= 1.0 <= out.high
    assert 0.86 <= covered / 200 <= 0.99


def test_gen_ppl_is_token_weighted_on_every_resample():
    nll = [2.0, 4.0, float("nan")]  # the NaN sample (empty) carries no tokens
    tokens = [30, 10, 0]
    out = bootstrap_gen_ppl(nll, tokens, num_resamples=500, seed=0)
    assert out.estimate == pytest.approx(math.exp((2.0 * 30 + 4.0 * 10) / 40))  # not exp(mean of 2 and 4)
    assert math.exp(2.0) <= out.low <= out.estimate <= out.high <= math.exp(4.0)
    with pytest.raises(ValueError, match="length"):
        bootstrap_gen_ppl([1.0], [1, 2])


def test_any_statistic_and_bad_input():
    out = bootstrap_interval([[1.0], [2.0], [3.0]], lambda r: float(np.median(r)), num_resamples=300)
    assert out.estimate == 2.0 and 1.0 <= out.low <= 2.0 <= out.high <= 3.0
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean([])
