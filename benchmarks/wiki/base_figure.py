"""Figures and tables for a sweep of the paper's claims on one model set (``benchmarks/configs/wiki_base.yaml``).

One panel per judge. MDLM is a black line over its step counts; EDLM-AR (blues) and EDLM-NCE (oranges) are one line per
k, darker for larger k, solid for the window [0, 1] (importance sampling at every step) and dashed for [0.8, 1]; other
energies (``ar_exact``, ``nce_small``) and other samplers are markers. Horizontal lines: AR samples, real text and
real text with its words shuffled, where the sweep has them. Error bars: 95 % intervals (``gen_ppl_low/high``; else
±1.96 standard errors).

    python benchmarks/wiki/base_figure.py runs/wiki_base/sweep [--out DIR] [--table]
    python benchmarks/wiki/base_figure.py runs/wiki_base/sweep --train-log train_log.csv \\
        --train-tokens 26000000 --tokens-per-step 65536

Writes ``genppl_vs_steps.png``, ``genppl_vs_seconds.png``, ``mauve_vs_steps.png`` (when MAUVE was scored) and, with
``--train-log`` (the CSV of ``benchmarks/results/wiki_models/train_log.csv``'s shape), ``training_curves.png``: the
validation perplexity (MDLM: the bound) against epochs, with each curve's minimum marked, beside the NCE energies'
validation accuracy. ``--table`` prints markdown: every cell's gen-PPL per judge with the share of the log gen-PPL gap
between MDLM (same T) and the AR samples that it closes, then the fewest steps at which each method reaches MDLM's
gen-PPL at ``--reference-steps``.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

from edlm.bench.records import read_results

REFS = {  # reference kind -> (label, colour, line style)
    "ar_samples": ("AR samples", "tab:green", "-."),
    "real_text": ("real text", "0.25", ":"),
    "shuffled_text": ("real text, words shuffled", "tab:red", ":"),
}
LINE_ENERGIES = {"ar": "Blues", "nce": "Oranges"}  # energy name -> colour map of its k lines
OTHERS = ["tab:purple", "tab:olive", "tab:brown", "tab:pink", "tab:cyan", "tab:gray", "gold", "lime", "tab:red"]
MARKERS = "DPX^v<>ph*"


def short(method: str) -> str:
    return method.replace(", τ=1", "").replace("window=", "w=")


def is_line(r: dict) -> bool:
    """MDLM, or importance sampling with the paper's AR / NCE energy: the families drawn as lines over T."""
    return r["method"] == "MDLM" or (r.get("sampler") in (None, "importance") and r.get("energy") in LINE_ENERGIES)


def load(folder: Path) -> tuple[dict, dict]:
    """(judge -> method -> steps -> row for the diffusion cells, judge -> kind -> row for the references)."""
    cells: dict = defaultdict(lambda: defaultdict(dict))
    refs: dict = defaultdict(dict)
    for r in read_results(folder):
        if r.get("gen_ppl") is None:
            continue
        if r["kind"] != "diffusion":
            refs[r["judge"]][r["kind"]] = r
        elif r["steps"] in cells[r["judge"]][r["method"]]:
            print(f"note: several rows for {r['method']} at T={r['steps']} ({r['judge']}); plotting the first.")
        else:
            cells[r["judge"]][r["method"]][r["steps"]] = r
    return cells, refs


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def styles(cells: dict) -> dict[str, dict]:
    """method -> matplotlib keywords, the same in every panel."""
    plt = pyplot()
    rows = {m: next(iter(pts.values())) for judge in cells.values() for m, pts in judge.items()}
    out, others = {}, 0
    for m in sorted(rows, key=lambda m: (m != "MDLM", not is_line(rows[m]), rows[m].get("energy"), rows[m]["k"], m)):
        r = rows[m]
        if m == "MDLM":
            out[m] = dict(color="black", marker="o", linestyle="-", linewidth=2.0)
        elif is_line(r):
            ks = sorted({x["k"] for x in rows.values() if is_line(x) and x.get("energy") == r["energy"]})
            shade = 0.45 + 0.5 * ks.index(r["k"]) / max(1, len(ks) - 1)
            lo, hi = r["window"]
            dash = "-" if (lo, hi) == (0.0, 1.0) else "--" if (lo, hi) == (0.8, 1.0) else ":"
            out[m] = dict(color=plt.get_cmap(LINE_ENERGIES[r["energy"]])(shade), marker="s" if dash == "-" else "^",
                          linestyle=dash, linewidth=1.5)
        else:
            out[m] = dict(color=OTHERS[others % len(OTHERS)], marker=MARKERS[others % len(MARKERS)], linestyle="none",
                          markersize=7)
            others += 1
    return out


def yerr(rows: list[dict], key: str) -> list[list[float]] | None:
    """Half-widths of the 95 % gen-PPL intervals (the bootstrap bounds, else 1.96 s.e.); None for other metrics."""
    def half(r: dict, bound: str, sign: int) -> float:  # a bound on the wrong side fails in errorbar, not hidden
        return sign * (r[bound] - r["gen_ppl"]) if r.get(bound) is not None else 1.96 * (r.get("gen_ppl_se") or 0.0)

    if key != "gen_ppl":
        return None
    return [[half(r, "gen_ppl_low", -1) for r in rows], [half(r, "gen_ppl_high", 1) for r in rows]]


def panels(cells: dict, refs: dict, x_key: str, y_key: str, ylabel: str, title: str, path: Path) -> Path:
    """One panel per judge of ``y_key`` against ``x_key`` for every method, legend on the right."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    judges, style = sorted(cells), styles(cells)
    fig, axes = plt.subplots(1, len(judges), figsize=(5.6 * len(judges) + 3.4, 6.0), dpi=130, squeeze=False)
    legend: dict[str, object] = {}
    for ax, judge in zip(axes[0], judges):
        methods = [m for m in style if m in cells[judge]]
        for i, m in enumerate(methods):
            rs = [r for _, r in sorted(cells[judge][m].items()) if r.get(y_key) is not None and r.get(x_key)]
            if not rs:
                continue
            dodge = 2 ** (0.025 * (i - (len(methods) - 1) / 2)) if x_key == "steps" else 1.0  # bars side by side
            kw = {"markersize": 5, **style[m]}
            h = ax.errorbar([r[x_key] * dodge for r in rs], [r[y_key] for r in rs], yerr=yerr(rs, y_key), capsize=2,
                            elinewidth=0.7, label=short(m), **kw)
            legend.setdefault(short(m), h)
            if x_key != "steps" and m == "MDLM":  # T is not on an axis here
                for r in rs:
                    ax.annotate(f"T={r['steps']}", (r[x_key], r[y_key]), textcoords="offset points", xytext=(4, -9),
                                fontsize=6.5)
        if y_key == "gen_ppl":  # the axis spans the cells and the AR samples; a reference far off is a note
            ys = [v for pts in cells[judge].values() for r in pts.values() for v in (r.get("gen_ppl_low"), r[y_key],
                  r.get("gen_ppl_high")) if v] + [r[y_key] for k, r in refs[judge].items() if k == "ar_samples"]
            ax.set_ylim(min(ys) / 1.15, max(ys) * 1.15)
        off = []
        for kind, (label, colour, dash) in REFS.items():
            r = refs[judge].get(kind)
            if r is None or r.get(y_key) is None:
                continue
            h = ax.axhline(r[y_key], color=colour, linestyle=dash, linewidth=1.3, label=label)
            legend.setdefault(label, h)
            lo, hi = ax.get_ylim()
            if not lo <= r[y_key] <= hi:
                off.append(f"{label}: {r[y_key]:.3g} ({'below' if r[y_key] < lo else 'above'} the axis)")
            if x_key == "seconds_per_sample" and r.get(x_key):  # AR samples: also where they sit in time
                ax.plot(r[x_key], r[y_key], marker="*", markersize=11, color=colour)
        if off:
            ax.text(0.99, 0.02, "\n".join(off), transform=ax.transAxes, ha="right", va="bottom", fontsize=7.5,
                    color="0.3")
        if x_key == "steps":
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({t for pts in cells[judge].values() for t in pts}))
        else:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(plain)
        ax.set_xlabel("sampling steps T (log scale)" if x_key == "steps" else "seconds per sample (log scale)")
        if y_key == "gen_ppl":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
            ax.yaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(ylabel)
        ax.set_title(f"judge: {judge}", fontsize=10)
        ax.grid(alpha=0.3, which="major")
    right = 1 - 3.3 / fig.get_figwidth()  # 3.3 inches on the right for the legend
    fig.legend(list(legend.values()), list(legend), loc="center left", bbox_to_anchor=(right, 0.5), fontsize=7.5,
               frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def training_curves(log: Path, path: Path, train_tokens: int | None, tokens_per_step: int | None) -> Path:
    """Validation perplexity against epochs (or steps) per model, and the NCE energies' accuracy against steps."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    curves: dict = defaultdict(list)  # model -> [(step, value, s.e.)]
    with open(log, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            key = next((k for k in ("val/ppl_bound", "val/ppl", "val/nce_acc") if row.get(k)), None)
            if key is not None:
                curves[row["model"]].append((int(row["step"]), float(row[key]), float(row.get("val/nce_acc_se") or 0)))
    if not curves:
        raise SystemExit(f"base_figure: no val/ppl_bound, val/ppl or val/nce_acc rows in {log}.")
    nce = sorted(m for m in curves if m.startswith("nce"))
    fig, axes = plt.subplots(1, 2 if nce else 1, figsize=(12.0 if nce else 6.5, 4.6), dpi=130, squeeze=False)
    epochs = train_tokens and tokens_per_step
    for ax, models, best in ((axes[0][0], [m for m in curves if m not in nce], min), (axes[0][-1], nce, max)):
        for m in models:
            pts = sorted(curves[m])
            per_epoch = epochs and best is min
            x = [s * tokens_per_step / train_tokens if per_epoch else s for s, _, _ in pts]
            y = [v for _, v, _ in pts]
            i = y.index(best(y))  # the best point; before the end = where the model starts to overfit
            name = "MDLM (bound)" if m == "mdlm" else m.upper() if m == "ar" else m
            at = f"epoch {x[i]:.3g}" if per_epoch else f"step {x[i]}"
            label = f"{name}: {'min' if best is min else 'max'} {y[i]:.4g} at {at}" + (", then worse" if i < len(y) - 1
                                                                                       else "")
            line = ax.errorbar(x, y, yerr=[e for _, _, e in pts] if best is max else None, marker="o", markersize=3,
                               capsize=2, label=label)
            ax.plot(x[i], y[i], marker="*", markersize=13, color=line[0].get_color(), markeredgecolor="black")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[0][0]
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "1235" else ""))
    ax.set_xlabel("epochs (step × tokens per step / training tokens)" if epochs else "optimizer step")
    ax.set_ylabel("validation perplexity (MDLM: upper bound)")
    ax.set_title("denoiser and AR model", fontsize=10)
    if nce:
        axes[0][1].set_xlabel("optimizer step")
        axes[0][1].set_ylabel("validation NCE accuracy (±1 s.e.)")
        axes[0][1].set_title("NCE energies (★ = best)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def gap_closed(mdlm: float, cell: float, ar: float) -> float:
    """The share of the log gen-PPL gap between MDLM (same T) and the AR model's own samples that a cell closes."""
    return (math.log(mdlm) - math.log(cell)) / (math.log(mdlm) - math.log(ar))


def cell_table(cells: dict, refs: dict) -> str:
    """Markdown: every cell (then the references) under every judge, with the gap closed."""
    judges = sorted(cells)
    head = ["method", "T", *[f"gen-PPL [95 %] · {j}" for j in judges], *[f"gap closed · {j}" for j in judges],
            "entropy (bits)", *[f"MAUVE · {j}" for j in judges], "s/sample"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines = [(m, t, [cells[j].get(m, {}).get(t) for j in judges]) for m in styles(cells)
             for t in sorted({t for j in judges for t in cells[j].get(m, {})})]
    lines += [(label, None, [refs[j].get(kind) for j in judges]) for kind, (label, _, _) in REFS.items()]
    for m, t, rs in lines:
        if not any(rs):
            continue
        gaps = []
        for j, r in zip(judges, rs):
            base, ar = cells[j].get("MDLM", {}).get(t), refs[j].get("ar_samples")
            ok = r and t is not None and m != "MDLM" and base and ar and base["gen_ppl"] != ar["gen_ppl"]
            gaps.append(f"{gap_closed(base['gen_ppl'], r['gen_ppl'], ar['gen_ppl']):+.0%}" if ok else "—")
        any_r = next(r for r in rs if r)
        ppl = [f"{r['gen_ppl']:.1f} [{fmt(r.get('gen_ppl_low'), '.1f')}, {fmt(r.get('gen_ppl_high'), '.1f')}]"
               if r else "—" for r in rs]
        out.append("| " + " | ".join([short(m), fmt(t, "d"), *ppl, *gaps, fmt(any_r.get("entropy_bits"), ".3f"),
                                      *[fmt(r and r.get("mauve"), ".3f") for r in rs],
                                      fmt(any_r.get("seconds_per_sample"), ".4f")]) + " |")
    if not any(refs[j].get("ar_samples") for j in judges):
        out.append("\n(no AR samples row: the gap closed needs it)")
    return "\n".join(out) + "\n"


def reach_table(cells: dict, ref_steps: int) -> str:
    """Markdown: per method and judge, the fewest measured steps whose gen-PPL ≤ MDLM@ref_steps's, and its time."""
    judges = sorted(cells)
    at = {j: cells[j].get("MDLM", {}).get(ref_steps) for j in judges}
    if not any(at.values()):
        return f"(no MDLM row at T={ref_steps}: no steps-to-reach table)\n"
    out = [f"Fewest measured steps T whose gen-PPL ≤ MDLM@{ref_steps}'s; s/sample there (× = MDLM@{ref_steps}'s "
           "s/sample over it)", "",
           "| method | " + " | ".join(f"{j} (MDLM@{ref_steps}: {fmt(at[j] and at[j]['gen_ppl'], '.1f')}, "
                                      f"{fmt(at[j] and at[j].get('seconds_per_sample'), '.4f')} s)" for j in judges)
           + " |", "|---" + "|---" * len(judges) + "|"]
    for m in list(styles(cells))[1:]:
        row = []
        for j in judges:
            pts, ref = [r for _, r in sorted(cells[j].get(m, {}).items())], at[j]
            hit = next((r for r in pts if ref and r["gen_ppl"] <= ref["gen_ppl"]), None)
            if hit is None:
                best = min(pts, key=lambda r: r["gen_ppl"], default=None)
                row.append("not reached" + (f" (best {best['gen_ppl']:.1f} @ T={best['steps']})" if best else ""))
                continue
            sec, ref_sec = hit.get("seconds_per_sample"), ref.get("seconds_per_sample")
            row.append(f"T={hit['steps']}, {fmt(sec, '.4f')} s" + (f" ({ref_sec / sec:.2f}×)" if sec and ref_sec else ""))
        out.append(f"| {short(m)} | " + " | ".join(row) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", help="a sweep's folder (holds results.jsonl)")
    p.add_argument("--out", default=None, help="folder for the PNGs; None = FOLDER")
    p.add_argument("--table", action="store_true", help="print the markdown tables")
    p.add_argument("--reference-steps", type=int, default=128, help="MDLM's T whose gen-PPL the steps-to-reach table targets")
    p.add_argument("--train-log", default=None, help="training CSV (columns model, step, val/...) for training_curves.png")
    p.add_argument("--train-tokens", type=int, default=None, help="tokens in the training split (x = epochs with the next)")
    p.add_argument("--tokens-per-step", type=int, default=None, help="batch size × length (x = epochs with the previous)")
    args = p.parse_args(argv)
    if (args.train_tokens is None) != (args.tokens_per_step is None):
        p.error("give both --train-tokens and --tokens-per-step (epochs), or neither (x = step).")
    folder = Path(args.folder)
    if not (folder / "results.jsonl").is_file():
        raise SystemExit(f"base_figure: no results.jsonl in {folder}.")
    out = Path(args.out) if args.out else folder
    out.mkdir(parents=True, exist_ok=True)
    cells, refs = load(folder)
    if not cells:
        raise SystemExit(f"base_figure: no scored diffusion rows in {folder}/results.jsonl.")
    first = next(r for j in cells.values() for pts in j.values() for r in pts.values())
    sub = f"{first.get('num_samples')} samples × {first.get('length')} tokens per point"
    print(panels(cells, refs, "steps", "gen_ppl", "generative perplexity (95 % interval)",
                 f"gen-PPL vs sampling steps (lower is better; {sub})", out / "genppl_vs_steps.png"))
    print(panels(cells, refs, "seconds_per_sample", "gen_ppl", "generative perplexity (95 % interval)",
                 f"gen-PPL vs seconds per sample (MDLM points labelled with T; {sub})", out / "genppl_vs_seconds.png"))
    if any(r.get("mauve") is not None for j in cells.values() for pts in j.values() for r in pts.values()):
        print(panels(cells, refs, "steps", "mauve", "MAUVE against held-out text (higher is better)",
                     f"MAUVE vs sampling steps ({sub})", out / "mauve_vs_steps.png"))
    else:
        print("note: no MAUVE scores in this sweep; mauve_vs_steps.png not drawn.")
    if args.train_log:
        print(training_curves(Path(args.train_log), out / "training_curves.png", args.train_tokens, args.tokens_per_step))
    if args.table:
        print(cell_table(cells, refs))
        print(reach_table(cells, args.reference_steps))


if __name__ == "__main__":
    main()
