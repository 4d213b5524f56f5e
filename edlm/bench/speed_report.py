"""The Markdown of a speed benchmark's results (``speed.md``), rendered from the dict that ``speed.json``
holds, so a stored ``speed.json`` renders again anywhere:
``render_markdown(json.loads(Path("speed.json").read_text()))``."""

from __future__ import annotations

__all__ = ["render_markdown", "render_targets", "met_at_every_size"]

MFU_TARGET = 0.6  # forwards of at least TARGET_TOKENS tokens per call
TARGET_TOKENS = 32768
OVERHEAD_TARGET_PCT = 10.0  # MDLM: time outside the denoiser calls
ALONE_TARGET = 1.1  # EDLM: plain run / its network calls timed alone

# the plain network calls whose MFU the first target is about
_TARGET_CALLS = {"DiT": "denoiser fwd (logits)", "AR": "AR fwd (logits)", "NCE": "NCEEnergy fwd"}


def fmt(x, spec: str) -> str:
    """``format(x, spec)``, or a dash for a missing value."""
    return "–" if x is None else format(x, spec)


def pct(x) -> str:
    """A fraction as a percentage with one decimal, or a dash."""
    return "–" if x is None else f"{100 * x:.1f}%"


def met_at_every_size(rows: list[dict], key: str) -> str:
    """"yes" when every row's ``key`` reaches `MFU_TARGET`, else "no (B = …)" naming the sizes below it."""
    short = [r["B"] for r in rows if r[key] < MFU_TARGET]
    return "yes" if not short else "no (B = " + ", ".join(str(b) for b in short) + ")"


def render_targets(res: dict) -> list[str]:
    """The speed targets, read off a run's rows: forwards of ≥ 32 k tokens per call at ≥ 60 % MFU (every such
    size, timed on their own and back to back), MDLM's sampler overhead ≤ 10 %, EDLM runs ≤ 1.1 × their
    network calls timed alone."""
    L = res["meta"]["config"]["length"]
    lines = ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for model, what in _TARGET_CALLS.items():
        rows = [r for r in res.get("forward", []) if r["model"] == model and r["what"] == what
                and r["B"] * L >= TARGET_TOKENS]
        for key, how in (("mfu", "each call on its own"), ("mfu_back_to_back", "calls back to back")):
            if rows:
                got = ", ".join(f"{100 * r[key]:.1f} % (B = {r['B']})" for r in rows)
                lines.append(f"| {model} forward ≥ {100 * MFU_TARGET:.0f} % MFU at every size ≥ 32k tokens "
                             f"per call ({how}) | {got} | {met_at_every_size(rows, key)} |")
    for row in res.get("e2e", []):
        if "error" in row:
            continue
        if row["method"] == "MDLM":
            met = "yes" if row["overhead_pct"] <= OVERHEAD_TARGET_PCT else "no"
            lines.append(f"| {row['name']}: sampler overhead ≤ {OVERHEAD_TARGET_PCT:.0f} % | "
                         f"{row['overhead_pct']:.1f} % | {met} |")
        else:
            met = "yes" if row["over_alone"] <= ALONE_TARGET else "no"
            lines.append(f"| {row['name']}: ≤ {ALONE_TARGET} × its network calls alone | "
                         f"{row['over_alone']:.3f} × (plain run; timed run {row['over_alone_timed']:.3f} ×) "
                         f"| {met} |")
    return lines


def _header(res: dict) -> list[str]:
    m, models, c = res["meta"], res.get("models", {}), res.get("ceilings", {})
    s = m.get("settings", {})
    lines = [
        "# Speed: MDLM / EDLM sampling",
        "",
        f"- card: **{m.get('device')}**; torch {m.get('torch')}, CUDA {m.get('cuda')}, "
        f"Python {m.get('python')}",
        f"- command: `{m.get('command')}`",
        f"- date: {m.get('date')}; elapsed {m.get('elapsed_s')} s; "
        f"edlm sources sha256 {m.get('source_sha256')}",
        f"- networks: {models.get('dtype')}, weights {models.get('weights')}; "
        f"parameters {models.get('params')}; compiled (frozen, energies from CUDA graphs, compiled draws): "
        f"{s.get('compile')}",
        "- config: " + ", ".join(f"{k} {v}" for k, v in (m.get("config") or {}).items()),
    ]
    if c:
        lines.append(f"- measured matmul peak: **{c['matmul_peak_tflops']:.3g} TFLOP/s** ({c['matmul']}), "
                     "the denominator of every MFU")
    picks = [p for p in m.get("gemm_picks") or [] if p.get("algo", -1) >= 0]
    if picks:
        lines.append("- cuBLASLt algorithms picked over torch's GEMM: " + "; ".join(
            f"{p['m']}×{p['n']}×{p['k']} {p['epilogue']} #{p['algo']} {p['ms']:.4f} ms "
            f"(torch {p['torch_ms']:.4f})" for p in picks))
    return lines


def _forward_table(rows: list[dict]) -> list[str]:
    lines = ["", "## Per-call forward (median of repeats)", "",
             "on its own: each call starts on an idle device and is waited for (CUDA events around it; its "
             "host-side preparation counts); back to back: the repeats queued with no synchronisation "
             "between them, as the sampling loop makes its energy calls.", "",
             "| model | call | B | ms (min–max) | tokens/s | GFLOP | MFU | back to back ms | MFU b2b |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['what']} | {r['B']} | "
                     f"{r['ms']:.3f} ({r['ms_min']:.3f}–{r['ms_max']:.3f}) | {r['tokens_per_s']:,.0f} | "
                     f"{r['gflop']:,.2f} | {pct(r['mfu'])} | {r['ms_back_to_back']:.3f} | "
                     f"{pct(r['mfu_back_to_back'])} |")
    return lines


def _e2e_table(rows: list[dict]) -> list[str]:
    lines = ["", "## End-to-end `generate`", "",
             "s: the timed run, its network calls wrapped in timers (CUDA events, no synchronisation); "
             "network = the time inside the denoiser / energy calls, overhead = s − network (the sampler's "
             "own cost). plain s: the same run from the same seed with the bare networks, what a user waits "
             "for (✓: the same tokens as the timed run); s/sample, tokens/s and MFU use it. alone: Σ over "
             "the run's network calls of the same call timed on its own (median of 5) at its batch; "
             "× alone = plain s / alone.", "",
             "| run | s | plain s | s/sample | tokens/s | NFE den | energy calls (seqs) | den net s "
             "| energy net s | overhead s (%) | alone s | × alone | peak GiB | TFLOP | MFU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} |" + " |" * 13)
            continue
        edlm = r["energy"] is not None
        name = f"{r['name']} ebs={r['energy_batch_size']}" if edlm else r["name"]
        calls = f"{r['nfe_energy']} ({r['energy_seqs']})" if edlm else "–"
        net_energy = f"{r['net_energy_s']:.3f}" if edlm else "–"
        lines.append(
            f"| {name} | {r['seconds']:.3f} | {r['seconds_plain']:.3f} {'✓' if r['same_tokens'] else '✗'} | "
            f"{r['seconds_per_sample']:.4f} | {r['tokens_per_s']:,.0f} | {r['nfe_denoiser']} | {calls} | "
            f"{r['net_denoiser_s']:.3f} | {net_energy} | {r['overhead_s']:.3f} ({r['overhead_pct']:.0f}%) | "
            f"{r['alone_s']:.3f} | {r['over_alone']:.3f} | {fmt(r['peak_gib'], '.1f')} | "
            f"{r['model_tflop']:.2f} | {pct(r['mfu'])} |")
    return lines


def render_markdown(res: dict) -> str:
    """The whole ``speed.md``: header (card, versions, command, date, config, matmul peak), targets, per-call
    forwards, end-to-end runs, errors."""
    lines = _header(res) + render_targets(res) + _forward_table(res.get("forward", []))
    lines += _e2e_table(res.get("e2e", []))
    if res.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {e}" for e in res["errors"]]
    return "\n".join(lines) + "\n"
