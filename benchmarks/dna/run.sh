#!/usr/bin/env bash
# The E. coli K-12 study in one call on one GPU (< 9 min on an H200): MDLM and AR trained side by side
# (edlm/configs/dna.yaml, L = 1,024 bases, MDLM_MINUTES / AR_MINUTES of wall time each), the NCE energy initialised
# from the MDLM (NCE_MINUTES), `edlm eval nll` on the valid split (MDLM bound, EDLM-AR / EDLM-NCE estimates, the AR
# model's exact NLL; bits per base), the sweep benchmarks/configs/dna_gpu.yaml (MDLM vs EDLM-AR vs EDLM-NCE at
# T in {16, 64, 256}, scored by edlm.eval.dna), `edlm eval dna` for the real and shuffled held-out windows, then
# benchmarks/dna/report.py. Needs .data/dna_ecoli_k12 (or EDLM_DATA_DIR) and, on a GPU image without them,
# .whl/ (datasets, omegaconf, ...). Writes to $OUT (at most 8 files come back from a GPU call): results.md,
# results.json, dna_metrics.png, models.tar.gz (int8 model dirs + tokenizer + run records, < 16 MiB; only when
# trained here), records.tar.gz (samples.fa.gz, sweep_results.jsonl, nll.json, dna_refs.json, training logs),
# machine.txt. Runs already in $RUNS (a metrics.json per model, nll.json) are not trained or evaluated again: unpack
# a models.tar.gz into RUNS to re-sample and re-score its int8 models.
#   Usage (repo root): bash benchmarks/dna/run.sh
#   CPU toy size (minutes on 2 cores; the tests' corpus slices): TOY=1 EDLM_DATA_DIR=tests/corpora OUT=/tmp/dna-out \
#     RUNS=/tmp/dna-runs bash benchmarks/dna/run.sh
source "$(dirname "$0")/../gpu/common.sh"
RUNS=${RUNS:-runs/dna}
TOY=${TOY:-0}
start=$(date +%s)
mkdir -p "$RUNS"
if [ "$TOY" = 1 ]; then  # tiny shapes, a few steps: checks the pipeline end to end, not the numbers
  SIZE="model.hidden_size=32 model.n_blocks=1 model.n_heads=2 model.cond_dim=16 data.length=128 data.batch_size=8
        data.eval_batch_size=32 train.max_steps=20 train.val_check_interval=10 train.compile=false
        train.accelerator=cpu train.cpu_threads=1 optim.warmup_steps=5"
  LENGTH=128; NUM=8; SWEEP="grid.steps=[4,8] device=cpu"; BOOT=100; TIME_SAMPLES=1
  MDLM_MINUTES=${MDLM_MINUTES:-2}; AR_MINUTES=${AR_MINUTES:-2}; NCE_MINUTES=${NCE_MINUTES:-2}
else
  SIZE=""; LENGTH=1024; NUM=64; SWEEP=""; BOOT=1000; TIME_SAMPLES=4
  MDLM_MINUTES=${MDLM_MINUTES:-2.5}; AR_MINUTES=${AR_MINUTES:-2.5}; NCE_MINUTES=${NCE_MINUTES:-1.5}
fi
stamp() { echo "== $1 ($(( $(date +%s) - start )) s)"; }

# pack the genome once into the cache, before the trainings read it side by side
python3 -c "
from edlm.data import TextDataModule, dna_tokenizer
dm = TextDataModule('dna_ecoli_k12', dna_tokenizer(), $LENGTH, 8)
dm.prepare_data(); dm.setup('fit')
print(f'packed: {len(dm.train_data)} train rows, {len(dm.valid_data)} valid rows of $LENGTH bases', flush=True)"

stamp "train MDLM and AR"
for kind in mdlm ar; do
  minutes=$MDLM_MINUTES; [ $kind = ar ] && minutes=$AR_MINUTES
  [ -f "$RUNS/$kind/metrics.json" ] || $EDLM train $kind --preset dna --run-dir "$RUNS/$kind" \
    train.max_minutes="$minutes" $SIZE > "$RUNS/$kind.log" 2>&1 &
  [ "$TOY" = 1 ] && { wait $! || { tail -n 20 "$RUNS/$kind.log"; exit 1; }; }  # 2 CPU cores: one at a time
done
fail=0; for job in $(jobs -p); do wait "$job" || fail=1; done
tail -n 2 "$RUNS"/mdlm.log "$RUNS"/ar.log 2>/dev/null || true  # no logs: both were trained before
[ $fail = 0 ] || { tail -n 30 "$RUNS"/mdlm.log "$RUNS"/ar.log; exit 1; }

stamp "train the NCE energy (initialised from the MDLM)"
[ -f "$RUNS/nce/metrics.json" ] || $EDLM train energy --preset dna --denoiser "$RUNS/mdlm" --run-dir "$RUNS/nce" \
  optim.lr=3e-4 optim.warmup_steps=200 train.max_minutes="$NCE_MINUTES" $SIZE > "$RUNS/nce.log" 2>&1 \
  || { tail -n 30 "$RUNS/nce.log"; exit 1; }
tail -n 1 "$RUNS/nce.log" 2>/dev/null || true

stamp "eval nll on valid (bits per base)"
[ -f "$RUNS/nll.json" ] || $EDLM eval nll --denoiser "$RUNS/mdlm" --data dna_ecoli_k12 --split valid \
  --energy "ar:$RUNS/ar,carry_over=false" --energy "nce:$RUNS/nce" --ar "$RUNS/ar" --time-samples $TIME_SAMPLES \
  --batch-size 64 --json "$RUNS/nll.json" --no-progress

stamp "sample and score: MDLM vs EDLM-AR vs EDLM-NCE"
$EDLM bench sweep benchmarks/configs/dna_gpu.yaml --out "$RUNS/sweep" --judge none --no-plot --no-progress \
  denoiser="$RUNS/mdlm" energies.ar="ar:$RUNS/ar,carry_over=false" energies.nce="nce:$RUNS/nce" \
  num_samples=$NUM batch_size=$NUM $SWEEP \
  2>&1 | grep -v "examples/s" | tail -n 3
$EDLM eval dna --data dna_ecoli_k12 --split valid --windows $NUM --length $LENGTH --bootstrap $BOOT --json "$RUNS/dna_refs.json" \
  | tail -n 4

stamp "report"
python3 benchmarks/dna/report.py "$RUNS" --out "$OUT"
if [ -d "$RUNS/mdlm/model" ]; then  # trained in this call: export the int8 model set
  for kind in mdlm ar nce; do
    python3 benchmarks/wiki/export_weights.py "$RUNS/$kind/model" "$RUNS/export/$kind" int8
    cp "$RUNS/$kind/metrics.json" "$RUNS/$kind/config.yaml" "$RUNS/export/$kind/"
  done
  tar czf "$OUT/models.tar.gz" -C "$RUNS" export nll.json
fi
mkdir -p "$RUNS/records"
cp "$RUNS/nll.json" "$RUNS/dna_refs.json" "$RUNS/records/"
cp "$RUNS/sweep/results.jsonl" "$RUNS/records/sweep_results.jsonl"
mv "$OUT/samples.fa.gz" "$RUNS/records/" 2>/dev/null || true
tar czf "$OUT/records.tar.gz" -C "$RUNS" records $(cd "$RUNS" && ls -d *.log */csv 2>/dev/null)
stamp "done"
ls -la "$OUT"
