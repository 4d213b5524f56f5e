#!/usr/bin/env bash
# Diagnostics of the wikipedia_en sweep, on one GPU: generate benchmarks/configs/wiki_gpu_diag.yaml (carry-over vs
# exact AR energy, k, τ at T = 16), then the AR-model NLL of every sample of the main sweep (a token-only copy in
# runs/wiki-tokens) and of the diagnostics (benchmarks/ar_nll_of_samples.py). ~1.5 min on an H100.
# The models are the shipped ones (edlm/assets/wikipedia_en), linked where the sweep configs look for them.
# Needs runs/wiki-tokens.tgz (or runs/wiki-tokens/samples), optionally .whl/. Writes $OUT/diag.tar.gz and
# $OUT/ar_nll.json.
#   Usage (repo root): bash benchmarks/wiki/diag.sh
source "$(dirname "$0")/../gpu/common.sh"
[ -d runs/wiki-tokens ] || tar xzf runs/wiki-tokens.tgz  # carried compressed
ASSETS=$PWD/edlm/assets/wikipedia_en
for m in mdlm ar; do  # a checkpoint without a tokenizer reads the one in its parent folder
  mkdir -p runs/wiki/$m
  [ -e runs/wiki/$m/model-fp16 ] || ln -s "$ASSETS/$m" runs/wiki/$m/model-fp16
  for f in tokenizer.json tokenizer_config.json; do
    [ -e runs/wiki/$m/$f ] || ln -s "$ASSETS/$f" runs/wiki/$m/$f
  done
done
CONFIG=${CONFIG:-benchmarks/configs/wiki_gpu_diag.yaml}; DIAG_OUT=${DIAG_OUT:-runs/wiki-diag}
timeout --signal=INT "${SWEEP_SECONDS:-200}" $EDLM bench sweep "$CONFIG" \
  --out "$DIAG_OUT" --stage generate --no-progress 2>&1 | grep -v "examples/s" | tail -n 3 || echo "== stopped"
python3 benchmarks/ar_nll_of_samples.py --ar runs/wiki/ar/model-fp16 --out "$OUT/ar_nll.json" \
  ${NLL_SWEEPS:-runs/wiki-tokens} "$DIAG_OUT" | tail -n 20 || echo "== AR NLL failed"
tar czf "$OUT/diag.tar.gz" "$DIAG_OUT"
ls -la "$OUT"
