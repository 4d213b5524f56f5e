import math

import torch

from edlm.diffusion.forward import q_sample
from edlm.diffusion.loss import antithetic_times, continuous_nelbo, discrete_nelbo
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.diffusion.subs import subs_log_probs
from edlm.toy import ToyJoint


def test_antithetic_times_are_stratified():
    g = torch.Generator().manual_seed(0)
    t = antithetic_times(16, t_min=1e-3, generator=g)
    assert t.shape == (16,) and (t >= 1e-3).all() and (t <= 1).all()
    u = (t - 1e-3) / (1 - 1e-3)
    strata = torch.sort(torch.floor(u * 16)).values
    assert torch.equal(strata, torch.arange(16, dtype=strata.dtype))  # one draw per stratum


def _mc_nelbo(toy, x0, schedule, n, g, num_steps=None):
    """Monte Carlo NELBO of one sequence with the toy's exact denoiser, through the training code."""
    x0b = x0[None].repeat(n, 1)
    if num_steps is None:
        t = antithetic_times(n, t_min=1e-6, generator=g).double()
    else:
        t = torch.randint(1, num_steps + 1, (n,), generator=g).double() / num_steps
    xt = q_sample(x0b, schedule.alpha(t), toy.mask_id, generator=g)
    lp = subs_log_probs(toy.denoiser(xt), xt, toy.mask_id)
    ll = lp.gather(-1, x0b[..., None]).squeeze(-1).double()
    ll = torch.where(xt == toy.mask_id, ll, torch.zeros_like(ll))
    if num_steps is None:
        out = continuous_nelbo(ll, x0b, xt, t, schedule, toy.mask_id)
    else:
        out = discrete_nelbo(ll, x0b, xt, t, schedule, toy.mask_id, num_steps)
    return out.nll_sum.mean().item(), out.nll_sum.std().item() / math.sqrt(n)


def test_training_loss_matches_exact_nelbo_on_toy():
    """The Monte-Carlo loss used in training converges to the enumerated NELBO (SPEC 1.5, §3)."""
    toy = ToyJoint.markov(3, 4)
    sch = LogLinearSchedule(eps=0.0)
    g = torch.Generator().manual_seed(0)
    for idx in (0, 5, 40):
        x0 = toy.sequences[idx]
        exact = toy.exact_nelbo(x0, schedule=sch)
        mc, se = _mc_nelbo(toy, x0, sch, 40_000, g)
        assert abs(mc - exact) < 5 * se + 1e-3, (idx, mc, exact, se)
        exact4 = toy.exact_nelbo(x0, num_steps=4, schedule=sch)
        mc4, se4 = _mc_nelbo(toy, x0, sch, 40_000, g, num_steps=4)
        assert abs(mc4 - exact4) < 5 * se4 + 1e-3, (idx, mc4, exact4, se4)
