#!/usr/bin/env bash
# Stage 1 of the wikipedia_en models, on one GPU: the MDLM denoiser and the AR model, trained side by side
# (two small models do not fill the GPU alone), each for train.max_minutes of wall time (7 min on an H100 with
# train.max_minutes=5.5). Needs .data/wikipedia_en, .data/tok-wiki4k (the BPE tokenizer, made on CPU) and
# optionally .whl/. Writes runs/wiki/{mdlm,ar} (+ model-fp16/) and, to $OUT: mdlm.safetensors, ar.safetensors
# (float16) and stage1.tar.gz (configs, tokenizers, metrics.json, CSV and training logs).
#   Usage (repo root): bash benchmarks/wiki/stage1.sh [key=value ...]
source "$(dirname "$0")/../gpu/common.sh"
RUNS=${RUNS:-runs/wiki}
mkdir -p "$RUNS"
TOK=${TOK:-.data/tok-wiki4k}

pack_once "$TOK" "${SMOKE_CHARS:-0}"  # before the two trainings read the cache

for kind in mdlm ar; do
  $EDLM train $kind --preset wiki --run-dir "$RUNS/$kind" data.tokenizer=$TOK "$@" > "$RUNS/$kind.log" 2>&1 &
done
fail=0; for job in $(jobs -p); do wait "$job" || fail=1; done
tail -n 3 "$RUNS"/mdlm.log "$RUNS"/ar.log

for kind in mdlm ar; do
  python3 benchmarks/wiki/export_weights.py "$RUNS/$kind/model" "$RUNS/$kind/model-fp16"
  cp "$RUNS/$kind/model-fp16/model.safetensors" "$OUT/$kind.safetensors"
done
tar czf "$OUT/stage1.tar.gz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='tb' "$RUNS"
ls -la "$OUT"
exit $fail
