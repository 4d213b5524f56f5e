"""Mean NLL (nats/token) of a sweep's samples under an AR model: what EDLM-AR's importance weights target.

    python benchmarks/ar_nll_of_samples.py --ar runs/wiki/ar/model-fp16 --out ar_nll.json runs/wiki/sweep [...]

A diagnostic beside the judge's gen-PPL: if EDLM-AR lowers this number but not the judge's, the sampler does
its job and the AR model's taste differs from the judge's; if it lowers neither, look at the sampler. Reads
every ``samples/*.jsonl`` of each sweep dir (only the token ids are used); the first token is treated as
given. Runs on CUDA when available.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from edlm.bench import read_samples
from edlm.models import from_pretrained


@torch.no_grad()
def mean_nll(model, rows: list[list[int]], device: torch.device, batch_size: int = 256) -> tuple[float, float]:
    """(mean NLL per token, standard error over sequences)."""
    per_seq = []
    for i in range(0, len(rows), batch_size):
        x = torch.tensor(rows[i:i + batch_size], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            lp = model.token_log_probs(x).float()
        per_seq += (-lp[:, 1:].mean(-1)).tolist()
    n = len(per_seq)
    mean = sum(per_seq) / n
    var = sum((v - mean) ** 2 for v in per_seq) / max(n - 1, 1)
    return mean, math.sqrt(var / n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", help="sweep output dirs (with samples/)")
    parser.add_argument("--ar", required=True, help="AR model dir (save_pretrained)")
    parser.add_argument("--out", required=True, help="JSON file: cell_key -> {method, steps, k, ..., ar_nll, se}")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = from_pretrained(args.ar, expected_type="ar").to(device).eval()
    results = {}
    for sweep in args.sweeps:
        for path in sorted(Path(sweep, "samples").glob("*.jsonl")):
            header, samples = read_samples(path)
            tokens = [s["tokens"] for s in samples if s.get("tokens")]
            if not tokens:
                continue
            nll, se = mean_nll(model, tokens, device)
            s = header.get("settings", {})
            results[header["cell_key"]] = {"method": header.get("method"), "sweep": str(sweep),
                                           **{k: s.get(k) for k in ("steps", "energy", "energy_spec", "k", "window",
                                                                    "temperature")},
                                           "ar_nll": nll, "ar_nll_se": se, "num_samples": len(tokens)}
            print(f"{header.get('method')!s:45s} T={s.get('steps')!s:>4}  AR NLL {nll:.4f} ± {se:.4f}", flush=True)
    Path(args.out).write_text(json.dumps({"ar_model": args.ar, "device": str(device), "cells": results}, indent=1))


if __name__ == "__main__":
    main()
