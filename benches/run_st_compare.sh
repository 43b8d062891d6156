#!/usr/bin/env bash
# sentence-transformers against ferrite (issue 15): rerank of 20 and 50 documents (~77 tokens)
# and embeddings throughput with the default encoder (all-MiniLM-L6-v2), same model folder,
# documents and thread count, side by side in one run (benches/st_compare.py prints the table).
#
# Makes (once) a Python venv under target/st-venv with pinned torch and sentence-transformers
# from PyPI, as tests/fixtures/encoders/make_fixtures.sh does. PyPI has only the CUDA build of
# torch for x86-64 Linux, so this pulls its nvidia-* wheels too (~6 GB installed); it runs on
# the CPU (CUDA_VISIBLE_DEVICES=""). Then starts `ferrite serve --model none` (encoder only) on
# 127.0.0.1 with RAYON_NUM_THREADS=$THREADS.
#
# Usage: benches/run_st_compare.sh
# Environment (all optional): THREADS=2, REPS=5, PRECISION=auto (ferrite's
#   --encoder-precision), VENV=target/st-venv, SERVER_ARGS=, OUT_DIR= (default: a temp dir)
# FEATURES= (optional): cargo features of the ferrite build, e.g. cuda: build what the
# test suite builds, so neither overwrites the other's target/release/ferrite.
set -euo pipefail

cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
REPS=${REPS:-5}
PRECISION=${PRECISION:-auto}
VENV=${VENV:-target/st-venv}
SERVER_ARGS=${SERVER_ARGS:-}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t ferrite-st.XXXXXX)}
mkdir -p "$OUT_DIR"
PINS=(torch==2.15.0 transformers==5.23.0 sentence-transformers==6.2.0)

SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -x "$VENV/bin/python3" ]] || python3 -m venv "$VENV"
"$VENV/bin/python3" -c "import sentence_transformers, torch" 2>/dev/null \
    || "$VENV/bin/python3" -m pip install --quiet "${PINS[@]}"

echo "building (release) ..." >&2
cargo build --release --bin ferrite --features "${FEATURES:-}" >&2
MODELS_DIR=${MODELS_DIR:-models}
log="$OUT_DIR/server.log"
# shellcheck disable=SC2086 # SERVER_ARGS is a list of words
RAYON_NUM_THREADS=$THREADS ./target/release/ferrite serve --host 127.0.0.1 --port 0 --model none \
    --models-dir "$MODELS_DIR" --encoder-precision "$PRECISION" $SERVER_ARGS >"$log" 2>&1 &
SERVER_PID=$!
BASE_URL=
for _ in $(seq 600); do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited; see $log" >&2; tail -20 "$log" >&2; exit 1; }
    [[ -z "$BASE_URL" ]] && BASE_URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1 || true)
    if [[ -n "$BASE_URL" && $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE_URL/health") == 200 ]]; then
        break
    fi
    sleep 0.5
done
echo "server ready at $BASE_URL" >&2
MODEL_DIR=$(sed -n 's/.*loading encoder.*path[^=]*=[^a-zA-Z0-9/.]*\([^ ]*\).*/\1/p' "$log" | head -1 | sed 's/\x1b\[[0-9;]*m//g')
[[ -f "$MODEL_DIR/config.json" ]] || MODEL_DIR="$MODELS_DIR/all-minilm-l6-v2/model"
grep -o 'cpu kernels chosen.*' "$log" | sed 's/\x1b\[[0-9;]*m//g' >&2 || true
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)" >&2

CUDA_VISIBLE_DEVICES="" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TQDM_DISABLE=1 \
OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS \
    "$VENV/bin/python3" benches/st_compare.py --url "$BASE_URL" --model-dir "$MODEL_DIR" \
    --threads "$THREADS" --reps "$REPS" --json "$OUT_DIR/st_compare.json"
echo "(ferrite --encoder-precision $PRECISION; logs in $OUT_DIR)"
