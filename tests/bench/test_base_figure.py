"""benchmarks/wiki/base_figure.py: the gap-closed arithmetic, the steps-to-reach pick, and every figure written."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "wiki" / "base_figure.py"


@pytest.fixture(scope="module")
def base_figure():
    spec = importlib.util.spec_from_file_location("base_figure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(judge, kind, steps, gen_ppl, energy="none", k=1, window=(0.0, 1.0), seconds=0.01, mauve=0.5):
    method = {"ar_samples": "AR samples", "real_text": "real text (c:valid)"}.get(kind, "MDLM")
    if energy != "none":
        method = f"EDLM-{energy.upper()} k={k}, window=[{window[0]:g}, {window[1]:g}], τ=1"
    return dict(cell_key=f"{method}-{steps}", method=method, kind=kind, steps=steps, energy=energy, k=k,
                window=list(window), judge=judge, gen_ppl=gen_ppl, gen_ppl_low=gen_ppl * 0.9,
                gen_ppl_high=gen_ppl * 1.1, entropy_bits=6.5, mauve=mauve, seconds_per_sample=seconds,
                num_samples=8, length=16)


@pytest.fixture()
def sweep(tmp_path):
    rows = []
    for judge in ("judge-a", "judge-b"):
        rows += [_row(judge, "diffusion", 32, 1000.0, seconds=0.002), _row(judge, "diffusion", 128, 400.0, seconds=0.008),
                 _row(judge, "diffusion", 32, math.sqrt(1000.0 * 100.0), energy="ar", k=4, seconds=0.004),
                 _row(judge, "diffusion", 32, 900.0, energy="nce", k=4, window=(0.8, 1.0)),
                 _row(judge, "diffusion", 32, 800.0, energy="nce_small", k=4),
                 _row(judge, "ar_samples", None, 100.0), _row(judge, "real_text", None, 20.0, mauve=None)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = tmp_path / "train_log.csv"
    log.write_text("model,step,val/ppl_bound,val/ppl,val/nce_acc,val/nce_acc_se\n"
                   "mdlm,999,80,,,\nmdlm,1999,60,,,\nmdlm,2999,65,,,\n"
                   "ar,999,,30,,\nar,1999,,27,,\nnce,499,,,0.9,0.01\nnce,999,,,0.92,0.01\n")
    return tmp_path


def test_gap_closed_is_the_share_of_the_log_gap(base_figure):
    assert base_figure.gap_closed(1000.0, 1000.0, 100.0) == pytest.approx(0.0)
    assert base_figure.gap_closed(1000.0, 100.0, 100.0) == pytest.approx(1.0)
    assert base_figure.gap_closed(1000.0, math.sqrt(1000.0 * 100.0), 100.0) == pytest.approx(0.5)
    assert base_figure.gap_closed(1000.0, 2000.0, 100.0) < 0  # worse than MDLM: a negative share


def test_figures_and_tables(base_figure, sweep, capsys):
    out = sweep / "figs"
    base_figure.main([str(sweep), "--out", str(out), "--table", "--train-log", str(sweep / "train_log.csv"),
                      "--train-tokens", "1000000", "--tokens-per-step", "8192"])
    for name in ("genppl_vs_steps.png", "genppl_vs_seconds.png", "mauve_vs_steps.png", "training_curves.png"):
        assert (out / name).stat().st_size > 10_000, name
    text = capsys.readouterr().out
    edlm_ar = next(line for line in text.splitlines() if line.startswith("| EDLM-AR k=4, w=[0, 1] | 32 |"))
    assert edlm_ar.count("+50%") == 2  # sqrt(1000 · 100) sits halfway (in log) between MDLM@32 and the AR samples
    reach = [line for line in text.splitlines() if line.startswith("| EDLM-AR k=4, w=[0, 1] |") and "T=32" in line]
    assert reach and "(2.00×)" in reach[0]  # 316 ≤ 400 at T=32, in half MDLM@128's time
    assert "not reached (best 900.0 @ T=32)" in text  # EDLM-NCE, window [0.8, 1]


def test_epochs_need_both_numbers(base_figure, sweep):
    with pytest.raises(SystemExit):
        base_figure.main([str(sweep), "--train-tokens", "1000000"])
