"""SPEC 2.4: the NCE loss on hand-computed numbers, and exact negatives from Π x_θ."""

import math

import pytest
import torch

from edlm.energy.nce_loss import nce_loss, sample_negatives


def _softplus(x):
    return math.log1p(math.exp(x))


def test_loss_accuracy_margin_by_hand():
    e_pos = torch.tensor([-1.0, 2.0])
    e_neg = torch.tensor([[0.5, -3.0], [1.0, 4.0]])
    out = nce_loss(e_pos, e_neg)
    # −log σ(−E) = softplus(E);  −log σ(E) = softplus(−E)
    row0 = _softplus(-1.0) + 0.5 * (_softplus(-0.5) + _softplus(3.0))
    row1 = _softplus(2.0) + 0.5 * (_softplus(-1.0) + _softplus(-4.0))
    assert out.loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    torch.testing.assert_close(out.per_example, torch.tensor([row0, row1]))
    # row 0: positive right (−1 < 0), negatives 1 of 2 right -> ½(1 + ½) = 0.75
    # row 1: positive wrong (2 > 0), negatives 2 of 2 right -> ½(0 + 1) = 0.5
    torch.testing.assert_close(out.correct, torch.tensor([0.75, 0.5]))
    assert out.accuracy.item() == pytest.approx(0.625)
    # margin: mean_j E(neg) − E(pos) = (−1.25 + 1) and (2.5 − 2)
    assert out.margin.item() == pytest.approx(((-1.25 + 1.0) + (2.5 - 2.0)) / 2)


def test_zero_energy_is_two_log_two_at_chance_and_gradients_have_the_right_sign():
    e_pos = torch.zeros(5, requires_grad=True)
    e_neg = torch.zeros(5, 3, requires_grad=True)
    out = nce_loss(e_pos, e_neg)
    assert out.loss.item() == pytest.approx(2 * math.log(2))
    assert out.accuracy.item() == 0.5  # ties earn half
    out.loss.backward()
    assert (e_pos.grad > 0).all()  # descent lowers the energy of data ...
    assert (e_neg.grad < 0).all()  # ... and raises that of negatives
    # logsigmoid stays finite where log(sigmoid) would give inf
    far = nce_loss(torch.tensor([200.0]), torch.tensor([[-200.0]]))
    assert far.loss.item() == pytest.approx(400.0) and far.accuracy.item() == 0.0


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="n_neg"):
        nce_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="n_neg"):
        nce_loss(torch.zeros(3), torch.zeros(2, 1))


def test_negatives_copy_unmasked_and_follow_x_theta():
    V, M = 4, 4  # four real tokens, [MASK] = 4
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = torch.log(torch.cat([probs, torch.tensor([0.9])]))  # a large [MASK] logit must be ignored
    logits = logits.expand(2, 3, V + 1).clone()
    x_t = torch.tensor([[M, 2, M], [1, 1, 0]])
    neg = sample_negatives(logits, x_t, M, n_neg=20_000, generator=torch.Generator().manual_seed(0))
    assert neg.shape == (2, 20_000, 3)
    assert (neg[0, :, 1] == 2).all() and (neg[1] == x_t[1]).all()  # carry-over (SPEC 1.3b)
    assert (neg != M).all()  # zero-masking (SPEC 1.3a)
    freq = torch.bincount(neg[0, :, 0], minlength=V).double() / 20_000
    torch.testing.assert_close(freq, probs.double(), atol=0.012, rtol=0)
    # the two masked positions are drawn independently (a product distribution)
    joint = ((neg[0, :, 0] == 3) & (neg[0, :, 2] == 3)).double().mean()
    assert abs(joint.item() - 0.16) < 0.012
    # chunking does not change the draws
    again = sample_negatives(logits, x_t, M, n_neg=20_000, generator=torch.Generator().manual_seed(0), chunk_rows=1)
    assert torch.equal(neg, again)
