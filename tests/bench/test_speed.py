"""`edlm bench speed` on CPU with tiny shapes: the rows it writes, their counts and their consistency."""

import json
import math

import pytest
import torch

from edlm.bench.speed import run_speed
from edlm.bench.speed_models import PRESETS, speed_config
from edlm.bench.speed_report import render_markdown, render_targets
from edlm.cli import main

CALLS = [("DiT", "denoiser fwd (logits)"), ("AR", "AR fwd (logits)"),
         ("AR", "AREnergy call (fwd+logsoftmax+gather)"), ("NCE", "NCEEnergy fwd")]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `edlm bench speed` run: tiny preset on the CPU, T ∈ {4, 8}, k = 2, and the T = L MDLM run."""
    out = tmp_path_factory.mktemp("speed")
    rc = main(["bench", "speed", "--preset", "tiny", "--device", "cpu", "--out", str(out),
               "--steps", "4", "8", "--k", "2", "--long"])
    return rc, out


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "speed", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: small)", "(default: 32; tiny 4;", "(default: 32 128; tiny 4 8)",
                    "(default: 2 8)", "(default: 0 1)", "(default: off)", "(default: auto)",
                    "(default: runs/bench/speed)"):
        assert default in text


def test_tiny_run_writes_json_and_markdown(tiny_run):
    rc, out = tiny_run
    res = json.loads((out / "speed.json").read_text())
    assert rc == 0 and res["errors"] == []
    meta = res["meta"]
    assert meta["device"].startswith("CPU") and meta["torch"] == torch.__version__
    assert meta["settings"]["preset"] == "tiny" and meta["config"]["length"] == PRESETS["tiny"].length
    assert res["ceilings"]["matmul_peak_tflops"] > 0
    md = (out / "speed.md").read_text()
    assert md == render_markdown(res)  # a stored speed.json renders to the same Markdown
    for section in ("## Targets", "## Per-call forward", "## End-to-end `generate`"):
        assert section in md
    assert meta["device"] in md and "T=4" in md


def test_forward_rows_cover_every_network_at_1_B_and_2B(tiny_run):
    res = json.loads((tiny_run[1] / "speed.json").read_text())
    cfg = res["meta"]["config"]
    B, L = cfg["batch_size"], cfg["length"]
    rows = {(r["model"], r["what"], r["B"]): r for r in res["forward"]}
    assert set(rows) == {(m, w, b) for m, w in CALLS for b in (1, B, 2 * B)}
    fpt = res["models"]["flops_per_token"]
    for (model, _, b), r in rows.items():
        assert 0 < r["ms_min"] <= r["ms"] <= r["ms_max"] and r["ms_back_to_back"] > 0
        assert math.isclose(r["gflop"], fpt[model.lower()] * b * L / 1e9)
        peak = res["ceilings"]["matmul_peak_tflops"] * 1e12
        assert math.isclose(r["mfu"], r["gflop"] * 1e9 / (r["ms"] / 1e3 * peak))


def test_end_to_end_rows_count_what_the_loop_reports(tiny_run):
    res = json.loads((tiny_run[1] / "speed.json").read_text())
    L = res["meta"]["config"]["length"]
    rows = res["e2e"]
    assert [r["name"] for r in rows] == [
        "MDLM T=4", "MDLM T=8", "EDLM-AR k=2 [0,1] T=4", "EDLM-AR k=2 [0,1] T=8", "EDLM-NCE k=2 [0,1] T=4",
        "EDLM-NCE k=2 [0,1] T=8", f"MDLM T={L}"]
    for r in rows:
        assert r["seconds"] > 0 and r["seconds_plain"] > 0 and r["alone_s"] > 0
        assert r["same_tokens"]  # the timers change nothing the loop draws
        assert r["nfe_denoiser"] == r["denoiser_calls"] >= 1  # the loop's count = the calls the timer saw
        assert r["nfe_energy"] == r["energy_calls"]
        assert 0 < r["net_denoiser_s"] <= r["seconds"] and 0 <= r["net_energy_s"] <= r["seconds"]
        assert math.isclose(r["overhead_s"], r["seconds"] - r["net_denoiser_s"] - r["net_energy_s"])
        assert math.isclose(r["over_alone"], r["seconds_plain"] / r["alone_s"])
        assert r["peak_gib"] is None  # no allocator peak on a CPU
        if r["method"] == "MDLM":
            assert r["energy"] is None and r["nfe_energy"] == 0
        else:
            # every step is importance-sampled (window [0, 1]); each scores up to B·k proposals in calls of B
            assert r["energy_batch_size"] == r["B"] and 0 < r["is_steps"] <= r["steps"]
            assert 0 < r["energy_seqs"] <= r["is_steps"] * r["B"] * r["k"]
            assert r["nfe_energy"] >= math.ceil(r["energy_seqs"] / r["B"])


def test_quick_run_of_a_model_set(micro_models, tmp_path):
    """--models: the set's shapes and weights (no nce/ folder: no NCE rows); --quick: forwards at B only, end
    to
    end at the smallest T and the largest k."""
    res = run_speed(preset="tiny", models=micro_models["denoiser"].parent, batch_size=2, steps=(3, 5),
                    ks=(2, 3), device="cpu", out=tmp_path, quick=True, log=lambda *_: None)
    assert res["errors"] == [] and res["models"]["weights"].startswith("shipped:")
    assert res["meta"]["config"]["length"] == 16 and res["meta"]["config"]["vocab_size"] == len(
        micro_models["tokenizer"])
    assert {(r["model"], r["B"]) for r in res["forward"]} == {("DiT", 2), ("AR", 2)}
    assert [r["name"] for r in res["e2e"]] == ["MDLM T=3", "EDLM-AR k=3 [0,1] T=3"]
    assert (tmp_path / "speed.json").is_file() and (tmp_path / "speed.md").is_file()


def test_config_checks():
    assert speed_config("tiny", batch_size=2).batch_size == 2 and speed_config("tiny").steps == (4, 8)
    assert speed_config().forward_batch_sizes == (1, 32, 64)
    for bad in (dict(preset="huge"), dict(ks=(1,)), dict(window=(0.5, 0.5)), dict(steps=(0,)),
                dict(batch_size=0)):
        with pytest.raises(ValueError):
            speed_config(**bad)


def test_the_mfu_target_needs_every_call_size_of_32k_tokens_or_more():
    """Met only when every measured size with ≥ 32 k tokens per call reaches 60 %: 58.8 % at B = 32 and 60.4 %
    at
    B = 64 is not met; B = 8 (8 k tokens) is not a target size."""

    def nce_lines(mfus):
        rows = [{"model": "NCE", "what": "NCEEnergy fwd", "B": b, "mfu": m, "mfu_back_to_back": m + 0.01}
                for b, m in mfus.items()]
        res = {"meta": {"config": {"length": 1024}}, "forward": rows, "e2e": []}
        return [line for line in render_targets(res) if line.startswith("| NCE")]

    alone, back_to_back = nce_lines({8: 0.40, 32: 0.588, 64: 0.604})
    assert alone.endswith("| no (B = 32) |") and "(B = 8)" not in alone
    assert back_to_back.endswith("| no (B = 32) |")  # 59.8 % back to back
    alone, back_to_back = nce_lines({32: 0.61, 64: 0.62})
    assert alone.endswith("| yes |") and back_to_back.endswith("| yes |")
