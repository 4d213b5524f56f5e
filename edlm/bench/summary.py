"""How many steps and seconds each method needs to match a reference gen-PPL (the speed claim).

    print(reach_table(read_results("runs/bench/wiki_gpu")))

The reference is MDLM at its largest step count in the sweep. For every other method the gen-PPL curve over
steps is searched for the first point at or below the reference; between two measured step counts the
crossing is interpolated linearly in (log steps, log gen-PPL), and seconds per sample and entropy at the
crossing are interpolated the same way in log steps. A method whose curve never reaches the reference is
reported as "not reached" with its best point.
"""

from __future__ import annotations

import math
from collections import defaultdict

__all__ = ["Reach", "reach_points", "reach_table"]

from dataclasses import dataclass


@dataclass
class Reach:
    method: str
    steps: float | None  # interpolated steps at the crossing; None = not reached
    seconds_per_sample: float | None
    entropy_bits: float | None
    best_gen_ppl: float  # the method's lowest measured gen-PPL
    best_steps: int


def _curves(rows: list[dict]) -> dict[str, list[tuple[int, float, float | None, float | None]]]:
    """method -> [(steps, gen_ppl, seconds_per_sample, entropy_bits)] sorted by steps (first seed per step)."""
    curves: dict[str, dict[int, tuple]] = defaultdict(dict)
    for r in rows:
        if r.get("kind") == "diffusion" and r.get("gen_ppl") is not None:
            curves[r["method"]].setdefault(r["steps"], (r["steps"], r["gen_ppl"], r.get("seconds_per_sample"),
                                                        r.get("entropy_bits")))
    return {m: [c[s] for s in sorted(c)] for m, c in curves.items()}


def _lerp(x: float, x0: float, x1: float, y0: float | None, y1: float | None, log_y: bool) -> float | None:
    if y0 is None or y1 is None:
        return None
    w = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
    if log_y:
        return math.exp(math.log(y0) + w * (math.log(y1) - math.log(y0)))
    return y0 + w * (y1 - y0)


def reach_points(rows: list[dict], reference: str = "MDLM") -> tuple[float, int, list[Reach]]:
    """(reference gen-PPL, its steps, one `Reach` per method incl. the reference) — see the module doc."""
    curves = _curves(rows)
    if reference not in curves:
        raise ValueError(f"no {reference!r} rows with a gen-PPL to compare against.")
    ref_steps, target = curves[reference][-1][:2]
    out = []
    for method, pts in curves.items():
        best = min(pts, key=lambda p: p[1])
        reach = Reach(method, None, None, None, best[1], best[0])
        for i, (steps, ppl, sec, ent) in enumerate(pts):
            if ppl > target:
                continue
            if i == 0:
                reach.steps, reach.seconds_per_sample, reach.entropy_bits = float(steps), sec, ent
            else:
                s0, p0, sec0, ent0 = pts[i - 1]
                x0, x1 = math.log(s0), math.log(steps)
                x = _lerp(math.log(target), math.log(p0), math.log(ppl), x0, x1, log_y=False)
                reach.steps = math.exp(x)
                reach.seconds_per_sample = _lerp(x, x0, x1, sec0, sec, log_y=True)
                reach.entropy_bits = _lerp(x, x0, x1, ent0, ent, log_y=False)
            break
        out.append(reach)
    return target, ref_steps, out


def reach_table(rows: list[dict], reference: str = "MDLM") -> str:
    """Markdown: for each method, the steps and seconds per sample at which it matches the reference."""
    target, ref_steps, reaches = reach_points(rows, reference)
    ref = next(r for r in reaches if r.method == reference)
    ref_sec = next(p[2] for p in _curves(rows)[reference] if p[0] == ref_steps)
    lines = [
        f"## Steps and time to reach {reference}'s gen-PPL at {ref_steps} steps ({target:.1f})",
        "",
        "Crossing interpolated in log steps between measured step counts; entropy at the crossing beside it.",
        "",
        "| method | steps to reach | s/sample there | × faster than reference | entropy (bits) there | best gen-PPL (steps) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    order = [ref] + sorted((r for r in reaches if r is not ref), key=lambda r: (r.steps is None, r.steps or 0))
    for r in order:
        if r.steps is None:
            lines.append(f"| {r.method} | not reached | — | — | — | {r.best_gen_ppl:.1f} ({r.best_steps}) |")
            continue
        speed = f"{ref_sec / r.seconds_per_sample:.2f}" if ref_sec and r.seconds_per_sample else "—"
        sec = f"{r.seconds_per_sample:.4f}" if r.seconds_per_sample is not None else "—"
        ent = f"{r.entropy_bits:.3f}" if r.entropy_bits is not None else "—"
        lines.append(f"| {r.method} | {r.steps:.0f} | {sec} | {speed} | {ent} | {r.best_gen_ppl:.1f} ({r.best_steps}) |")
    return "\n".join(lines) + "\n"
