"""Importance sampling under a budget (edlm.samplers.adaptive) on the exact toy: the budget holds exactly, and at
the same number of energy evaluations the TV to the true joint is no worse than a fixed window's."""

import statistics

import pytest
import torch

from edlm import generate
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy import AREnergy
from edlm.samplers.adaptive import AdaptiveSampler
from edlm.toy import ToyJoint

pytestmark = pytest.mark.usefixtures("one_thread")
SCH = LogLinearSchedule(eps=0.0)
N_SAMPLES = 20_000


@pytest.fixture(scope="module")
def toy():
    return ToyJoint.markov(vocab_size=3, length=4, stay=0.85, seed=0)


def _run(toy, n, steps, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    return generate(toy, toy.length, n, toy.vocab_size, toy.mask_id, steps, schedule=SCH, noise_removal=False,
                    generator=g, **kw)


def test_choose_k_follows_need_and_never_exceeds_what_is_left():
    sampler = AdaptiveSampler(mask_id=3, budget=16, k_choices=(1, 2, 4, 8), schedule=SCH, noise_removal=False)
    sampler.set_timesteps(4)
    masked = torch.ones(4, 6, dtype=torch.bool)
    reveal = torch.zeros(4, 6, dtype=torch.bool)
    reveal[1, :2] = True  # 2 of 6
    reveal[2, :6] = True  # all 6 at once: no future need, the whole remainder is this step's
    reveal[3, :6] = True
    remaining = torch.tensor([16, 16, 16, 3])
    k = sampler.choose_k(reveal, masked, 0, remaining, torch.full((4,), 0.5, dtype=torch.float64))
    assert k[0] == 1  # nothing revealed: no energy call
    assert k[2] == 8  # the largest allowed k that fits in 16
    assert k[3] == 2  # never above what is left (3)
    assert 1 <= k[1] < k[2]
    calm = sampler.choose_k(reveal, masked, 0, remaining, torch.zeros(4, dtype=torch.float64))
    assert (calm == 1).all()  # proposals that agreed last time: save the budget


@pytest.mark.parametrize("budget", [3, 10, 40])
def test_budget_is_respected_exactly(toy, budget):
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    out = _run(toy, 2000, 6, 5, energy=energy, sampler="adaptive", budget=budget)
    spent = out.energy_spent
    assert spent.shape == (2000,) and int(spent.max()) <= budget
    assert int(spent.sum()) == out.energy_evals  # every evaluation is some sequence's
    assert float(spent.double().mean()) > 0.5 * min(budget, 16)  # and the budget is used


def test_tv_no_worse_than_a_fixed_window_at_the_same_evaluations(toy):
    """T ∈ {4, 8}: a fixed window of k = 4 over every step against the adaptive sampler with the fixed run's
    evaluations per sequence as budget (so it spends at most as many), three seeds each; the adaptive mean TV may
    exceed the fixed one by no more than twice the standard error of the difference (measured spread)."""
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    for steps in (4, 8):
        fixed, adaptive = [], []
        for seed in (2, 3, 4):
            f = _run(toy, N_SAMPLES, steps, seed, energy=energy, k=4)
            a = _run(toy, N_SAMPLES, steps, seed, energy=energy, sampler="adaptive", budget=f.energy_evals // N_SAMPLES)
            assert a.energy_evals <= f.energy_evals
            fixed.append(toy.total_variation(f.tokens))
            adaptive.append(toy.total_variation(a.tokens))
        spread = (statistics.variance(fixed) / 3 + statistics.variance(adaptive) / 3) ** 0.5
        print(f"T={steps}: fixed {statistics.mean(fixed):.4f}, adaptive {statistics.mean(adaptive):.4f}, "
              f"spread {spread:.4f}")
        assert statistics.mean(adaptive) <= statistics.mean(fixed) + 2 * spread + 1e-3
