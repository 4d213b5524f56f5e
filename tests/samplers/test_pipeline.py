"""``edlm.loading`` and ``edlm.pipeline``: load a denoiser + energy from checkpoints, sample batch by batch, write
JSONL."""

import json

import pytest
import torch

from edlm.accel import compiling
from edlm.data.tokenizers import char_tokenizer_from_text
from edlm.diffusion.schedules import get_schedule
from edlm.energy import AREnergy, TextLMEnergy
from edlm.errors import CheckpointError, ConfigError
from edlm.loading import EnergySpec, load_denoiser_bundle, load_energy, parse_energy_spec
from edlm.models import ARTransformer, Denoiser, DiT, save_pretrained
from edlm.pipeline import SampleRecord, SampleSettings, sample, write_jsonl
from edlm.samplers import ImportanceSampler

TEXT = "the quick brown fox jumps over the lazy dog"  # 27 characters + 4 specials = 31 ids, [MASK] = 30
OTHER = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"  # same size, other strings: a different tokenizer
L = 16


def _randomize(model, seed=0):
    """MDLM's init zeroes the output layer; random weights make the samples depend on the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def _ar(tok, length=L):
    return _randomize(ARTransformer(len(tok), length, hidden_size=32, n_blocks=1, n_heads=2, dropout=0.0,
                                    mask_id=tok.mask_token_id), seed=1)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Paths of a tiny DiT denoiser and AR energies (same / other tokenizer, short context), saved with tokenizers."""
    root = tmp_path_factory.mktemp("ckpts")
    tok, other = char_tokenizer_from_text(TEXT), char_tokenizer_from_text(OTHER)
    assert len(tok) == len(other)
    dit = _randomize(DiT(len(tok), L, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.0))
    save_pretrained(Denoiser(dit, get_schedule("loglinear"), tok.mask_token_id), root / "dit", tokenizer=tok)
    save_pretrained(dit, root / "run" / "model", tokenizer=tok)  # the layout of an `edlm train` run dir
    save_pretrained(dit, root / "dit_no_tok")
    save_pretrained(_ar(tok), root / "ar", tokenizer=tok)
    save_pretrained(_ar(other), root / "ar_other_tok", tokenizer=other)
    save_pretrained(_ar(tok, length=8), root / "ar_short", tokenizer=tok)
    save_pretrained(_ar(tok), root / "ar_no_tok")
    return {p.name: p for p in root.iterdir()} | {"root": root, "tok": tok, "model": dit}


@pytest.fixture(scope="module")
def bundle(ckpts):
    return load_denoiser_bundle(ckpts["dit"])


def _run(bundle, **kw):
    settings = dict(num_samples=3, batch_size=2, length=None, steps=4, progress=False) | kw
    return sample(bundle, **settings)


def _tokens(records):
    return torch.tensor([r.tokens for r in records])


# ----------------------------------------------------------------------------- loading
def test_bundle_round_trip(ckpts, bundle):
    tok = ckpts["tok"]
    assert (bundle.vocab_size, bundle.mask_id, bundle.length) == (len(tok) - 1, tok.mask_token_id, L)
    assert bundle.path == ckpts["dit"] and not bundle.denoiser.training
    assert bundle.tokenizer.get_vocab() == tok.get_vocab()
    x = torch.randint(0, len(tok), (2, L))
    with torch.no_grad():
        torch.testing.assert_close(bundle.denoiser(x, torch.full((2,), 0.5)), ckpts["model"](x))


def test_run_directory_resolves_to_its_model(ckpts):
    assert load_denoiser_bundle(ckpts["run"]).path == ckpts["run"] / "model"


def test_an_ar_checkpoint_is_not_a_denoiser(ckpts):
    with pytest.raises(CheckpointError, match=r"type 'ar', not a diffusion denoiser.*--energy ar:"):
        load_denoiser_bundle(ckpts["ar"])


def test_missing_path_and_missing_tokenizer(ckpts):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_denoiser_bundle(ckpts["root"] / "nope")
    with pytest.raises(CheckpointError, match="no tokenizer saved with the denoiser"):
        load_denoiser_bundle(ckpts["dit_no_tok"])
    assert load_denoiser_bundle(ckpts["dit_no_tok"], tokenizer=ckpts["dit"]).mask_id == 30  # given explicitly


@pytest.mark.parametrize("spec, expected", [
    (None, None), ("none", None), (" NONE ", None),
    ("ar:/a/b", EnergySpec("ar", "/a/b")),
    ("ar:/a,b/c", EnergySpec("ar", "/a,b/c")),  # a comma in a path is not an option
    ("hf:gpt2,carry_over=false", EnergySpec("hf", "gpt2", carry_over=False)),
    ("AR:x, carry_over = True", EnergySpec("ar", "x", carry_over=True)),
    ("nce:/runs/nce", EnergySpec("nce", "/runs/nce")),
    ("hf:smollm2,dtype=BFloat16", EnergySpec("hf", "smollm2", dtype="bfloat16")),
    ("hf:x,carry_over=false,dtype=float16", EnergySpec("hf", "x", carry_over=False, dtype="float16")),
])
def test_parse_energy_spec(spec, expected):
    assert parse_energy_spec(spec) == expected
    if expected is not None:
        assert parse_energy_spec(str(expected)) == expected  # str() round-trips


@pytest.mark.parametrize("spec, fragment", [
    ("gpt2", "bad energy spec"), ("foo:x", "bad energy spec"), ("ar:", "needs a path"),
    ("ar:x,carry_over=maybe", "true or false"), ("ar:x,temp=2", "unknown energy option 'temp'"),
    ("ar:x,carry_over=0,carry_over=1", "given twice"), ("nce:x,carry_over=false", "AR energies (ar:, hf:) only"),
    ("hf:x,dtype=int8", "dtype must be one of"), ("ar:x,dtype=bfloat16", "hf: energies only"),
])
def test_bad_energy_specs(spec, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_energy_spec(spec)


def test_load_ar_energy(ckpts, bundle):
    energy = load_energy(f"ar:{ckpts['ar']},carry_over=false", bundle)
    assert isinstance(energy, AREnergy) and energy.carry_over is False and energy.mask_id == bundle.mask_id
    assert energy.spec == f"ar:{ckpts['ar']},carry_over=false"
    assert load_energy(f"ar:{ckpts['ar']}", bundle).carry_over is True
    assert load_energy("none", bundle) is None


@pytest.mark.parametrize("name, error, fragment", [
    ("ar_other_tok", ValueError, "tokenizer mismatch between the denoiser and the energy"),
    ("ar_no_tok", CheckpointError, "no tokenizer saved with the energy"),
    ("dit", CheckpointError, "type 'dit', but the energy ar: needs type 'ar'"),
    ("nope", CheckpointError, "no such checkpoint directory"),
])
def test_load_energy_refuses(ckpts, bundle, name, error, fragment):
    with pytest.raises(error, match=fragment):
        load_energy(f"ar:{ckpts['root'] / name}", bundle)


def test_hf_energy_from_a_local_directory(tmp_path, ckpts, bundle):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = ckpts["tok"]  # the HF model knows the V real tokens, not [MASK]
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok) - 1, n_positions=L, n_embd=16, n_layer=1,
                               n_head=2)).save_pretrained(tmp_path / "hf")
    tok.save_pretrained(str(tmp_path / "hf"))
    energy = load_energy(f"hf:{tmp_path / 'hf'}", bundle)
    assert isinstance(energy, AREnergy) and energy.vocab_size == bundle.vocab_size
    records = _run(bundle, energy=energy, k=3, num_samples=2)
    assert records[0].nfe_energy > 0 and _tokens(records).shape == (2, L)
    char_tokenizer_from_text(OTHER).save_pretrained(str(tmp_path / "hf"))  # another tokenizer: scored through text
    assert isinstance(load_energy(f"hf:{tmp_path / 'hf'}", bundle), TextLMEnergy)


def test_nce_energy(tmp_path, ckpts, bundle):
    nce = pytest.importorskip("edlm.energy.nce_energy")
    energy = _randomize(nce.NCEEnergy.from_denoiser(ckpts["dit"], dropout=0.0), seed=2)
    save_pretrained(energy, tmp_path / "nce", tokenizer=ckpts["tok"])
    loaded = load_energy(f"nce:{tmp_path / 'nce'}", bundle)
    assert loaded.spec == f"nce:{tmp_path / 'nce'}"
    a = _run(bundle, energy=loaded, k=4, seed=5)
    assert a[0].nfe_energy > 0 and torch.equal(_tokens(a), _tokens(_run(bundle, energy=loaded, k=4, seed=5)))
    with pytest.raises(CheckpointError, match="type 'ar', but the energy nce: needs type 'nce_energy'"):
        load_energy(f"nce:{ckpts['ar']}", bundle)


# ----------------------------------------------------------------------------- sampling
def test_mdlm_samples(bundle):
    records = _run(bundle, num_samples=5, batch_size=2)
    tokens = _tokens(records)
    assert tokens.shape == (5, L) and not (tokens == bundle.mask_id).any()
    assert [r.index for r in records] == list(range(5))
    for r in records:
        assert r.text == bundle.tokenizer.decode(r.tokens, skip_special_tokens=True)
        assert r.seconds > 0 and 0 < r.nfe_denoiser <= 4 + 1 and r.nfe_energy == 0
        assert r.settings["energy"] == "none" and r.settings["steps"] == 4 and r.settings["length"] == L
    json.dumps([r.to_json() for r in records])  # JSON-able as is


def test_seeds(bundle):
    a, b, c = (_tokens(_run(bundle, seed=s)) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_edlm_ar_seeds(ckpts, bundle):
    energy = load_energy(f"ar:{ckpts['ar']}", bundle)
    a, b, c = (_run(bundle, energy=energy, k=4, seed=s) for s in (3, 3, 4))
    assert torch.equal(_tokens(a), _tokens(b)) and not torch.equal(_tokens(a), _tokens(c))
    assert all(r.nfe_energy > 0 for r in a) and not (_tokens(a) == bundle.mask_id).any()
    assert a[0].settings["k"] == 4 and a[0].settings["energy"] == f"ar:{ckpts['ar']}"


@pytest.mark.slow
def test_compiled_sampling_is_frozen_and_draws_the_eager_tokens(ckpts):
    from edlm.diffusion import categorical

    eager_bundle = load_denoiser_bundle(ckpts["dit"])
    eager = _run(eager_bundle, energy=load_energy(f"ar:{ckpts['ar']}", eager_bundle), k=4, seed=3)
    fresh = load_denoiser_bundle(ckpts["dit"])  # compiled in place: not the module-wide bundle
    energy = load_energy(f"ar:{ckpts['ar']}", fresh)
    try:
        compiled = _run(fresh, energy=energy, k=4, seed=3, compile=True)
    finally:
        categorical.compile_draws(False)  # process-wide: back to the eager draw for the other tests
    assert torch.equal(_tokens(compiled), _tokens(eager))
    for net in (fresh.denoiser.backbone, energy.ar_model):  # weights as constants, replayed from CUDA graphs on a GPU
        graphed = net._compiled_call_impl
        assert isinstance(graphed, compiling._Graphed) and isinstance(graphed.call, compiling._Frozen)
        assert graphed.graphs == {}  # CPU tensors: nothing captured


def test_sampling_compiles_frozen_unless_told_not_to(bundle, monkeypatch):
    import edlm.pipeline

    seen = []
    monkeypatch.setattr(edlm.pipeline, "compile_networks", lambda *nets, **kw: seen.append(kw))
    monkeypatch.setattr(edlm.pipeline, "compile_draws", lambda: None)
    _run(bundle, compile=True)
    _run(bundle, compile=True, freeze=False)
    _run(bundle, compile=True, cuda_graphs=False)
    assert seen == [{"freeze": True, "cuda_graphs": True}, {"freeze": False, "cuda_graphs": True},
                    {"freeze": True, "cuda_graphs": False}]
    with pytest.raises(ValueError, match="only applies with compile=True"):
        _run(bundle, freeze=False)
    with pytest.raises(ValueError, match="only applies with compile=True"):
        _run(bundle, cuda_graphs=False)


def test_k1_with_an_energy_is_mdlm(ckpts, bundle):
    energy = load_energy(f"ar:{ckpts['ar']}", bundle)
    edlm = _run(bundle, energy=energy, k=1, seed=7)
    assert torch.equal(_tokens(edlm), _tokens(_run(bundle, seed=7))) and edlm[0].nfe_energy == 0


def test_edlm_with_more_steps_than_tokens(ckpts, bundle):
    energy = load_energy(f"ar:{ckpts['ar']}", bundle)
    records = _run(bundle, energy=energy, k=2, steps=64, num_samples=1, batch_size=1)
    assert not (_tokens(records) == bundle.mask_id).any()


def test_semi_autoregressive(ckpts, bundle):
    energy = load_energy(f"ar:{ckpts['ar']}", bundle)
    for kw in ({}, {"energy": energy, "k": 2}):
        records = _run(bundle, length=40, stride=8, num_samples=2, steps=8, **kw)
        tokens = _tokens(records)
        assert tokens.shape == (2, 40) and not (tokens == bundle.mask_id).any()
        assert records[0].nfe_denoiser >= 4  # one block of 16, then 3 of stride 8
        assert torch.equal(tokens, _tokens(_run(bundle, length=40, stride=8, num_samples=2, steps=8, **kw)))


@pytest.mark.parametrize("kw, fragment", [
    ({"length": L + 1}, "pass a stride"),
    ({"length": 40, "stride": L + 1}, "stride must be at most"),
    ({"stride": 8}, "stride applies only when length exceeds"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"k": 0}, "k must be a positive integer"),
    ({"k": 2}, "only apply with an energy"),
    ({"window": (0.6, 0.4)}, "window must be"),
    ({"window": (0.0, 1.5)}, "window must be"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"top_p": 0.0}, "top_p must be in"),
    ({"num_samples": 0}, "num_samples must be"),
])
def test_sample_refuses_bad_settings(bundle, kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        _run(bundle, **kw)


def test_settings_object_or_keywords(bundle):
    settings = SampleSettings(num_samples=3, batch_size=2, length=None, steps=4, seed=5)
    assert torch.equal(_tokens(sample(bundle, settings, progress=False)), _tokens(_run(bundle, seed=5)))
    with pytest.raises(TypeError, match="not both"):
        sample(bundle, settings, steps=8, progress=False)


@pytest.mark.parametrize("kw", [{"steps": 0}, {"k": 0}, {"k": 1.5}, {"window": (0.6, 0.4)}, {"window": (0.5,)},
                                {"temperature": 0.0}, {"temperature": "hot"}, {"top_p": 1.5}])
def test_settings_and_sampler_share_one_check(kw):
    """SampleSettings fails early with the sampler's own check: the same message."""
    with pytest.raises(ValueError) as early:
        SampleSettings(num_samples=1, batch_size=1, length=None, **({"steps": 4} | kw))
    with pytest.raises(ValueError) as sampler:
        ImportanceSampler(0, **{k: v for k, v in kw.items() if k != "steps"}).set_timesteps(kw.get("steps", 4))
    assert str(early.value) == str(sampler.value) and len(str(early.value).splitlines()) == 1


def test_sampler_defaults_agree():
    sampler = ImportanceSampler(0)
    settings = SampleSettings(num_samples=1, batch_size=1, length=None, steps=1)
    assert (sampler.k, sampler.window, sampler.temperature, sampler.top_p) == (
        settings.k, settings.window, settings.temperature, settings.top_p) == (1, (0.0, 1.0), 1.0, 1.0)


def test_energy_context_too_short(ckpts, bundle):
    with pytest.raises(ValueError, match="reads at most 8 tokens"):
        _run(bundle, energy=load_energy(f"ar:{ckpts['ar_short']}", bundle), k=2)


# ----------------------------------------------------------------------------- JSONL
def test_write_jsonl_round_trip(tmp_path):
    records = [SampleRecord(index=i, text=f"ä{i}", tokens=[i], settings={"k": 1}, seconds=0.5) for i in range(3)]
    path = write_jsonl(records, tmp_path / "sub" / "out.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [r.to_json() for r in records] and rows[0]["text"] == "ä0"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]


@pytest.mark.parametrize("failure", [TypeError, KeyboardInterrupt])
def test_write_jsonl_is_atomic(tmp_path, failure):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")

    def records():
        yield {"text": "a"}
        raise failure("interrupted while writing")

    with pytest.raises(failure):
        write_jsonl(records(), path)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    with pytest.raises(ValueError, match="is a directory"):
        write_jsonl([], tmp_path)


@pytest.mark.slow
def test_compiled_sampling_again_compiles_nothing_new(ckpts):
    """A second pipeline.sample(compile=True) on the same bundle reuses every compiled graph: the denoiser's
    `.to(device)` keeps the σ-map's and rotary tables (tensors a compiled, frozen forward guards on), and
    compile_draws() keeps its wrapper."""
    from torch._dynamo.utils import counters

    from edlm.diffusion import categorical

    fresh = load_denoiser_bundle(ckpts["dit"])
    energy = load_energy(f"ar:{ckpts['ar']}", fresh)
    try:
        first = _run(fresh, energy=energy, k=2, seed=1, compile=True)
        graphs = counters["stats"]["unique_graphs"]
        again = _run(fresh, energy=energy, k=2, seed=1, compile=True)
        assert counters["stats"]["unique_graphs"] == graphs
    finally:
        categorical.compile_draws(False)
    assert torch.equal(_tokens(again), _tokens(first))


# ----------------------------------------------------------------------------- the other samplers
@pytest.mark.parametrize("kw", [dict(sampler="smc", particles=3), dict(sampler="adaptive", budget=6),
                                dict(sampler="remask", k=2, remask_eta=0.5)])
def test_every_sampler_runs_through_sample(ckpts, bundle, kw):
    """One keyword picks the sampler; its settings land in the records; same seed, same tokens."""
    energy = load_energy(f"ar:{ckpts['ar']},carry_over=false", bundle)
    a, b = (_run(bundle, energy=energy, seed=2, **kw) for _ in range(2))
    assert torch.equal(_tokens(a), _tokens(b)) and not (_tokens(a) == bundle.mask_id).any()
    assert a[0].settings["sampler"] == kw["sampler"] and all(a[0].settings[k] == v for k, v in kw.items())
    assert a[0].nfe_energy > 0


@pytest.mark.parametrize("kw, fragment", [
    (dict(sampler="smc"), "weights proposals by an energy"),
    (dict(sampler="adaptive"), "weights proposals by an energy"),
    (dict(sampler="beam"), "sampler must be one of"),
    (dict(particles=4), "particles applies to sampler smc"),
    (dict(sampler="remask", budget=8), "budget applies to sampler adaptive"),
    (dict(sampler="smc", ess_threshold=2.0), "ess_threshold must be in"),
    (dict(sampler="adaptive", k_choices=(2, 4)), "k_choices must be"),
    (dict(sampler="remask", remask_eta=-0.1), "remask_eta must be in"),
    (dict(sampler="remask", remask_window=(0.5, 0.2)), "remask_window must be"),
])
def test_sampler_settings_are_checked_once(bundle, kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        _run(bundle, **kw)


def test_the_sampler_default_leaves_importance_sampling_unchanged(bundle):
    """``sampler`` left at its default adds nothing to generate's call: the same tokens as before it existed."""
    settings = SampleSettings(num_samples=3, batch_size=2, length=None, steps=4)
    assert settings.sampler_options() == {}
    explicit = _run(bundle, seed=9, sampler="importance")
    assert torch.equal(_tokens(explicit), _tokens(_run(bundle, seed=9)))
