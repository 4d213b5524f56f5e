#!/usr/bin/env bash
# The multi-process check on CPU: the same code paths as benchmarks/gpu/multi_gpu.sh with CPU processes (gloo).
#  1. MDLM (tiny preset) trained by 1 process and by 2 DDP processes at the same global batch (32 x 128 chars) and
#     step count, for several seeds (the bound of a short tiny run varies a lot with the seed): tokens/s and the
#     validation bound after the same tokens;
#  2. a small sweep's generate stage run by one process and by 2 torchrun processes (shards): the merged sample
#     files are compared token by token.
# Writes $OUT/multi_cpu.json (default OUT=benchmarks/results/multi_cpu). ~8 min on 2 cores.
#   Usage: STEPS=400 SEEDS="1 2 3" bash benchmarks/multi_process_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/multi_cpu}
STEPS=${STEPS:-400}
SEEDS=${SEEDS:-1 2 3}
RUNS=${RUNS:-runs/multi_cpu}
rm -rf "$RUNS" && mkdir -p "$RUNS" "$OUT"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1

for d in 1 2; do
  strategy=$([ "$d" -gt 1 ] && echo ddp || echo auto)
  for seed in $SEEDS; do
    run="$RUNS/p$d-seed$seed"
    python -m edlm train mdlm --preset tiny --run-dir "$run" train.accelerator=cpu train.devices=$d \
      train.strategy=$strategy data.batch_size=$((32 / d)) train.max_steps=$STEPS train.val_check_interval=$STEPS \
      train.seed=$seed > "$run.log" 2>&1 || { tail -n 20 "$run.log"; exit 1; }
    echo "$d process(es), seed $seed: $(tail -n 1 "$run.log")"
  done
done

SWEEP="benchmarks/configs/tiny_cpu.yaml denoiser=edlm/assets/tiny-shakespeare/mdlm
  energies.ar=ar:edlm/assets/tiny-shakespeare/ar grid.steps=[4,8,16] num_samples=16 batch_size=16
  reference.real_text=false reference.ar_samples=false"
python -m edlm bench sweep $SWEEP --out "$RUNS/sweep1" --stage generate --no-progress > "$RUNS/sweep1.log" 2>&1
torchrun --standalone --nproc_per_node=2 -m edlm bench sweep $SWEEP --out "$RUNS/sweep2" --stage generate \
  --no-progress > "$RUNS/sweep2.log" 2>&1 || { tail -n 20 "$RUNS/sweep2.log"; exit 1; }

python - "$RUNS" "$OUT" "$STEPS" <<'PY'
import json, platform, statistics, sys, time
from pathlib import Path
from edlm.bench import read_samples
runs, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
res = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
       f"{len(__import__('os').sched_getaffinity(0))} cores", "command": "bash benchmarks/multi_process_cpu.sh",
       "steps": steps, "train": {}, "sweep": {}}
for d in (1, 2):
    runs_d = [json.loads(p.read_text()) for p in sorted(runs.glob(f"p{d}-seed*/metrics.json"))]
    nll = [m["val_nll"] for m in runs_d]
    res["train"][f"{d}_process"] = {
        "seeds": len(runs_d), "tokens_seen": runs_d[0]["tokens_seen"], "global_step": runs_d[0]["global_step"],
        "val_nll": nll, "val_nll_mean": statistics.fmean(nll), "val_nll_sd": statistics.stdev(nll) if len(nll) > 1 else None,
        "tokens_per_s": [m["tokens_per_s"] for m in runs_d],
        "tokens_per_s_mean": statistics.fmean(m["tokens_per_s"] for m in runs_d)}
t1, t2 = (res["train"][f"{d}_process"]["tokens_per_s_mean"] for d in (1, 2))
res["train"]["speedup_2_vs_1"] = t2 / t1
res["train"]["scaling_efficiency"] = t2 / t1 / 2
def tokens(d):
    return {p.name: [r["tokens"] for r in read_samples(p)[1]] for p in sorted(Path(d, "samples").glob("*.jsonl"))}
one, two = tokens(runs / "sweep1"), tokens(runs / "sweep2")
res["sweep"] = {"cells_one_process": len(one), "cells_two_processes": len(two), "same_cell_set": sorted(one) == sorted(two),
                "identical_cells": sum(one.get(k) == v for k, v in two.items())}
(out / "multi_cpu.json").write_text(json.dumps(res, indent=1))
print(json.dumps(res, indent=1))
PY
