"""SPEC 1.6: categorical sampling must be exact; float32 Gumbel/race sampling is not."""

import math

import pytest
import torch
from scipy.stats import chisquare

from edlm.baselines import gumbel_max_float32
from edlm.diffusion.categorical import draw_rows, sample_categorical, top_p_filter, uniform64

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


def _hard_rows(g, n=300, C=50_258):
    """bf16 logits (n, C) with the cases a two-level inversion can get wrong: −∞ stretches, mass only in
    the last (partial) block, a single class with mass, mass on both sides of a block boundary."""
    from edlm.diffusion.categorical import _BLOCK

    logits = (3 * torch.randn(n, C, generator=g)).bfloat16()
    logits[0, : C - 5] = float("-inf")  # all mass in the last, partial block
    logits[1, :] = float("-inf")
    logits[1, 777] = 0.0  # one class only
    logits[2, :] = float("-inf")
    logits[2, [_BLOCK - 1, _BLOCK]] = 0.0  # two classes, either side of the first block boundary
    logits[3, 1000:20000] = float("-inf")  # empty blocks in the middle
    logits[4] = -GAP
    logits[4, 0] = 0.0  # a heavy tail
    return logits


def _flat_draw(logits, u, exclude):
    from edlm.diffusion import categorical

    lp = logits.double()
    if exclude >= 0:
        lp[:, exclude] = float("-inf")
    return categorical._invert(lp, u)


def test_two_level_inversion_gives_the_draws_of_the_full_cdf():
    """K·_BLOCK < C (an IS step: k = 8 draws per row of a 50k vocabulary) takes the blocked path; it must
    draw the same classes as one float64 cumulative sum over the row, for the same uniforms."""
    from edlm.diffusion import categorical

    assert categorical._blocked(50_258, 8) and not categorical._blocked(300, 4)
    g = torch.Generator().manual_seed(6)
    logits = _hard_rows(g)
    u = uniform64((logits.shape[0], 8), g, "cpu")
    u[5:, 0], u[5:, 1] = 0.0, 1 - 2**-53  # the extreme uniforms land on classes with mass
    exclude = logits.shape[1] - 1
    ids, lse = categorical.draw_rows(logits, u, exclude=exclude)
    ref_ids, ref_lse = _flat_draw(logits, u, exclude)
    assert torch.equal(ids, ref_ids)
    # the block sums are more accurate than one running sum over 50k classes (row 4: 3.6e-12 off)
    lp = logits.double().index_fill(-1, torch.tensor([exclude]), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(lp, -1), atol=1e-13, rtol=0)
    torch.testing.assert_close(ref_lse, lse, atol=1e-11, rtol=0)
    picked = logits.gather(1, ids)
    assert torch.isfinite(picked.float()).all() and not (ids == exclude).any()
    assert set(ids[1].tolist()) == {777} and set(ids[2].tolist()) <= {categorical._BLOCK - 1, categorical._BLOCK}


def test_two_level_inversion_matches_the_probabilities():
    """Frequencies of blocked draws (C = 4096, K = 8) against p: chi-square over 64 equal-mass bins."""
    from edlm.diffusion import categorical

    g = torch.Generator().manual_seed(7)
    C, n, K = 4096, 4000, 8
    assert categorical._blocked(C, K)
    logits = 2 * torch.randn(C, generator=g, dtype=torch.float64)
    ids = categorical.draw_rows(logits.expand(n, C), uniform64((n, K), g, "cpu")).checked().ids.reshape(-1)
    p = torch.softmax(logits, 0)
    order = torch.argsort(p)  # bins of about equal mass over the sorted classes
    edges = torch.searchsorted(torch.cumsum(p[order], 0), torch.linspace(0, 1, 65)[1:-1].double())
    bin_of = torch.empty(C, dtype=torch.long)
    bin_of[order] = torch.bucketize(torch.arange(C), edges, right=True)
    observed = torch.bincount(bin_of[ids], minlength=64).double()
    expected = torch.zeros(64, dtype=torch.float64).index_add_(0, bin_of, p) * n * K
    used = expected > 0  # a class heavier than 1/64 leaves a bin empty
    assert used.sum() > 40 and observed[~used].sum() == 0
    assert chisquare(observed[used].numpy(), expected[used].numpy()).pvalue > 1e-4


@pytest.mark.parametrize("fast", [False, True])  # the float64 two-level inversion; `_draw_fast` (CUDA's default)
def test_compiled_two_level_draw_gives_the_same_ids_as_the_eager_draw(monkeypatch, fast):
    from edlm.diffusion import categorical

    monkeypatch.setattr(categorical, "fast_draw", lambda device: fast)
    g = torch.Generator().manual_seed(8)
    logits = _hard_rows(g, n=40, C=5_000)
    index = torch.randint(0, 40, (64,), generator=g)
    index[:5] = torch.arange(5)
    u = uniform64((64, 8), g, "cpu")
    assert categorical._blocked(5_000, 8) and categorical._fast(5_000, 8, logits.device) == fast
    eager = categorical.draw_rows(logits, u, index=index, exclude=12)
    try:
        categorical.compile_draws()
        fused = categorical.draw_rows(logits, u, index=index, exclude=12)
    finally:
        categorical.compile_draws(False)
    assert torch.equal(fused.ids, eager.ids)
    torch.testing.assert_close(fused.lse, eager.lse, atol=1e-12, rtol=0)  # the fast draw's stage 1 is one op in both
    if not fast:
        assert torch.equal(eager.ids, _flat_draw(logits[index], u, 12)[0])


@pytest.mark.parametrize("C, K", [(1_000, 4), (5_000, 8)])  # one-level and two-level inversion
def test_compiled_draw_with_opaque_scans_gives_the_eager_ids(monkeypatch, C, K):
    """Chunks of fewer rows than `_few_rows` (a GPU's 64 · SMs: inductor would split their float64 scans, and its
    split-scan code fails in torch 2.11) run the compiled draw with the cumulative sums as ATen kernels. On the CPU
    `_few_rows` is 0, so it is raised here to make every chunk take that path: the same draws as the eager path."""
    from torch._inductor.utils import run_and_get_code

    from edlm.diffusion import categorical

    g = torch.Generator().manual_seed(11)
    logits = _hard_rows(g, n=40, C=C)
    index = torch.randint(0, 40, (24,), generator=g)
    u = uniform64((24, K), g, "cpu")
    eager = categorical.draw_rows(logits, u, index=index, exclude=12)
    assert categorical._blocked(C, K) == (C > 1_000) and categorical._few_rows(logits.device) == 0
    monkeypatch.setattr(categorical, "_few_rows", lambda device: 10_000)
    try:
        torch._dynamo.reset()
        categorical.compile_draws()
        fused, codes = run_and_get_code(lambda: categorical.draw_rows(logits, u, index=index, exclude=12))
    finally:
        categorical.compile_draws(False)
    code = "\n".join(codes)
    assert code.count("torch.ops.edlm.cumsum_last.default(") == (2 if C > 1_000 else 1)  # the scans, not generated
    assert torch.equal(fused.ids, eager.ids)
    torch.testing.assert_close(fused.lse, eager.lse, atol=1e-12, rtol=0)



# --------------------------------------------------------------------------- the fast draw (K >= 2, GPU by default)
@pytest.fixture
def fast_on_cpu(monkeypatch):
    """Run `_draw_fast` on the CPU too (``edlm.accel.policy.fast_draw`` holds on CUDA devices only)."""
    from edlm.diffusion import categorical

    monkeypatch.setattr(categorical, "fast_draw", lambda device: True)
    return categorical


def test_fast_draw_matches_the_probabilities(fast_on_cpu):
    """Frequencies of fast draws (C = 4096, K = 8) against p, as for the two-level inversion; with the bounds loosened
    so that ~1/3 of the draws are rejected and redrawn, the frequencies still match p (the redraw is exact)."""
    from edlm.accel import block_bounds

    categorical = fast_on_cpu
    g = torch.Generator().manual_seed(7)
    C, n, K = 4096, 4000, 8
    logits = 2 * torch.randn(C, generator=g, dtype=torch.float64)
    p = torch.softmax(logits, 0)
    order = torch.argsort(p)  # bins of about equal mass over the sorted classes
    edges = torch.searchsorted(torch.cumsum(p[order], 0), torch.linspace(0, 1, 65)[1:-1].double())
    bin_of = torch.empty(C, dtype=torch.long)
    bin_of[order] = torch.bucketize(torch.arange(C), edges, right=True)
    expected = torch.zeros(64, dtype=torch.float64).index_add_(0, bin_of, p) * n * K
    used = expected > 0
    redraw, redrawn = categorical._redraw, []

    def counting(source, index, ids, rejected, fresh, exclude):  # the exact redraw, counting its draws
        redrawn.append(int(rejected.sum()))
        return redraw(source, index, ids, rejected, fresh, exclude)

    for rel in (block_bounds._REL, 0.5):
        redrawn.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(block_bounds, "_REL", rel)
            mp.setattr(categorical, "_redraw", counting)
            ids = categorical.draw_rows(logits.float().expand(n, C), uniform64((n, K), g, "cpu")).checked().ids
        assert (sum(redrawn) > 0.2 * n * K) if rel == 0.5 else (sum(redrawn) < 10)
        observed = torch.bincount(bin_of[ids.reshape(-1)], minlength=64).double()
        assert observed[~used].sum() == 0
        assert chisquare(observed[used].numpy(), expected[used].numpy()).pvalue > 1e-4, rel


def test_fast_draw_redraws_in_fixed_slots_without_asking_the_host(fast_on_cpu):
    """``draw_rows(overflow=flag)`` (a step captured as a CUDA graph): with the bounds loosened so that most rows have
    a rejected draw, up to ``REDRAW_SLOTS`` such rows give the ids of the host-synced redraw, and more set the flag."""
    from edlm.accel import block_bounds

    categorical = fast_on_cpu
    g = torch.Generator().manual_seed(8)
    C, K = 4096, 4
    logits = 2 * torch.randn(64, C, generator=g)
    u = uniform64((64, K), g, "cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(block_bounds, "_REL", 0.5)  # ~1/3 of the draws rejected
        for n in (categorical.REDRAW_SLOTS, 64):
            flag = torch.zeros((), dtype=torch.bool)
            slotted = categorical.draw_rows(logits[:n], u[:n], exclude=7, overflow=flag)
            synced = categorical.draw_rows(logits[:n], u[:n], exclude=7)
            torch.testing.assert_close(slotted.lse, synced.lse)
            if n == categorical.REDRAW_SLOTS:  # every row fits in the slots: the same ids as the synced redraw
                assert not flag and torch.equal(slotted.ids, synced.ids)
            else:  # ~55 rows with a rejected draw: the first 16 are redrawn, the flag reports the rest
                assert flag
                assert (slotted.ids != synced.ids).any()
    _, _, rejected, _ = categorical._draw_fast(logits, None, u, 7)  # at the true bounds, rejections are rare
    assert int(rejected.sum()) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_draw_with_slots_is_captured_as_a_cuda_graph():
    """``draw_rows(overflow=flag)`` waits for nothing: it is captured as a CUDA graph, and a replay gives the ids of
    the same draw run eagerly (the fast draw, 50 k classes, k = 2 draws per row)."""
    from edlm.diffusion.categorical import _fast

    dev = torch.device("cuda")
    g = torch.Generator(dev).manual_seed(3)
    logits = 2 * torch.randn(512, 50_258, device=dev, generator=g)
    u = uniform64((512, 2), g, dev)
    assert _fast(logits.shape[1], 2, dev)
    flag = torch.zeros((), dtype=torch.bool, device=dev)
    eager = draw_rows(logits, u, exclude=5, overflow=flag)  # also the warm-up: kernels are built outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = draw_rows(logits, u, exclude=5, overflow=flag)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured.ids, eager.ids) and not flag
    assert torch.equal(eager.ids, draw_rows(logits, u, exclude=5).ids)  # the host-synced redraw: the same ids


def test_fast_draw_on_hard_rows(fast_on_cpu):
    """The hard rows of the two-level test through the fast draw: only classes with mass, never the excluded one,
    the extreme uniforms land on classes with mass, NaN rows reported. The ids are mostly the one-level inversion's:
    r = u · ΣU instead of u · ΣS moves each draw by ~1e-6 of the row's mass, which crosses a class boundary for a
    few % of the draws from these flat 50k-class rows (the same distribution, not the same ids)."""
    categorical = fast_on_cpu
    g = torch.Generator().manual_seed(6)
    logits = _hard_rows(g)
    u = uniform64((logits.shape[0], 8), g, "cpu")
    u[5:, 0], u[5:, 1] = 0.0, 1 - 2**-53
    exclude = logits.shape[1] - 1
    assert categorical._fast(logits.shape[1], 8, logits.device)
    ids, lse = categorical.draw_rows(logits, u, exclude=exclude)
    picked = logits.gather(1, ids)
    assert torch.isfinite(picked.float()).all() and not (ids == exclude).any()
    assert set(ids[1].tolist()) == {777} and set(ids[2].tolist()) <= {categorical._BLOCK - 1, categorical._BLOCK}
    assert (ids[0] >= logits.shape[1] - 5).all()
    ref_ids, ref_lse = _flat_draw(logits, u, exclude)
    assert (ids == ref_ids).float().mean() > 0.9
    torch.testing.assert_close(lse, ref_lse, atol=2e-6, rtol=0)
    bad = logits[:8].clone()
    bad[5, 0] = float("nan")
    bad[6, 3] = float("inf")
    lse_bad = categorical.draw_rows(bad, u[:8]).lse
    assert torch.isnan(lse_bad[5:7]).all() and not torch.isnan(lse_bad[[4, 7]]).any()
