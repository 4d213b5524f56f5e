"""Energy-guided remasking (edlm.samplers.remask) on the exact toy: η = 0 is MDLM bit for bit, fixed tokens are
never re-masked, and at its defaults it does not move the samples away from the true joint."""

import statistics

import pytest
import torch

from edlm import generate
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy import AREnergy
from edlm.samplers.remask import RemaskSampler
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


def test_sigma_follows_the_capped_schedule_and_the_window():
    sampler = RemaskSampler(3, remask_eta=0.3, remask_window=(0.2, 0.6), schedule=SCH, noise_removal=False)
    grid = sampler.set_timesteps(10)
    sig = [sampler.remask_probability(t, s) for t, s in zip(grid[:-1], grid[1:])]
    for t, s, v in zip(grid[:-1], grid[1:], sig):
        a_t, a_s = 1 - float(t), 1 - float(s)
        inside = 0.2 <= float(t) <= 0.6
        assert v == (min(0.3, (1 - a_s) / a_t) if inside else 0.0)
    assert sig[-1] == 0.0 and max(sig) == 0.3


def test_remask_picks_candidates_by_score_and_never_others():
    sampler = RemaskSampler(9, remask_eta=1.0)
    x = torch.arange(8).repeat(20000, 1)  # (B, 8)
    candidates = torch.tensor([True] * 6 + [False] * 2).expand(20000, 8)
    scores = torch.tensor([0.0, 0, 0, 0, 0, 2.0, 9, 9], dtype=torch.float64).expand(20000, 8)
    out, hit = sampler.remask(x, scores, candidates, 0.2, torch.Generator().manual_seed(0))
    assert not hit[:, 6:].any() and (out[hit] == 9).all() and torch.equal(out[~hit], x[~hit])
    rate = hit.double().mean(0)
    assert rate[5] > 3 * rate[0]  # the least likely first
    assert abs(float(hit.sum(-1).double().mean()) - 0.2 * 6) < 0.05  # σ · n re-masked on average


def test_eta_zero_is_mdlm_bit_for_bit(toy):
    mdlm = _run(toy, 500, 6, 3)
    same = _run(toy, 500, 6, 3, sampler="remask", remask_eta=0.0)
    assert torch.equal(mdlm.tokens, same.tokens)


@pytest.mark.parametrize("steps", [4, 8])
def test_remasking_does_not_move_away_from_the_target(toy, steps):
    """Default η and window, with the exact AR energy's per-token scores and with the confidence proxy (no
    energy): the mean TV to p over two seeds is no worse than without re-masking, up to twice the spread."""
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    tv = {"off": [], "energy": [], "proxy": []}
    for seed in (3, 4):
        tv["off"].append(toy.total_variation(_run(toy, N_SAMPLES, steps, seed, sampler="remask", remask_eta=0.0).tokens))
        out = _run(toy, N_SAMPLES, steps, seed, sampler="remask", energy=energy)
        assert out.nfe_energy > 0  # the energy scored the tokens
        tv["energy"].append(toy.total_variation(out.tokens))
        tv["proxy"].append(toy.total_variation(_run(toy, N_SAMPLES, steps, seed, sampler="remask").tokens))
    spread = max(statistics.stdev(v) for v in tv.values()) + 0.005  # sampling noise of one TV at 20 000 draws
    print(f"T={steps}: " + ", ".join(f"{k} {statistics.mean(v):.4f}" for k, v in tv.items()), f"spread {spread:.4f}")
    for name in ("energy", "proxy"):
        assert statistics.mean(tv[name]) <= statistics.mean(tv["off"]) + 2 * spread
