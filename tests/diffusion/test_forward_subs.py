import math

import torch

from edlm.diffusion.forward import q_sample
from edlm.diffusion.posterior import reverse_step_probs
from edlm.diffusion.subs import log_likelihood_of, subs_log_probs

MASK = 7


def test_q_sample_rate_and_padding():
    g = torch.Generator().manual_seed(1)
    B, L = 64, 512
    x0 = torch.randint(0, MASK, (B, L), generator=g)
    attn = torch.ones(B, L, dtype=torch.long)
    attn[:, L // 2:] = 0  # second half is padding
    alpha = torch.linspace(0.0, 1.0, B)
    xt = q_sample(x0, alpha, MASK, attention_mask=attn, generator=g)
    masked = xt == MASK
    assert not masked[:, L // 2:].any()  # padding never masked
    assert torch.equal(xt[~masked], x0[~masked])  # clean positions keep their token
    rate = masked[:, : L // 2].float().mean(-1)  # per sequence, ≈ 1 − α
    n = L // 2
    sd = torch.sqrt(alpha * (1 - alpha) / n).clamp_min(1e-3)
    assert ((rate - (1 - alpha)).abs() < 5 * sd).all()
    assert masked[0, : L // 2].all() and not masked[-1].any()  # α = 0: all, α = 1: none


def test_subs_zero_masking_and_carry_over():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, MASK + 1, generator=g)
    logits[..., MASK] = 100.0  # the network would love to predict the mask
    x_t = torch.tensor([[MASK, 3, MASK, 0, MASK], [1, MASK, MASK, MASK, 6]])
    before = logits.clone()
    lp = subs_log_probs(logits, x_t, MASK)
    assert torch.equal(logits, before)  # input untouched
    probs = lp.exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5))
    assert (probs[..., MASK] == 0).all()  # (a) zero-masking
    unmasked = x_t != MASK
    assert torch.equal(probs[unmasked].argmax(-1), x_t[unmasked])  # (b) carry-over one-hot
    assert (probs[unmasked].max(-1).values == 1).all()
    ref = torch.log_softmax(logits[..., :MASK], -1)
    torch.testing.assert_close(lp[~unmasked][:, :MASK], ref[~unmasked])


def test_log_likelihood_of_matches_subs_gather():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 6, MASK + 1, generator=g).bfloat16()
    x0 = torch.randint(0, MASK, (3, 6), generator=g)
    x_t = torch.full_like(x0, MASK)
    a = log_likelihood_of(logits, x0, MASK)
    b = subs_log_probs(logits, x_t, MASK).gather(-1, x0[..., None]).squeeze(-1)
    torch.testing.assert_close(a, b)


def test_reverse_step_probs_sum_to_one_and_match_spec():
    lp = torch.log_softmax(torch.randn(1, 3, MASK + 1).index_fill(-1, torch.tensor([MASK]), -math.inf), -1)
    x_t = torch.tensor([[MASK, 2, MASK]])
    a_t, a_s = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    p = reverse_step_probs(lp, x_t, a_t, a_s, MASK)
    torch.testing.assert_close(p.sum(-1), torch.ones(1, 3, dtype=torch.float64))
    stay = (1 - 0.6) / (1 - 0.3)
    assert abs(float(p[0, 0, MASK]) - stay) < 1e-12
    torch.testing.assert_close(p[0, 0, :MASK], (0.3 / 0.7) * lp[0, 0, :MASK].double().exp())
    assert float(p[0, 1, 2]) == 1.0
