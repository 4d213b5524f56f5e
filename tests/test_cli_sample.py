"""`edlm sample`: writes a JSONL of samples; bad input is one `edlm: error:` line, exit code != 0, no file."""

import json
from pathlib import Path

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


def test_graph_samples_mdlm_and_edlm_and_records_it(capsys, tmp_path, ckpts):
    out = tmp_path / "g.jsonl"
    assert main(_argv(ckpts, out, "--graph", "--seed", "3")) == 0
    rows = _read(out)
    assert len(rows) == 3 and all(len(r["tokens"]) == L and 0 < r["nfe_denoiser"] <= 5 for r in rows)
    assert rows[0]["settings"]["graph"] is True
    edlm_out = tmp_path / "ge.jsonl"  # EDLM-AR: importance-sampled steps planned too
    assert main(_argv(ckpts, edlm_out, "--graph", "--energy", f"ar:{ckpts / 'ar'}", "--k", "2")) == 0
    rows = _read(edlm_out)
    assert all(len(r["tokens"]) == L and r["nfe_energy"] > 0 for r in rows) and rows[0]["settings"]["graph"] is True
    capsys.readouterr()
    (tmp_path / "refused").mkdir()
    err_out = tmp_path / "refused" / "e.jsonl"  # refused before any model loads: remasking runs in the eager loop
    _fails_cleanly(capsys, _argv(ckpts, err_out, "--graph", "--energy", f"ar:{ckpts / 'ar'}", "--sampler", "remask"),
                   err_out, "graph=True runs sampler='importance'")


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
    (["--graph", "--top-p", "0.9"], "graph=True runs sampler='importance' with top_p=1.0"),
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


# ----------------------------------------------------------------------------- prompts and infilling (shipped models)
SHAKESPEARE = Path(__file__).resolve().parents[1] / "edlm" / "assets" / "tiny-shakespeare"
PROMPT_KEYS = RECORD_KEYS | {"prompt", "completion", "spans"}


def _prompt_argv(out, *extra):
    return ["sample", "--denoiser", str(SHAKESPEARE / "mdlm"), "--steps", "3", "--num-samples", "2", "--device",
            "cpu", "--no-progress", "--out", str(out), *extra]


def test_prompts_give_prompt_by_sample_records(capsys, tmp_path):
    out = tmp_path / "p.jsonl"
    assert main(_prompt_argv(out, "--prompt", "ROMEO:", "--prompt", "JULIET:\nO", "--batch-size", "3")) == 0
    stdout = capsys.readouterr().out
    rows = _read(out)
    assert [r["prompt"] for r in rows] == ["ROMEO:"] * 2 + ["JULIET:\nO"] * 2 and [r["index"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert set(r) == PROMPT_KEYS and r["text"].startswith(r["prompt"]) and r["spans"] == [r["completion"]]
        assert r["text"] == r["prompt"] + r["completion"]  # char level: the whole text is prompt + continuation
        assert r["settings"]["mode"] == "prompt" and r["settings"]["num_samples"] == 2
    assert "----- sample 3 -----" in stdout and f"wrote 4 samples to {out}" in stdout


def test_prompt_file_gives_prompts_times_samples_records(capsys, tmp_path):
    prompts = tmp_path / "in" / "prompts.txt"
    prompts.parent.mkdir()
    prompts.write_text("ROMEO:\n\nFirst Citizen:\n   \nKING RICHARD III:\n", encoding="utf-8")
    out = tmp_path / "out" / "p.jsonl"
    assert main(_prompt_argv(out, "--prompt-file", str(prompts), "--max-new-tokens", "12", "--no-stop-at-eos",
                             "--energy", f"nce:{SHAKESPEARE / 'nce'}", "--k", "2", "--no-print")) == 0
    rows = _read(out)
    assert [r["prompt"] for r in rows] == [p for p in ("ROMEO:", "First Citizen:", "KING RICHARD III:") for _ in "ab"]
    for r in rows:
        assert set(r) == PROMPT_KEYS and len(r["completion"]) == 12 and r["text"] == r["prompt"] + r["completion"]
        assert r["nfe_energy"] > 0 and r["settings"]["max_new_tokens"] == 12 and not r["settings"]["stop_at_eos"]
    assert "----- sample" not in capsys.readouterr().out


def test_max_new_tokens_past_the_context_is_semi_autoregressive(capsys, tmp_path):
    out = tmp_path / "p.jsonl"
    argv = _prompt_argv(out, "--prompt", "ROMEO:", "--max-new-tokens", "150", "--stride", "64", "--no-stop-at-eos")
    assert main(argv) == 0
    rows = _read(out)
    assert all(len(r["tokens"]) == 6 + 150 and len(r["completion"]) == 150 for r in rows)
    assert rows[0]["settings"]["stride"] == 64


def test_infill_fills_the_spans(capsys, tmp_path):
    out = tmp_path / "i.jsonl"
    template = "ROMEO:\nBut soft, what [MASK:8] yonder window breaks?"
    assert main(_prompt_argv(out, "--infill", template, "--energy", f"ar:{SHAKESPEARE / 'ar'},carry_over=false",
                             "--k", "2", "--no-stop-at-eos")) == 0
    rows = _read(out)
    assert len(rows) == 2 and all(set(r) == PROMPT_KEYS for r in rows)
    for r in rows:
        assert r["prompt"] == template and len(r["spans"]) == 1 and len(r["spans"][0]) == 8
        assert r["text"] == f"ROMEO:\nBut soft, what {r['spans'][0]} yonder window breaks?"
        assert r["settings"]["mode"] == "infill"


@pytest.mark.parametrize("extra, fragment", [
    (["--prompt", "ROMEO: " * 30], "the model's context is 128: no token is left to generate"),
    (["--infill", "ROMEO: the night."], "has no [MASK:n] marker"),
    (["--infill", "ROMEO: [MASK] night."], "unknown marker '[MASK]'"),
    (["--infill", "ROMEO: [MAKS:3] night."], "unknown marker '[MAKS:3]'"),
    (["--infill", "ROMEO: [MASK:0] night."], "[MASK:0] in template"),
    (["--infill", "ROMEO: [MASK:200] night."], "but the model's context is 128"),
    (["--prompt", ""], "tokenizes to nothing"),
    (["--prompt", "ROMEO:", "--infill", "ROMEO: [MASK:3]"], "give prompts (--prompt, --prompt-file) or templates"),
    (["--max-new-tokens", "5"], "--max-new-tokens applies to prompts"),
    (["--prompt", "ROMEO:", "--max-new-tokens", "0"], "--max-new-tokens must be a positive integer"),
    (["--prompt", "ROMEO:", "--length", "64"], "--length does not apply to prompts or templates"),
    (["--prompt", "ROMEO:", "--stride", "32"], "--stride 32 applies only where a prompt plus max_new_tokens"),
    (["--prompt", "ROMEO:", "--k", "2"], "only apply with an energy"),
    (["--prompt-file", "/nonexistent/prompts.txt"], "the prompt file: cannot access /nonexistent/prompts.txt"),
    (["--no-stop-at-eos"], "--no-stop-at-eos applies to prompts and templates"),
])
def test_bad_prompts_are_one_line(capsys, tmp_path, extra, fragment):
    out = tmp_path / "out.jsonl"
    _fails_cleanly(capsys, _prompt_argv(out, *extra), out, fragment)


@pytest.fixture(scope="module")
def dna_ckpts(tmp_path_factory):
    from edlm.data import dna_tokenizer

    root = tmp_path_factory.mktemp("dna_ckpts")
    tok = dna_tokenizer()
    dit = _randomize(DiT(len(tok), L, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.0), 0)
    save_pretrained(Denoiser(dit, get_schedule("loglinear"), tok.mask_token_id), root / "dit", tokenizer=tok)
    ar = ARTransformer(len(tok), L, hidden_size=32, n_blocks=1, n_heads=2, dropout=0.0, mask_id=tok.mask_token_id)
    save_pretrained(_randomize(ar, 1), root / "ar", tokenizer=tok)
    return root


def test_a_dna_model_writes_fasta_beside_the_jsonl(tmp_path, dna_ckpts, capsys):
    from edlm.data.dna import read_fasta

    out = tmp_path / "dna.jsonl"
    assert main(_argv(dna_ckpts, out, "--energy", f"ar:{dna_ckpts / 'ar'}", "--k", "2")) == 0
    assert f"wrote their bases to {tmp_path / 'dna.fa'}" in capsys.readouterr().out
    rows, fasta = _read(out), read_fasta(tmp_path / "dna.fa")
    assert [r.name.split()[0] for r in fasta] == ["sample_0", "sample_1", "sample_2"]
    assert "k=2" in fasta[0].name and "steps=4" in fasta[0].name
    for row, rec in zip(rows, fasta):
        assert len(rec.seq) == L  # a token that is not a base is an N: every base keeps its position
        assert rec.seq.replace("N", "") == row["text"]
    gz = tmp_path / "chosen.fa.gz"
    assert main(_argv(dna_ckpts, tmp_path / "b.jsonl", "--fasta", str(gz))) == 0
    assert len(read_fasta(gz)) == 3 and not (tmp_path / "b.fa").exists()


def test_fasta_of_a_text_model_is_refused(tmp_path, ckpts, capsys):
    assert main(_argv(ckpts, tmp_path / "t.jsonl", "--fasta", str(tmp_path / "t.fa"))) != 0
    err = capsys.readouterr().err.strip()
    assert "FASTA output needs a DNA denoiser" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "t.fa").exists()


def test_eval_nll_of_a_dna_model_in_bits_per_base_with_the_ar_reference(tmp_path, dna_ckpts, capsys):
    import math

    out = tmp_path / "nll.json"
    assert main(["eval", "nll", "--denoiser", str(dna_ckpts / "dit"), "--data", "dna_ecoli_k12", "--max-chars",
                 "2000", "--ar", str(dna_ckpts / "ar"), "--time-samples", "2", "--device", "cpu", "--no-progress",
                 "--json", str(out)]) == 0
    assert "bits/base" in capsys.readouterr().out
    rows = json.loads(out.read_text())["results"]
    assert [r["label"] for r in rows] == ["bound", "exact"]
    for r in rows:
        assert r["bits_per_base"] == pytest.approx(r["nll"] / math.log(2))
    assert rows[1]["num_tokens"] == rows[1]["num_sequences"] * (L - 1)  # the first base of each row is given
