"""The samplers frontier in one figure: generative perplexity against seconds per sample, one panel per judge.

MDLM is the line over its step counts; every other sampler family is a set of markers (each labelled with its T).
The dashed lines mark the target: MDLM at T = 128's gen-PPL (horizontal) reached in at most 1 / 1.5 of its time
(vertical), so a point in the lower-left box meets it under that judge; the dotted line, where the sweep has the row, is
held-out text with its words shuffled. Error bars: 95 % bootstrap intervals.

    python benchmarks/wiki/frontier_figure.py benchmarks/results/wiki_frontier [--out FILE.png]

Reads ``results.jsonl`` of a frontier sweep (``benchmarks/configs/wiki_frontier.yaml``); writes ``frontier.png`` beside
it by default.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

FAMILIES = {  # cell-key prefix -> (label, colour, marker)
    "mdlm-": ("MDLM", "black", "o"),
    "edlm-ar-k4": ("EDLM-AR k=4, every step", "tab:blue", "s"),
    "edlm-nce-k4": ("EDLM-NCE k=4, every step", "tab:cyan", "s"),
    "edlm-ar-k8-w0.8": ("EDLM-AR k=8, window [0.8, 1]", "tab:purple", "D"),
    "edlm-nce_small": ("cheap NCE (2 blocks) k=4", "tab:olive", "P"),
    "adaptive-ar": ("adaptive, AR energy", "tab:green", "^"),
    "adaptive-nce": ("adaptive, NCE energy", "lime", "^"),
    "smc-ar": ("SMC, AR energy", "tab:red", "v"),
    "smc-nce_small": ("SMC, cheap NCE", "gold", "v"),
    "smc-nce": ("SMC, NCE energy", "tab:orange", "v"),
    "remask-none": ("remasking, no energy", "tab:gray", "X"),
    "remask-ar": ("remasking, AR-guided", "tab:brown", "X"),
}
TARGET_SPEEDUP = 1.5


def family(cell_key: str) -> str | None:
    """The longest prefix of FAMILIES that the cell key starts with (``smc-nce_small`` before ``smc-nce``)."""
    hits = [p for p in FAMILIES if cell_key.startswith(p)]
    return max(hits, key=len) if hits else None


def load(results: Path) -> dict[str, dict[str, dict]]:
    """judge -> cell key -> row."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    with open(results, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("gen_ppl") is not None and r.get("kind") in ("diffusion", "shuffled_text"):
                out[r["judge"]][r["cell_key"]] = r
    return out


def draw(rows: dict[str, dict[str, dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judges = sorted(rows)
    fig, axes = plt.subplots(1, len(judges), figsize=(6.6 * len(judges), 5.4), dpi=130, squeeze=False)
    for ax, judge in zip(axes[0], judges):
        cells = rows[judge]
        ref = next((r for k, r in cells.items() if k.startswith("mdlm-T128")), None)
        by_family: dict[str, list[dict]] = defaultdict(list)
        for r in cells.values():
            if r["kind"] == "shuffled_text":  # the floor: held-out text with its words shuffled
                ax.axhline(r["gen_ppl"], color="tab:red", linestyle=":", linewidth=1.2)
                ax.annotate("real text, words shuffled", (0.01, r["gen_ppl"]), xycoords=("axes fraction", "data"),
                            textcoords="offset points", xytext=(0, 3), fontsize=7, color="tab:red")
        for key, r in cells.items():
            fam = family(key)
            if fam is not None:
                by_family[fam].append(r)
        for fam, rs in by_family.items():
            label, colour, marker = FAMILIES[fam]
            rs.sort(key=lambda r: r["seconds_per_sample"])
            xs = [r["seconds_per_sample"] for r in rs]
            ys = [r["gen_ppl"] for r in rs]
            err = [[r["gen_ppl"] - r["gen_ppl_low"] for r in rs], [r["gen_ppl_high"] - r["gen_ppl"] for r in rs]]
            ax.errorbar(xs, ys, yerr=err, label=label, color=colour, marker=marker, capsize=2, markersize=6,
                        linewidth=1.6 if fam == "mdlm-" else 0, elinewidth=0.8, alpha=0.9)
            for r in rs:
                ax.annotate(f"T={r['steps']}", (r["seconds_per_sample"], r["gen_ppl"]), textcoords="offset points",
                            xytext=(3, 3), fontsize=6, color=colour)
        if ref is not None:
            ax.axhline(ref["gen_ppl"], color="0.3", linestyle="--", linewidth=1)
            ax.axvline(ref["seconds_per_sample"] / TARGET_SPEEDUP, color="0.3", linestyle="--", linewidth=1)
            ax.text(ref["seconds_per_sample"] / TARGET_SPEEDUP, ax.get_ylim()[1], " target: MDLM@128's gen-PPL\n"
                    f" in ≤ 1/{TARGET_SPEEDUP:g} of its time", va="top", fontsize=7, color="0.3")
        ax.set_xscale("log")
        ax.set_xlabel("seconds per sample (generate, H200, batch 256; log scale)")
        ax.set_ylabel("generative perplexity (95 % interval)")
        ax.set_title(f"judge: {judge}", fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("wikipedia_en samplers frontier: 256 samples × 128 tokens per point", fontsize=11)
    fig.tight_layout(rect=(0, 0.12, 1, 0.96))
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", help="a frontier sweep's folder (holds results.jsonl)")
    p.add_argument("--out", default=None, help="the PNG to write (default: FOLDER/frontier.png)")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    results = folder / "results.jsonl"
    if not results.is_file():
        raise SystemExit(f"frontier_figure: no results.jsonl in {folder}.")
    print(draw(load(results), Path(args.out) if args.out else folder / "frontier.png"))


if __name__ == "__main__":
    main()
