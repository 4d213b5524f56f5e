#!/usr/bin/env bash
# A Hugging Face masked LM as the MDLM denoiser on wikipedia_en, on one GPU, offline: a random init of a config the
# size of the shipped DiT (6 layers x 256, 4 heads, 128 positions, dropout 0; its vocabulary = the shipped BPE-4k
# tokenizer's, so both models score the same tokens) trained with the MDLM loss (`edlm train mdlm
# model.backbone=hf model.hf_pretrained=false`) for train.max_minutes (4), then `edlm eval nll` on the valid split
# for it and for the shipped DiT (edlm/assets/wikipedia_en/mdlm), side by side. ~7 min on an H200.
# ARCH picks the config: modernbert (default: pre-norm, rotary positions, GeGLU MLP of 768) or bert (post-norm,
# learned absolute positions, MLP 1024, as BERT). If the compiled run fails, it trains again eagerly in the time left.
# Needs a wikipedia_en data folder ($EDLM_DATA_DIR, else .data, shared/data or ../shared/data), optionally .whl/.
# Writes runs/wiki/hf_mlm and, to $OUT: hf_mlm.md (the table), nll_hf_mlm.json, nll_dit.json, hf_mlm.tar.gz (run
# config, metrics.json, CSV and training log).
#   Usage (repo root): [ARCH=bert] bash benchmarks/wiki/hf_mlm.sh [key=value ... for the training]
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

ARCH=${ARCH:-modernbert}
CONFIG_DIR=$RUNS/$ARCH-6x256
python3 - "$ARCH" "$CONFIG_DIR" <<'PY'
import sys
import transformers
# the shipped DiT's shape (edlm/configs/wiki.yaml); vocab_size and the special ids are replaced by the tokenizer's
arch, out = sys.argv[1], sys.argv[2]
shape = dict(vocab_size=4096, hidden_size=256, num_hidden_layers=6, num_attention_heads=4, max_position_embeddings=128,
             pad_token_id=None, bos_token_id=None, eos_token_id=None)
if arch == "bert":
    config = transformers.BertConfig(**shape, intermediate_size=1024, type_vocab_size=1, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
elif arch == "modernbert":  # every layer global (the local window would cover all 128 positions anyway)
    config = transformers.ModernBertConfig(**shape, intermediate_size=768, global_attn_every_n_layers=1,
                                           local_attention=128, embedding_dropout=0.0, mlp_dropout=0.0,
                                           attention_dropout=0.0, reference_compile=False,
                                           cls_token_id=None, sep_token_id=None)
else:
    sys.exit(f"ARCH must be modernbert or bert, got {arch!r}")
config.save_pretrained(out)
PY
pack_once "$TOK" "${SMOKE_CHARS:-0}"

train_hf() {  # train_hf RUN_DIR [key=value ...]
  local run=$1; shift
  $EDLM train mdlm --preset wiki --run-dir "$run" model.backbone=hf model.hf_name="$CONFIG_DIR" \
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

python3 - "$RUN" "$OUT" "$ARCH" <<'PY' | tee "$OUT/hf_mlm.md"
import json, sys
from pathlib import Path
from edlm.models import load_denoiser, read_checkpoint_config
run, out = Path(sys.argv[1]), Path(sys.argv[2])
metrics = json.loads((run / "metrics.json").read_text())
dit_dir = "edlm/assets/wikipedia_en/mdlm"
dit_extra = read_checkpoint_config(dit_dir)["extra"]
arch = {"bert": "BERT", "modernbert": "ModernBERT"}[sys.argv[3]]
rows = [(f"{arch} 6 x 256 (HF masked LM, random init)", run / "model", "nll_hf_mlm.json",
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
  "$CONFIG_DIR"
ls -la "$OUT"
