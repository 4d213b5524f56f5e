"""``edlm eval nll``: the MDLM bound and EDLM estimates on held-out text, as a table and a JSON file.

    edlm eval nll --denoiser runs/mdlm_tiny/model --data tinyshakespeare --split valid \\
        --energy nce:runs/energy_tiny/model --energy ar:runs/ar_tiny/model --time-samples 16 --json nll.json

The data are packed exactly as training packs its validation split (same tokenizer, length, packing,
prefix limits and cache), so the MDLM row is comparable with the ``val/nll`` that ``edlm train`` logged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path

import torch

from edlm.errors import ConfigError

__all__ = ["add_nll_arguments", "run_eval_nll", "format_table"]


def add_nll_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``edlm eval nll`` (kept here, next to the code that reads them)."""
    p.add_argument("--denoiser", required=True, help="save_pretrained dir (or hub id) of the MDLM denoiser")
    p.add_argument("--data", required=True, help="corpus preset (e.g. tinyshakespeare) or a path")
    p.add_argument("--split", default="valid", help="split to score (default: valid)")
    p.add_argument("--energy", action="append", default=[], metavar="KIND:PATH",
                   help="EDLM energy, repeatable: ar:PATH (edlm AR model), hf:NAME (Hugging Face causal LM), "
                        "nce:PATH (NCE energy); AR kinds take ,carry_over=false (as edlm sample)")
    p.add_argument("--time-samples", type=int, default=8, help="independent (t, x_t) passes (default 8)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch (antithetic t per batch)")
    p.add_argument("--max-docs", type=int, default=None, help="score only the first N documents")
    p.add_argument("--max-chars", type=int, default=None, help="score only the first N characters "
                   "(training's data.max_val_chars)")
    p.add_argument("--length", type=int, default=None, help="tokens per row (default: the denoiser's length)")
    p.add_argument("--packing", choices=("wrap", "pad"), default="wrap", help="as training's data.packing")
    p.add_argument("--cache-dir", default=None, help="as training's data.cache_dir")
    p.add_argument("--tokenizer", default=None, help="tokenizer, if the denoiser checkpoint holds none")
    p.add_argument("--log-z", choices=("auto", "one", "negatives"), default="auto",
                   help="EDLM log Z: 'one' (Z≈1), 'negatives' (log mean exp(−E) over --n-neg draws); "
                        "auto = one for ar/hf, negatives for nce")
    p.add_argument("--n-neg", type=int, default=16, help="negatives per sequence for --log-z negatives")
    p.add_argument("--seed", type=int, default=0, help="seed of the (t, x_t) draws (training validates with "
                   "train.seed)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results to this JSON file")


@contextlib.contextmanager
def _quiet_datasets():
    """No ``datasets`` progress bars or warnings while a corpus is read: a bad file gives one error line."""
    from datasets.utils import logging as datasets_logging

    bars, verbosity = datasets_logging.is_progress_bar_enabled(), datasets_logging.get_verbosity()
    datasets_logging.disable_progress_bar()
    datasets_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bars:
            datasets_logging.enable_progress_bar()
        datasets_logging.set_verbosity(verbosity)


def _held_out(args, tokenizer, length: int):
    from edlm.data import load_corpus, tokenize_and_pack

    cache = args.cache_dir
    with _quiet_datasets():  # reading a held-out split is quick; its "Generating split" bar said little
        text = load_corpus(args.data, args.split, max_docs=args.max_docs, max_chars=args.max_chars,
                           cache_dir=None if cache is None else os.path.join(cache, "corpora"))
    return tokenize_and_pack(text, tokenizer, length, args.packing, cache_dir=cache).with_format("torch")


def format_table(rows) -> str:
    """The results as an aligned text table (one row per LikelihoodOutput)."""
    w = max(5, *(len(r.name) for r in rows))
    head = f"{'model':<{w}} {'NLL (nats/tok)':>14} {'± SE':>8} {'PPL':>11}  {'EDLM − MDLM':>11}  kind"
    lines = [head, "-" * len(head)]
    for r in rows:
        se = "n/a" if r.se is None else f"{r.se:.4f}"
        corr = "" if r.energy_correction is None else f"{r.energy_correction:+.4f}"
        ppl = ("<= " if r.is_bound else "~ ") + f"{r.ppl:.4f}"
        lines.append(f"{r.name:<{w}} {r.nll:>14.4f} {se:>8} {ppl:>11}  {corr:>11}  {r.label}")
    return "\n".join(lines)


def run_eval_nll(args: argparse.Namespace) -> int:
    """``edlm eval nll``: load the denoiser, its tokenizer and the energies; score the held-out split; report."""
    from edlm.energy.ar_energy import AREnergy
    from edlm.eval.likelihood import edlm_estimate, mdlm_bound
    from edlm.pipeline import load_denoiser_bundle, load_energy, resolve_device

    if args.time_samples < 1 or args.batch_size < 1 or args.n_neg < 1:
        raise ConfigError("--time-samples, --batch-size and --n-neg must be >= 1.")
    device = resolve_device(args.device)
    bundle = load_denoiser_bundle(args.denoiser, tokenizer=args.tokenizer, map_location=device)
    energies = [load_energy(spec, bundle, device) for spec in args.energy]  # all checked before any scoring
    length = args.length or bundle.length
    data = _held_out(args, bundle.tokenizer, length)

    common = dict(num_time_samples=args.time_samples, batch_size=args.batch_size, device=device)
    seeded = lambda offset=0: torch.Generator(device=device).manual_seed(args.seed + offset)
    rows = [mdlm_bound(bundle.denoiser, data, generator=seeded(), **common)]
    for i, energy in enumerate(energies):  # the same seed: each EDLM row reuses the MDLM row's (t, x_t) draws
        is_ar = isinstance(energy, AREnergy)
        log_z = ("one" if is_ar else "negatives") if args.log_z == "auto" else args.log_z
        name = f"{'EDLM-AR' if is_ar else 'EDLM-NCE'} ({energy.spec})"
        rows.append(edlm_estimate(bundle.denoiser, energy, data, generator=seeded(), log_z=log_z, n_neg=args.n_neg,
                                  negatives_generator=seeded(1000 + i), name=name, **common))

    print(f"edlm eval nll: {args.denoiser} on {args.data}:{args.split}, {rows[0].num_sequences} sequences x "
          f"{length} tokens ({rows[0].num_tokens} tokens), {args.time_samples} time samples, seed {args.seed}")
    print(format_table(rows))
    if len(rows) > 1:
        print("EDLM rows are estimates, not bounds (SPEC 2.6); the MDLM row is an upper bound on the NLL.")
    if args.json:
        payload = {
            "denoiser": str(args.denoiser), "data": str(args.data), "split": args.split, "length": length,
            "time_samples": args.time_samples, "seed": args.seed, "batch_size": args.batch_size,
            "results": [r.to_dict() for r in rows],
        }
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0
