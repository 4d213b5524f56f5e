"""ARTransformer: MDLM AR-baseline key names, causality, and exact next-token log-probabilities."""

import pytest
import torch

from edlm.models import ARTransformer, next_token_log_probs


def mdlm_small_ar_golden() -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of kuleshov-group/mdlm's ``AR`` (models/autoregressive.py) with configs/model/small-ar.yaml."""
    V, D, F4 = 50258, 768, 3072
    block = [
        ("norm1.weight", (D,)),
        ("attn_qkv.weight", (3 * D, D)),
        ("attn_out.weight", (D, D)),
        ("norm2.weight", (D,)),
        ("mlp.0.weight", (F4, D)),
        ("mlp.0.bias", (F4,)),
        ("mlp.2.weight", (D, F4)),
        ("mlp.2.bias", (D,)),
    ]
    return (
        [("vocab_embed.embedding", (V, D)), ("rotary_emb.inv_freq", (32,))]
        + [(f"blocks.{i}.{k}", s) for i in range(12) for k, s in block]
        + [("output_layer.norm_final.weight", (D,)),
           ("output_layer.linear.weight", (V, D)),
           ("output_layer.linear.bias", (V,))]
    )


def test_ar_small_has_mdlm_ar_keys_and_shapes():
    with torch.device("meta"):
        model = ARTransformer(vocab_size=50258)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == mdlm_small_ar_golden()
    assert len(got) == 101


def test_ar_is_causal(tiny_ar, tokens):
    for j in (0, 5, 11):
        x2 = tokens.clone()
        x2[:, j] = (x2[:, j] + 1) % 36
        with torch.no_grad():
            a, b = tiny_ar(tokens), tiny_ar(x2)
        torch.testing.assert_close(a[:, :j], b[:, :j], atol=1e-6, rtol=0)  # i < j: unchanged
        assert not torch.allclose(a[:, j], b[:, j], atol=1e-4)  # i = j: the token itself is read


def test_token_log_probs_match_log_softmax_of_the_logits(tiny_ar, tokens):
    with torch.no_grad():
        logits = tiny_ar(tokens)
        lp = tiny_ar.token_log_probs(tokens)
        total = tiny_ar.log_prob(tokens)
    expect = logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, L-1)
    assert lp.shape == tokens.shape
    assert torch.equal(lp[:, 0], torch.zeros(3))  # the first token is given
    torch.testing.assert_close(lp[:, 1:], expect, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(total, expect.sum(-1), atol=1e-4, rtol=1e-5)
    assert (total < 0).all()


def test_log_prob_of_a_hand_set_model(tiny_sizes):
    """Zero every residual branch and the output weight: logits are the output bias b at every
    position, so log p(x) = Σ_{i≥1} log softmax(b)[xⁱ], computable by hand."""
    model = ARTransformer(**tiny_sizes, dropout=0.0).eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn_out.weight.zero_()
            blk.mlp[2].weight.zero_()
            blk.mlp[2].bias.zero_()
        b = torch.zeros(37)
        b[3], b[4] = 2.0, 1.0
        model.output_layer.linear.bias.copy_(b)
        x = torch.tensor([[7, 3, 4, 3]])
        z = 35 + torch.e ** 2 + torch.e  # Σ exp(b): 35 ids with b = 0, then e², e
        expect = (2.0 - torch.log(torch.tensor(z))) * 2 + (1.0 - torch.log(torch.tensor(z)))
        assert model.log_prob(x).item() == pytest.approx(expect.item(), abs=1e-5)


def test_mask_id_is_never_predicted(tiny_sizes, randomize, tokens):
    model = randomize(ARTransformer(**tiny_sizes, dropout=0.0, mask_id=36)).eval()
    with torch.no_grad():
        logits = model(tokens)
    assert torch.isneginf(logits[..., 36]).all()
    assert torch.isfinite(logits[..., :36]).all()
    torch.testing.assert_close(logits.softmax(-1)[..., :36].sum(-1), torch.ones(3, 12))
    x = tokens.clone()
    x[0, 3] = 36
    assert torch.isneginf(model.log_prob(x)[0]) and torch.isfinite(model.log_prob(x)[1:]).all()
    with pytest.raises(ValueError, match="mask_id"):
        ARTransformer(**tiny_sizes, mask_id=37)
    free = ARTransformer(**tiny_sizes, dropout=0.0)  # same weights, no mask id: the other logits are unchanged
    free.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(free.eval()(tokens)[..., :36], logits[..., :36], atol=0, rtol=0)


def test_ar_length_overflow(tiny_ar):
    with pytest.raises(ValueError, match="sequence length 17 exceeds the model's maximum length 16"):
        tiny_ar(torch.zeros(2, 17, dtype=torch.long))


def test_next_token_log_probs_helper_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]]))  # (1, 3, 3)
    x = torch.tensor([[1, 0, 2]])
    lp = next_token_log_probs(logits, x)
    expect = torch.log(torch.tensor([[1.0, 0.5, 0.8]]))  # position 0 given; then p(x¹=0)=0.5, p(x²=2)=0.8
    torch.testing.assert_close(lp, expect)
