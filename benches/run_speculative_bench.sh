#!/usr/bin/env bash
# Prompt-lookup speculative decoding (issue 15): one stream of a document-summary prompt
# (the README as the document, cut to DOC_WORDS words), greedy, speculation on vs off per
# request on the same server, alternating (benches/speculative_bench.py prints the table).
#
# Usage: benches/run_speculative_bench.sh
# Environment (all optional): REPS=3, MAX_TOKENS=200, DOC_WORDS=700, THREADS=2,
#   SERVER_ARGS= (e.g. "--speculative-tokens 6"), MODEL= (a GGUF; default: the default
#   model), OUT_DIR= (default: a temp dir), FEATURES= (cargo features of the server
#   build, e.g. cuda: build what the test suite builds, so the two never overwrite
#   each other's binary)
set -euo pipefail

cd "$(dirname "$0")/.."
REPS=${REPS:-3}
MAX_TOKENS=${MAX_TOKENS:-200}
DOC_WORDS=${DOC_WORDS:-700}
THREADS=${THREADS:-2}
SERVER_ARGS=${SERVER_ARGS:-}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t ferrite-spec.XXXXXX)}
mkdir -p "$OUT_DIR"

SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building (release) ..." >&2
cargo build --release --bin ferrite --features "${FEATURES:-}" >&2
MODEL_ARGS=()
[[ -n "${MODEL:-}" ]] && MODEL_ARGS=(--model "$MODEL")
log="$OUT_DIR/server.log"
# shellcheck disable=SC2086 # SERVER_ARGS is a list of words
RAYON_NUM_THREADS=$THREADS ./target/release/ferrite serve --host 127.0.0.1 --port 0 \
    --encoder none "${MODEL_ARGS[@]}" $SERVER_ARGS >"$log" 2>&1 &
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
tr -s '[:space:]' ' ' <README.md | cut -d' ' -f1-"$DOC_WORDS" >"$OUT_DIR/document.txt"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads" >&2
python3 benches/speculative_bench.py "$BASE_URL" "$OUT_DIR/document.txt" "$REPS" "$MAX_TOKENS" \
    "$OUT_DIR/speculative.json"
echo "results in $OUT_DIR" >&2
