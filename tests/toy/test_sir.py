"""The k-proposal EDLM sampler computed exactly on the toy (edlm.toy.sir): checked by brute force and by sampling."""

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from edlm import generate
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy import AREnergy
from edlm.toy import ToyJoint, ancestral_distribution
from edlm.toy.sir import ExactSIR, sir_law

SCH = LogLinearSchedule(eps=0.0)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    return ToyJoint.markov(3, 4, stay=0.85, seed=0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sir_law_matches_brute_force(k):
    """Every k-tuple of proposals enumerated: the pick's law and E log(w(c) + S) to 1e-6."""
    q = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    log_w = torch.tensor([0.0, -1.0, 2.0, -4.0], dtype=torch.float64)
    pick = torch.zeros(4, dtype=torch.float64)
    for combo in itertools.product(range(4), repeat=k):
        w = log_w[list(combo)].exp()
        prob = math.prod(float(q[c]) for c in combo)
        for j, c in enumerate(combo):
            pick[c] += prob * float(w[j] / w.sum())
    log_sum = torch.zeros(4, dtype=torch.float64)
    for combo in itertools.product(range(4), repeat=k - 1):
        prob = math.prod(float(q[c]) for c in combo)
        log_sum += prob * torch.log(log_w.exp() + float(log_w[list(combo)].exp().sum()))
    law = sir_law(q, log_w, k)
    torch.testing.assert_close(law.pick, pick, atol=1e-9, rtol=0)
    torch.testing.assert_close(law.log_sum + log_w.max(), log_sum, atol=1e-6, rtol=0)
    if k == 1:
        torch.testing.assert_close(law.pick, q)  # one proposal: no selection at all


def test_many_proposals_approach_the_tilted_law():
    q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    log_w = torch.tensor([0.0, -1.0, 2.0], dtype=torch.float64)
    target = q * log_w.exp() / (q * log_w.exp()).sum()
    gaps = [float((sir_law(q, log_w, k).pick - target).abs().max()) for k in (2, 8, 64, 4096)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3 < gaps[0]


def test_one_proposal_is_the_mdlm_sampler_and_its_nelbo(toy):
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    exact = ExactSIR(toy, energy, k=1)
    for T in (1, 2):
        torch.testing.assert_close(exact.distribution(T), ancestral_distribution(toy, T, SCH), atol=1e-12, rtol=0)
        for x in toy.sequences[[0, 40, 77]]:
            assert exact.nelbo(x, T) == pytest.approx(toy.exact_nelbo(x, num_steps=T, schedule=SCH), abs=1e-9)
            assert exact.expected_estimate(x, T) == pytest.approx(exact.nelbo(x, T), abs=1e-9)  # ρ̂ = 1


def test_exact_law_is_what_generate_samples(toy):
    """The model ExactSIR describes is the sampler edlm runs: 20k samples of generate(k=4, T=2) fit its law."""
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    law = ExactSIR(toy, energy, k=4).distribution(2)
    assert float(law.sum()) == pytest.approx(1.0, abs=1e-9)
    out = generate(toy, toy.length, 20_000, toy.vocab_size, toy.mask_id, 2, schedule=SCH, noise_removal=False,
                   energy=energy, k=4, generator=torch.Generator().manual_seed(3))
    counts = torch.bincount(toy.index_of(out.tokens), minlength=law.numel()).double()
    keep = law > 1e-4
    expected = law[keep] / law[keep].sum() * counts[keep].sum()
    assert chisquare(counts[keep].numpy(), expected.numpy()).pvalue > 1e-3
    # and it is not the MDLM law: the energy moved it towards p
    mdlm = ancestral_distribution(toy, 2, SCH)
    tv = lambda a: 0.5 * float((a - toy.probs).abs().sum())
    assert tv(law) < tv(mdlm) - 0.05


def test_nelbo_bounds_the_sampler_and_the_estimate_bounds_the_nelbo(toy):
    """−log p_{k,T}(x) ≤ B_T(x) ≤ E[one-draw estimate] for every sequence (T = 2, k = 4)."""
    exact = ExactSIR(toy, AREnergy(toy, toy.mask_id, carry_over=False), k=4)
    log_law = exact.distribution(2).log()
    for n in range(0, 81, 8):
        x = toy.sequences[n]
        nelbo, estimate = exact.nelbo(x, 2), exact.expected_estimate(x, 2)
        assert -float(log_law[n]) <= nelbo + 1e-9 <= estimate + 2e-9
