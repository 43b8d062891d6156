#!/usr/bin/env bash
# The comparison for benches/run_serving_bench.sh: starts llama.cpp's llama-server
# (built by benches/llama_cpp/build_llama_server.sh, outside the repo) on the same GGUF
# with 32 parallel slots and continuous batching, drives it with the same load
# generator (benches/loadgen.rs: streaming /v1/chat/completions, ignore_eos, greedy)
# and prints the same markdown table.
#
# Usage: benches/llama_cpp/run_llama_server_bench.sh
# Environment (all optional):
#   CONCURRENCIES="1 32"     concurrency levels
#   REQUESTS=                requests per run (default: max(2*concurrency, MIN_REQUESTS))
#   MIN_REQUESTS=8
#   MAX_TOKENS=128           max_tokens per request (ignore_eos: every request makes all)
#   LOADGEN_ARGS=            extra benches/loadgen.rs flags (e.g. --unique-prompts)
#   WARMUP=2                 warm-up requests before each measured run
#   MODEL=                   GGUF path (default: the default model, fetched by ferrite)
#   SLOTS=32                 llama-server -np
#   THREADS=2                llama-server -t and -tb
#   SLOT_CTX=256             context per slot; -c is SLOTS * SLOT_CTX (prompt ~50 + 128)
#   LLAMA_SERVER=            llama-server binary (default: built by build_llama_server.sh)
#   SERVER_ARGS=             extra llama-server arguments
#   RUN_TIMEOUT=900          seconds per loadgen run
#   READY_TIMEOUT=300        seconds to wait for /health 200
#   OUT_DIR=                 where JSON results and the server log go (default: temp dir)
# FEATURES= (optional): cargo features of the ferrite build, e.g. cuda: build what the
# test suite builds, so neither overwrites the other's target/release/ferrite.
set -euo pipefail

cd "$(dirname "$0")/../.."
CONCURRENCIES=${CONCURRENCIES:-"1 32"}
MIN_REQUESTS=${MIN_REQUESTS:-8}
MAX_TOKENS=${MAX_TOKENS:-128}
WARMUP=${WARMUP:-2}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
SLOTS=${SLOTS:-32}
THREADS=${THREADS:-2}
SLOT_CTX=${SLOT_CTX:-256}
SERVER_ARGS=${SERVER_ARGS:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
READY_TIMEOUT=${READY_TIMEOUT:-300}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t llama-server-bench.XXXXXX)}
mkdir -p "$OUT_DIR"

if [[ -z "${LLAMA_SERVER:-}" ]]; then
    LLAMA_SERVER=$(benches/llama_cpp/build_llama_server.sh | tail -2 | head -1)
fi
VERSION=$("$LLAMA_SERVER" --version 2>&1 | grep -m1 '^version' || echo "version unknown")
if [[ -z "${MODEL:-}" ]]; then
    echo "building ferrite to fetch the default model ..." >&2
    cargo build --release --bin ferrite --features "${FEATURES:-}" >&2
    MODEL=$(./target/release/ferrite fetch-model --models-dir models | tail -1)
fi
[[ -f "$MODEL" ]] || { echo "model $MODEL not found" >&2; exit 1; }

echo "building the load generator ..." >&2
LOADGEN=$(cargo bench --bench loadgen --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*loadgen[^"]*"' | tail -1 | sed 's/^"executable":"//; s/"$//')
if [[ -z "$LOADGEN" || ! -x "$LOADGEN" ]]; then
    echo "could not build the loadgen bench (try: cargo bench --bench loadgen --no-run)" >&2
    exit 1
fi

SERVER_PID=
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE_URL="http://127.0.0.1:$PORT"
LOG="$OUT_DIR/llama-server.log"
# shellcheck disable=SC2086 # SERVER_ARGS is a list of words
"$LLAMA_SERVER" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -np "$SLOTS" \
    -t "$THREADS" -tb "$THREADS" -c $((SLOTS * SLOT_CTX)) -cb $SERVER_ARGS >"$LOG" 2>&1 &
SERVER_PID=$!
deadline=$((SECONDS + READY_TIMEOUT))
until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE_URL/health") == 200 ]]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null || ((SECONDS > deadline)); then
        echo "llama-server did not become ready; log: $LOG" >&2
        tail -20 "$LOG" >&2
        exit 1
    fi
    sleep 0.5
done
echo "llama-server ($VERSION) ready at $BASE_URL: -np $SLOTS -t $THREADS -c $((SLOTS * SLOT_CTX)) -cb" >&2

# Value of a top-level key in the loadgen's pretty JSON ("n/a" for null or missing).
jget() {
    local v
    v=$(sed -n "s/^  \"$1\": \([^,]*\),\{0,1\}$/\1/p" "$2" | head -1)
    [[ -z "$v" || "$v" == null ]] && v="n/a"
    echo "$v"
}

fmt() { [[ "$1" == n/a ]] && echo n/a || printf "%.${2}f" "$1"; }

ROWS=()
for c in $CONCURRENCIES; do
    n=${REQUESTS:-$((2 * c > MIN_REQUESTS ? 2 * c : MIN_REQUESTS))}
    out="$OUT_DIR/llama-server-c$c.json"
    echo "== llama-server, concurrency $c, $n requests x $MAX_TOKENS tokens" >&2
    # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of words
    if ! timeout --kill-after=10 "$RUN_TIMEOUT" "$LOADGEN" --url "$BASE_URL" \
        --concurrency "$c" --requests "$n" --max-tokens "$MAX_TOKENS" \
        --warmup "$WARMUP" $LOADGEN_ARGS --json "$out" >&2; then
        echo "   run failed or timed out after ${RUN_TIMEOUT}s" >&2
        ROWS+=("| $c | llama-server | failed | | | | |")
        continue
    fi
    errors=$(jget errors "$out")
    [[ "$errors" != 0 ]] && echo "   WARNING: $errors failed requests" >&2
    ROWS+=("| $c | llama-server | $(fmt "$(jget agg_tok_s "$out")" 1) \
| $(fmt "$(jget ttft_ms_p50 "$out")" 1) ms | $(fmt "$(jget ttft_ms_p99 "$out")" 1) ms \
| $(fmt "$(jget itl_ms_p50 "$out")" 2) ms | $(fmt "$(jget itl_ms_p99 "$out")" 2) ms |")
done
stop_server

echo
echo "llama-server $VERSION, -np $SLOTS -t $THREADS -c $((SLOTS * SLOT_CTX)) -cb"
echo "model $MODEL, max_tokens $MAX_TOKENS, warmup $WARMUP; results and log in $OUT_DIR"
echo
echo "| concurrency | mode | agg tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
