"""``generate(..., graph=True)`` (edlm.samplers.graph_loop): the reveals planned up front follow the eager loop's law,
its samples the exact T-step ancestral distribution, and its network calls those of the cached loop. On a CPU the
planned step runs eagerly: the reference that the CUDA graph replays."""

import pytest
import torch

from edlm import generate
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.samplers.graph_loop import plan_reveals
from edlm.toy import ToyJoint, ancestral_distribution, total_variation, total_variation_noise

pytestmark = pytest.mark.usefixtures("one_thread")
SCH = LogLinearSchedule(eps=0.0)


@pytest.fixture(scope="module")
def toy():
    return ToyJoint.markov(vocab_size=3, length=4, stay=0.85, seed=0)


def _tv_noise_bound(dist, n):
    """mean + 5σ of the TV an exact sampler of n draws shows from sampling noise alone."""
    mean, std = total_variation_noise(dist, n)
    return mean + 5 * std


def test_planned_reveal_steps_follow_the_per_step_bernoullis():
    """P(revealed at step j) = S_{j-1} − S_j with S_j = (1 − α(t_{j+1}))/(1 − α(1)); unmasked positions get T + 1."""
    sch = LogLinearSchedule()  # ε = 1e-3: α(1) > 0
    T, n = 5, 200_000
    grid = torch.linspace(1.0, 1e-5, T + 1, dtype=torch.float64)
    masked = torch.ones(1, n, dtype=torch.bool)
    masked[0, :10] = False
    when = plan_reveals(masked, grid, sch, torch.Generator().manual_seed(0))
    assert (when[0, :10] == T + 1).all()
    freq = torch.bincount(when[0, 10:], minlength=T + 1).double() / (n - 10)
    alpha = sch.alpha(grid)
    survive = torch.cat([torch.ones(1, dtype=torch.float64), (1 - alpha[1:]) / (1 - alpha[0])])
    expected = torch.cat([survive[:-1] - survive[1:], survive[-1:]])  # steps 0..T-1, then never (noise removal)
    assert expected[-1] > 0  # under noise removal some positions are left for the argmax
    se = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() < 5 * se + 1e-12).all(), (freq, expected)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_samples_follow_the_exact_ancestral_distribution(toy, steps):
    """T ≤ 3 is measurably off the true joint; graph=True matches the T-step sampler's own exact law."""
    n = 20_000
    g = torch.Generator().manual_seed(steps)
    out = generate(toy, toy.length, n, toy.vocab_size, toy.mask_id, steps, schedule=SCH, noise_removal=False,
                   generator=g, graph=True)
    exact = ancestral_distribution(toy, steps, SCH)
    tv = total_variation(toy.empirical(out.tokens), exact)
    assert tv < _tv_noise_bound(exact, n), tv
    assert total_variation(exact, toy.probs) > 5 * _tv_noise_bound(exact, n)  # the test can tell the laws apart


def test_same_law_and_calls_as_the_eager_cached_loop(toy):
    """T = 16 > L: many steps reveal nothing. Both loops sample the same law and make the same number of network
    calls per batch in expectation (the graph loop skips the empty steps, the eager loop reuses x_θ there)."""
    n, T = 20_000, 16
    kw = dict(schedule=SCH, noise_removal=False)
    graphed = generate(toy, toy.length, n, toy.vocab_size, toy.mask_id, T, generator=torch.Generator().manual_seed(1),
                       graph=True, **kw)
    eager = generate(toy, toy.length, n, toy.vocab_size, toy.mask_id, T, generator=torch.Generator().manual_seed(2),
                     **kw)
    bound = _tv_noise_bound(toy.probs, n)
    assert total_variation(toy.empirical(graphed.tokens), toy.empirical(eager.tokens)) < 2 * bound
    # one sequence per call: the number of calls is the number of distinct reveal steps, ≤ L, in both loops
    calls = [generate(toy, toy.length, 1, toy.vocab_size, toy.mask_id, T, generator=torch.Generator().manual_seed(s),
                      graph=g, **kw).nfe_denoiser for g in (True, False) for s in range(300)]
    mean_graph, mean_eager = sum(calls[:300]) / 300, sum(calls[300:]) / 300
    assert max(calls) <= toy.length and abs(mean_graph - mean_eager) < 0.25, (mean_graph, mean_eager)


def test_noise_removal_and_fixed_tokens(toy):
    """Positions no step reveals get the argmax (no [MASK] left); tokens given in x_init are kept."""
    x0 = torch.full((500, toy.length), toy.mask_id)
    x0[:, 1] = 2
    out = generate(toy, toy.length, 500, toy.vocab_size, toy.mask_id, 2, generator=torch.Generator().manual_seed(0),
                   x_init=x0, graph=True)
    assert (out.tokens != toy.mask_id).all() and (out.tokens[:, 1] == 2).all()
    assert out.nfe_denoiser <= 3  # two steps and at most one call for the noise removal


def test_graph_refuses_what_it_does_not_run(toy):
    with pytest.raises(ValueError, match="graph=True runs sampler='importance' with top_p=1.0"):
        generate(toy, toy.length, 2, toy.vocab_size, toy.mask_id, 2, top_p=0.9, graph=True)
    with pytest.raises(ValueError, match="graph=True runs sampler='importance' with top_p=1.0"):
        generate(toy, toy.length, 2, toy.vocab_size, toy.mask_id, 2, sampler="remask", graph=True)
