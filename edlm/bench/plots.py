"""Figures and a markdown table for a sweep directory (``edlm bench plot DIR``).

    paths = plot_sweep("runs/bench/tiny_cpu")   # genppl_vs_steps.png, genppl_vs_seconds.png,
                                                # entropy_vs_steps.png, results.md

One line per method (MDLM; EDLM-AR k=…, window=…, τ=…; EDLM-NCE …), averaged over seeds (error bars:
the standard deviation over seeds when there are several, else ±1 standard error over the cell's
samples); the reference rows (real text, AR samples) are horizontal dashed lines. Quality is always
shown with entropy beside it (SPEC 4): a low gen-PPL at a low entropy is repetition, not quality.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from pathlib import Path

from edlm.atomic import atomic_write_text
from edlm.bench.records import read_results

__all__ = ["plot_sweep", "results_table", "PLOT_FILES"]

PLOT_FILES = ("genppl_vs_steps.png", "genppl_vs_seconds.png", "entropy_vs_steps.png")


def _pick_judge(rows: list[dict], judge: str | None) -> str:
    judges = sorted({r["judge"] for r in rows})
    if judge is not None:
        if judge not in judges:
            raise ValueError(f"no results scored by judge {judge!r} here; judges present: {judges}.")
        return judge
    if len(judges) > 1:
        raise ValueError(f"results from several judges ({judges}); pick one with --judge.")
    return judges[0]


def _method_order(rows: list[dict]) -> list[str]:
    """MDLM first, then the energy methods by name."""
    methods = sorted({r["method"] for r in rows if r["kind"] == "diffusion"})
    return sorted(methods, key=lambda m: (m != "MDLM", m))


def _fmt(x, spec: str = ".2f", none: str = "—") -> str:
    return none if x is None else format(x, spec)


def _pm(r: dict, key: str, spec: str) -> str:
    """``value ± standard error over samples`` (the ± part when known)."""
    if r.get(key) is None:
        return "—"
    se = r.get(f"{key}_se")
    return format(r[key], spec) + ("" if se is None else f" ± {format(se, spec)}")


def _describe(rows: list[dict]) -> dict:
    """Hardware, scoring machine, dates and commands of a set of rows (distinct values, in order)."""
    def distinct(key, sel=rows):
        return list(dict.fromkeys(str(r.get(key)) for r in sel if r.get(key) is not None))

    gen_rows = [r for r in rows if r["kind"] not in ("real_text", "shuffled_text")] or rows
    dates = sorted(r["date"] for r in rows if r.get("date"))
    return {
        "hardware": distinct("hardware", gen_rows),
        "scored_on": distinct("scored_on"),
        "torch": distinct("torch_version"),
        "dates": (dates[0], dates[-1]) if dates else ("?", "?"),
        "commands": distinct("command"),
    }


def results_table(rows: list[dict], name: str = "sweep") -> str:
    """The markdown table of a sweep (one line per cell) with a header naming hardware, judge and command."""
    if not rows:
        return f"# {name}\n\n(no results)\n"
    d = _describe(rows)
    judge = rows[0]["judge"]
    length = rows[0].get("length")
    n = rows[0].get("num_samples")
    seeds = len({r.get("seed") for r in rows if r["kind"] == "diffusion"}) > 1
    lines = [
        f"# {name}",
        "",
        f"- judge: **{judge}** (gen-PPL = exp of the token-weighted mean NLL over all judge tokens); "
        "± = standard error over the cell's samples",
        f"- samples: {n} per cell, {length} tokens each; entropy = mean per-sample unigram entropy, in bits "
        "(nats in results.jsonl)",
        f"- generated on: {'; '.join(d['hardware'])}",
        f"- scored on: {'; '.join(d['scored_on'])}; torch {', '.join(d['torch'])}",
        f"- dates (UTC): {d['dates'][0]} … {d['dates'][1]}",
        *[f"- command: `{c}`" for c in d["commands"]],
        "- s/sample = wall-clock of the batched generate() calls / samples; NFE = network calls per batch "
        "(denoiser / energy)",
        "",
    ]
    ci = any(r.get("gen_ppl_low") is not None for r in rows)
    mauve = any(r.get("mauve") is not None for r in rows)
    rep = any(r.get("repeated_4gram") is not None for r in rows)
    prompt = rows[0].get("prompt_tokens")
    if prompt:
        lines.insert(-1, f"- prefix completion: the first {prompt} tokens of held-out windows given; every figure is "
                         "of the continuations (the judge reads the prompt, scores the continuation)")
    if ci or mauve or rep:
        lines.insert(-1, "- [low, high] = 95 % bootstrap interval over samples (token-weighted); MAUVE against the "
                         "real-text row's texts on the judge's features; rep-4 = mean share of repeated 4-grams, "
                         "degen. = share of samples with more than a quarter of their 4-grams repeated")
    head = ["method", "steps", "k", "window", "τ", *(["seed"] if seeds else []), "gen-PPL", *(["95 % interval"] if ci
            else []), *(["MAUVE"] if mauve else []), "entropy (bits)", *(["rep-4 / degen."] if rep else []),
            "s/sample", "NFE (denoiser / energy)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    order = {m: i for i, m in enumerate(_method_order(rows))}
    refs = [r for r in rows if r["kind"] != "diffusion"]
    cells = sorted((r for r in rows if r["kind"] == "diffusion"),
                   key=lambda r: (order[r["method"]], r["steps"], r["seed"]))
    for r in cells + refs:
        diffusion = r["kind"] == "diffusion"
        has_energy = diffusion and r["energy"] != "none"
        window = f"[{r['window'][0]:g}, {r['window'][1]:g}]" if has_energy else "—"
        if r["kind"] == "diffusion":
            nfe = f"{r['nfe_denoiser']:g} / {r['nfe_energy']:g}"
        else:
            nfe = f"{r['nfe_denoiser']:g} AR calls" if r["kind"] == "ar_samples" else "—"
        label = r["method"].split(" k=")[0] if has_energy else r["method"]
        cols = [label, str(r["steps"]) if diffusion else "—", str(r["k"]) if has_energy else "—", window,
                f"{r['temperature']:g}" if has_energy else "—", *([str(r["seed"])] if seeds else []),
                _pm(r, "gen_ppl", ".1f"),
                *([f"[{_fmt(r.get('gen_ppl_low'), '.1f')}, {_fmt(r.get('gen_ppl_high'), '.1f')}]"] if ci else []),
                *([_fmt(r.get("mauve"), ".3f")] if mauve else []), _pm(r, "entropy_bits", ".3f"),
                *([f"{_fmt(r.get('repeated_4gram'), '.3f')} / {_fmt(r.get('degenerate_fraction'), '.3f')}"]
                  if rep else []),
                _fmt(r.get("seconds_per_sample"), ".4f"), nfe]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def _series(rows: list[dict], x_key: str, y_key: str) -> dict[str, tuple[list, list, list, list]]:
    """method -> (mean x, mean y, error of y, steps), sorted by x; rows without a y value are left out.

    The error is the standard deviation over seeds when a point has several seeds, else the row's own
    standard error over samples (``<y_key>_se``), else 0.
    """
    groups: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["kind"] == "diffusion" and r.get(y_key) is not None:
            groups[r["method"]][r["steps"]].append(r)
    out = {}
    for method in _method_order(rows):
        if method not in groups:
            continue
        xs, ys, es, ts = [], [], [], []
        for steps, rs in groups[method].items():
            vals = [r[y_key] for r in rs]
            xs.append(statistics.mean(r[x_key] for r in rs) if x_key != "steps" else steps)
            ys.append(statistics.mean(vals))
            es.append(statistics.stdev(vals) if len(vals) > 1 else (rs[0].get(f"{y_key}_se") or 0.0))
            ts.append(steps)
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        out[method] = tuple([v[i] for i in order] for v in (xs, ys, es, ts))
    return out


def _plot(path: Path, rows: list[dict], x_key: str, y_key: str, xlabel: str, ylabel: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, ScalarFormatter

    series = _series(rows, x_key, y_key)
    fig, ax = plt.subplots(figsize=(8.0, 5.2), dpi=130)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(series) > len(colors):  # more methods than the cycle's 10 colours: no two series may share one
        colors = [plt.get_cmap("tab20")(i % 20) for i in range(len(series))]
    markers = "osD^v<>ph*"
    for i, (method, (xs, ys, es, ts)) in enumerate(series.items()):
        ax.errorbar(xs, ys, yerr=es if any(es) else None, label=method, color=colors[i % len(colors)],
                    marker=markers[i % len(markers)], linewidth=1.8, markersize=6, capsize=3)
        if x_key != "steps":  # the steps are not on an axis here: label each point with its T
            for x, y, steps in zip(xs, ys, ts):
                ax.annotate(f"T={steps}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=colors[i % len(colors)])
    ref_styles = ("--", "-.", ":")
    for j, r in enumerate(r for r in rows if r["kind"] != "diffusion" and r.get(y_key) is not None):
        ax.axhline(r[y_key], linestyle=ref_styles[j % len(ref_styles)], color="0.35" if j == 0 else "0.6",
                   linewidth=1.4, label=f"{r['method']}: {r[y_key]:.4g}")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.05, 0.1, 0.2 … instead of 2^-3
    if x_key == "steps":
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["steps"] for r in rows if r["kind"] == "diffusion"}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
    else:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ys_all = [y for _, ys, _, _ in series.values() for y in ys] + [r[y_key] for r in rows
                                                               if r["kind"] != "diffusion" and r.get(y_key)]
    if y_key == "gen_ppl" and ys_all and max(ys_all) / max(min(ys_all), 1e-12) > 8:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    refs = {r["method"] for r in rows if r["kind"] != "diffusion"}
    order = sorted(range(len(labels)), key=lambda i: labels[i].rsplit(": ", 1)[0] in refs)  # methods, then references
    # below the axes: the reference lines span the whole width, so any spot inside may hide one
    rows_needed = math.ceil(len(order) / 2)
    fig.set_size_inches(8.0, 5.2 + 0.22 * rows_needed)
    fig.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8.5, loc="lower center",
               ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.045 * rows_needed + 0.01, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _sweep_name(out: Path) -> str:
    """The ``name`` in the sweep's saved config.yaml, else the directory name."""
    path = out / "config.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        name = OmegaConf.load(path).get("name")
        if name:
            return str(name)
    return out.name


def plot_sweep(out: str | os.PathLike, judge: str | None = None, name: str | None = None) -> list[Path]:
    """Write the PNG plots and ``results.md`` for the results in ``out``; returns their paths.

    Args:
        out: a sweep directory (``run_sweep``'s output).
        judge: whose figures to draw; None = every judge present: the first (by name) gets the plain file names
            (``PLOT_FILES``), each other judge the same names with ``-<judge>`` before ``.png``; ``results.md`` holds
            one table per judge.
        name: the sweep's name for titles; None = the directory name.

    With judge "none" (entropy only) the two gen-PPL plots are skipped; with MAUVE scores, ``mauve_vs_steps.png``.
    """
    out = Path(out)
    rows = read_results(out)
    if not rows:
        raise ValueError(f"no results in {out}; run `edlm bench sweep` (stage score or all) first.")
    judges = [_pick_judge(rows, judge)] if judge is not None else sorted({r["judge"] for r in rows})
    name = name or _sweep_name(out)
    paths, text = [], ""
    for i, j in enumerate(judges):
        suffix = "" if i == 0 else "-" + "".join(c if c.isalnum() else "_" for c in j)
        mine = [r for r in rows if r["judge"] == j]
        paths += _judge_plots(out, mine, j, name, suffix)
        text += ("\n" if text else "") + results_table(mine, name)
        if j != "none" and any(r["kind"] == "diffusion" and r["method"] == "MDLM" for r in mine):
            from edlm.bench.summary import reach_table

            text += "\n" + reach_table(mine)
    md = out / "results.md"
    atomic_write_text(md, text)
    return paths + [md]


def _judge_plots(out: Path, rows: list[dict], judge: str, name: str, suffix: str) -> list[Path]:
    """The plots of one judge's rows (``plot_sweep``)."""
    d = _describe(rows)
    hw = "; ".join(d["hardware"])
    n, length = rows[0].get("num_samples"), rows[0].get("length")
    sub = f"{n} samples × {length} tokens per cell; generated on {hw}"
    ppl_label = f"generative perplexity (judge: {judge})"
    file = lambda base: out / base.replace(".png", f"{suffix}.png")  # noqa: E731
    paths = []
    if judge != "none":
        paths.append(_plot(file(PLOT_FILES[0]), rows, "steps", "gen_ppl", "sampling steps T (log scale)", ppl_label,
                           f"{name}: gen-PPL vs steps (lower is better; bars: ±1 s.e. over samples)\n{sub}"))
        timed = [r for r in rows if r["kind"] != "diffusion" or r.get("seconds_per_sample")]
        paths.append(_plot(file(PLOT_FILES[1]), timed, "seconds_per_sample", "gen_ppl",
                           "seconds per sample (s, log scale)", ppl_label,
                           f"{name}: gen-PPL vs sampling time (points: T = steps; bars: ±1 s.e.)\n{sub}"))
    paths.append(_plot(file(PLOT_FILES[2]), rows, "steps", "entropy_bits", "sampling steps T (log scale)",
                       "unigram entropy (bits)",
                       f"{name}: unigram entropy vs steps (higher = less repetitive; bars: ±1 s.e.)\n{sub}"))
    if any(r.get("mauve") is not None for r in rows):
        paths.append(_plot(file("mauve_vs_steps.png"), rows, "steps", "mauve", "sampling steps T (log scale)",
                           f"MAUVE against held-out text (features: {judge})",
                           f"{name}: MAUVE vs steps (higher is closer to real text)\n{sub}"))
    return paths
