"""The EDLM NLL bound (edlm.eval.nll_bound) on the exact toy: an upper bound, an interval that covers."""

import math

import pytest
import torch

from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy import AREnergy
from edlm.eval.likelihood import ar_nll, half_width, mdlm_bound
from edlm.eval.nll_bound import edlm_bound, log_ratio_estimate
from edlm.toy import ToyJoint
from edlm.toy.sir import ExactSIR

SCH = LogLinearSchedule(eps=0.0)
K, T = 4, 2  # the bounded sampler: 4 proposals, 2 steps
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    return ToyJoint.markov(3, 4, stay=0.85, seed=0)


@pytest.fixture(scope="module")
def setup(toy):
    """27 sequences drawn from p, the exact AR energy, and the exact NLL / NELBO / estimator mean per token."""
    data = toy.sequences[torch.multinomial(toy.probs, 27, replacement=True, generator=torch.Generator().manual_seed(0))]
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    exact = ExactSIR(toy, energy, k=K)
    n_tok = data.numel()
    nll = -float(exact.distribution(T)[toy.index_of(data)].log().sum()) / n_tok
    nelbo = sum(exact.nelbo(x, T) for x in data) / n_tok
    expected = sum(exact.expected_estimate(x, T) for x in data) / n_tok
    return data, energy, nll, nelbo, expected


def _bound(toy, data, energy, seed, **kw):
    kw = {"k": K, "num_steps": T, "n_draws": 1, "num_time_samples": 8, "batch_size": 27, **kw}
    return edlm_bound(toy, energy, data, SCH, toy.mask_id, generator=torch.Generator().manual_seed(seed), **kw)


def test_bound_is_above_the_exact_nll(toy, setup):
    data, energy, nll, nelbo, expected = setup
    print(f"toy, k = {K}, T = {T}: exact NLL {nll:.4f} <= NELBO {nelbo:.4f} <= E[1-draw figure] {expected:.4f}")
    assert nll < nelbo < expected
    one = _bound(toy, data, energy, 1, num_time_samples=48)
    many = _bound(toy, data, energy, 1, num_time_samples=48, n_draws=16)
    print(f"Monte Carlo: 1 draw {one.cell(4)}, 16 draws {many.cell(4)}")
    assert one.kind == "bound" and one.is_bound and one.detail == f"k={K}, T={T}, 1 draws"
    assert abs(one.nll - expected) < 4 * one.se  # the figure's mean is the exact expectation
    # more draws: the Jensen gap closes from above towards the NELBO, never below it
    assert many.nll < one.nll - 0.05 and many.nll > nelbo - 4 * many.se and many.nll - nelbo < 0.06
    assert many.nll > nll  # and the figure stays above the sampler's exact NLL


def test_interval_covers_the_expectation_at_the_stated_rate(toy, setup):
    """400 independent passes = 50 runs of 8: the 95 % Student-t interval of each run covers the exact mean of the
    figure in ~95 % of runs (binomial sd 3 %); a ±1 se interval would cover ~65 %."""
    data, energy, _, _, expected = setup
    out = _bound(toy, data, energy, 7, num_time_samples=400)
    runs = torch.tensor(out.samples).reshape(50, 8)
    se = runs.std(-1, unbiased=True) / math.sqrt(8)
    half = half_width(1.0, 8, 0.95) * se
    covered = float(((runs.mean(-1) - expected).abs() <= half).double().mean())
    print(f"95 % interval coverage over 50 runs: {covered:.2f}")
    assert 0.86 <= covered <= 1.0
    assert float(((runs.mean(-1) - expected).abs() <= se).double().mean()) < covered


def test_one_proposal_is_the_mdlm_bound(toy, setup):
    data, energy, *_ = setup
    discrete = _bound(toy, data, energy, 3, k=1, num_time_samples=32)
    exact = sum(toy.exact_nelbo(x, num_steps=T, schedule=SCH) for x in data) / data.numel()
    assert discrete.nll == discrete.diffusion_nll  # ρ̂ = 1: no energy term
    assert abs(discrete.nll - exact) < 4 * discrete.se
    # continuous time, same seed: the (t, x_t) draws of mdlm_bound, so k = 1 gives its figure to the last digit
    kw = dict(num_time_samples=4, batch_size=27, t_min=1e-4)
    cont = edlm_bound(toy, energy, data, SCH, toy.mask_id, k=1, num_steps=None, n_draws=2,
                      generator=torch.Generator().manual_seed(5), **kw)
    mdlm = mdlm_bound(toy, data, SCH, toy.mask_id, generator=torch.Generator().manual_seed(5), **kw)
    assert cont.nll == pytest.approx(mdlm.nll, rel=1e-12)
    edlm = edlm_bound(toy, energy, data, SCH, toy.mask_id, k=K, num_steps=None, n_draws=2,
                      generator=torch.Generator().manual_seed(5), draws_generator=torch.Generator().manual_seed(6), **kw)
    assert edlm.diffusion_nll == pytest.approx(mdlm.nll, rel=1e-12) and edlm.nll != mdlm.nll


def test_log_ratio_is_zero_where_nothing_is_revealed(toy):
    x_0 = toy.sequences[:3]
    x_t = torch.full_like(x_0, toy.mask_id)
    reveal = torch.zeros_like(x_0, dtype=torch.bool)
    reveal[1, 2] = True
    calls = []

    def energy(x0, xt, t, lp):
        calls.append(x0.shape[0])
        return torch.zeros(x0.shape[0])

    out = log_ratio_estimate(energy, x_0, x_t, torch.ones(3), toy.denoiser(x_t), reveal, toy.mask_id, k=3, n_draws=2)
    assert out[0] == out[2] == 0 and calls == [2 * 3]  # one row, 2 draws x 3 sequences each
    assert float(out[1]) == pytest.approx(0.0, abs=1e-12)  # E ≡ 0: every ratio is k · 1 / k


def test_bad_settings_are_refused(toy):
    data = toy.sequences[:3]
    for kw, word in (({"k": 0}, "k"), ({"n_draws": 0}, "n_draws"), ({"num_steps": 0}, "num_steps"),
                     ({"temperature": 0.0}, "temperature")):
        with pytest.raises(ValueError, match=word):
            edlm_bound(toy, None, data, SCH, toy.mask_id, **kw)


def test_ar_nll_is_exact(toy):
    data = toy.sequences[[3, 50, 80]]
    out = ar_nll(toy, data)
    want = -float(toy.token_log_probs(data)[:, 1:].sum()) / (3 * 3)
    assert out.kind == "exact" and out.se is None and out.ci is None and out.num_tokens == 9
    assert out.nll == pytest.approx(want, rel=1e-12) and out.cell() == f"{want:.3f} (exact)"
