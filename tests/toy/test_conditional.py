"""Conditional generation on the exact toy: fixed tokens (a prompt, an infill template) are never masked.

The target is p(x | x^F = c) (``ToyJoint.conditional``); the T-step process started from x_init is
``ancestral_distribution(..., x_init=...)``. Both are checked against brute force here, then the samplers
against them: MDLM reaches the conditional with many steps, is off it at T = 2, EDLM-AR with the exact
AR energy corrects that, and every sampler keeps the fixed tokens bit for bit while the energy sees them.
"""

import functools
import itertools
import math

import pytest
import torch

import edlm.samplers.semi_ar as semi_ar
from edlm import generate
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy import AREnergy
from edlm.toy import ToyJoint, ancestral_distribution, total_variation, total_variation_noise

SCH = LogLinearSchedule(eps=0.0)  # α_1 = 0: the last step of the distribution tests reveals everything
N_SAMPLES = 20_000
PREFIX = {0: 1}  # F = {0}: a one-token prompt
INFILL = {0: 0, 3: 2}  # F = {0, 3}: fill the middle between fixed ends
# a mixed batch of templates; the last two fix every position / none
TEMPLATES = [PREFIX, INFILL, {1: 2, 2: 0}, {0: 2, 1: 2, 2: 1, 3: 0}, {}]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The toy's tensors are tiny: intra-op threads only add synchronisation (and stall on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy():
    return ToyJoint.markov(vocab_size=3, length=4, stay=0.85, seed=0)


def _sample(toy, fixed, n, steps, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    kw.setdefault("schedule", SCH)
    kw.setdefault("noise_removal", False)
    x_init = toy.template(fixed).expand(n, toy.length)
    return generate(toy, toy.length, n, toy.vocab_size, toy.mask_id, steps, generator=g, x_init=x_init, **kw)


def _tv_bound(dist, n, seed=0):
    """A bound on the TV of n samples from dist to dist that a correct sampler ~never exceeds: mean + 5σ."""
    mean, std = total_variation_noise(dist, n, reps=200, seed=seed)
    return mean + 5 * std


# ---------------------------------------------------------------------------------------------- brute force
def _brute_conditional(toy, fixed):
    """p(x | x^F = c) by a plain loop over all V^L sequences."""
    out = torch.zeros(toy.probs.numel(), dtype=torch.float64)
    for x in itertools.product(range(toy.vocab_size), repeat=toy.length):
        if all(x[i] == v for i, v in fixed.items()):
            idx = sum(v * toy.vocab_size ** (toy.length - 1 - i) for i, v in enumerate(x))
            out[idx] = float(toy.log_prob(torch.tensor([x]))[0].exp())
    return out / out.sum()


def _brute_process(toy, steps, fixed, schedule):
    """The T-step process from x_init, summed another way: over when each free position is revealed.

    Position i ∉ F is revealed at step j with probability Π_{l<j}(1 − r_l)·r_j (r_j: SPEC 1.4's reveal
    probability; the last step reveals all); positions revealed at the same step draw independently from
    p(xⁱ | tokens known before that step) (computed here by a loop over sequences), in step order.
    """
    L = toy.length
    seqs = [tuple(int(v) for v in s) for s in toy.sequences]
    probs = [float(p) for p in toy.probs]
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    alpha = [float(schedule.alpha(t)) for t in grid]
    r = [(a_s - a_t) / (1 - a_t) for a_t, a_s in zip(alpha, alpha[1:])]
    p_step = [math.prod(1 - q for q in r[:j]) * r[j] for j in range(steps)]

    @functools.cache
    def marginal(known, i, v):  # p(xⁱ = v | x^known), known a tuple of (position, value)
        num = den = 0.0
        for s, p in zip(seqs, probs):
            if all(s[a] == b for a, b in known):
                den += p
                num += p * (s[i] == v)
        return num / den

    free = [i for i in range(L) if i not in fixed]
    out = torch.zeros(len(seqs), dtype=torch.float64)
    for when in itertools.product(range(steps), repeat=len(free)):
        w = math.prod(p_step[j] for j in when)
        if w == 0:
            continue
        for idx, s in enumerate(seqs):
            if any(s[i] != v for i, v in fixed.items()):
                continue
            known = dict(fixed)
            p = w
            for j in sorted(set(when)):
                group = [i for i, wi in zip(free, when) if wi == j]
                key = tuple(sorted(known.items()))
                p *= math.prod(marginal(key, i, s[i]) for i in group)
                known.update({i: s[i] for i in group})
            out[idx] += p
    return out


def test_conditional_target_is_exact(toy):
    """``conditional`` = brute force; for a prefix it is also the AR chain rule of the free positions."""
    for fixed in (PREFIX, INFILL, {1: 2, 2: 0}, {}):
        cond = toy.conditional(fixed)
        torch.testing.assert_close(cond, _brute_conditional(toy, fixed), rtol=0, atol=1e-14)
        torch.testing.assert_close(toy.conditional(toy.template(fixed)), cond, rtol=0, atol=0)
        assert abs(float(cond.sum()) - 1) < 1e-12
    torch.testing.assert_close(toy.conditional({}), toy.probs, rtol=0, atol=1e-15)
    cond = toy.conditional(PREFIX)
    ok = toy.sequences[:, 0] == 1
    chain = toy.token_log_probs(toy.sequences[ok])[:, 1:].sum(-1).exp()  # Π_{i≥1} p(xⁱ | x^{<i})
    torch.testing.assert_close(cond[ok], chain, rtol=1e-12, atol=0)
    assert float(cond[~ok].abs().max()) == 0.0
    with pytest.raises(ValueError):
        toy.template({4: 0})
    with pytest.raises(ValueError):
        toy.template({0: 3})  # the mask id is not a token


def test_conditional_process_matches_brute_force(toy):
    """``ancestral_distribution(x_init=...)`` = the reveal-time sum; fixed tokens keep their values; no start
    state is the all-masked start."""
    for fixed in (PREFIX, INFILL, {1: 2, 2: 0}):
        for T in (1, 2, 3):
            q = ancestral_distribution(toy, T, SCH, x_init=toy.template(fixed))
            torch.testing.assert_close(q, _brute_process(toy, T, fixed, SCH), rtol=0, atol=1e-12)
            off = torch.ones_like(q, dtype=torch.bool)
            off[toy.conditional(fixed) > 0] = False
            assert float(q[off].sum()) == 0.0  # only sequences with x^F = c
    for T in (1, 2):
        torch.testing.assert_close(ancestral_distribution(toy, T, SCH, x_init=toy.template({})),
                                   ancestral_distribution(toy, T, SCH), rtol=0, atol=0)
    all_fixed = toy.template(TEMPLATES[3])
    assert float(ancestral_distribution(toy, 2, SCH, x_init=all_fixed)[toy.index_of(all_fixed[None])]) == 1.0


def test_conditional_process_bias_falls_with_steps(toy):
    """The T-step conditional process is off the target by ~c/T: not exact at T = L, exact as T grows.
    With F = {1, 3} the free positions 0 and 2 are independent given x^F (a Markov blanket), so even
    T = 1 is exact."""
    for fixed in (PREFIX, INFILL):
        target = toy.conditional(fixed)
        tv = {T: total_variation(ancestral_distribution(toy, T, SCH, x_init=toy.template(fixed)), target)
              for T in (1, 2, 4, 16, 64)}
        assert all(a > b for a, b in zip(tv.values(), list(tv.values())[1:]))
        assert tv[2] > 0.1 and tv[64] < 0.006
        assert abs(tv[16] * 16 - tv[64] * 64) < 0.05 * tv[16] * 16  # the 1/T rate
    blanket = {1: 0, 3: 2}
    q1 = ancestral_distribution(toy, 1, SCH, x_init=toy.template(blanket))
    assert total_variation(q1, toy.conditional(blanket)) < 1e-12


# ---------------------------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("fixed", [PREFIX, INFILL], ids=["prefix", "infill"])
def test_mdlm_conditional_many_steps_matches_target(toy, fixed):
    """T ≥ L (cached): the sampler is the enumerated T-step process, and with T = 256 that is the target."""
    target = toy.conditional(fixed)
    # T = L: the sampler draws the enumerated 4-step process (itself ~0.06–0.09 from the target)
    q4 = ancestral_distribution(toy, toy.length, SCH, x_init=toy.template(fixed))
    out4 = _sample(toy, fixed, N_SAMPLES, toy.length, seed=21)
    assert total_variation(toy.empirical(out4.tokens), q4) < _tv_bound(q4, N_SAMPLES)
    assert total_variation(q4, target) > 3 * _tv_bound(target, N_SAMPLES)  # T = L is not enough
    # T = 256: its process is 0.001 from the target; the samples sit within sampling noise of it
    q = ancestral_distribution(toy, 256, SCH, x_init=toy.template(fixed))
    bias = total_variation(q, target)
    out = _sample(toy, fixed, N_SAMPLES, 256, seed=22)
    tv = total_variation(toy.empirical(out.tokens), target)
    noise, _ = total_variation_noise(target, N_SAMPLES, reps=200)
    print(f"{fixed}: TV(MDLM T=256, target) = {tv:.4f}, noise {noise:.4f}, process bias {bias:.4f}")
    assert bias < 0.002
    assert tv < _tv_bound(target, N_SAMPLES) + bias
    assert total_variation(toy.empirical(out.tokens), q) < _tv_bound(q, N_SAMPLES)


@pytest.mark.parametrize("fixed", [PREFIX, INFILL], ids=["prefix", "infill"])
def test_edlm_ar_corrects_conditional_at_two_steps(toy, fixed):
    """T = 2: MDLM is the (off-target) 2-step process; EDLM-AR with the exact AR energy cuts the TV."""
    target = toy.conditional(fixed)
    bound = _tv_bound(target, N_SAMPLES)
    q2 = ancestral_distribution(toy, 2, SCH, x_init=toy.template(fixed))
    mdlm = _sample(toy, fixed, N_SAMPLES, 2, seed=31)
    assert total_variation(toy.empirical(mdlm.tokens), q2) < _tv_bound(q2, N_SAMPLES)
    tv_mdlm = total_variation(toy.empirical(mdlm.tokens), target)
    energy = AREnergy(toy, toy.mask_id, carry_over=False)  # the exact energy: fixed tokens' AR terms kept
    is1 = _sample(toy, fixed, N_SAMPLES, 2, seed=31, energy=energy, k=1)
    assert torch.equal(is1.tokens, mdlm.tokens)  # k = 1 is MDLM, bit for bit
    edlm = _sample(toy, fixed, N_SAMPLES, 2, seed=31, energy=energy, k=16)
    tv_edlm = total_variation(toy.empirical(edlm.tokens), target)
    print(f"{fixed}: TV at T=2 MDLM {tv_mdlm:.4f} (exact {total_variation(q2, target):.4f}), "
          f"EDLM k=16 {tv_edlm:.4f}, noise bound {bound:.4f}")
    assert tv_mdlm > 0.1 > 5 * bound  # measurably off
    assert tv_edlm < 0.5 * tv_mdlm
    assert edlm.is_steps == 2 and edlm.nfe_energy == 2


def test_carry_over_ignores_a_fixed_suffix_and_the_exact_energy_does_not(toy):
    """The paper's carry-over (SPEC 2.3) drops the AR terms of every unmasked position, also of fixed tokens after a
    masked one, whose terms depend on the proposals: on an infill template it steers away from the target (TV
    0.49 against MDLM's 0.12), while the exact AR log-ratio (carry_over=False) cuts MDLM's TV tenfold. Conditional
    generation with an AR energy wants carry_over=False."""
    target = toy.conditional(INFILL)
    mdlm = _sample(toy, INFILL, N_SAMPLES, 2, seed=31)
    tv = {"mdlm": total_variation(toy.empirical(mdlm.tokens), target)}
    for carry_over in (True, False):
        edlm = _sample(toy, INFILL, N_SAMPLES, 2, seed=31, energy=AREnergy(toy, toy.mask_id, carry_over=carry_over),
                       k=16)
        tv[carry_over] = total_variation(toy.empirical(edlm.tokens), target)
    assert tv[True] > 2 * tv["mdlm"] and tv[False] < 0.25 * tv["mdlm"], tv


class _Recorder:
    """Wraps a denoiser or an energy and keeps a copy of every call's inputs."""

    def __init__(self, fn, **attrs):
        self.fn, self.calls = fn, []
        self.__dict__.update(attrs)

    def __call__(self, *args):
        self.calls.append(tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
        return self.fn(*args)


def _mixed_batch(toy, rows_per_template=40):
    x_init = torch.stack([toy.template(f) for f in TEMPLATES]).repeat_interleave(rows_per_template, 0)
    return x_init, x_init != toy.mask_id  # (B, L) start, (B, L) fixed positions


SETTINGS = {
    "mdlm-cached": dict(steps=3),
    "mdlm-uncached": dict(steps=3, cache=False),
    "mdlm-one-step": dict(steps=1),
    "mdlm-noise-removal": dict(steps=2, noise_removal=True),
    "mdlm-top-p": dict(steps=4, top_p=0.6),
    "edlm-exact": dict(steps=3, energy="exact", k=8),
    "edlm-carry-over": dict(steps=3, energy="carry", k=8),
    "edlm-window-top-p": dict(steps=5, energy="exact", k=4, window=(0.4, 0.8), top_p=0.8, noise_removal=True),
    "edlm-cold": dict(steps=2, energy="exact", k=8, temperature=0.3),
    "edlm-hot-uncached": dict(steps=2, energy="carry", k=8, temperature=3.0, cache=False),
    "smc": dict(steps=3, energy="exact", sampler="smc", particles=4),
    "smc-always-resample-noise-removal": dict(steps=3, energy="exact", sampler="smc", particles=3, ess_threshold=1.0,
                                              noise_removal=True),
    "adaptive": dict(steps=4, energy="exact", sampler="adaptive", budget=8),
    "remask-energy": dict(steps=6, energy="exact", sampler="remask", k=4, remask_eta=0.5, remask_window=(0.0, 1.0)),
    "remask-proxy-noise-removal": dict(steps=6, sampler="remask", remask_eta=0.5, remask_window=(0.0, 1.0),
                                       noise_removal=True),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_fixed_tokens_survive_every_sampler(toy, name):
    """Rows with different templates in one batch: x^F = c in every denoiser input and every output row."""
    kw = dict(SETTINGS[name])
    steps = kw.pop("steps")
    if "energy" in kw:
        kw["energy"] = AREnergy(toy, toy.mask_id, carry_over=kw["energy"] == "carry")
    kw.setdefault("schedule", SCH)
    kw.setdefault("noise_removal", False)
    x_init, fixed = _mixed_batch(toy)
    den = _Recorder(toy.denoiser, time_conditioned=False)
    out = generate(den, toy.length, x_init.shape[0], toy.vocab_size, toy.mask_id, steps,
                   generator=torch.Generator().manual_seed(41), x_init=x_init.clone(), **kw)
    assert torch.equal(out.tokens[fixed], x_init[fixed])
    assert (out.tokens != toy.mask_id).all()
    assert len(den.calls) == out.nfe_denoiser >= 1
    for x_t, _ in den.calls:
        rows = x_t.shape[0] // x_init.shape[0]  # SMC calls the denoiser on every particle of every sequence
        assert torch.equal(x_t[fixed.repeat_interleave(rows, 0)], x_init.repeat_interleave(rows, 0)[
            fixed.repeat_interleave(rows, 0)])  # never masked, never changed on the way


def test_cache_counts_fixed_tokens_as_revealed(toy):
    """B = 1, T = 256: one denoiser call per unmasking event among the free positions only (≤ |free|), and
    cached = uncached bit for bit from a partial start; an all-fixed start comes back unchanged."""
    for fixed in (PREFIX, INFILL, {1: 2, 2: 0}):
        free = toy.length - len(fixed)
        for seed in range(8):
            one = _sample(toy, fixed, 1, 256, seed=seed)
            assert one.nfe_denoiser <= free
        for noise_removal in (False, True):
            a = _sample(toy, fixed, 8, 64, seed=5, noise_removal=noise_removal)
            b = _sample(toy, fixed, 8, 64, seed=5, noise_removal=noise_removal, cache=False)
            assert torch.equal(a.tokens, b.tokens) and a.nfe_denoiser < b.nfe_denoiser
    full = toy.template(TEMPLATES[3])
    out = _sample(toy, TEMPLATES[3], 4, 8, seed=0)
    assert torch.equal(out.tokens, full.expand(4, -1)) and out.nfe_denoiser <= 1


@pytest.mark.parametrize("fixed", [PREFIX, INFILL], ids=["prefix", "infill"])
@pytest.mark.parametrize("carry_over", [False, True], ids=["exact", "carry-over"])
def test_energy_sees_fixed_tokens(toy, fixed, carry_over):
    """At every IS step the energy gets full x_0 (fixed tokens in place, no mask) and the x_t it extends."""
    energy = _Recorder(AREnergy(toy, toy.mask_id, carry_over=carry_over), uses_log_p_x0="gather")
    k, steps, n = 6, 4, 50
    out = _sample(toy, fixed, n, steps, seed=51, energy=energy, k=k)
    pos, val = torch.tensor(list(fixed)), torch.tensor(list(fixed.values()))
    assert (out.tokens[:, pos] == val).all()
    assert len(energy.calls) == out.nfe_energy == out.is_steps >= 2
    assert sum(c[0].shape[0] for c in energy.calls) == out.energy_evals
    for x_0, x_t, _, _ in energy.calls:
        assert x_0.shape[0] % k == 0 and x_0.shape == x_t.shape
        assert (x_0[:, pos] == val).all() and (x_t[:, pos] == val).all()
        assert (x_0 != toy.mask_id).all()
        unmasked = x_t != toy.mask_id
        assert torch.equal(x_0[unmasked], x_t[unmasked])  # proposals change masked positions only
        assert (~unmasked).any(-1).all()  # only rows with something left to reveal are scored


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("use_energy", [False, True], ids=["mdlm", "edlm"])
def test_semi_ar_keeps_each_blocks_prefix(toy, monkeypatch, stride, use_energy):
    """Semi-AR: block j + 1 starts from block j's last L − S tokens; they come out of it unchanged."""
    blocks = []

    def recording_generate(*args, **kw):
        out = generate(*args, **kw)
        blocks.append((kw.get("x_init"), out.tokens.clone()))
        return out

    monkeypatch.setattr(semi_ar, "generate", recording_generate)
    L, B, total = toy.length, 64, 11
    kw = dict(energy=AREnergy(toy, toy.mask_id, carry_over=False), k=4) if use_energy else {}
    out = semi_ar.generate_semi_ar(toy, total, L, stride, B, toy.vocab_size, toy.mask_id, 3,
                                   generator=torch.Generator().manual_seed(61), **kw)
    assert out.tokens.shape == (B, total) and (out.tokens != toy.mask_id).all()
    assert blocks[0][0] is None and len(blocks) == 1 + math.ceil((total - L) / stride)
    for j in range(1, len(blocks)):
        x_init, tokens = blocks[j]
        prev = blocks[j - 1][1]
        assert torch.equal(x_init[:, : L - stride], prev[:, stride:])
        assert (x_init[:, L - stride:] == toy.mask_id).all()
        assert torch.equal(tokens[:, : L - stride], prev[:, stride:])  # the fixed prefix survived
        cover = out.tokens[:, j * stride: j * stride + L]  # block j is this window of the output
        assert torch.equal(tokens[:, : cover.shape[1]], cover)


def test_semi_ar_starts_from_a_prompt(toy):
    """A prompt (x_init) starts the first block of a semi-AR run; its tokens come out unchanged."""
    B, total, stride = 32, 9, 2
    x_init = toy.template(PREFIX)[None].repeat(B, 1)
    out = semi_ar.generate_semi_ar(toy, total, toy.length, stride, B, toy.vocab_size, toy.mask_id, 3,
                                   generator=torch.Generator().manual_seed(71), x_init=x_init,
                                   energy=AREnergy(toy, toy.mask_id, carry_over=False), k=4)
    pos, val = torch.tensor(list(PREFIX)), torch.tensor(list(PREFIX.values()))
    assert out.tokens.shape == (B, total) and (out.tokens[:, pos] == val).all()
    assert (out.tokens != toy.mask_id).all()
