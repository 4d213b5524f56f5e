"""SMC with persistent particles on the exact toy (edlm.samplers.smc): N = 1 is MDLM, TV to the target falls with
N, and Ẑ is unbiased for the exact normalising constant."""

import math

import pytest
import torch

from edlm import generate
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy import AREnergy
from edlm.samplers.smc import systematic_resample
from edlm.toy import ToyJoint, total_variation, total_variation_noise

pytestmark = pytest.mark.usefixtures("one_thread")
SCH = LogLinearSchedule(eps=0.0)
N_SAMPLES = 20_000


@pytest.fixture(scope="module")
def toy():
    return ToyJoint.markov(vocab_size=3, length=4, stay=0.85, seed=0)


class _Tilted:
    """An unnormalised "AR model": log π̃(x) = log p(x) + c·[x⁰ = x¹], so Z = Σ π̃ = 1 + (e^c − 1) P(x⁰ = x¹)."""

    def __init__(self, toy, c=-1.0):
        self.toy, self.c = toy, c

    def token_log_probs(self, x):
        out = self.toy.token_log_probs(x).clone()
        out[:, 1] += self.c * (x[:, 0] == x[:, 1]).double().cpu()
        return out

    def exact_z(self):
        same = (self.toy.sequences[:, 0] == self.toy.sequences[:, 1]).double()
        return float((self.toy.probs * torch.exp(self.c * same)).sum())

    def target(self):
        same = (self.toy.sequences[:, 0] == self.toy.sequences[:, 1]).double()
        w = self.toy.probs * torch.exp(self.c * same)
        return w / w.sum()


def _smc(toy, n, steps, seed, energy, **kw):
    g = torch.Generator().manual_seed(seed)
    return generate(toy, toy.length, n, toy.vocab_size, toy.mask_id, steps, schedule=SCH, noise_removal=False,
                    generator=g, energy=energy, sampler="smc", **kw)


def _tv_noise_bound(dist, n):
    """mean + 5σ of the TV an exact sampler of n draws shows from sampling noise alone."""
    mean, std = total_variation_noise(dist, n)
    return mean + 5 * std


def test_systematic_resampling_copies_by_weight():
    w = torch.tensor([[0.5, 0.25, 0.125, 0.125], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    for u in (0.0, 0.3, 0.99):
        idx = systematic_resample(w.log(), torch.full((2,), u, dtype=torch.float64))
        counts = torch.stack([torch.bincount(r, minlength=4) for r in idx])
        assert counts[0].tolist() in ([2, 1, 1, 0], [2, 1, 0, 1])  # N·w = 2, 1, 0.5, 0.5: each count within 1
        assert counts[1].tolist() == [4, 0, 0, 0]


def test_one_particle_is_mdlm_bit_for_bit(toy):
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    g = torch.Generator().manual_seed(7)
    mdlm = generate(toy, 4, 500, 3, 3, 3, schedule=SCH, noise_removal=False, generator=g)
    one = _smc(toy, 500, 3, 7, energy, particles=1)
    assert torch.equal(mdlm.tokens, one.tokens) and one.resampled == 0
    assert one.log_z.shape == (500,) and torch.isfinite(one.log_z).all()  # one-particle Ẑ: a weight per path


def test_tv_to_the_true_joint_falls_with_particles(toy):
    """T = 2, the exact AR energy: MDLM (N = 1) is 0.37 off p; N = 4 and 16 cut it well beyond sampling noise."""
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    tv = {n: toy.total_variation(_smc(toy, N_SAMPLES, 2, 1, energy, particles=n).tokens) for n in (1, 4, 16)}
    noise = _tv_noise_bound(toy.probs, N_SAMPLES)
    print(f"TV at T=2 by particles: {tv}, noise bound {noise:.4f}")
    assert tv[1] > tv[4] + noise and tv[4] > tv[16] + noise
    assert tv[16] < 0.4 * tv[1]


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0], ids=["never", "ess-half", "always"])
def test_normalising_constant_is_unbiased(toy, threshold):
    """An unnormalised target π̃ (a tilted AR energy): the mean of Ẑ over 20 000 independent runs (one per
    sequence) is the exact Z within 4 standard errors, for any resampling threshold; the particles go to π̃ / Z."""
    tilted = _Tilted(toy)
    energy = AREnergy(tilted, toy.mask_id, carry_over=False)
    out = _smc(toy, N_SAMPLES, 3, 11, energy, particles=4, ess_threshold=threshold)
    z_hat = out.log_z.exp()
    mean, se = float(z_hat.mean()), float(z_hat.std() / math.sqrt(N_SAMPLES))
    z = tilted.exact_z()
    print(f"threshold {threshold}: mean Ẑ {mean:.4f} ± {se:.4f}, exact Z {z:.4f}, resampled {out.resampled}")
    assert abs(mean - z) < 4 * se and se < 0.05 * z and abs(z - 1) > 0.2  # Z is far from 1: the test can fail
    if threshold == 0.0:
        assert out.resampled == 0
    if threshold == 1.0:
        assert out.resampled > N_SAMPLES  # about every step of every sequence
    mdlm_tv = total_variation(toy.empirical(_smc(toy, N_SAMPLES, 3, 11, energy, particles=1).tokens), tilted.target())
    assert total_variation(toy.empirical(out.tokens), tilted.target()) < 0.6 * mdlm_tv


def test_smc_needs_an_energy_and_its_own_settings(toy):
    with pytest.raises(ValueError, match="energy"):
        generate(toy, 4, 2, 3, 3, 2, sampler="smc")
    energy = AREnergy(toy, toy.mask_id, carry_over=False)
    with pytest.raises(ValueError, match="k applies to sampler"):
        generate(toy, 4, 2, 3, 3, 2, energy=energy, sampler="smc", k=4)
    with pytest.raises(ValueError, match="ess_threshold"):
        generate(toy, 4, 2, 3, 3, 2, energy=energy, sampler="smc", ess_threshold=1.5)
    with pytest.raises(ValueError, match="particles"):
        generate(toy, 4, 2, 3, 3, 2, energy=energy, particles=4)  # importance sampling has no particles
