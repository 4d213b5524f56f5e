"""The E. coli study's results from a run directory of benchmarks/dna/run.sh: results.json (every number),
results.md (bits per base per model, the AR model as reference; the sample measures against real and shuffled
held-out windows), dna_metrics.png and samples.fa.gz (every sample of the sweep, one FASTA record each).

    python benchmarks/dna/report.py runs/dna --out OUT              # from the run directory
    python benchmarks/dna/report.py --from-json OUT/results.json --out benchmarks/results/dna   # re-render
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edlm.atomic import atomic_write_text
from edlm.data.dna import FastaRecord, parse_fasta, write_fasta
from edlm.eval.dna import KS, MIN_ORF_CODONS, bits_per_base

MEASURES = [("dna_gc", "GC"), *((f"dna_js_k{k}", f"JS k={k}") for k in KS),
            ("dna_longest_orf", "longest ORF (codons)"), ("dna_orf_coverage", f"bases in ORFs >= {MIN_ORF_CODONS} cod.")]


def _flat(metrics: dict) -> dict:
    """A DnaMetrics.to_dict() as the sweep's dna_* columns."""
    items = {"gc": metrics["gc"], **{f"js_k{k}": v for k, v in metrics["kmer_js"].items()},
             "longest_orf": metrics["longest_orf"], "orf_coverage": metrics["orf_coverage"]}
    out = {}
    for key, v in items.items():
        out.update({f"dna_{key}": v["value"], f"dna_{key}_low": v["low"], f"dna_{key}_high": v["high"]})
    return out


def gather(runs: Path) -> dict:
    """Every number of the run, from the files run.sh leaves in ``runs``."""
    nll = json.loads((runs / "nll.json").read_text())
    refs = json.loads((runs / "dna_refs.json").read_text())
    training = {}
    for kind in ("mdlm", "ar", "nce"):
        m = json.loads((runs / kind / "metrics.json").read_text())
        training[kind] = {key: m.get(key) for key in ("global_step", "tokens_seen", "wall_time_s", "val_nll",
                                                      "num_params", "device", "tokens_per_s")}
    cells = [json.loads(line) for line in (runs / "sweep" / "results.jsonl").read_text().splitlines() if line.strip()]
    rows = [{"method": c["method"], "steps": c.get("steps"), "energy": c.get("energy"), "k": c.get("k"),
             "seconds_per_sample": c.get("seconds_per_sample"), **{k: v for k, v in c.items() if k.startswith("dna_")}}
            for c in cells]
    rows += [{"method": f"held-out windows, {name}", "steps": None, **_flat(m)} for name, m in refs["rows"].items()]
    return {"nll": nll, "training": training, "rows": rows, "window_length": refs["window_length"],
            "num_windows": refs["rows"]["real"]["num_sequences"], "bootstrap": refs["bootstrap"]}


def _cell(row: dict, key: str) -> str:
    v, lo, hi = row.get(key), row.get(key + "_low"), row.get(key + "_high")
    if v is None:
        return ""
    digits = 1 if "orf" in key and "coverage" not in key else 3
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def render_markdown(res: dict) -> str:
    nll = res["nll"]
    exact = lambda r: r.get("kind") == "exact" or r.get("exact")  # noqa: E731 - JSON of either edlm version
    ar = [r for r in nll["results"] if exact(r)]
    ar_bits = bits_per_base(ar[0]["nll"]) if ar else None
    lines = ["# E. coli K-12: base-level MDLM, EDLM-AR, EDLM-NCE", "",
             f"Held-out: the valid split of dna_ecoli_k12 ({nll['results'][0]['num_tokens']:,} bases in rows of "
             f"{nll['length']}); {nll['time_samples']} time samples for the diffusion rows.", "",
             "| model | kind | nats/base | bits/base | vs AR (bits/base) |", "|---|---|---:|---:|---:|"]
    for r in sorted(nll["results"], key=lambda r: not exact(r)):
        bits = bits_per_base(r["nll"])
        se = "" if r.get("se") is None else f" ± {bits_per_base(r['se']):.4f}"
        diff = "reference" if exact(r) else ("" if ar_bits is None else f"{bits - ar_bits:+.4f}")
        name = r["name"] + (f" [{r['detail']}]" if r.get("detail") else "")
        lines.append(f"| {name} | {r['label']} | {r['nll']:.4f} | {bits:.4f}{se} | {diff} |")
    lines += ["", "| model | steps | tokens seen | wall (s) | parameters | card |", "|---|---:|---:|---:|---:|---|"]
    for kind, t in res["training"].items():
        lines.append(f"| {kind} | {t['global_step']} | {t['tokens_seen']:,} | {t['wall_time_s']:.0f} | "
                     f"{t['num_params']:,} | {t.get('device') or ''} |")
    lines += ["", f"Samples: {res['num_windows']} sequences of {res['window_length']} bases per row; 95 % bootstrap "
              f"intervals over sequences ({res['bootstrap']} resamples). JS: Jensen-Shannon distance of the pooled "
              "k-mer spectrum to the held-out reference's (lower = closer). Real and shuffled held-out windows are "
              "the ceiling and the floor.", "",
              "| set | T | " + " | ".join(label for _, label in MEASURES) + " |",
              "|---|---:|" + "---:|" * len(MEASURES)]
    for row in sorted(res["rows"], key=lambda r: (r["steps"] is not None, r["steps"] or 0, r["method"])):
        lines.append(f"| {row['method']} | {row['steps'] or ''} | "
                     + " | ".join(_cell(row, key) for key, _ in MEASURES) + " |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> Path:
    """JS (k = 6), longest ORF and ORF coverage against T per method; reference rows as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("dna_js_k6", "6-mer JS distance to held-out (lower = closer)"), ("dna_longest_orf",
              "mean longest ORF per window (codons)"), ("dna_orf_coverage", f"bases in ORFs >= {MIN_ORF_CODONS} codons")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    methods = sorted({r["method"] for r in res["rows"] if r["steps"] is not None})
    for ax, (key, title) in zip(axes, panels):
        for method in methods:
            rows = sorted((r for r in res["rows"] if r["method"] == method and key in r), key=lambda r: r["steps"])
            if not rows:
                continue
            x = [r["steps"] for r in rows]
            y = [r[key] for r in rows]
            err = [[max(0.0, v - r[key + "_low"]) for v, r in zip(y, rows)],
                   [max(0.0, r[key + "_high"] - v) for v, r in zip(y, rows)]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method.split(" k=")[0])
        for r in (r for r in res["rows"] if r["steps"] is None and key in r):
            ax.axhline(r[key], linestyle="--", linewidth=1, color="grey" if "shuffled" in r["method"] else "black")
            ax.annotate(r["method"].replace("held-out windows, ", "").replace("real text (dna_ecoli_k12:valid)",
                        "real (sweep)"), (1.0, r[key]), xycoords=("axes fraction", "data"), fontsize=7, ha="right",
                        va="bottom")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("reverse steps T")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sample_fasta(runs: Path, path: Path) -> Path:
    """Every sample of the sweep as one FASTA record, named by cell (method, T) and index."""
    records = []
    for file in sorted((runs / "sweep" / "samples").glob("*.jsonl")):
        lines = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        head = lines[0]
        settings = head.get("settings", {})
        method = head.get("method", file.stem)
        if settings.get("steps"):  # a sampler cell: energy name, k and T
            label = f"{settings.get('energy') or 'none'}_k{settings.get('k', 1)}_T{settings['steps']}"
        else:  # a reference row
            label = "ar_samples" if "AR" in method else "real_windows"
        label = label.encode("ascii", "replace").decode()
        for i, r in enumerate(x for x in lines[1:] if "text" in x):
            seq = parse_fasta(f">x\n{r['text']}\n")[0].seq
            records.append(FastaRecord(f"{label}_{i} cell={head.get('cell_key', file.stem)}", seq))
    return write_fasta(records, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="?", help="the run directory of benchmarks/dna/run.sh (RUNS, default runs/dna)")
    p.add_argument("--from-json", default=None, help="re-render from a results.json instead")
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
    else:
        runs = Path(args.runs or "runs/dna")
        res = gather(runs)
        machine = Path(out / "machine.txt")
        res["machine"] = machine.read_text().strip() if machine.is_file() else None
        atomic_write_text(out / "results.json", json.dumps(res, indent=1) + "\n")
        print(sample_fasta(runs, out / "samples.fa.gz"))
    atomic_write_text(out / "results.md", render_markdown(res))
    print(plot(res, out / "dna_metrics.png"))
    print(render_markdown(res))


if __name__ == "__main__":
    main()
