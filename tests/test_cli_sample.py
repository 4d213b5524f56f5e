"""`edlm sample`: writes a JSONL of samples; bad input is one `edlm: error:` line, exit code != 0, no file."""

import json

import pytest
import torch

from edlm import pipeline
from edlm.cli import main
from edlm.data.tokenizers import char_tokenizer_from_text
from edlm.diffusion.schedules import get_schedule
from edlm.models import ARTransformer, Denoiser, DiT, save_pretrained

TEXT = "the quick brown fox jumps over the lazy dog"
OTHER = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"  # same size, another tokenizer
L = 16
RECORD_KEYS = {"index", "text", "tokens", "settings", "seconds", "nfe_denoiser", "nfe_energy"}


def _randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_ckpts")
    tok, other = char_tokenizer_from_text(TEXT), char_tokenizer_from_text(OTHER)
    dit = _randomize(DiT(len(tok), L, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.0), 0)
    save_pretrained(Denoiser(dit, get_schedule("loglinear"), tok.mask_token_id), root / "dit", tokenizer=tok)
    for name, t in (("ar", tok), ("ar_other_tok", other)):
        ar = ARTransformer(len(t), L, hidden_size=32, n_blocks=1, n_heads=2, dropout=0.0, mask_id=t.mask_token_id)
        save_pretrained(_randomize(ar, 1), root / name, tokenizer=t)
    return root


def _argv(ckpts, out, *extra):
    return ["sample", "--denoiser", str(ckpts / "dit"), "--steps", "4", "--num-samples", "3", "--batch-size", "2",
            "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def _read(out):
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_mdlm_writes_jsonl_and_prints_samples(capsys, tmp_path, ckpts):
    out = tmp_path / "samples.jsonl"
    assert main(_argv(ckpts, out, "--seed", "3")) == 0
    stdout = capsys.readouterr().out
    rows = _read(out)
    assert len(rows) == 3 and all(set(r) == RECORD_KEYS for r in rows)
    assert all(len(r["tokens"]) == L and r["nfe_denoiser"] > 0 and r["nfe_energy"] == 0 for r in rows)
    assert rows[0]["settings"]["seed"] == 3 and rows[0]["settings"]["energy"] == "none"
    assert "# edlm sample: denoiser=" in stdout and "s/sample" in stdout and "denoiser NFE" in stdout
    assert "----- sample 2 -----" in stdout and f"wrote 3 samples to {out}" in stdout
    assert main(_argv(ckpts, tmp_path / "again.jsonl", "--seed", "3")) == 0  # same seed, same tokens
    assert [r["tokens"] for r in _read(tmp_path / "again.jsonl")] == [r["tokens"] for r in rows]


def test_edlm_ar_and_semi_ar(capsys, tmp_path, ckpts):
    out = tmp_path / "s.jsonl"
    argv = _argv(ckpts, out, "--energy", f"ar:{ckpts / 'ar'}", "--k", "4", "--window", "0.2", "1.0",
                 "--temperature", "0.5", "--length", "24", "--stride", "8", "--no-print",
                 "--steps", "2")
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    rows = _read(out)
    assert len(rows) == 3 and all(len(r["tokens"]) == 24 and r["nfe_energy"] > 0 for r in rows)
    s = rows[0]["settings"]
    assert (s["k"], s["window"], s["temperature"], s["stride"]) == (4, [0.2, 1.0], 0.5, 8)
    assert "----- sample" not in stdout and "energy=ar:" in stdout


def _fails_cleanly(capsys, argv, out, fragment):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("edlm: error:") and fragment in err, err
    assert not out.exists() and list(out.parent.iterdir()) == []  # no output, not even a temp file


@pytest.mark.parametrize("extra, fragment", [
    (["--steps", "0"], "steps must be a positive integer"),
    (["--k", "0"], "k must be a positive integer"),
    (["--window", "0.6", "0.4"], "window must be"),
    (["--window", "-0.1", "0.5"], "window must be"),
    (["--temperature", "0"], "temperature must be > 0"),
    (["--length", "17"], "exceeds the denoiser's context of 16 tokens; pass a stride"),
    (["--k", "2"], "only apply with an energy"),
    (["--energy", "gpt2"], "bad energy spec"),
    (["--device", "tpu"], "device"),
    (["--no-freeze"], "freeze=False (--no-freeze) only applies with compile=True (--compile)"),
    (["--no-cuda-graphs"], "cuda_graphs=False (--no-cuda-graphs) only applies with compile=True (--compile)"),
    (["--dtype", "int8"], "unsupported dtype 'int8'"),
])
def test_bad_settings(capsys, tmp_path, ckpts, extra, fragment):
    out = tmp_path / "out.jsonl"
    _fails_cleanly(capsys, _argv(ckpts, out, *extra), out, fragment)


def test_bad_paths_and_mismatches(capsys, tmp_path, ckpts):
    out = tmp_path / "out" / "s.jsonl"
    out.parent.mkdir()
    argv = _argv(ckpts, out)
    missing = [*argv[:2], str(tmp_path / "missing"), *argv[3:]]
    _fails_cleanly(capsys, missing, out, "no such checkpoint directory")
    ar_as_denoiser = [*argv[:2], str(ckpts / "ar"), *argv[3:]]
    _fails_cleanly(capsys, ar_as_denoiser, out, "not a diffusion denoiser")
    _fails_cleanly(capsys, [*argv, "--energy", f"ar:{tmp_path / 'missing'}"], out, "no such checkpoint directory")
    _fails_cleanly(capsys, [*argv, "--energy", f"ar:{ckpts / 'ar_other_tok'}", "--k", "2"], out,
                   "tokenizer mismatch between the denoiser and the energy")


def test_ctrl_c_leaves_no_file(capsys, tmp_path, ckpts, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "sample", interrupted)
    out = tmp_path / "out.jsonl"
    assert main(_argv(ckpts, out)) == 130
    assert "interrupted" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_compile_gives_the_same_samples(capsys, tmp_path, ckpts):
    # --compile (torch.compile of the denoiser, the AR energy and the float64 draw): same seed, same tokens here
    # (CPU; compiled kernels may round differently, so on a GPU it is the same distribution, not the same bits)
    from edlm.diffusion import categorical

    eager, compiled = tmp_path / "eager.jsonl", tmp_path / "compiled.jsonl"
    extra = ("--energy", f"ar:{ckpts / 'ar'}", "--k", "3")
    assert main(_argv(ckpts, eager, *extra)) == 0
    try:
        assert main(_argv(ckpts, compiled, *extra, "--compile")) == 0
        assert categorical._compiled_draw is not None  # the draw was compiled too
    finally:
        categorical.compile_draws(False)  # process-wide: do not leak into other tests
    assert [r["tokens"] for r in _read(compiled)] == [r["tokens"] for r in _read(eager)]
    assert _read(compiled)[0]["nfe_energy"] == _read(eager)[0]["nfe_energy"] > 0


def test_dtype_casts_denoiser_and_energy_and_is_recorded(capsys, tmp_path, ckpts, monkeypatch):
    # --dtype bfloat16: both networks sample in bf16 (what `edlm bench speed` measures on a GPU); the draws stay float64
    seen = []
    real = pipeline.generate

    def spy(denoiser, *args, energy=None, **kwargs):
        seen.append((next(denoiser.parameters()).dtype, next(energy.ar_model.parameters()).dtype))
        return real(denoiser, *args, energy=energy, **kwargs)

    monkeypatch.setattr(pipeline, "generate", spy)
    out32, out16 = tmp_path / "f32.jsonl", tmp_path / "bf16.jsonl"
    extra = ("--energy", f"ar:{ckpts / 'ar'}", "--k", "3")
    assert main(_argv(ckpts, out32, *extra)) == 0
    assert main(_argv(ckpts, out16, *extra, "--dtype", "bfloat16")) == 0
    assert seen[0] == (torch.float32, torch.float32) and seen[-1] == (torch.bfloat16, torch.bfloat16)
    rows32, rows16 = _read(out32), _read(out16)
    assert [r["settings"]["dtype"] for r in (rows32[0], rows16[0])] == ["float32", "bfloat16"]
    vocab = len(char_tokenizer_from_text(TEXT))
    mask = char_tokenizer_from_text(TEXT).mask_token_id
    for row in rows16:
        assert len(row["tokens"]) == L and all(0 <= t < vocab and t != mask for t in row["tokens"])
