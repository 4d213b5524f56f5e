#!/usr/bin/env bash
# The multi-process check on one machine with several GPUs (NVLink multicast off: NCCL_NVLS_ENABLE=0); sized for
# about 10 minutes, not yet run:
#  1. MDLM (wiki preset) with Lightning DDP on 1, 2 and all GPUs, the same global batch (256 x 128 tokens) and the
#     same number of steps, so tokens/s and the validation bound after the same tokens can be compared;
#  2. FSDP with the small preset (MDLM-small, 12 x 768, L = 1024) on all GPUs: tokens/s over a few steps;
#  3. one generate stage of a small sweep spread over all GPUs with torchrun, merged, and compared (tokens of every
#     cell) with the same cells generated on one GPU.
# Needs .data/wikipedia_en, .data/tok-wiki4k, optionally .whl/. Writes $OUT/multi_gpu.json and multi_gpu.tar.gz.
#   Usage (repo root): STEPS=600 bash benchmarks/gpu/multi_gpu.sh
source "$(dirname "$0")/common.sh"
export NCCL_NVLS_ENABLE=0
N=$(nvidia-smi -L | wc -l)
STEPS=${STEPS:-600}
TOK=${TOK:-.data/tok-wiki4k}
RUNS=runs/multi
mkdir -p $RUNS

pack_once "$TOK"  # before any rank reads the cache

for d in $(printf "%s\n" 1 2 "$N" | sort -nu); do
  [ "$d" -le "$N" ] || continue
  $EDLM train mdlm --preset wiki --run-dir $RUNS/ddp$d data.tokenizer=$TOK train.devices=$d train.strategy=ddp \
    data.batch_size=$((256 / d)) train.max_steps=$STEPS train.max_minutes=null train.val_check_interval=$STEPS \
    > $RUNS/ddp$d.log 2>&1 || { tail -n 20 $RUNS/ddp$d.log; }
  tail -n 1 $RUNS/ddp$d.log
done

$EDLM train mdlm --preset small --run-dir $RUNS/fsdp$N train.devices=$N train.strategy=fsdp train.max_steps=30 \
  train.val_check_interval=30 train.limit_val_batches=4 data.max_val_chars=2000000 data.tokenizer=$TOK \
  data.tokenizer_vocab_size=4096 > $RUNS/fsdp$N.log 2>&1 || tail -n 20 $RUNS/fsdp$N.log
tail -n 1 $RUNS/fsdp$N.log

SWEEP="benchmarks/configs/wiki_gpu.yaml grid.steps=[16,32] grid.k=[4] reference.real_text=false"
$EDLM bench sweep $SWEEP --out $RUNS/sweep1 --stage generate --no-progress > $RUNS/sweep1.log 2>&1
torchrun --standalone --nproc_per_node=$N -m edlm bench sweep $SWEEP --out $RUNS/sweepN --stage generate \
  --no-progress > $RUNS/sweepN.log 2>&1 || tail -n 20 $RUNS/sweepN.log

python3 - <<PY
import json, glob
from pathlib import Path
from edlm.bench import read_samples
out = {"gpus": $N, "steps": $STEPS, "ddp": {}, "fsdp": None, "sweep": {}}
for d in sorted(glob.glob("$RUNS/ddp*/metrics.json")):
    m = json.load(open(d)); out["ddp"][Path(d).parent.name] = {k: m.get(k) for k in
        ("global_step", "tokens_seen", "tokens_per_s", "val_nll", "val_ppl", "wall_time_s", "device")}
f = Path("$RUNS/fsdp$N/metrics.json")
if f.is_file():
    out["fsdp"] = json.load(open(f))
def tokens(d):
    res = {}
    for p in sorted(Path(d, "samples").glob("*.jsonl")):
        res[p.name] = [r["tokens"] for r in read_samples(p)[1]]
    return res
one, many = tokens("$RUNS/sweep1"), tokens("$RUNS/sweepN")
out["sweep"] = {"cells_one_gpu": len(one), "cells_all_gpus": len(many),
                "identical_cells": sum(one.get(k) == v for k, v in many.items()),
                "same_cell_set": sorted(one) == sorted(many)}
Path("$OUT/multi_gpu.json").write_text(json.dumps(out, indent=1))
print(json.dumps(out, indent=1)[:3000])
PY
tar czf "$OUT/multi_gpu.tar.gz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='samples' $RUNS
