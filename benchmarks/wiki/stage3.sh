#!/usr/bin/env bash
# Stage 3 of the wikipedia_en sweep, on one GPU: the generate stage of benchmarks/configs/wiki_gpu.yaml for the
# cells stage2.sh had no time for (SWEEP_SECONDS, default 260; ~2.5 min on an H100 for the last 14 cells).
# Sample files already made elsewhere can be carried in runs/wiki-partial/: they are copied into the sweep, so
# those cells are not generated again, and only the new files are packed.
# Needs runs/wiki/{mdlm,ar,nce}/model-fp16, optionally .whl/. Writes $OUT/stage3.tar.gz (runs/wiki/new/*.jsonl).
#   Usage (repo root): [SWEEP_ARGS="grid.steps=[128,256]"] bash benchmarks/wiki/stage3.sh
source "$(dirname "$0")/../gpu/common.sh"
SWEEP_OUT=${SWEEP_OUT:-runs/wiki/sweep}
mkdir -p "$SWEEP_OUT/samples" runs/wiki/new
cp runs/wiki-partial/*.jsonl "$SWEEP_OUT/samples/" 2>/dev/null || true
before=$(ls "$SWEEP_OUT/samples" | wc -l)
timeout --signal=INT "${SWEEP_SECONDS:-260}" $EDLM bench sweep benchmarks/configs/wiki_gpu.yaml --out "$SWEEP_OUT" \
  --stage generate --no-progress ${SWEEP_ARGS:-} 2>&1 | grep -v "examples/s" | tail -n 5 || echo "== sweep stopped"
for f in "$SWEEP_OUT"/samples/*.jsonl; do
  [ -f "runs/wiki-partial/$(basename "$f")" ] || cp "$f" runs/wiki/new/
done
echo "== sweep: $before sample files before, $(ls runs/wiki/new | wc -l) new"
tar czf "$OUT/stage3.tar.gz" runs/wiki/new
ls -la "$OUT"
