import math

import pytest
import scipy.stats
import torch

from edlm.eval import EntropyOutput, entropy_report, mean_unigram_entropy, unigram_entropy


def test_matches_scipy_on_random_samples():
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 50, (4, 200), generator=g)  # (B, L)
    for row in batch:
        counts = torch.bincount(row).numpy()
        assert unigram_entropy(row, "nats") == pytest.approx(scipy.stats.entropy(counts), rel=1e-12)
        assert unigram_entropy(row.tolist(), "bits") == pytest.approx(scipy.stats.entropy(counts, base=2), rel=1e-12)
    expected = sum(scipy.stats.entropy(torch.bincount(r).numpy()) for r in batch) / 4  # mean over samples
    assert mean_unigram_entropy(batch, "nats") == pytest.approx(expected, rel=1e-12)


def test_hand_values_and_units():
    assert unigram_entropy([7, 7, 7, 7], "nats") == 0.0  # one repeated token
    assert unigram_entropy([1, 2, 3, 4], "bits") == pytest.approx(2.0)  # uniform over 4: log2 4
    assert unigram_entropy([1, 1, 2, 2], "nats") == pytest.approx(math.log(2))
    rep = entropy_report([[1, 1, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]])
    assert isinstance(rep, EntropyOutput) and rep.num_samples == 2
    assert rep.mean_nats == pytest.approx((math.log(2) + math.log(8)) / 2)  # rows of unequal length are fine
    assert rep.mean_bits == pytest.approx(rep.mean_nats / math.log(2))  # bits = nats / ln 2
    assert rep.per_sample_bits == pytest.approx([1.0, 3.0])
    assert "nats" in str(rep) and "bits" in str(rep)


def test_repetitive_sample_has_lower_entropy():
    g = torch.Generator().manual_seed(1)
    varied = torch.randint(0, 1000, (256,), generator=g)
    repetitive = torch.tensor([5, 17, 42, 99] * 64)  # a loop of four tokens: ln 4 nats exactly
    assert unigram_entropy(repetitive) == pytest.approx(math.log(4))
    assert unigram_entropy(varied) > unigram_entropy(repetitive) + 3.0


def test_ignore_ids_drops_padding():
    assert unigram_entropy([1, 2, 0, 0, 0, 0], ignore_ids=[0]) == pytest.approx(math.log(2))
    batch = torch.tensor([[1, 2, 0, 0], [3, 3, 4, 4]])
    assert mean_unigram_entropy(batch, "bits", ignore_ids=[0]) == pytest.approx(1.0)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="base"):
        unigram_entropy([1, 2], "bans")
    with pytest.raises(ValueError, match="empty"):
        unigram_entropy([0, 0], ignore_ids=[0])
    with pytest.raises(ValueError, match="one sample"):
        unigram_entropy(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="unigram_entropy for one sample"):
        mean_unigram_entropy(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="flat list"):
        mean_unigram_entropy([1, 2, 3])
