"""The decoder's contract: batching without mixing, validation, NaN handling, semi-AR, API names."""

import inspect

import pytest
import torch

from edlm import generate
from edlm.errors import NumericalError
from edlm.samplers.semi_ar import generate_semi_ar

V, MASK, L = 8, 8, 6


class RowDenoiser:
    """Row b may only emit tokens {2b, 2b+1} (uniformly): each row has its own proposal support."""

    def __init__(self, vocab_size=V):
        self.calls = 0

    def __call__(self, x_t, t):
        self.calls += 1
        B = x_t.shape[0]
        logits = torch.full((B, x_t.shape[1], V + 1), -30.0)
        for b in range(B):
            logits[b, :, 2 * (b % 4)] = 0.0
            logits[b, :, 2 * (b % 4) + 1] = 0.0
        return logits


def odd_lover(x_0, x_t, t, log_p_x0):
    """Energy: strongly prefers odd tokens (lower energy = more likely)."""
    return -5.0 * (x_0 % 2).sum(-1).double()


def test_each_row_gets_its_own_proposals_and_weights():
    g = torch.Generator().manual_seed(0)
    out = generate(RowDenoiser(), L, 4, V, MASK, steps=3, energy=odd_lover, k=8, generator=g)
    for b in range(4):
        row = out.tokens[b]
        assert set(row.tolist()) <= {2 * b, 2 * b + 1}  # never another row's proposal
    # with weights exp(−E), odd tokens dominate in every row; with k = 1 they are ~ half
    odd = (out.tokens % 2).float().mean()
    base = generate(RowDenoiser(), L, 4, V, MASK, steps=3, k=1, generator=torch.Generator().manual_seed(0))
    assert odd > 0.9 and (base.tokens % 2).float().mean() < 0.8
    assert out.nfe_energy == out.is_steps >= 1
    assert len(out.ess) == out.is_steps and all(1.0 <= e <= 8.0 for e in out.ess)


def test_energy_chunking_gives_identical_samples():
    a = generate(RowDenoiser(), L, 4, V, MASK, 3, energy=odd_lover, k=8, generator=torch.Generator().manual_seed(3))
    b = generate(RowDenoiser(), L, 4, V, MASK, 3, energy=odd_lover, k=8, energy_batch_size=5,
                 generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens) and b.nfe_energy > a.nfe_energy


def test_output_has_no_mask_and_counts_calls():
    d = RowDenoiser()
    out = generate(d, L, 2, V, MASK, steps=5, generator=torch.Generator().manual_seed(1))
    assert not (out.tokens == MASK).any() and out.tokens.shape == (2, L)
    assert out.nfe_denoiser == d.calls <= 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"k": 0}, "k"),
        ({"window": (0.6, 0.4)}, "window"),
        ({"window": (-0.1, 0.5)}, "window"),
        ({"temperature": 0.0}, "temperature"),
        ({"mask_id": V + 5}, "mask_id"),
        ({"length": 0}, "length"),
        ({"vocab_size": V + 3}, "logits of shape"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    args = dict(length=L, batch_size=2, vocab_size=V, mask_id=MASK, steps=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate(RowDenoiser(), **args)


def test_nan_logits_and_energies_are_refused():
    def nan_denoiser(x_t, t):
        out = torch.zeros(*x_t.shape, V + 1)
        out[0, 0, 0] = float("nan")
        return out

    with pytest.raises(NumericalError):
        generate(nan_denoiser, L, 2, V, MASK, 4)

    def inf_denoiser(x_t, t):
        out = torch.zeros(*x_t.shape, V + 1)
        out[1, 2, 3] = float("inf")
        return out

    with pytest.raises(NumericalError):
        generate(inf_denoiser, L, 2, V, MASK, 4)

    def nan_energy(x_0, x_t, t, lp):
        return torch.full((x_0.shape[0],), float("nan"))

    with pytest.raises(NumericalError):
        generate(RowDenoiser(), L, 2, V, MASK, 4, energy=nan_energy, k=2)


def test_length_above_model_length_is_refused_and_semi_ar_works():
    d = RowDenoiser()
    d.length = L
    with pytest.raises(ValueError, match="semi-autoregressive"):
        generate(d, 2 * L, 1, V, MASK, 4)
    out = generate_semi_ar(d, total_length=15, block_length=L, stride=3, batch_size=2, vocab_size=V,
                           mask_id=MASK, steps=4, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, 15) and not (out.tokens == MASK).any()


def test_semi_ar_keeps_the_prefix():
    seen = []

    def recording(x_t, t):
        seen.append(x_t.clone())
        return RowDenoiser()(x_t, t)

    out = generate_semi_ar(recording, 9, 6, 3, 1, V, MASK, 2, generator=torch.Generator().manual_seed(0))
    # the second block starts from the first block's last 3 tokens followed by 3 masks
    second = [x for x in seen if (x[0, :3] != MASK).all() and (x[0, 3:] == MASK).all()][0]
    assert torch.equal(second[0, :3], out.tokens[0, 3:6])


def test_public_signature_is_stable():
    names = list(inspect.signature(generate).parameters)
    assert names[:12] == ["denoiser", "length", "batch_size", "vocab_size", "mask_id", "steps", "energy", "k",
                          "window", "temperature", "cache", "generator"]


def test_energy_that_does_not_read_log_p_x0_gets_none_and_the_same_samples():
    seen = []

    class Blind:
        uses_log_p_x0 = False

        def __call__(self, x_0, x_t, t, log_p_x0):
            seen.append(log_p_x0)
            return odd_lover(x_0, x_t, t, log_p_x0)

    a = generate(RowDenoiser(), L, 4, V, MASK, 3, energy=odd_lover, k=8, generator=torch.Generator().manual_seed(4))
    b = generate(RowDenoiser(), L, 4, V, MASK, 3, energy=Blind(), k=8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.tokens, b.tokens) and seen and all(lp is None for lp in seen)
