"""benchmarks/speed.py runs end to end on CPU (--tiny) and writes the tables the issue asks for."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_speed_script_tiny_writes_json_and_markdown(tmp_path):
    out = tmp_path / "speed"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--tiny", "--out", str(out),
                           "--budget-s", "60"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((out / "speed.json").read_text())
    assert res["errors"] == []
    calls = {(r["model"], r["what"]) for r in res["forward"]}
    assert ("DiT", "denoiser fwd (logits)") in calls and ("AR", "AR fwd (logits)") in calls
    assert any(m == "NCE" for m, _ in calls)
    rows = {r["name"]: r for r in res["e2e"] if "seconds" in r}
    mdlm = [r for n, r in rows.items() if n.startswith("MDLM")]
    edlm = [r for n, r in rows.items() if n.startswith("EDLM-AR k=8 [0,1]")]
    assert mdlm and edlm and any(r["steps"] > res["meta"]["config"]["edlm_steps"] for r in rows.values()
                                 if r["name"].startswith("EDLM-AR"))  # the longer EDLM runs too
    for r in mdlm + edlm:
        assert r["seconds"] > 0 and 0 <= r["overhead_s"] <= r["seconds"] and r["over_alone"] > 0
        assert r["nfe_denoiser"] >= 1 and r["alone_s"] > 0
    assert all(r["nfe_energy_chunks"] > 0 for r in edlm)
    md = (out / "speed.md").read_text()
    assert "## End-to-end `generate`" in md and "× alone" in md and "## Issue #7 targets" in md


def test_the_mfu_target_needs_every_call_size_of_32k_tokens_or_more():
    """The first target is met only when every measured size with ≥ 32 k tokens per call reaches 60 % (session 5's
    NCE: 58.8 % at B = 32 and 60.4 % at B = 64 is not met)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from speed_report import render_targets

    def rows(mfus):
        return [{"model": "NCE", "what": "NCEEnergy fwd", "B": b, "mfu": m, "mfu_stream": m + 0.01}
                for b, m in mfus.items()]

    def nce_lines(mfus):
        res = {"meta": {"config": {"length": 1024}}, "forward": rows(mfus), "e2e": []}
        return [line for line in render_targets(res) if line.startswith("| NCE")]

    synced, streamed = nce_lines({8: 0.40, 32: 0.588, 64: 0.604})  # B = 8 (8 k tokens) is not a target size
    assert synced.endswith("| no (B = 32) |") and "(B = 8)" not in synced
    assert streamed.endswith("| no (B = 32) |")  # 59.8 % back to back
    synced, streamed = nce_lines({32: 0.61, 64: 0.62})
    assert synced.endswith("| yes |") and streamed.endswith("| yes |")


def test_speed_script_long_only_runs_just_the_long_rows(tmp_path):
    """--long-only: MDLM at long_steps and every EDLM-AR (k, window) at edlm_long_steps, cheapest first, timed once;
    no forward rows and none of the short runs."""
    out = tmp_path / "long"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--tiny", "--long-only", "--out",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((out / "speed.json").read_text())
    cfg = res["meta"]["config"]
    assert res["errors"] == [] and res["forward"] == []
    names = [r["name"] for r in res["e2e"]]
    T = cfg["edlm_long_steps"][0]
    assert names == [f"MDLM T={cfg['long_steps']}", f"EDLM-AR k=2 [0.8,1] T={T}", f"EDLM-AR k=8 [0.8,1] T={T}",
                     f"EDLM-AR k=2 [0,1] T={T}", f"EDLM-AR k=8 [0,1] T={T}"]
    for r in res["e2e"]:
        assert r["seconds"] > 0 and r["seconds_plain"] is None and r["nfe_denoiser"] >= 1 and r["alone_s"] > 0
    assert all(r["nfe_energy_chunks"] > 0 for r in res["e2e"][1:])
    assert "## End-to-end `generate`" in (out / "speed.md").read_text()
