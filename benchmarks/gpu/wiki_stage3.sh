#!/usr/bin/env bash
# GPU stage 3 (issues #6, #7): the sweep cells stage 2 had no time for, then three quick speed runs that
# measure one change at a time on the same card: plain output GEMM (before), padded output GEMM, padded +
# torch.compile. Needs runs/wiki/{mdlm,ar,nce}/model-fp16 and runs/wiki-partial/ (sample files already made,
# copied into the sweep so they are not generated again). Writes $OUT/stage3.tar.gz.
source "$(dirname "$0")/common.sh"
mkdir -p runs/wiki/sweep/samples
cp runs/wiki-partial/*.jsonl runs/wiki/sweep/samples/ 2>/dev/null || true
[ "${SWEEP_SECONDS:-260}" -gt 0 ] || SKIP_SWEEP=1
before=$(ls runs/wiki/sweep/samples | wc -l)
[ -n "${SKIP_SWEEP:-}" ] || timeout --signal=INT "${SWEEP_SECONDS:-260}" $EDLM bench sweep benchmarks/configs/wiki_gpu.yaml --out runs/wiki/sweep \
  --stage generate --no-progress ${SWEEP_ARGS:-} 2>&1 | grep -v "examples/s" | tail -n 5 || echo "== sweep stopped"
mkdir -p runs/wiki/new
for f in runs/wiki/sweep/samples/*.jsonl; do
  [ -f "runs/wiki-partial/$(basename "$f")" ] || cp "$f" runs/wiki/new/
done
echo "== sweep: $before sample files before, $(ls runs/wiki/new | wc -l) new"

mkdir -p runs/speed
for variant in ${SPEED_VARIANTS:-nopad:--no-pad-vocab pad: pad_compile:--compile}; do
  name=${variant%%:*}; flags=${variant#*:}
  timeout "${SPEED_SECONDS:-150}" python3 benchmarks/speed.py --quick $flags --out "runs/speed/$name" \
    > "runs/speed/$name.log" 2>&1 || echo "== speed $name: exit $?"
  grep -E "DiT \| denoiser fwd|MDLM T=|EDLM-AR k=8 \[0,1\] T=32 \||AR fwd" "runs/speed/$name/speed.md" | head -8 || true
done 2>/dev/null
mkdir -p runs/speed
tar czf "$OUT/stage3.tar.gz" runs/wiki/new runs/speed
ls -la "$OUT"
