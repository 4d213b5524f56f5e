"""SPEC 1.6: categorical sampling must be exact; float32 Gumbel/race sampling is not."""

import math

import pytest
import torch
from scipy.stats import chisquare

from edlm.baselines import gumbel_max_float32
from edlm.diffusion.categorical import sample_categorical, top_p_filter, uniform64

V = 50_000
GAP = 17.0  # each tail class is e^-17 ≈ 4e-8 times as likely as the head class


def _heavy_tail():
    logits = torch.full((V,), -GAP)
    logits[0] = 0.0
    p = torch.softmax(logits.double(), 0)
    return logits, float(1 - p[0])


def test_exact_sampler_respects_zero_and_small_probabilities():
    lp = torch.log(torch.tensor([0.5, 0.0, 0.25, 0.0, 0.25], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    x = sample_categorical(lp, uniform64((200_000,), g, "cpu").reshape(200_000))  # K draws, one row
    counts = torch.bincount(x, minlength=5).double()
    assert counts[1] == 0 and counts[3] == 0
    assert chisquare(counts[[0, 2, 4]].numpy(), [100_000, 50_000, 50_000]).pvalue > 1e-3
    # extreme uniforms still land on classes with p > 0
    u = torch.tensor([0.0, 1 - 2 ** -53], dtype=torch.float64)
    assert sample_categorical(lp.expand(2, 5), u).tolist() == [0, 4]


def test_exact_sampler_matches_heavy_tail_of_50k_classes():
    logits, tail = _heavy_tail()
    g = torch.Generator().manual_seed(1)
    n = 1_000_000
    x = sample_categorical(logits, uniform64((n,), g, "cpu"))  # one shared CDF, n draws
    count = int((x != 0).sum())
    mean, sd = n * tail, math.sqrt(n * tail * (1 - tail))
    assert abs(count - mean) < 4 * sd, (count, mean, sd)
    # the tail draws are spread uniformly over the 49,999 tail classes (no class unreachable)
    assert int(x[x != 0].max()) > V - 1000 and int(x[x != 0].min()) < 1000


@pytest.mark.slow
def test_float32_race_sampler_truncates_the_tail():
    """The published float32 sampler draws the rare classes measurably less often than p says."""
    logits, tail = _heavy_tail()
    g = torch.Generator().manual_seed(2)
    n, chunk, count32 = 30_000, 1_000, 0
    for _ in range(n // chunk):
        count32 += int((gumbel_max_float32(logits.expand(chunk, V), g) != 0).sum())
    mean, sd = n * tail, math.sqrt(n * tail * (1 - tail))
    print(f"tail draws out of {n}: expected {mean:.1f} ± {sd:.1f}, float32 race {count32}")
    assert count32 < mean - 3 * sd
    x = sample_categorical(logits, uniform64((n,), g, "cpu"))  # same n, exact sampler
    assert abs(int((x != 0).sum()) - mean) < 4 * sd


def test_top_p_keeps_the_nucleus():
    lp = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    f = top_p_filter(lp, 0.7).exp()
    torch.testing.assert_close(f, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert torch.equal(top_p_filter(lp, 1.0), lp)
    with pytest.raises(ValueError):
        top_p_filter(lp, 0.0)


def test_chunked_draws_equal_one_shot_draws_and_report_the_log_normaliser(monkeypatch):
    from edlm.diffusion import categorical

    g = torch.Generator().manual_seed(4)
    logits = (3 * torch.randn(37, 50, generator=g)).bfloat16()
    u = uniform64((37, 3), g, "cpu")
    whole, lse = categorical.draw_rows(logits, u, exclude=7)
    monkeypatch.setattr(categorical, "_CHUNK_BYTES", 8 * 50 * 4)  # 4 rows per chunk
    index = torch.arange(36, -1, -1)
    chunked, lse_c = categorical.draw_rows(logits, u.flip(0), index=index, exclude=7)
    assert torch.equal(chunked.flip(0), whole) and torch.equal(lse_c.flip(0), lse)
    assert not (whole == 7).any()  # the excluded class is never drawn
    ref = torch.logsumexp(logits.double().index_fill(-1, torch.tensor([7]), float("-inf")), -1)
    torch.testing.assert_close(lse, ref, atol=1e-12, rtol=0)
    # the same draws as sample_categorical on log-probabilities with the class removed
    lp = torch.log_softmax(logits.double().index_fill(-1, torch.tensor([7]), float("-inf")), -1)
    assert torch.equal(sample_categorical(lp, u), whole)
    bad = logits.clone()
    bad[5, 0] = float("nan")
    assert torch.isnan(categorical.draw_rows(bad, u).lse[5]) and not torch.isnan(categorical.draw_rows(bad, u).lse[4])
    with pytest.raises(FloatingPointError):
        sample_categorical(bad, u)


def test_compiled_draw_gives_the_same_ids_as_the_eager_draw():
    """compile_draws() fuses gather, cast, [MASK] column and exp into the cumulative sum; same draws."""
    from edlm.diffusion import categorical

    g = torch.Generator().manual_seed(5)
    logits = (3 * torch.randn(64, 300, generator=g)).bfloat16()
    index = torch.randint(0, 64, (40,), generator=g)
    u = uniform64((40, 4), g, "cpu")
    eager = categorical.draw_rows(logits, u, index=index, exclude=299)
    try:
        categorical.compile_draws()
        fused = categorical.draw_rows(logits, u, index=index, exclude=299)
        fused_all = categorical.draw_rows(logits, uniform64((64, 2), torch.Generator().manual_seed(1), "cpu"))
    finally:
        categorical.compile_draws(False)
    assert torch.equal(fused[0], eager[0])
    torch.testing.assert_close(fused[1], eager[1], atol=1e-12, rtol=0)
    plain = categorical.draw_rows(logits, uniform64((64, 2), torch.Generator().manual_seed(1), "cpu"))
    assert torch.equal(fused_all[0], plain[0])
