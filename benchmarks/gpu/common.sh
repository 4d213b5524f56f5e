# Sourced by benchmarks/wiki/*.sh and benchmarks/gpu/multi_gpu.sh on the GPU machine, from the repo root: wheels
# carried in .whl/ (installed offline), paths, a record of the card in $OUT/machine.txt, and the helpers pack_once
# and group.
set -euo pipefail
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | grep -v "^WARNING" || true
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export EDLM_DATA_DIR=${EDLM_DATA_DIR:-$PWD/.data}
export EDLM_CACHE_DIR=${EDLM_CACHE_DIR:-/tmp/edlm-cache}
export TOKENIZERS_PARALLELISM=true
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
EDLM="python3 -m edlm"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU";
  python3 -c "import torch; print('torch', torch.__version__)"; } > "$OUT/machine.txt"

# pack_once TOKENIZER [MAX_CHARS]: tokenise and pack wikipedia_en (L = 128) into the cache once, before several
# trainings (or DDP ranks) read it; MAX_CHARS > 0 packs a prefix only (local smoke tests).
pack_once() {
  python3 - "$1" "${2:-0}" <<'PY'
import sys, time
from edlm.data import TextDataModule
t = time.time()
chars = int(sys.argv[2]) or None
dm = TextDataModule("wikipedia_en", sys.argv[1], 128, 256, num_proc=8, max_chars={"train": chars, "valid": chars})
dm.prepare_data(); dm.setup("fit")
print(f"packed: {len(dm.train_data)} train rows, {len(dm.valid_data)} valid rows in {time.time() - t:.0f} s", flush=True)
PY
}

# group NAME key=value ...: one `edlm bench sweep "$CONFIG"` run with the options in the array GROUP_ARGS, then these
# overrides, stopped (SIGINT) at $deadline (epoch seconds) less GROUP_MARGIN seconds (default 0); a re-run resumes.
# The caller sets CONFIG, deadline and GROUP_ARGS before the first call.
group() {
  local name=$1; shift
  local left=$(( deadline - ${GROUP_MARGIN:-0} - $(date +%s) ))
  if [ "$left" -le 5 ]; then echo "== $name: no time left"; return 0; fi
  echo "== $name ($left s left)"
  timeout --signal=INT "$left" $EDLM bench sweep "$CONFIG" "${GROUP_ARGS[@]}" "$@" 2>&1 | grep -v "examples/s" \
    | tail -n 2 || echo "== $name stopped at the deadline (re-run to resume)"
}
