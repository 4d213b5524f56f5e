"""SPEC §3 / 2.4 on the exact toy: NCE recovers the log density ratio, and EDLM-NCE cuts the TV of MDLM.

The energy here is a table indexed by (x_t, x_0) — exact capacity, no transformer — so the test checks
the NCE loss and the negatives (NCEModule.nce_batch: antithetic t, q_sample, exact draws from Π x_θ),
not the network.
"""

import itertools
import math

import pytest
import torch
from torch import nn

from edlm import generate
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.toy import ToyJoint
from edlm.training.nce_module import NCEModule

SCH = LogLinearSchedule(eps=0.0)  # α_1 = 0, as the other toy tests


pytestmark = pytest.mark.usefixtures("one_thread")


class ToyDenoiser(nn.Module):
    """The toy's exact factorised denoiser as an nn.Module, with all (V+1)^L inputs tabulated."""

    def __init__(self, toy: ToyJoint):
        super().__init__()
        V, L = toy.vocab_size, toy.length
        all_x_t = torch.tensor(list(itertools.product(range(V + 1), repeat=L)))  # ((V+1)^L, L)
        self.register_buffer("logits", toy.denoiser(all_x_t))  # ((V+1)^L, L, V+1), [MASK] at −∞
        self.register_buffer("place", (V + 1) ** torch.arange(L - 1, -1, -1))

    def forward(self, x_t, t):
        return self.logits[(x_t * self.place).sum(-1)]  # (B, L, V+1)


class TableEnergy(nn.Module):
    """E(x_0, x_t) = W[x_t, x_0]: one free number per pair (zero-initialised, so it starts as MDLM)."""

    def __init__(self, toy: ToyJoint):
        super().__init__()
        self.toy = toy
        self.vocab_size = toy.vocab_size + 1
        self.weight = nn.Parameter(torch.zeros((toy.vocab_size + 1) ** toy.length, toy.vocab_size ** toy.length))
        self.register_buffer("place", (toy.vocab_size + 1) ** torch.arange(toy.length - 1, -1, -1))

    def forward(self, x_0, x_t, t=None, log_p_x0=None, attention_mask=None):
        return self.weight[(x_t * self.place).sum(-1), self.toy.index_of(x_0)]


def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.square().sum() * b.square().sum()).sqrt())


@pytest.fixture(scope="module")
def trained():
    """Train the table by NCE on samples: x_0 ~ p, x_t ~ q, 16 negatives from the exact Π x_θ (SPEC 2.4)."""
    toy = ToyJoint.markov(3, 4, stay=0.85, seed=0)
    energy = TableEnergy(toy)
    module = NCEModule(energy, ToyDenoiser(toy), SCH, toy.mask_id, n_neg=16, ema_decay=0.0, t_min=1e-3)
    steps, batch = 1000, 4096
    opt = torch.optim.Adam(energy.parameters(), lr=0.1)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x_0 = toy.sequences[torch.multinomial(toy.probs, batch, replacement=True, generator=g)]
        out = module.nce_batch(x_0, None, g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        decay.step()
        losses.append(out.loss.item())
    return toy, energy.eval(), losses


@pytest.mark.slow
def test_nce_recovers_the_exact_log_density_ratio(trained):
    toy, energy, losses = trained
    assert losses[0] == pytest.approx(2 * math.log(2), abs=1e-6)  # E ≡ 0 at the start
    assert sum(losses[-50:]) / 50 < 2 * math.log(2) - 0.1
    # every consistent (x_0, x_t) pair: 81 sequences × 16 mask patterns
    patterns = torch.tensor(list(itertools.product([False, True], repeat=toy.length)))  # (16, L)
    x_0 = toy.sequences.repeat_interleave(len(patterns), dim=0)  # (1296, L)
    x_t = torch.where(patterns.repeat(len(toy.sequences), 1), toy.mask_id, x_0)
    with torch.no_grad():
        neg_e = -energy(x_0, x_t).double()
    ratio = toy.log_density_ratio(x_0, x_t)  # log p(x_0|x_t) − log Π x_θ(x_0|x_t)
    # NCE with equal class priors identifies the ratio itself (no free constant): compare raw values ...
    raw = pearson(neg_e, ratio)
    # ... and, for reference, after removing each x_t group's mean (the comparison "up to log Z(x_t)")
    keys = (x_t * (toy.mask_id + 1) ** torch.arange(toy.length - 1, -1, -1)).sum(-1)
    _, group = keys.unique(return_inverse=True)
    n = torch.bincount(group).double()

    def centred(v):
        return v - (torch.zeros_like(n).index_add_(0, group, v) / n)[group]

    centred_r = pearson(centred(neg_e), centred(ratio))
    weights = toy.probs[toy.index_of(x_0)]  # pairs weighted by p(x_0) (each pattern equally)
    mean_abs_err = float((weights * (neg_e - ratio).abs()).sum() / weights.sum())
    print(f"NCE toy: Pearson(−E, log ratio) raw {raw:.4f}, per-x_t centred {centred_r:.4f}; "
          f"p-weighted mean |−E − ratio| {mean_abs_err:.3f} nats over {len(x_0)} pairs "
          f"(ratio range {ratio.min():.2f} … {ratio.max():.2f})")
    assert raw >= 0.95 and centred_r >= 0.95
    assert mean_abs_err < 0.1


@pytest.mark.slow
def test_edlm_nce_cuts_the_total_variation_of_few_step_mdlm(trained):
    toy, energy, _ = trained
    tv = {}
    for k in (1, 16):
        g = torch.Generator().manual_seed(10)
        out = generate(toy, toy.length, 20_000, toy.vocab_size, toy.mask_id, 2, energy=energy if k > 1 else None,
                       k=k, schedule=SCH, noise_removal=False, generator=g)
        tv[k] = toy.total_variation(out.tokens)
    cut = 1 - tv[16] / tv[1]
    print(f"toy TV at T=2: MDLM {tv[1]:.4f}, EDLM-NCE k=16 {tv[16]:.4f} ({100 * cut:.0f}% lower)")
    assert cut >= 0.30
