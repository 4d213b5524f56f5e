#!/usr/bin/env bash
# The larger wikipedia_en model set (edlm/configs/wiki_base.yaml: 6 x 512, 3x the shipped models' size) and its
# evaluation, on one GPU, in phases sized to one 10-minute run each. A phase whose output exists is skipped, so the
# phases can run in one call or in several on a machine that keeps runs/ (one run after the other):
#   train   MDLM and AR side by side until the deadline less TRAIN_RESERVE seconds (0) for the phases after it
#   energy  the EDLM-NCE energy (all 6 blocks, from the MDLM, SPEC 2.4) and a cheap 2-block one side by side for
#           ENERGY_MINUTES (3.5, less if the deadline comes first)
#   nll     the likelihood table on the valid split (MDLM bound, AR exact, EDLM estimates): $OUT/nll.json
#   sweep   the generate stage of benchmarks/configs/wiki_base.yaml, group by group, until the deadline
# Needs .data/wikipedia_en (train.jsonl.gz or .xz, valid.jsonl.gz), the tokenizer $TOK (default .data/tok-wiki4k: a
# copy of edlm/assets/wikipedia_en's tokenizer files) and optionally .whl/. BASE_AR=DIR takes that AR model (e.g. the
# shipped edlm/assets/wikipedia_en/ar, same tokenizer) instead of training one, leaving the GPU to the MDLM.
# BASE_TRAIN ("mdlm ar") names the models the train phase trains; MDLM_ARGS / AR_ARGS add key=value overrides to one
# of them (e.g. MDLM_ARGS=model.init_from=edlm/assets/wikipedia_en/mdlm: train on from the shipped weights).
# BASE_CONFIG (benchmarks/configs/wiki_base.yaml) is the sweep's config, BASE_GROUPS (all) the sweep groups to run.
# BASE_SECONDS (570) bounds the whole call.
# Writes to $OUT: models-<phase>.tar.part-* (int8 and int4 weights, 15 MiB pieces: cat them and untar at the repo root),
# <phase>.tar.gz (configs, metrics, CSV and training logs, nll.json) and sweep.tar.xz (samples, timings).
#   Usage (repo root, GPU): TRAIN_RESERVE=200 ENERGY_MINUTES=2 bash benchmarks/wiki/base.sh train energy
#                           bash benchmarks/wiki/base.sh nll sweep
#   Scoring (CPU):          BASE_STAGE=score BASE_SECONDS=36000 bash benchmarks/wiki/base.sh sweep
#   CPU smoke test:         BASE_SMOKE=1 OUT=/tmp/base bash benchmarks/wiki/base.sh train energy sweep
source "$(dirname "$0")/../gpu/common.sh"
start=$(date +%s)
deadline=$(( start + ${BASE_SECONDS:-570} ))
RUNS=${RUNS:-runs/wiki_base}
TOK=${TOK:-.data/tok-wiki4k}
CONFIG=${BASE_CONFIG:-benchmarks/configs/wiki_base.yaml}
STAGE=${BASE_STAGE:-generate}
mkdir -p "$RUNS"

train_args=(--preset wiki_base data.tokenizer="$TOK")  # options, then key=value overrides
sweep_args=(--out "$RUNS/sweep" --no-progress --no-plot)
if [ "$STAGE" = score ]; then  # held-out text and its shuffled words as rows, the text also MAUVE's reference
  sweep_args+=(device=cpu reference.real_text=true reference.shuffled_text=true reference.corpus=wikipedia_en
               reference.split=valid)
fi
chars=0
if [ -n "${BASE_SMOKE:-}" ]; then  # toy sizes on CPU: a 200 k-character prefix, two small blocks, a few steps
  chars=200000
  train_args+=(model.hidden_size=32 model.n_blocks=2 model.n_heads=2 data.batch_size=8 data.eval_batch_size=8
               train.max_steps=6 train.val_check_interval=3 train.compile=false train.accelerator=cpu
               data.max_train_chars=$chars data.max_val_chars=20000)
  sweep_args+=(device=cpu num_samples=4 batch_size=4 length=32 "grid.steps=[4]")
fi
minutes_left() { python3 -c "print(max(0.5, ($deadline - $(date +%s) - ${1:-0}) / 60))"; }

# a carried .xz train split (smaller to carry) is recompressed once outside the tree: the reader takes .jsonl.gz
W=$EDLM_DATA_DIR/wikipedia_en
if [ ! -f "$W/train.jsonl.gz" ] && [ -f "$W/train.jsonl.xz" ]; then
  mkdir -p /tmp/edlm-data/wikipedia_en
  cp "$W/valid.jsonl.gz" /tmp/edlm-data/wikipedia_en/
  [ -f /tmp/edlm-data/wikipedia_en/train.jsonl.gz ] || python3 -c "import gzip, lzma, shutil, sys; \
    shutil.copyfileobj(lzma.open(sys.argv[1]), gzip.open(sys.argv[2], 'wb', 1))" \
    "$W/train.jsonl.xz" /tmp/edlm-data/wikipedia_en/train.jsonl.gz
  export EDLM_DATA_DIR=/tmp/edlm-data
fi

export_int8() {  # export_int8 PHASE KIND...: float16 copies for sampling here, int8 and int4 pieces to $OUT
  local phase=$1; shift
  for kind in "$@"; do
    python3 benchmarks/wiki/export_weights.py "$RUNS/$kind/model" "$RUNS/$kind/model-fp16"
    for q in int8 int4; do python3 benchmarks/wiki/export_weights.py "$RUNS/$kind/model" "$RUNS/$kind/model-$q" $q; done
    sha256sum "$RUNS/$kind"/model*/model.safetensors | tee -a "$RUNS/sha256.txt"
  done
  tar cf - $(for kind in "$@"; do echo "$RUNS/$kind/model-int8 $RUNS/$kind/model-int4"; done) \
    | split -b 15m - "$OUT/models-$phase.tar.part-"
}
selected() { [ -z "${BASE_GROUPS:-}" ] || [[ " $BASE_GROUPS " == *" $1 "* ]]; }  # selected GROUP: in BASE_GROUPS?

for phase in "$@"; do
  case $phase in
  train)
    kinds=${BASE_TRAIN:-mdlm ar}; [ -n "${BASE_AR:-}" ] && kinds=mdlm  # BASE_AR: an AR model instead of training one
    trained=1; for kind in $kinds; do [ -f "$RUNS/$kind/model/model.safetensors" ] || trained=0; done
    if [ $trained = 0 ]; then
      pack_once "$TOK" "$chars" 2>&1 | tee "$RUNS/pack.log"
      minutes=$(minutes_left $(( 60 + ${TRAIN_RESERVE:-0} )))  # leaves time to export, and TRAIN_RESERVE s for later phases
      echo "== training $kinds for $minutes min"
      for kind in $kinds; do
        extra=(); [ $kind = mdlm ] && extra=(${MDLM_ARGS:-}); [ $kind = ar ] && extra=(${AR_ARGS:-})
        $EDLM train $kind --run-dir "$RUNS/$kind" "${train_args[@]}" train.max_minutes=$minutes "${extra[@]}" \
          > "$RUNS/$kind.log" 2>&1 &
      done
      fail=0; for job in $(jobs -p); do wait "$job" || fail=1; done
      for kind in $kinds; do tail -n 3 "$RUNS/$kind.log"; done
      [ $fail = 0 ] || exit 1
      if [ -n "${BASE_AR:-}" ]; then  # a model set's AR keeps its tokenizer beside it: an energy carries its own
        mkdir -p "$RUNS/ar" && cp -r "$BASE_AR" "$RUNS/ar/model" && cp "$TOK"/tokenizer*.json "$RUNS/ar/model/"
      fi
      export_int8 train $kinds
      [ -n "${BASE_AR:-}" ] && python3 benchmarks/wiki/export_weights.py "$RUNS/ar/model" "$RUNS/ar/model-fp16"
      tar czf "$OUT/train.tar.gz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='tb' \
        $(for kind in $kinds; do echo "$RUNS/$kind"; done) "$RUNS"/*.log "$RUNS/sha256.txt"
    fi ;;
  energy)
    if [ ! -f "$RUNS/nll.json" ]; then
      [ -d "$RUNS/mdlm/model-fp16" ] || export_int8 train mdlm ar  # weights carried in, not trained here
      minutes=$(python3 -c "print(min(${ENERGY_MINUTES:-3.5}, $(minutes_left 30)))")
      echo "== training the NCE energies for $minutes min"
      for kind in nce nce-small; do
        extra=(); [ $kind = nce-small ] && extra=(energy.n_blocks=2)
        $EDLM train energy --denoiser "$RUNS/mdlm/model-fp16" --run-dir "$RUNS/$kind" "${train_args[@]}" \
          optim.lr=3e-4 optim.warmup_steps=200 train.max_minutes=$minutes "${extra[@]}" \
          > "$RUNS/$kind.log" 2>&1 &
      done
      fail=0; for job in $(jobs -p); do wait "$job" || fail=1; done
      tail -n 2 "$RUNS"/nce.log "$RUNS"/nce-small.log
      [ $fail = 0 ] || exit 1
      export_int8 energy nce nce-small
      tar czf "$OUT/energy.tar.gz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='tb' \
        "$RUNS/nce" "$RUNS/nce-small" "$RUNS"/nce*.log
    fi ;;
  nll)
    if [ ! -f "$RUNS/nll.json" ]; then
      limit=(); [ -n "${BASE_SMOKE:-}" ] && limit=(--max-chars 20000 --length 32)
      $EDLM eval nll --denoiser "$RUNS/mdlm/model-fp16" --data wikipedia_en --split valid "${limit[@]}" \
        --energy "ar:$RUNS/ar/model-fp16" --energy "nce:$RUNS/nce/model-fp16" --energy "nce:$RUNS/nce-small/model-fp16" \
        --ar "$RUNS/ar/model-fp16" --batch-size 256 --bound-k 0 --json "$RUNS/nll.json" 2>&1 | grep -v "examples/s" | tail -n 8
      cp "$RUNS/nll.json" "$OUT/"
    fi ;;
  sweep)
    if [ "$STAGE" = score ]; then  # the held-out rows are made here, on CPU, then every group is scored
      $EDLM bench sweep "$CONFIG" "${sweep_args[@]}" --stage generate 2>&1 | tail -n 1
      sweep_args+=(--judge "${JUDGES:-smollm2,gemma3}")
    fi
    GROUP_ARGS=("${sweep_args[@]}" --stage "$STAGE")  # what group (common.sh) passes to every run
    GROUP_MARGIN=20                                   # each group stops 20 s before the deadline: time for the archive
    selected mdlm && group mdlm                                           # MDLM at every T, AR samples
    selected edlm-few && group edlm-few "grid.energy=[ar,ar_exact]" "grid.k=[4]" "grid.steps=[8,16,32]" \
      reference.ar_samples=false                                          # few steps, where EDLM gains most
    selected edlm-k && group edlm-k "grid.energy=[ar,nce]" "grid.k=[2,4,8,16]" "grid.steps=[32]" reference.ar_samples=false
    selected edlm-exact && group edlm-exact "grid.energy=[ar_exact,nce_small]" "grid.k=[4,16]" "grid.steps=[32]" \
      reference.ar_samples=false
    selected edlm-all && group edlm-all "grid.energy=[ar,nce]" "grid.k=[2,4,8,16]" "grid.window=[[0.0,1.0],[0.8,1.0]]" \
      reference.ar_samples=false
    if [ "$STAGE" = generate ]; then
      tar cJf "$OUT/sweep.tar.xz" --exclude=.edlm.lock "$RUNS/sweep"
    fi ;;
  *) echo "unknown phase $phase (train, energy, nll or sweep)"; exit 2 ;;
  esac
done
echo "== done in $(( $(date +%s) - start )) s"
ls -la "$OUT"
