#!/usr/bin/env bash
# Stage 2 of the wikipedia_en models, on one GPU, after stage1.sh: the EDLM-NCE energy against the frozen
# stage-1 denoiser, the likelihood table (MDLM bound, EDLM-AR / EDLM-NCE estimates on the valid split), then the
# generate stage of benchmarks/configs/wiki_gpu.yaml until SWEEP_SECONDS (560) run out; re-running resumes, and
# skips the parts already done. ~9.5 min on an H100.
# Needs runs/wiki/{mdlm,ar}/model-fp16, a wikipedia_en data folder ($EDLM_DATA_DIR), the tokenizer ($TOK,
# default .data/tok-wiki4k), optionally .whl/. Writes to $OUT: nce.safetensors (float16), stage2.tar.gz (NCE run
# record, nll.json, sweep samples).
#   Usage (repo root): bash benchmarks/wiki/stage2.sh [key=value ... for the energy training]
source "$(dirname "$0")/../gpu/common.sh"
RUNS=${RUNS:-runs/wiki}
SWEEP_OUT=${SWEEP_OUT:-$RUNS/sweep}
TOK=${TOK:-.data/tok-wiki4k}
start=$(date +%s)

if [ ! -f "$RUNS/nce/model/model.safetensors" ]; then
  $EDLM train energy --preset wiki --denoiser "$RUNS/mdlm/model-fp16" --run-dir "$RUNS/nce" data.tokenizer=$TOK \
    optim.lr=3e-4 optim.warmup_steps=200 train.val_check_interval=1000 train.max_minutes=3.5 "$@" \
    > "$RUNS/nce.log" 2>&1 || { tail -n 30 "$RUNS/nce.log"; exit 1; }
  tail -n 2 "$RUNS/nce.log"
fi
[ -f "$RUNS/nce/model-fp16/model.safetensors" ] || python3 benchmarks/wiki/export_weights.py "$RUNS/nce/model" "$RUNS/nce/model-fp16"
cp "$RUNS/nce/model-fp16/model.safetensors" "$OUT/nce.safetensors"

if [ ! -f "$RUNS/nll.json" ]; then
  $EDLM eval nll --denoiser "$RUNS/mdlm/model-fp16" --data wikipedia_en --split valid ${NLL_ARGS:-} \
    --energy "ar:$RUNS/ar/model-fp16" --energy "nce:$RUNS/nce/model-fp16" --batch-size 256 --bound-k 0 --json "$RUNS/nll.json" \
    2>&1 | grep -v "examples/s" | tail -n 8
fi

left=$(( ${SWEEP_SECONDS:-560} - ($(date +%s) - start) ))
echo "== sweep generate for ${left} s"
timeout --signal=INT "$left" $EDLM bench sweep benchmarks/configs/wiki_gpu.yaml --out "$SWEEP_OUT" --stage generate \
  --no-progress ${SWEEP_ARGS:-} 2>&1 | grep -v "examples/s" | tail -n 15 || echo "== sweep stopped (resume later)"
ls "$SWEEP_OUT/samples" | wc -l
tar czf "$OUT/stage2.tar.gz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='tb' \
  "$RUNS/nce" "$RUNS/nce.log" "$RUNS/nll.json" "$SWEEP_OUT"
ls -la "$OUT"
