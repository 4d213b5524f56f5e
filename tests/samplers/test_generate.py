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
    # a vocabulary of several blocks (the two-level draw): NaN rows still give ids in range until the end refuses them
    def nan_rows(x_t, t):  # embeds its input, as a network does: an id out of range would fail here
        return torch.nn.functional.embedding(x_t, torch.zeros(700, 700)) + float("nan")

    with pytest.raises(NumericalError, match="denoiser logits"):
        generate(nan_rows, L, 2, 699, 699, 4)
    # plain steps record faults without a host sync; the next IS step (or the end) refuses them
    with pytest.raises(NumericalError, match="denoiser logits"):
        generate(nan_denoiser, L, 2, V, MASK, 8, energy=lambda x_0, x_t, t, lp: torch.zeros(x_0.shape[0]), k=2,
                 window=(0.0, 0.5))

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


def test_compiled_energy_gets_one_shape_and_the_same_samples():
    """A compiled energy would recompile for every new chunk shape: the loop pads the last chunk with
    copies of its last proposal and drops their energies, so the samples do not change."""
    shapes = []

    class LooksCompiled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self._compiled_call_impl = self.forward  # what nn.Module.compile sets (there: the compiled forward)

        def forward(self, x_0, x_t, t, log_p_x0):
            shapes.append((tuple(x_0.shape), tuple(x_t.shape), tuple(t.shape), tuple(log_p_x0.shape)))
            return odd_lover(x_0, x_t, t, log_p_x0)

    plain = generate(RowDenoiser(), L, 4, V, MASK, 3, energy=odd_lover, k=8, energy_batch_size=5,
                     generator=torch.Generator().manual_seed(5))
    padded = generate(RowDenoiser(), L, 4, V, MASK, 3, energy=LooksCompiled(), k=8, energy_batch_size=5,
                      generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain.tokens, padded.tokens)
    assert set(shapes) == {((5, L), (5, L), (5,), (5, L, V + 1))}  # every call, the padded last ones too
    assert padded.energy_evals % 5 != 0  # so some call was padded
    assert padded.nfe_energy == plain.nfe_energy and padded.energy_evals == plain.energy_evals


def test_ar_energy_reads_a_lazy_view_and_gives_the_samples_of_a_dense_copy():
    """AREnergy declares uses_log_p_x0 = "gather": it gets a SubsLogProbs view (no (N, L, V+1) copy); the same
    energy reading dense copies draws the same tokens."""
    from edlm.diffusion.subs import SubsLogProbs
    from edlm.energy import AREnergy

    class Bigram:
        vocab_size = V + 1

        def token_log_probs(self, x):
            table = torch.log_softmax(torch.arange((V + 1) ** 2, dtype=torch.float32).reshape(V + 1, V + 1).cos(), -1)
            return torch.nn.functional.pad(table[x[:, :-1], x[:, 1:]], (1, 0))

    seen = []

    class Dense(AREnergy):
        uses_log_p_x0 = True

        def __call__(self, x_0, x_t, t, log_p_x0):
            seen.append(type(log_p_x0))
            return super().__call__(x_0, x_t, t, log_p_x0)

    class Lazy(Dense):
        uses_log_p_x0 = "gather"

    def denoiser(x_t, t):
        return torch.randn(*x_t.shape, V + 1, generator=torch.Generator().manual_seed(int(x_t.sum())))

    a = generate(denoiser, L, 3, V, MASK, 4, energy=Dense(Bigram(), MASK), k=4, generator=torch.Generator().manual_seed(6))
    b = generate(denoiser, L, 3, V, MASK, 4, energy=Lazy(Bigram(), MASK), k=4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.tokens, b.tokens)
    assert set(seen) == {torch.Tensor, SubsLogProbs}


def test_top_p_restricts_every_path_to_the_nucleus():
    """top_p < 1 on the plain step, on IS proposals and in what the energy is told about them (lazy x_θ is
    made dense for the filter): only nucleus tokens appear, and the energy sees their filtered log-probs."""
    probs = torch.tensor([0.6, 0.3] + [0.1 / (V - 2)] * (V - 2) + [0.0])  # V + 1 classes, [MASK] last

    def denoiser(x_t, t):
        return torch.log(probs.clamp_min(1e-30)).expand(*x_t.shape, V + 1).clone()

    seen = []

    class Gather:
        uses_log_p_x0 = "gather"

        def __call__(self, x_0, x_t, t, log_p_x0):
            lp = log_p_x0.gather(-1, x_0[..., None]).squeeze(-1)
            seen.append(lp[x_t == MASK])
            return torch.zeros(x_0.shape[0])

    g = torch.Generator().manual_seed(7)
    plain = generate(denoiser, L, 16, V, MASK, 4, top_p=0.5, generator=g)
    assert (plain.tokens == 0).all()  # the nucleus at 0.5 is class 0 alone
    wide = generate(denoiser, L, 16, V, MASK, 4, top_p=0.8, energy=Gather(), k=4, generator=g)
    assert set(wide.tokens.unique().tolist()) == {0, 1}
    lp = torch.cat(seen)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp.exp().unique().sort().values, torch.tensor([1 / 3, 2 / 3]))  # renormalised nucleus
