#!/usr/bin/env bash
# The likelihood table of the shipped wikipedia_en models, every figure with its kind (docs/likelihood.md): the AR
# model's exact NLL, the MDLM bound (continuous and at T steps), the EDLM plug-in estimates and the EDLM bound of
# the sampler with k proposals and T steps, for the exact AR energy and the NCE energy, on the valid split.
# Needs a wikipedia_en data folder ($EDLM_DATA_DIR, default .data) and `datasets` (installed, or a wheel in .whl/).
# Writes $OUT/nll_bound.json and $OUT/nll_bound.txt.
#   Usage (repo root): bash benchmarks/wiki/nll_bound.sh
#   Knobs: MODELS (edlm/assets/wikipedia_en), BOUND_K (8), BOUND_STEPS (128), BOUND_DRAWS (16), TIME_SAMPLES (8),
#          MAX_CHARS (600000: about 1 000 rows of 128 tokens; empty = the whole split), DEVICE (auto)
source "$(dirname "$0")/../gpu/common.sh"
MODELS=${MODELS:-edlm/assets/wikipedia_en}
MAX_CHARS=${MAX_CHARS-600000}
$EDLM eval nll --denoiser "$MODELS/mdlm" --data wikipedia_en --split valid ${MAX_CHARS:+--max-chars $MAX_CHARS} \
  --energy "ar:$MODELS/ar,carry_over=false" --energy "nce:$MODELS/nce" --time-samples "${TIME_SAMPLES:-8}" \
  --bound-k "${BOUND_K:-8}" --bound-steps "${BOUND_STEPS:-128}" --bound-draws "${BOUND_DRAWS:-16}" \
  --batch-size 256 --energy-batch-size 4096 --device "${DEVICE:-auto}" --no-progress \
  --json "$OUT/nll_bound.json" 2>&1 | grep -v "examples/s" | tee "$OUT/nll_bound.txt"
