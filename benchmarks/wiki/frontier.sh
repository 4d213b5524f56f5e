#!/usr/bin/env bash
# The quality-versus-seconds frontier of every sampler on the shipped wikipedia_en models on one GPU (H200: 9.8 min in
# all, two runs of at most FRONTIER_SECONDS): the generate stage of benchmarks/configs/wiki_frontier.yaml, group by
# group, 256 samples a point: MDLM at T ∈ {16, 32, 64, 128, 256}; EDLM fixed window (k = 4, every step; k = 8 over
# [0.8, 1]); SMC (N = 4, 16); adaptive (budgets 16, 32, 64); remasking (η = 0.05, 0.1; k = 1, 4); and, when a
# wikipedia_en data folder is present ($EDLM_DATA_DIR/wikipedia_en and $TOK), a 2-block NCE energy trained for ~2 min
# (edlm/configs/wiki_nce_small.yaml) and its fixed-window and SMC points. Each group stops at the deadline
# (FRONTIER_SECONDS, default 500); a re-run resumes. Writes $OUT/frontier.tar.xz (samples/*.jsonl: header with
# settings and speed + samples; timings.jsonl: one line per cell), $OUT/nce-small.tar (the cheap energy and its
# training log) and $OUT/timings.jsonl.
# Scoring runs the same groups with --stage score (CPU, both judges), after unpacking both archives at the repo root:
#   Usage (repo root, GPU): bash benchmarks/wiki/frontier.sh
#   Scoring (CPU):          FRONTIER_STAGE=score FRONTIER_SECONDS=36000 bash benchmarks/wiki/frontier.sh
#   CPU smoke test:         FRONTIER_SMOKE=1 OUT=/tmp/frontier bash benchmarks/wiki/frontier.sh
source "$(dirname "$0")/../gpu/common.sh"
SWEEP_OUT=${SWEEP_OUT:-$( [ -n "${FRONTIER_SMOKE:-}" ] && echo "$OUT/sweep" || echo runs/frontier )}  # smoke: apart
CONFIG=benchmarks/configs/wiki_frontier.yaml
TOK=${TOK:-.data/tok-wiki4k}
start=$(date +%s)
deadline=$(( start + ${FRONTIER_SECONDS:-500} ))
STAGE=${FRONTIER_STAGE:-generate}
GROUP_ARGS=(--out "$SWEEP_OUT" --stage "$STAGE" --no-progress --no-plot)  # what group (common.sh) passes to every run
[ "$STAGE" = score ] && GROUP_ARGS+=(--judge "${JUDGES:-smollm2,gemma3}" device=cpu)
T_EDLM="[16,32,64]"
if [ -n "${FRONTIER_SMOKE:-}" ]; then  # toy size on CPU: the tiny-shakespeare models, 4 samples, few steps
  M=edlm/assets/tiny-shakespeare
  GROUP_ARGS+=(device=cpu num_samples=4 batch_size=4 length=32 denoiser=$M/mdlm "energies.ar=ar:$M/ar,carry_over=false"
               "energies.nce=nce:$M/nce")
  T_EDLM="[4]"
fi

if [ "$STAGE" = generate ] && [ -z "${FRONTIER_SMOKE:-}" ] && [ -d "${EDLM_DATA_DIR}/wikipedia_en" ] && [ -e "$TOK" ] \
    && [ ! -f runs/wiki/nce-small/model/model.safetensors ]; then
  echo "== training the 2-block NCE energy (~2 min)"
  $EDLM train energy --preset wiki_nce_small --denoiser edlm/assets/wikipedia_en/mdlm --run-dir runs/wiki/nce-small \
    data.tokenizer=$TOK > runs/nce-small.log 2>&1 || tail -n 20 runs/nce-small.log
fi

if [ -n "${FRONTIER_SMOKE:-}" ]; then
  group mdlm "grid.steps=[4,8]"
else
  group mdlm
fi
group edlm-fixed "grid.steps=$T_EDLM" "grid.energy=[ar,nce]" "grid.k=[4]" reference.ar_samples=false
group edlm-late "grid.steps=$T_EDLM" "grid.energy=[ar]" "grid.k=[8]" "grid.window=[[0.8,1.0]]" reference.ar_samples=false
group smc "grid.steps=$T_EDLM" "grid.energy=[ar,nce]" "grid.sampler=[smc]" "grid.particles=[4,16]" \
  reference.ar_samples=false
group adaptive "grid.steps=$T_EDLM" "grid.energy=[ar,nce]" "grid.sampler=[adaptive]" "grid.budget=[16,32,64]" \
  reference.ar_samples=false
group remask "grid.steps=$T_EDLM" "grid.energy=[none,ar]" "grid.sampler=[remask]" "grid.remask_eta=[0.05,0.1]" \
  "grid.k=[1,4]" reference.ar_samples=false
if [ -z "${FRONTIER_SMOKE:-}" ] && [ -f runs/wiki/nce-small/model/model.safetensors ]; then  # wikipedia_en's
  group cheap-energy "grid.steps=$T_EDLM" "energies.nce_small=nce:runs/wiki/nce-small/model" "grid.energy=[nce_small]" \
    "grid.sampler=[importance,smc]" "grid.k=[4]" "grid.particles=[16]" reference.ar_samples=false
fi

python3 - "$SWEEP_OUT" "$OUT/timings.jsonl" <<'PY'
import json, sys
from pathlib import Path
rows = []
for f in sorted((Path(sys.argv[1]) / "samples").glob("*.jsonl")):
    with open(f, encoding="utf-8") as fh:
        head = json.loads(fh.readline())
    s = head["speed"]
    rows.append({"cell_key": head["cell_key"], "method": head["method"], "steps": head["settings"].get("steps"),
                 **{k: s.get(k) for k in ("generation_seconds", "seconds_per_sample", "nfe_denoiser", "nfe_energy",
                                          "hardware")}})
Path(sys.argv[2]).write_text("".join(json.dumps(r) + "\n" for r in rows))
print(f"== {len(rows)} cells with samples")
PY
cp "$OUT/timings.jsonl" "$SWEEP_OUT/timings.jsonl"
# two archives: each file that comes back from the GPU machine must stay under 16 MiB
tar cJf "$OUT/frontier.tar.xz" --exclude=.edlm.lock "$SWEEP_OUT"
[ -z "${FRONTIER_SMOKE:-}" ] && [ -d runs/wiki/nce-small/model ] && tar cf "$OUT/nce-small.tar" runs/wiki/nce-small/model \
  $( [ -f runs/nce-small.log ] && echo runs/nce-small.log )
echo "== done in $(( $(date +%s) - start )) s"
ls -la "$OUT"
