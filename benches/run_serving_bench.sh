#!/usr/bin/env bash
# Serving benchmark: starts `ferrite serve` on 127.0.0.1 (a free port), drives it with
# benches/loadgen.rs at several concurrencies, once with the default scheduler
# (continuous batching) and once with `--max-num-seqs 1` (one request at a time, what
# Ollama does by default), and prints a markdown table.
#
# Usage: benches/run_serving_bench.sh
# RAG-shaped load (8 streams, distinct ~900-token prompts, 64 tokens out), with and
# without the step time budget:
#   CONCURRENCIES=8 REQUESTS=24 MAX_TOKENS=64 MODES="batched nostepbudget" \
#     LOADGEN_ARGS="--unique-prompts --prompt-words 880" benches/run_serving_bench.sh
# Environment (all optional):
#   CONCURRENCIES="1 8 32"   concurrency levels
#   REQUESTS=                 requests per run (default: max(2*concurrency, MIN_REQUESTS))
#   MIN_REQUESTS=8
#   MAX_TOKENS=128            max_tokens per request (ignore_eos: every request makes all)
#   LOADGEN_ARGS=            extra benches/loadgen.rs flags (e.g. --unique-prompts)
#   WARMUP=2                  warm-up requests before each measured run
#   MODES="batched serial"    batched = default scheduler, serial = --max-num-seqs 1,
#                             nostepbudget = --max-step-ms 0 (prefill cut by tokens only)
#   APIS="openai"             loadgen --api per run: openai (/v1/chat/completions) and/or
#                             ollama (/api/generate), against the same server
#   SERVER_ARGS=              extra `ferrite serve` arguments (e.g. --model PATH)
#   RUN_TIMEOUT=600           seconds per loadgen run
#   READY_TIMEOUT=300         seconds to wait for /health 200
#   OUT_DIR=                  where JSON results and server logs go (default: a temp dir)
#   FEATURES=                 cargo features of the server build (e.g. cuda)
set -euo pipefail

cd "$(dirname "$0")/.."
CONCURRENCIES=${CONCURRENCIES:-"1 8 32"}
MIN_REQUESTS=${MIN_REQUESTS:-8}
MAX_TOKENS=${MAX_TOKENS:-128}
WARMUP=${WARMUP:-2}
LOADGEN_ARGS=${LOADGEN_ARGS:-}
MODES=${MODES:-"batched serial"}
APIS=${APIS:-openai}
SERVER_ARGS=${SERVER_ARGS:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
READY_TIMEOUT=${READY_TIMEOUT:-300}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t ferrite-bench.XXXXXX)}
mkdir -p "$OUT_DIR"

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

echo "building (release) ..." >&2
cargo build --release --bin ferrite --features "${FEATURES:-}" >&2
# Build the loadgen once and run its binary directly, so nothing rebuilds mid-run.
LOADGEN=$(cargo bench --bench loadgen --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*loadgen[^"]*"' | tail -1 | sed 's/^"executable":"//; s/"$//')
if [[ -z "$LOADGEN" || ! -x "$LOADGEN" ]]; then
    echo "could not build the loadgen bench (try: cargo bench --bench loadgen --no-run)" >&2
    exit 1
fi
FERRITE=./target/release/ferrite

# Starts the server on port 0 (the OS picks a free port) and sets BASE_URL from its log.
start_server() {
    local log="$1"
    shift
    # shellcheck disable=SC2086 # SERVER_ARGS is a list of words
    "$FERRITE" serve --host 127.0.0.1 --port 0 $SERVER_ARGS "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    BASE_URL=
    local deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server exited; log: $log" >&2
            tail -20 "$log" >&2
            return 1
        fi
        if [[ -z "$BASE_URL" ]]; then
            BASE_URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1 || true)
        elif [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE_URL/health") == 200 ]]; then
            return 0
        fi
        sleep 0.5
    done
    echo "server not ready after ${READY_TIMEOUT}s; log: $log" >&2
    return 1
}

# Value of a top-level key in the loadgen's pretty JSON ("n/a" for null or missing).
jget() {
    local v
    v=$(sed -n "s/^  \"$1\": \([^,]*\),\{0,1\}$/\1/p" "$2" | head -1)
    [[ -z "$v" || "$v" == null ]] && v="n/a"
    echo "$v"
}

fmt() { [[ "$1" == n/a ]] && echo n/a || printf "%.${2}f" "$1"; }

ROWS=()
for mode in $MODES; do
    case "$mode" in
        batched) extra=() ;;
        serial) extra=(--max-num-seqs 1) ;;
        nostepbudget) extra=(--max-step-ms 0) ;;
        *) echo "unknown mode $mode (batched|serial|nostepbudget)" >&2; exit 1 ;;
    esac
    echo "== mode $mode: starting server ${extra[*]}" >&2
    start_server "$OUT_DIR/server-$mode.log" "${extra[@]}"
    echo "   server ready at $BASE_URL" >&2
    for c in $CONCURRENCIES; do
      for api in $APIS; do
        n=${REQUESTS:-$((2 * c > MIN_REQUESTS ? 2 * c : MIN_REQUESTS))}
        out="$OUT_DIR/$mode-$api-c$c.json"
        echo "== mode $mode, api $api, concurrency $c, $n requests x $MAX_TOKENS tokens" >&2
        # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of words
        if ! timeout --kill-after=10 "$RUN_TIMEOUT" "$LOADGEN" --url "$BASE_URL" \
            --concurrency "$c" --requests "$n" --max-tokens "$MAX_TOKENS" --api "$api" \
            --warmup "$WARMUP" $LOADGEN_ARGS --json "$out" >&2; then
            echo "   run failed or timed out after ${RUN_TIMEOUT}s" >&2
            ROWS+=("| $c | $mode | $api | failed | | | | |")
            continue
        fi
        errors=$(jget errors "$out")
        [[ "$errors" != 0 ]] && echo "   WARNING: $errors failed requests" >&2
        ROWS+=("| $c | $mode | $api | $(fmt "$(jget agg_tok_s "$out")" 1) \
| $(fmt "$(jget ttft_ms_p50 "$out")" 1) ms | $(fmt "$(jget ttft_ms_p99 "$out")" 1) ms \
| $(fmt "$(jget itl_ms_p50 "$out")" 2) ms | $(fmt "$(jget itl_ms_p99 "$out")" 2) ms |")
      done
    done
    stop_server
done

echo
echo "max_tokens $MAX_TOKENS, warmup $WARMUP; results and logs in $OUT_DIR"
echo
echo "| concurrency | mode | api | agg tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
