"""HFCausalLM: a tiny random GPT-2 (no downloads) behind the ARTransformer interface."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from edlm.models import HFCausalLM


@pytest.fixture
def gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=24)
    return GPT2LMHeadModel(cfg).eval()


def test_log_prob_equals_manual_computation_from_hf_logits(gpt2):
    lm = HFCausalLM(gpt2)
    x = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hf_logits = gpt2(input_ids=x).logits  # (3, 10, 50)
        lp = lm.token_log_probs(x)
        total = lm.log_prob(x)
    manual = torch.zeros(3)
    for b in range(3):
        for i in range(1, 10):
            manual[b] += torch.log_softmax(hf_logits[b, i - 1].double(), -1)[x[b, i]].item()
    assert lp.shape == (3, 10) and torch.equal(lp[:, 0], torch.zeros(3))
    torch.testing.assert_close(total, manual, atol=1e-4, rtol=1e-5)
    assert torch.equal(lm(x), hf_logits)


def test_interface_matches_ar_transformer(gpt2):
    lm = HFCausalLM(gpt2)
    assert lm.vocab_size == 50 and lm.length == 24 and lm.time_conditioned is False
    assert sorted(p for p, _ in lm.named_parameters()) == sorted("model." + p for p, _ in gpt2.named_parameters())


def test_rejects_ids_outside_its_vocabulary_and_overlong_input(gpt2):
    lm = HFCausalLM(gpt2)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 50\)"):
        lm(torch.tensor([[1, 2, 50]]))  # e.g. a [MASK] id appended after GPT-2's vocabulary
    with pytest.raises(ValueError, match="sequence length 25 exceeds the model's maximum length 24"):
        lm(torch.zeros(1, 25, dtype=torch.long))


def test_from_pretrained_reads_a_local_directory(gpt2, tmp_path):
    gpt2.save_pretrained(tmp_path)
    lm = HFCausalLM.from_pretrained(str(tmp_path), load_tokenizer=False)
    assert lm.tokenizer is None and not lm.model.training
    x = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(lm.log_prob(x), HFCausalLM(gpt2).log_prob(x))
