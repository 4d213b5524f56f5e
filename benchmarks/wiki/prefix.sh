#!/usr/bin/env bash
# The generate stage of benchmarks/configs/wiki_prefix.yaml (prefix completion with the shipped wikipedia_en models)
# on one GPU: ~1 min on an H200. Needs .data/wikipedia_en/valid.jsonl.gz (the prompts), optionally .whl/.
# Writes $OUT/prefix_samples.tar.gz (runs/bench/wiki_prefix/samples/*.jsonl); score them on CPU with
#   edlm bench sweep benchmarks/configs/wiki_prefix.yaml --stage score --device cpu
#   Usage (repo root): bash benchmarks/wiki/prefix.sh
source "$(dirname "$0")/../gpu/common.sh"
$EDLM bench sweep benchmarks/configs/wiki_prefix.yaml --out runs/bench/wiki_prefix --stage generate --no-progress
tar czf "$OUT/prefix_samples.tar.gz" runs/bench/wiki_prefix/samples
ls -la "$OUT"
