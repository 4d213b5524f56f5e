#!/usr/bin/env bash
# GPU diagnostics of issue #6: generate benchmarks/configs/wiki_gpu_diag.yaml (carry-over, k, τ at T = 16), then
# the AR-model NLL of every sample of the main sweep (token-only copy in runs/wiki-tokens) and of the diagnostics.
# Needs runs/wiki-tokens.tgz (or runs/wiki-tokens/samples) and .whl/; the models come from edlm/assets. Writes $OUT/diag.tar.gz, $OUT/ar_nll.json.
source "$(dirname "$0")/common.sh"
[ -d runs/wiki-tokens ] || tar xzf runs/wiki-tokens.tgz  # the 64 MiB transfer limit: carried compressed
for m in mdlm ar; do  # the shipped models are these weights: link them where the sweep config looks
  [ -e runs/wiki/$m/model-fp16 ] || { mkdir -p runs/wiki/$m && ln -s "$PWD/edlm/assets/wikipedia_en/$m" runs/wiki/$m/model-fp16; }
done
CONFIG=${CONFIG:-benchmarks/configs/wiki_gpu_diag.yaml}; DIAG_OUT=${DIAG_OUT:-runs/wiki-diag}
timeout --signal=INT "${SWEEP_SECONDS:-200}" $EDLM bench sweep "$CONFIG" \
  --out "$DIAG_OUT" --stage generate --no-progress 2>&1 | grep -v "examples/s" | tail -n 3 || echo "== stopped"
python3 benchmarks/ar_nll_of_samples.py --ar runs/wiki/ar/model-fp16 --out "$OUT/ar_nll.json" \
  ${NLL_SWEEPS:-runs/wiki-tokens} "$DIAG_OUT" | tail -n 20 || echo "== AR NLL failed"
tar czf "$OUT/diag.tar.gz" "$DIAG_OUT"
ls -la "$OUT"
