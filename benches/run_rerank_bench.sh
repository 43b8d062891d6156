#!/usr/bin/env bash
# Rerank benchmark (issue 4): starts `ferrite serve` with the default LLM and the
# default encoder (all-MiniLM-L6-v2, so rerank runs in embedding-cosine mode) on
# 127.0.0.1, then measures
#   1. rerank latency p50/p99 for 20 and for 50 candidates of ~100 tokens (one client),
#   2. rerank requests/s at concurrency 8 (20 candidates),
#   3. the LLM's inter-token latency p50/p99 at 8 streams, alone and while 2 rerank
#      clients keep sending 20-candidate requests (and what those clients got meanwhile:
#      rerank is sliced between LLM steps, --encoder-share, and must not starve),
# and prints a markdown table. A cross-encoder can be benchmarked instead with
# ENCODER=path/to/folder.
#
# Usage: benches/run_rerank_bench.sh
# Environment (all optional): ENCODER= (default: the default encoder), REQUESTS=32,
#   CHAT_REQUESTS=16, MAX_TOKENS=128, SERVER_ARGS=, OUT_DIR= (default: a temp dir)
# FEATURES= (optional): cargo features of the ferrite build, e.g. cuda: build what the
# test suite builds, so neither overwrites the other's target/release/ferrite.
set -euo pipefail

cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-32}
CHAT_REQUESTS=${CHAT_REQUESTS:-16}
MAX_TOKENS=${MAX_TOKENS:-128}
SERVER_ARGS=${SERVER_ARGS:-}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t ferrite-rerank.XXXXXX)}
mkdir -p "$OUT_DIR"

SERVER_PID=
BG_PID=
cleanup() {
    [[ -n "$BG_PID" ]] && kill "$BG_PID" 2>/dev/null || true
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

exe() { # path of a bench binary built by cargo
    cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null \
        | grep -o "\"executable\":\"[^\"]*$1[^\"]*\"" | tail -1 | sed 's/^"executable":"//; s/"$//'
}
echo "building (release) ..." >&2
cargo build --release --bin ferrite --features "${FEATURES:-}" >&2
LOADGEN=$(exe loadgen)
RERANK=$(exe rerank_load)
[[ -x "$LOADGEN" && -x "$RERANK" ]] || { echo "could not build the bench binaries" >&2; exit 1; }

encoder_args=()
[[ -n "${ENCODER:-}" ]] && encoder_args=(--encoder "$ENCODER")
log="$OUT_DIR/server.log"
# shellcheck disable=SC2086 # SERVER_ARGS is a list of words
./target/release/ferrite serve --host 127.0.0.1 --port 0 "${encoder_args[@]}" $SERVER_ARGS >"$log" 2>&1 &
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

jget() { sed -n "s/^  \"$1\": \([^,]*\),\{0,1\}$/\1/p" "$2" | head -1; }
fmt() { printf "%.${2}f" "$1"; }

ROWS=()
for docs in 20 50; do
    out="$OUT_DIR/rerank-c1-d$docs.json"
    "$RERANK" --url "$BASE_URL" --concurrency 1 --requests "$REQUESTS" --docs "$docs" --json "$out" >&2
    ROWS+=("| rerank, $docs docs, 1 client | p50 $(fmt "$(jget latency_ms_p50 "$out")" 1) ms, p99 $(fmt "$(jget latency_ms_p99 "$out")" 1) ms | $(fmt "$(jget req_s "$out")" 2) req/s |")
done
out="$OUT_DIR/rerank-c8-d20.json"
"$RERANK" --url "$BASE_URL" --concurrency 8 --requests $((REQUESTS * 2)) --docs 20 --json "$out" >&2
ROWS+=("| rerank, 20 docs, 8 clients | p50 $(fmt "$(jget latency_ms_p50 "$out")" 1) ms, p99 $(fmt "$(jget latency_ms_p99 "$out")" 1) ms | $(fmt "$(jget req_s "$out")" 2) req/s |")

chat() { # $1 = output json
    "$LOADGEN" --url "$BASE_URL" --concurrency 8 --requests "$CHAT_REQUESTS" \
        --max-tokens "$MAX_TOKENS" --warmup 2 --json "$1" >&2
}
out="$OUT_DIR/chat-alone.json"
chat "$out"
ROWS+=("| LLM, 8 streams, alone | ITL p50 $(fmt "$(jget itl_ms_p50 "$out")" 2) ms, p99 $(fmt "$(jget itl_ms_p99 "$out")" 2) ms | $(fmt "$(jget agg_tok_s "$out")" 1) tok/s |")
rm -f "$OUT_DIR/stop"
"$RERANK" --url "$BASE_URL" --concurrency 2 --duration-secs 100000 --docs 20 --warmup 0 \
    --stop-file "$OUT_DIR/stop" --json "$OUT_DIR/rerank-background.json" \
    >"$OUT_DIR/rerank-background.log" 2>&1 &
BG_PID=$!
out="$OUT_DIR/chat-with-rerank.json"
chat "$out"
touch "$OUT_DIR/stop"
wait "$BG_PID" || true
BG_PID=
ROWS+=("| LLM, 8 streams, + 2 rerank clients (20 docs) | ITL p50 $(fmt "$(jget itl_ms_p50 "$out")" 2) ms, p99 $(fmt "$(jget itl_ms_p99 "$out")" 2) ms | $(fmt "$(jget agg_tok_s "$out")" 1) tok/s |")
bg="$OUT_DIR/rerank-background.json"
ROWS+=("| rerank, 20 docs, 2 clients, beside those 8 streams | p50 $(fmt "$(jget latency_ms_p50 "$bg")" 1) ms, p99 $(fmt "$(jget latency_ms_p99 "$bg")" 1) ms | $(fmt "$(jget req_s "$bg")" 2) req/s |")

echo
echo "encoder: ${ENCODER:-default (all-MiniLM-L6-v2)}; results and logs in $OUT_DIR"
echo
echo "| workload | latency | throughput |"
echo "|---|---|---|"
printf '%s\n' "${ROWS[@]}"
