"""Left-to-right AR sampling (edlm.baselines.ar_sampler): exact frequencies, prefix kept, excluded ids."""

import pytest
import torch

from edlm.baselines.ar_sampler import ar_sample


class MarkovLM(torch.nn.Module):
    """Next-token logits depend only on the last token: log P[prev] (a known 3-state chain)."""

    def __init__(self):
        super().__init__()
        self.log_P = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]).log()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.log_P[x]  # (B, n, 3)


def test_samples_follow_the_chain_exactly():
    model = MarkovLM()
    B = 20_000
    prefix = torch.full((B, 1), 1)
    out = ar_sample(model, prefix, 3, torch.Generator().manual_seed(0))
    assert out.tokens.shape == (B, 3) and (out.tokens[:, 0] == 1).all() and out.nfe == 2 == model.calls
    # second token ~ P[1]; pair (x1, x2) ~ P[1, x1] P[x1, x2]
    freq = torch.bincount(out.tokens[:, 1], minlength=3).double() / B
    torch.testing.assert_close(freq, model.log_P[1].exp().double(), atol=0.01, rtol=0)
    joint = torch.bincount(out.tokens[:, 1] * 3 + out.tokens[:, 2], minlength=9).double() / B
    expect = (model.log_P[1].exp()[:, None] * model.log_P.exp()).reshape(-1).double()
    torch.testing.assert_close(joint, expect, atol=0.01, rtol=0)


def test_deterministic_excluded_ids_and_bad_input():
    model = MarkovLM()
    prefix = torch.zeros(64, 2, dtype=torch.long)
    a = ar_sample(model, prefix, 6, torch.Generator().manual_seed(3), exclude_ids=(2,))
    b = ar_sample(model, prefix, 6, torch.Generator().manual_seed(3), exclude_ids=(2,))
    assert torch.equal(a.tokens, b.tokens) and (a.tokens[:, :2] == 0).all() and not (a.tokens == 2).any()
    with pytest.raises(ValueError, match="prefix"):
        ar_sample(model, torch.zeros(3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="length"):
        ar_sample(model, prefix, 1)
