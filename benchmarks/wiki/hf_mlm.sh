#!/usr/bin/env bash
# A BERT-style Hugging Face masked LM as the MDLM denoiser on wikipedia_en, on one GPU, offline: a random init of a
# BertConfig the size of the shipped DiT (6 layers x 256, 4 heads, MLP 1024, 128 positions, dropout 0; its vocabulary
# = the shipped BPE-4k tokenizer's, so both models score the same tokens) trained with the MDLM loss
# (`edlm train mdlm model.backbone=hf model.hf_pretrained=false`) for train.max_minutes (4), then `edlm eval nll` on
# the valid split for it and for the shipped DiT (edlm/assets/wikipedia_en/mdlm), side by side. ~7.5 min on an H200.
# If the compiled run fails (torch.compile of this transformers version), it trains again eagerly in the time left.
# Needs a wikipedia_en data folder ($EDLM_DATA_DIR, else .data, shared/data or ../shared/data), optionally .whl/.
# Writes runs/wiki/hf_mlm and, to $OUT: hf_mlm.md (the table), nll_hf_mlm.json, nll_dit.json, hf_mlm.tar.gz (run
# config, metrics.json, CSV and training log).
#   Usage (repo root): bash benchmarks/wiki/hf_mlm.sh [key=value ... for the training]
#   CPU smoke test: SMOKE_CHARS=200000 NLL_ARGS="--max-chars 20000 --time-samples 1 --batch-size 16" \
#     bash benchmarks/wiki/hf_mlm.sh train.max_steps=2 train.compile=false data.batch_size=8 data.max_train_chars=200000 data.max_val_chars=20000
if [ -z "${EDLM_DATA_DIR:-}" ] && [ ! -d .data/wikipedia_en ]; then
  for dir in shared/data ../shared/data; do
    if [ -d "$dir/wikipedia_en" ]; then export EDLM_DATA_DIR=$(cd "$dir" && pwd); break; fi
  done
fi
source "$(dirname "$0")/../gpu/common.sh"
start=$(date +%s)
RUNS=${RUNS:-runs/wiki}
TOK=${TOK:-edlm/assets/wikipedia_en}   # the tokenizer the shipped DiT was trained with
BUDGET=${BUDGET_SECONDS:-520}          # the whole script, for the eager retry's share
mkdir -p "$RUNS"

python3 - "$RUNS/bert-6x256" <<'PY'
import sys
from transformers import BertConfig
# the shipped DiT's shape (edlm/configs/wiki.yaml); vocab_size and pad_token_id are replaced by the tokenizer's
BertConfig(vocab_size=4096, hidden_size=256, num_hidden_layers=6, num_attention_heads=4, intermediate_size=1024,
           max_position_embeddings=128, type_vocab_size=1, hidden_dropout_prob=0.0,
           attention_probs_dropout_prob=0.0).save_pretrained(sys.argv[1])
PY
pack_once "$TOK" "${SMOKE_CHARS:-0}"

train_hf() {  # train_hf RUN_DIR [key=value ...]
  local run=$1; shift
  $EDLM train mdlm --preset wiki --run-dir "$run" model.backbone=hf model.hf_name="$RUNS/bert-6x256" \
    model.hf_pretrained=false data.tokenizer="$TOK" train.max_minutes=4 "$@" > "$run.log" 2>&1
}
RUN=$RUNS/hf_mlm
if ! train_hf "$RUN" "$@"; then
  tail -n 20 "$RUN.log"
  left=$(( BUDGET - ($(date +%s) - start) - 120 ))  # 2 min kept for the two evaluations
  [ "$left" -ge 60 ] || { echo "== no time left for an eager run"; exit 1; }
  echo "== the compiled run failed; training eagerly for ${left} s"
  RUN=$RUNS/hf_mlm-eager
  train_hf "$RUN" "$@" train.compile=false train.max_minutes=$(python3 -c "print($left / 60)") \
    || { tail -n 20 "$RUN.log"; exit 1; }
fi
tail -n 3 "$RUN.log"

for pair in "hf_mlm:$RUN" "dit:edlm/assets/wikipedia_en/mdlm"; do
  $EDLM eval nll --denoiser "${pair#*:}" --data wikipedia_en --split valid --batch-size 256 --no-progress \
    --json "$OUT/nll_${pair%%:*}.json" ${NLL_ARGS:-} | tail -n 3
done

python3 - "$RUN" "$OUT" <<'PY' | tee "$OUT/hf_mlm.md"
import json, sys
from pathlib import Path
from edlm.models import load_denoiser, read_checkpoint_config
run, out = Path(sys.argv[1]), Path(sys.argv[2])
metrics = json.loads((run / "metrics.json").read_text())
dit_dir = "edlm/assets/wikipedia_en/mdlm"
dit_extra = read_checkpoint_config(dit_dir)["extra"]
rows = [("BERT 6 x 256 (HF masked LM, random init)", run / "model", "nll_hf_mlm.json",
         f"{metrics['global_step']:,} / {metrics['tokens_seen'] / 1e6:.1f} M, {metrics['wall_time_s'] / 60:.1f} min "
         f"({metrics['device']})"),
        ("DiT 6 x 256 (shipped)", dit_dir, "nll_dit.json",
         f"{dit_extra['global_step']:,} / {dit_extra['global_step'] * 256 * 128 / 1e6:.1f} M, "
         f"{dit_extra['run_config']['train']['max_minutes']} min (one H100, sharing it with the AR run)")]
print("| denoiser | params | steps / tokens seen, training | valid NLL bound (nats/token) | PPL <= |")
print("|---|---:|---|---:|---:|")
for name, model, nll_file, trained in rows:
    params = sum(p.numel() for p in load_denoiser(model).parameters())
    (r,) = json.loads((out / nll_file).read_text())["results"]
    se = "" if r["se"] is None else f" ± {r['se']:.4f}"
    print(f"| {name} | {params / 1e6:.2f} M | {trained} | {r['nll']:.4f}{se} | {r['ppl']:.1f} |")
print(f"\n`edlm eval nll --data wikipedia_en --split valid`: {r['num_sequences']} sequences x 128 tokens, "
      f"{r['num_time_samples']} time samples, the same draws for both; BPE-4k tokenizer for both.")
PY
tar czf "$OUT/hf_mlm.tar.gz" --exclude='*.safetensors' --exclude='checkpoints' --exclude='tb' "$RUN" "$RUN.log" \
  "$RUNS/bert-6x256"
ls -la "$OUT"
