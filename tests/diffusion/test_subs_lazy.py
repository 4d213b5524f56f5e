"""SubsLogProbs: the loop's lazy x_θ gives the values of subs_log_probs at every row it is asked for."""

import pytest
import torch

from edlm.diffusion.subs import SubsLogProbs, raise_on_faults, subs_log_probs
from edlm.energy import AREnergy
from edlm.errors import NumericalError
from edlm.samplers import ImportanceSampler

V, MASK = 11, 11  # 11 real tokens + [MASK]


def _case(dtype=torch.float32, B=3, L=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(B, L, V + 1, generator=g)).to(dtype)
    logits[..., MASK] = 50.0  # the network would love to predict the mask
    x_0 = torch.randint(0, V, (B, L), generator=g)
    x_t = torch.where(torch.rand(B, L, generator=g) < 0.6, MASK, x_0)
    return logits, x_t, x_0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_gather_and_dense_equal_subs_log_probs(dtype):
    logits, x_t, x_0 = _case(dtype)
    before = logits.clone()
    ref = subs_log_probs(logits, x_t, MASK)  # (B, L, V+1)
    lazy = SubsLogProbs(logits, x_t, MASK)
    assert lazy.shape == ref.shape
    where = torch.ones_like(x_t, dtype=torch.bool)
    where[0, 1] = where[2, 3] = False
    torch.testing.assert_close(lazy[where], ref[where], atol=0, rtol=0)  # masked and carried-over rows
    torch.testing.assert_close(lazy.dense(), ref, atol=0, rtol=0)
    idx = torch.stack([x_0, torch.full_like(x_0, MASK), x_t], -1)  # real token, the mask, x_t itself
    torch.testing.assert_close(lazy.gather(-1, idx), ref.gather(-1, idx), atol=2e-6, rtol=0)
    assert torch.equal(logits, before)  # never writes into the logits


def test_sequence_views_index_without_copies_and_share_the_normalisers():
    logits, x_t, x_0 = _case(B=4)
    ref = subs_log_probs(logits, x_t, MASK)
    lazy = SubsLogProbs(logits, x_t, MASK)
    seqs = torch.tensor([2, 0, 2, 3])
    view = lazy[seqs][torch.tensor([0, 1, 3])]  # views of views: sequences 2, 0, 3
    assert view.logits is logits  # no copy of the logits
    picked = torch.tensor([2, 0, 3])
    torch.testing.assert_close(view.dense(), ref[picked], atol=0, rtol=0)
    torch.testing.assert_close(view.gather(-1, x_0[picked][..., None]), ref[picked].gather(-1, x_0[picked][..., None]),
                               atol=2e-6, rtol=0)
    assert not torch.isnan(lazy._lse[picked][x_t[picked] == MASK]).any()  # the view filled the parent's cache
    with pytest.raises(TypeError):
        lazy[0]


def test_nan_logits_are_refused_where_read_and_only_there():
    logits, x_t, _ = _case()
    x_t[0, 0], x_t[1, 1] = MASK, MASK
    logits[0, 0, 3] = float("nan")
    logits[1, 1, 2] = float("inf")
    lazy = SubsLogProbs(logits, x_t, MASK)
    ok = torch.zeros_like(x_t, dtype=torch.bool)
    ok[2] = True
    assert torch.isfinite(lazy[ok].logsumexp(-1)).all()  # row 2 is clean
    for b, i in ((0, 0), (1, 1)):
        bad = torch.zeros_like(ok)
        bad[b, i] = True
        with pytest.raises(NumericalError, match="NaN"):
            lazy[bad]
    with pytest.raises(NumericalError):
        lazy.gather(-1, torch.zeros(*x_t.shape, 1, dtype=torch.long))
    # with a faults flag (what generate passes) reading the rows does not raise (no host sync) but sets the flag
    faults = torch.zeros((), dtype=torch.bool)
    deferred = SubsLogProbs(logits, x_t, MASK, faults)
    deferred[ok]
    raise_on_faults(faults)  # clean rows only: nothing to report
    deferred[bad]
    assert bool(faults)
    with pytest.raises(NumericalError, match="NaN"):
        raise_on_faults(faults)


def test_samplers_and_ar_energy_give_the_same_results_from_lazy_and_dense_x_theta():
    logits, x_t, x_0 = _case(torch.bfloat16, B=4, L=16, seed=3)
    dense = subs_log_probs(logits, x_t, MASK)
    t, s = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    sampler = ImportanceSampler(MASK, k=5)
    outs = []
    for lp in (dense, SubsLogProbs(logits, x_t, MASK)):
        g = torch.Generator().manual_seed(11)
        reveal, proposals = sampler.propose_step(lp, x_t, t, s, g)
        step = sampler.step(lp, x_t, t, s, g)
        outs.append((reveal, proposals, step.x_s, sampler.finish(lp, x_t)))
    for a, b in zip(*outs):
        assert torch.equal(a, b)

    class ExactAR:  # a fixed bigram table as p_AR
        vocab_size = V

        def token_log_probs(self, x):
            table = torch.log_softmax(torch.arange((V + 1) ** 2, dtype=torch.float32).reshape(V + 1, V + 1).sin(), -1)
            lp = table[x[:, :-1], x[:, 1:]]
            return torch.nn.functional.pad(lp, (1, 0))

    energy = AREnergy(ExactAR(), MASK)
    assert energy.uses_log_p_x0 == "gather"
    rows_of = torch.tensor([0, 0, 1, 3, 3])
    x0 = outs[0][1][rows_of, torch.arange(5) % 5]  # proposals of rows 0, 0, 1, 3, 3
    lazy = SubsLogProbs(logits, x_t, MASK)
    e_dense = energy(x0, x_t[rows_of], None, dense[rows_of])
    e_lazy = energy(x0, x_t[rows_of], None, lazy[rows_of])
    torch.testing.assert_close(e_lazy, e_dense, atol=1e-5, rtol=0)
