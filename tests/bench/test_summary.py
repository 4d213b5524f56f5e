"""reach_table: the steps and seconds at which a method matches MDLM's gen-PPL at its largest step count."""

import math

import pytest

from edlm.bench.summary import reach_points, reach_table


def _row(method, steps, ppl, sec, ent=6.0):
    return {"kind": "diffusion", "method": method, "steps": steps, "gen_ppl": ppl, "seconds_per_sample": sec,
            "entropy_bits": ent}


ROWS = [
    _row("MDLM", 8, 100.0, 0.1), _row("MDLM", 16, 80.0, 0.2), _row("MDLM", 32, 60.0, 0.4, 5.0),
    _row("EDLM", 8, 70.0, 0.2, 6.0), _row("EDLM", 16, 50.0, 0.4, 5.0),
    _row("EDLM-early", 8, 55.0, 0.3),
    _row("bad", 8, 90.0, 0.1), _row("bad", 16, 65.0, 0.2),
    {"kind": "real_text", "method": "real text", "steps": None, "gen_ppl": 20.0},
]


def test_crossing_is_interpolated_in_log_steps_and_log_ppl():
    target, ref_steps, reaches = reach_points(ROWS)
    assert (target, ref_steps) == (60.0, 32)
    by = {r.method: r for r in reaches}
    w = (math.log(60) - math.log(70)) / (math.log(50) - math.log(70))  # fraction of the way from 8 to 16
    assert by["EDLM"].steps == pytest.approx(math.exp(math.log(8) + w * math.log(2)))
    assert by["EDLM"].seconds_per_sample == pytest.approx(math.exp(math.log(0.2) + w * math.log(2)))
    assert by["EDLM"].entropy_bits == pytest.approx(6.0 - w)
    assert by["EDLM-early"].steps == 8 and by["EDLM-early"].seconds_per_sample == 0.3  # already below at its first
    assert by["bad"].steps is None and (by["bad"].best_gen_ppl, by["bad"].best_steps) == (65.0, 16)
    assert by["MDLM"].steps == 32


def test_table_names_the_reference_and_the_misses():
    text = reach_table(ROWS)
    assert "MDLM's gen-PPL at 32 steps (60.0)" in text
    assert "| bad | not reached |" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| EDLM-early |"))
    assert "| 1.33 |" in line  # 0.4 s (MDLM at 32) / 0.3 s
    with pytest.raises(ValueError, match="no 'MDLM' rows"):
        reach_points([r for r in ROWS if r["method"] != "MDLM"])
