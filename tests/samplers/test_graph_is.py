"""``generate(..., energy=..., k > 1, graph=True)`` (edlm.samplers.graph_is): the planned loop's importance-sampled
steps sample the exact law of the EDLM sampler (SPEC 2.5; ``ExactSIR`` on the toy), match the eager loop inside a
window, call the energy once per step on all B·k proposals, and wait for the host nowhere. On a CPU the steps run
eagerly: the reference that the CUDA graphs replay (the CUDA tests run where a GPU is)."""

import itertools
import math
import warnings

import pytest
import torch

from edlm import generate
from edlm.bench.speed_models import build_networks, speed_config
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.diffusion.subs import SubsLogProbs
from edlm.energy import AREnergy
from edlm.errors import NumericalError
from edlm.samplers.graph_is import ProposalLogProbs
from edlm.toy import ToyJoint, ancestral_distribution, total_variation, total_variation_noise
from edlm.toy.sir import ExactSIR

pytestmark = pytest.mark.usefixtures("one_thread")
SCH = LogLinearSchedule(eps=0.0)
N = 20_000  # samples per law test


@pytest.fixture(scope="module")
def toy():
    return ToyJoint.markov(vocab_size=3, length=4, stay=0.85, seed=0)


class Tables:
    """The toy's exact denoiser and AR model as lookup tables on a device: tensor work alone (the toy itself
    enumerates on the CPU), so that a CUDA graph can capture a step that calls them."""

    time_conditioned = False

    def __init__(self, toy: ToyJoint, device="cpu"):
        V, L, m = toy.vocab_size, toy.length, toy.mask_id
        states = torch.tensor(list(itertools.product(range(m + 1), repeat=L)))  # ((V+1)^L, L), row = its code
        self.logits = toy.denoiser(states).to(device)  # ((V+1)^L, L, V+1)
        self.ar = toy.token_log_probs(toy.sequences).to(device)  # (V^L, L), toy.sequences in base-V order
        self.state_place = ((m + 1) ** torch.arange(L - 1, -1, -1)).to(device)
        self.seq_place = (V ** torch.arange(L - 1, -1, -1)).to(device)
        self.vocab_size, self.length, self.mask_id = V, L, m

    def __call__(self, x_t, t):
        return self.logits[(x_t * self.state_place).sum(-1)]

    def token_log_probs(self, x):
        return self.ar[(x * self.seq_place).sum(-1)]


class Negated:
    """−E: the sign the published EDLM code weights with (w ∝ exp(+E))."""

    def __init__(self, energy):
        self.energy = energy

    def __call__(self, *args):
        return -self.energy(*args)


class DenseAR(AREnergy):
    """The AR energy reading log_p_x0 as a dense (N, L, V+1) tensor (``uses_log_p_x0 = True``)."""

    uses_log_p_x0 = True


class RatioEnergy:
    """The optimum of NCE (SPEC 2.4): −E = the log density ratio; reads no log_p_x0, as ``NCEEnergy``."""

    uses_log_p_x0 = False

    def __init__(self, toy):
        self.toy = toy

    def __call__(self, x_0, x_t, t, log_p_x0):
        return -self.toy.log_density_ratio(x_0, x_t)


def _bound(dist, n=N):
    """mean + 5σ of the TV an exact sampler of n draws shows from sampling noise alone."""
    mean, std = total_variation_noise(dist, n)
    return mean + 5 * std


def _sample(toy, steps, seed, graph=True, n=N, **kw):
    return generate(Tables(toy), toy.length, n, toy.vocab_size, toy.mask_id, steps, schedule=SCH,
                    noise_removal=False, generator=torch.Generator().manual_seed(seed), graph=graph, **kw)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_samples_follow_the_exact_edlm_law(toy, k):
    """T = 2, every step importance-sampled: the samples fit ExactSIR's law of the k-proposal sampler, which k ≥ 2
    moves off MDLM's law, and which the opposite sign of the weights would move elsewhere."""
    energy = AREnergy(Tables(toy), toy.mask_id, carry_over=False)
    out = _sample(toy, 2, seed=k, energy=energy, k=k)
    exact = ExactSIR(toy, AREnergy(toy, toy.mask_id, carry_over=False), k=k).distribution(2)
    bound = _bound(exact)
    assert total_variation(toy.empirical(out.tokens), exact) < bound
    mdlm = ancestral_distribution(toy, 2, SCH)
    if k == 1:  # one proposal has weight 1: MDLM, without an energy call
        assert total_variation(exact, mdlm) < 1e-9 and out.nfe_energy == 0 and out.is_steps == 0
    else:  # the test can tell the EDLM law from MDLM's and from the law of the flipped sign
        flipped = ExactSIR(toy, Negated(AREnergy(toy, toy.mask_id, carry_over=False)), k=k).distribution(2)
        assert total_variation(exact, mdlm) > 3 * bound and total_variation(exact, flipped) > 6 * bound
        assert out.is_steps == out.nfe_energy == out.nfe_denoiser == 2  # one batched energy call per step


def test_one_proposal_gives_the_graph_mdlm_tokens(toy):
    """k = 1 with an energy is MDLM's planned loop draw for draw: the same tokens for the same seed."""
    energy = AREnergy(Tables(toy), toy.mask_id)
    plain = _sample(toy, 8, seed=5, n=500)
    one = _sample(toy, 8, seed=5, n=500, energy=energy, k=1, window=(0.2, 0.9))
    assert torch.equal(plain.tokens, one.tokens) and one.nfe_energy == 0


@pytest.mark.parametrize("energy_kind", ["gather", "dense", "no log_p_x0"])
def test_every_way_an_energy_reads_x_theta(toy, energy_kind):
    """AREnergy's gather view, a dense (N, L, V+1) log_p_x0 and an energy that reads none (NCE's optimum, the log
    density ratio) all give ExactSIR's law with k = 2."""
    tables = Tables(toy)
    energy, reference = {
        "gather": (AREnergy(tables, toy.mask_id, carry_over=False), AREnergy(toy, toy.mask_id, carry_over=False)),
        "dense": (DenseAR(tables, toy.mask_id, carry_over=False), AREnergy(toy, toy.mask_id, carry_over=False)),
        "no log_p_x0": (RatioEnergy(toy), RatioEnergy(toy)),
    }[energy_kind]
    out = _sample(toy, 2, seed=11, energy=energy, k=2)
    exact = ExactSIR(toy, reference, k=2).distribution(2)
    assert total_variation(toy.empirical(out.tokens), exact) < _bound(exact)


def test_window_steps_match_the_eager_loop(toy):
    """Window [0.5, 1] of T = 4 (steps from t = 1, 0.75, 0.5 weighted, 0.25 plain): the planned loop and the eager
    loop sample the same law, which is not MDLM's."""
    energy = AREnergy(Tables(toy), toy.mask_id, carry_over=False)
    kw = dict(energy=energy, k=4, window=(0.5, 1.0))
    graphed = _sample(toy, 4, seed=1, **kw)
    eager = _sample(toy, 4, seed=2, graph=False, **kw)
    bound = _bound(toy.probs)
    emp_graph, emp_eager = toy.empirical(graphed.tokens), toy.empirical(eager.tokens)
    assert total_variation(emp_graph, emp_eager) < 2 * bound
    assert total_variation(emp_graph, ancestral_distribution(toy, 4, SCH)) > 3 * bound
    assert 1 <= graphed.is_steps <= 3 and graphed.nfe_energy == graphed.is_steps


def test_eager_fallback_runs_the_importance_step_on_cpu(toy):
    """On a CPU the planned importance-sampled step runs as is: each energy call gets the B·k proposals (or fixed
    chunks of them), complete and consistent with x_t, in one call per chunk; counts and ESS are reported."""
    calls = []

    class Spy(AREnergy):
        def __call__(self, x_0, x_t, t, log_p_x0):
            calls.append((tuple(x_0.shape), type(log_p_x0), x_0.clone(), x_t.clone(), t.clone()))
            return super().__call__(x_0, x_t, t, log_p_x0)

    B, k, T = 3, 2, 8
    energy = Spy(Tables(toy), toy.mask_id)
    out = _sample(toy, T, seed=0, n=B, energy=energy, k=k)
    assert out.is_steps >= 1 and out.nfe_energy == out.is_steps == len(calls) and out.energy_evals == B * k * len(calls)
    for shape, lp_type, x_0, x_t, t in calls:
        assert shape == (B * k, toy.length) and lp_type is ProposalLogProbs
        assert (x_0 != toy.mask_id).all()  # dense proposals
        carried = x_t != toy.mask_id
        assert torch.equal(x_0[carried], x_t[carried])  # SPEC 1.3(b): unmasked positions identical
        assert torch.equal(x_t[0::k], x_t[1::k]) and (t == t[0]).all()  # k proposals of one x_t at one t
    assert len(out.ess) == out.is_steps and all(1.0 <= e <= k + 1e-9 for e in out.ess)
    assert (out.tokens != toy.mask_id).all()
    # energy_batch_size: fixed chunks of at most 4 of the B·k = 6 proposals, two calls per step
    calls.clear()
    chunked = _sample(toy, T, seed=0, n=B, energy=energy, k=k, energy_batch_size=4)
    assert [c[0][0] for c in calls] == [4, 2] * chunked.is_steps and chunked.nfe_energy == 2 * chunked.is_steps


def test_proposal_log_probs_gather_as_subs_log_probs():
    """ProposalLogProbs.gather gives SubsLogProbs.gather's values (SPEC 1.3) from the draw's log-normalisers."""
    g = torch.Generator().manual_seed(0)
    B, L, V, m, k = 2, 5, 7, 7, 3
    logits = torch.randn(B, L, V + 1, generator=g)
    x_t = torch.randint(0, V, (B, L), generator=g)
    x_t[:, ::2] = m
    lse = torch.logsumexp(logits[..., :m].double(), -1).reshape(-1)  # [MASK] excluded
    seqs = torch.arange(B).repeat_interleave(k)  # (B·k,) proposals' sequences
    index = torch.randint(0, V + 1, (B * k, L, 2), generator=g)
    index[..., 0] = torch.where(x_t[seqs] != m, x_t[seqs], index[..., 0])  # carried tokens at unmasked positions
    view = ProposalLogProbs(logits.reshape(B * L, V + 1), lse, seqs, x_t[seqs], m)
    expected = SubsLogProbs(logits, x_t, m)[seqs].gather(-1, index)
    torch.testing.assert_close(view.gather(-1, index), expected)
    assert torch.isinf(expected).any() and torch.isfinite(expected).any()  # both kinds of entry are compared


def test_an_energy_that_is_not_finite_raises_after_the_loop(toy):
    def nan_energy(x_0, x_t, t, log_p_x0):
        return torch.full((x_0.shape[0],), math.nan)

    nan_energy.uses_log_p_x0 = False
    with pytest.raises(NumericalError, match="the energy returned NaN or inf"):
        _sample(toy, 4, seed=0, n=8, energy=nan_energy, k=2)


@pytest.mark.parametrize("extra", [dict(top_p=0.9), dict(sampler="remask"), dict(sampler="smc", k=1)])
def test_graph_refuses_what_it_does_not_plan(toy, extra):
    with pytest.raises(ValueError, match="graph=True runs sampler='importance' with top_p=1.0"):
        generate(toy, toy.length, 2, toy.vocab_size, toy.mask_id, 2, energy=AREnergy(toy, toy.mask_id),
                 **{"k": 2, **extra}, graph=True)


def _tiny(device):
    cfg = speed_config("tiny")
    return cfg, build_networks(cfg, torch.device(device))


def test_real_networks_sample_planned_edlm_on_cpu():
    """The tiny DiT with the AR energy and the NCE energy: complete samples, one energy call per weighted step."""
    cfg, nets = _tiny("cpu")
    for energy in (AREnergy(nets.ar, cfg.mask_id), nets.nce):
        out = generate(nets.denoiser, cfg.length, 2, cfg.mask_id, cfg.mask_id, 32, energy, k=2, window=(0.8, 1.0),
                       generator=torch.Generator().manual_seed(0), graph=True)
        assert (out.tokens != cfg.mask_id).all() and out.tokens.shape == (2, cfg.length)
        assert 1 <= out.is_steps <= 7 and out.nfe_energy == out.is_steps and out.nfe_denoiser <= 33


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("k", [2, 4])
def test_cuda_graphs_sample_the_exact_edlm_law(toy, k):
    """On CUDA both kinds of step are captured (no warning: nothing waits for the host inside them) and replayed,
    drawing fresh uniforms from the registered generator on each replay; the law is ExactSIR's."""
    dev = torch.device("cuda")
    energy = AREnergy(Tables(toy, dev), toy.mask_id, carry_over=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed capture warns and runs eagerly
        out = generate(Tables(toy, dev), toy.length, N, toy.vocab_size, toy.mask_id, 4, energy=energy, k=k,
                       schedule=SCH, noise_removal=False, generator=torch.Generator(dev).manual_seed(k), device=dev,
                       graph=True)
    exact = ExactSIR(toy, AREnergy(toy, toy.mask_id, carry_over=False), k=k).distribution(4)
    assert out.is_steps == 4 and total_variation(toy.empirical(out.tokens.cpu()), exact) < _bound(exact)


@cuda
def test_a_step_that_cannot_be_captured_runs_eagerly_on_cuda(toy):
    """An energy that waits for the host cannot be captured: the loop warns once and runs that step eagerly, drawing
    from the same generator, and the law is still ExactSIR's."""

    class Syncing(AREnergy):
        def __call__(self, x_0, x_t, t, log_p_x0):
            float(x_0.sum())  # a host sync: refused inside a capture
            return super().__call__(x_0, x_t, t, log_p_x0)

    dev = torch.device("cuda")
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        out = generate(Tables(toy, dev), toy.length, N, toy.vocab_size, toy.mask_id, 4,
                       energy=Syncing(Tables(toy, dev), toy.mask_id, carry_over=False), k=2, schedule=SCH,
                       noise_removal=False, generator=torch.Generator(dev).manual_seed(0), device=dev, graph=True)
    exact = ExactSIR(toy, AREnergy(toy, toy.mask_id, carry_over=False), k=2).distribution(4)
    assert total_variation(toy.empirical(out.tokens.cpu()), exact) < _bound(exact)
    torch.randn(4, device=dev)  # the failed capture left the default generator usable


@cuda
def test_cuda_graphs_capture_the_real_networks():
    """The tiny DiT, AR and NCE networks, compiled as ``edlm sample --compile`` compiles them: the plain and the
    importance-sampled step are captured without warning."""
    from edlm.accel.compiling import compile_networks

    cfg, nets = _tiny("cuda")
    compile_networks(nets.denoiser, nets.ar, nets.nce)
    dev = torch.device("cuda")
    for energy in (AREnergy(nets.ar, cfg.mask_id), nets.nce):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            out = generate(nets.denoiser, cfg.length, 2, cfg.mask_id, cfg.mask_id, 64, energy, k=2,
                           window=(0.5, 1.0), generator=torch.Generator(dev).manual_seed(0), device=dev, graph=True)
        assert (out.tokens != cfg.mask_id).all() and out.is_steps >= 2 and out.nfe_energy == out.is_steps
