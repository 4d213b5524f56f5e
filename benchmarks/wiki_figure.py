"""The headline figure of the wikipedia_en sweep: judge gen-PPL (left) and AR-model NLL of the samples (right) vs steps, for
MDLM and the k = 8 / window [0, 1] EDLM rows of the main sweep, plus the exact-energy diagnostic at T = 16.

    python benchmarks/wiki_figure.py benchmarks/results/wiki_gpu

Reads results.jsonl and ar_nll.json of the main sweep and diag/results.jsonl there; writes headline.png.
"""

import json
import sys
from pathlib import Path

import matplotlib

from edlm.bench import read_results

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MAIN = {"MDLM": "MDLM", "EDLM-AR k=8, window=[0, 1], τ=1": "EDLM-AR k=8 [0,1] (carry-over, paper default)",
        "EDLM-NCE k=8, window=[0, 1], τ=1": "EDLM-NCE k=8 [0,1]"}


def main(root: str) -> None:
    root = Path(root)
    rows = read_results(root)
    diag = read_results(root / "diag")
    nll = json.loads((root / "ar_nll.json").read_text())["cells"]
    refs = {r["method"]: r for r in rows if r["kind"] != "diffusion"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6))
    for method, label in MAIN.items():
        pts = sorted((r["steps"], r["gen_ppl"], r["gen_ppl_se"], r["cell_key"]) for r in rows if r["method"] == method)
        a.errorbar([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts], marker="o", capsize=3, label=label)
        ys = [(p[0], nll[p[3]]["ar_nll"], nll[p[3]]["ar_nll_se"]) for p in pts if p[3] in nll]
        b.errorbar([y[0] for y in ys], [y[1] for y in ys], [y[2] for y in ys], marker="o", capsize=3, label=label)
    for r in diag:
        if r.get("energy_spec", "").endswith("carry_over=false") and r["temperature"] == 1.0:
            label = f"EDLM-AR exact (carry_over=false) k={r['k']} [0,1]"
            a.errorbar([r["steps"]], [r["gen_ppl"]], [r["gen_ppl_se"]], marker="*", markersize=12, ls="none",
                       capsize=3, label=label)
            if r["cell_key"] in nll:
                c = nll[r["cell_key"]]
                b.errorbar([r["steps"]], [c["ar_nll"]], [c["ar_nll_se"]], marker="*", markersize=12, ls="none",
                           capsize=3, label=label)
    real, ar = refs.get("real text (wikipedia_en:valid)"), refs.get("AR samples")
    ref_ppl = f"real text {real['gen_ppl']:.0f}, AR samples {ar['gen_ppl']:.0f}" if real and ar else ""
    ref_nll = (f"real text {nll[real['cell_key']]['ar_nll']:.2f}, AR samples {nll[ar['cell_key']]['ar_nll']:.2f}"
               if real and ar and real["cell_key"] in nll and ar["cell_key"] in nll else "")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xticks([8, 16, 32, 64, 128, 256], labels=["8", "16", "32", "64", "128", "256"])
        ax.set_xlabel("sampling steps T (log scale)")
        ax.grid(alpha=0.3)
    a.set_yscale("log")
    a.set_ylabel("gen-PPL, judge SmolLM2-135M (lower is better)")
    a.set_title(f"judge gen-PPL (±1 s.e.; entropy 6.48-6.55 bits for all)\nreference, off the axis: {ref_ppl}",
                fontsize=9)
    b.set_ylabel("NLL of the samples under the AR energy model (nats/token)")
    b.set_title(f"what EDLM-AR's weights target: AR-model NLL (±1 s.e.)\nreference, off the axis: {ref_nll}",
                fontsize=9)
    b.legend(fontsize=7, loc="upper right")
    fig.suptitle("wikipedia_en models (8 M params, L = 128), 256 samples per point; generated on NVIDIA H100 80GB HBM3,"
                 " scored on CPU", fontsize=10)
    fig.tight_layout()
    fig.savefig(root / "headline.png", dpi=110)
    print(root / "headline.png")


if __name__ == "__main__":
    main(sys.argv[1])
