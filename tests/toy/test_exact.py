"""SPEC §3: exact checks on an enumerable joint."""

import math

import pytest
import torch
from scipy.stats import chisquare

from edlm import generate
from edlm.baselines import PositiveSignEnergy
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy import AREnergy
from edlm.toy import ToyJoint, ancestral_distribution, total_variation

SCH = LogLinearSchedule(eps=0.0)  # α_1 = 0: the NELBO is a true bound


@pytest.fixture(scope="module")
def toy():
    return ToyJoint.markov(vocab_size=3, length=4, stay=0.85, seed=0)


def _sample(toy, n, steps, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return generate(toy, toy.length, n, toy.vocab_size, toy.mask_id, steps, schedule=SCH,
                    noise_removal=False, generator=g, **kw)


def _gof_pvalue(toy, tokens, expected_probs):
    counts = torch.bincount(toy.index_of(tokens), minlength=expected_probs.numel()).double()
    keep = expected_probs > 0
    exp = expected_probs[keep] * counts.sum()
    return chisquare(counts[keep].numpy(), exp.numpy() * float(counts.sum() / exp.sum())).pvalue


def test_toy_is_a_distribution_with_exact_parts(toy):
    assert abs(float(toy.probs.sum()) - 1) < 1e-12
    # the exact AR model's chain rule gives the joint
    torch.testing.assert_close(toy.token_log_probs(toy.sequences).sum(-1), toy.probs.log())
    # the exact denoiser with nothing masked is the identity; fully masked gives the marginals
    x_t = torch.full((1, 4), toy.mask_id)
    m = toy.marginals(x_t)[0]
    for i in range(4):
        for v in range(3):
            assert abs(float(m[i, v]) - float(toy.probs[toy.sequences[:, i] == v].sum())) < 1e-12


def test_nelbo_bounds_nll_and_discrete_decreases(toy):
    nll = -toy.probs.log()
    cont = torch.tensor([toy.exact_nelbo(x, schedule=SCH) for x in toy.sequences], dtype=torch.float64)
    assert (cont >= nll - 1e-7).all()  # an upper bound for every sequence (here tight: exact x_θ)
    avg = []
    for T in (1, 2, 4, 8, 32, 128):
        disc = torch.tensor([toy.exact_nelbo(x, num_steps=T, schedule=SCH) for x in toy.sequences],
                            dtype=torch.float64)
        q_T = ancestral_distribution(toy, T, SCH) if T <= 8 else None
        if q_T is not None:  # each discrete bound bounds the NLL of its own T-step sampler
            assert (disc >= -q_T.log() - 1e-7).all()
        avg.append(float((toy.probs * disc).sum()))
    cont_avg = float((toy.probs * cont).sum())
    assert all(a > b for a, b in zip(avg, avg[1:]))  # decreasing in T
    assert all(a > cont_avg for a in avg)  # from above
    assert avg[-1] - cont_avg < 0.02 * (avg[0] - cont_avg)  # and converging to the continuous bound


def test_mdlm_samples_match_exact_sampler_distribution(toy):
    """The implementation samples exactly the T-step process (SPEC 1.4), computed by enumeration."""
    for T in (1, 2):
        q = ancestral_distribution(toy, T, SCH)
        out = _sample(toy, 20_000, T, seed=T)
        assert _gof_pvalue(toy, out.tokens, q) > 1e-3
        assert total_variation(q, toy.probs) > 0.3  # few steps are measurably off the true joint


@pytest.mark.slow
def test_cached_equals_uncached_and_many_steps_are_exact(toy):
    a = _sample(toy, 8, 64, seed=3, cache=True)
    b = _sample(toy, 8, 64, seed=3, cache=False)
    assert torch.equal(a.tokens, b.tokens)  # x_θ is a function of x_t: the cache changes nothing
    assert a.nfe_denoiser < b.nfe_denoiser <= 64
    # B = 1: at most one call per distinct unmasking event (≤ L events)
    for seed in range(20):
        one = _sample(toy, 1, 256, seed=seed)
        assert one.nfe_denoiser <= toy.length
    # T ≥ L, many steps: matches the true joint within sampling error
    big = _sample(toy, 20_000, 512, seed=4)
    assert _gof_pvalue(toy, big.tokens, toy.probs) > 1e-3


@pytest.mark.slow
def test_importance_sampling_reduces_tv_with_k(toy):
    """EDLM-AR with the exact AR energy: TV to the true joint falls with k (SPEC §3, 2.5)."""
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    tv = {}
    for k in (1, 4, 16):
        tv[k] = toy.total_variation(_sample(toy, 20_000, 2, seed=10, energy=energy, k=k).tokens)
    tv["+E"] = toy.total_variation(_sample(toy, 20_000, 2, seed=10, energy=PositiveSignEnergy(energy), k=16).tokens)
    print("TV at T=2:", {k: round(v, 4) for k, v in tv.items()})
    assert tv[16] <= 0.5 * tv[1]
    assert tv[1] > tv[4] > tv[16]
    assert tv["+E"] > tv[1]  # the published sign makes it worse than no correction


def test_k1_is_bit_identical_to_mdlm(toy):
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    for window in ((0.0, 1.0), (0.4, 0.6)):
        plain = _sample(toy, 500, 8, seed=7)
        is1 = _sample(toy, 500, 8, seed=7, energy=energy, k=1, window=window)
        assert torch.equal(plain.tokens, is1.tokens)
    # the same holds for a real network-shaped denoiser with noise removal (default settings)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = generate(toy, 4, 300, 3, 3, 3, generator=g1)
    b = generate(toy, 4, 300, 3, 3, 3, energy=energy, k=1, generator=g2)
    assert torch.equal(a.tokens, b.tokens)


def test_window_outside_steps_is_plain_mdlm(toy):
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    plain = _sample(toy, 500, 4, seed=1)
    # steps start at t = 1, .75, .5, .25: a window that holds none of them changes nothing
    off = _sample(toy, 500, 4, seed=1, energy=energy, k=8, window=(0.3, 0.45))
    assert torch.equal(plain.tokens, off.tokens) and off.nfe_energy == 0
    on = _sample(toy, 500, 4, seed=1, energy=energy, k=8, window=(0.3, 0.5))
    assert on.nfe_energy == 1 and on.is_steps == 1


def test_log_density_ratio_is_the_exact_energy(toy):
    """−E_AR (no carry-over) equals the log density ratio that an NCE energy should learn."""
    g = torch.Generator().manual_seed(0)
    x0 = toy.sequences[torch.randint(0, 81, (64,), generator=g)]
    x_t = torch.where(torch.rand(64, 4, generator=g) < 0.5, toy.mask_id, x0)
    lp = torch.log(torch.cat([toy.marginals(x_t), torch.zeros(64, 4, 1, dtype=torch.float64)], -1))
    lp = torch.where((x_t != toy.mask_id)[..., None], torch.full_like(lp, -math.inf).scatter(-1, x_t[..., None], 0.0), lp)
    e = AREnergy(toy, toy.mask_id, carry_over=False)(x0, x_t, torch.zeros(64), lp)
    ratio = toy.log_density_ratio(x0, x_t)
    # equal up to a constant per x_t: log Z(x_t) = log p(x_t-consistent mass)
    post_mass = torch.stack([(toy.probs * ((toy.sequences == xt) | (xt == 3)).all(-1)).sum() for xt in x_t])
    torch.testing.assert_close(-e - post_mass.log(), ratio)
