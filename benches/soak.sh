#!/usr/bin/env bash
# Soak benchmark (not part of the test command): starts `ferrite serve` on 127.0.0.1 and
# drives it for DURATION seconds with mixed traffic, then reports what leaked.
#
#   chat:    benches/loadgen.rs in back-to-back rounds (CHAT_CONCURRENCY streams,
#            MAX_TOKENS tokens each, ignore_eos), errors and short answers summed;
#   rerank:  RERANK_CLIENTS loops alternating POST /v1/rerank (Cohere shape, top_n) and
#            POST /rerank (TEI shape); skipped when /v1/rerank answers 404 (a build
#            without the encoder routes) or the probe fails (no encoder served);
#   sampler: every SAMPLE_SECS, the server's RSS (VmRSS) and its running / waiting /
#            KV-blocks-used gauges, into samples.csv and on stdout.
#
# At the end (traffic stopped, engine given IDLE_TIMEOUT seconds to drain): requests,
# errors, RSS first/min/max/last and its growth, and KV blocks still in use ("leaked").
# Exit status 1 when a request failed or a block leaked.
#
# Usage: benches/soak.sh                 (30 minutes)
#        DURATION=120 benches/soak.sh    (a short run)
# Environment (all optional):
#   DURATION=1800  CHAT_CONCURRENCY=8  MAX_TOKENS=64  RERANK_CLIENTS=2  SAMPLE_SECS=10
#   IDLE_TIMEOUT=60  READY_TIMEOUT=600  SERVER_ARGS= (extra `ferrite serve` flags)
#   OUT_DIR= (samples.csv, loadgen JSON per round, server log; default: a temp dir)
# FEATURES= (optional): cargo features of the ferrite build, e.g. cuda: build what the
# test suite builds, so neither overwrites the other's target/release/ferrite.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-1800}
CHAT_CONCURRENCY=${CHAT_CONCURRENCY:-8}
MAX_TOKENS=${MAX_TOKENS:-64}
RERANK_CLIENTS=${RERANK_CLIENTS:-2}
SAMPLE_SECS=${SAMPLE_SECS:-10}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-60}
READY_TIMEOUT=${READY_TIMEOUT:-600}
SERVER_ARGS=${SERVER_ARGS:-}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t ferrite-soak.XXXXXX)}
mkdir -p "$OUT_DIR"

SERVER_PID=
BG_PIDS=()
cleanup() {
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building (release) ..." >&2
cargo build --release --bin ferrite --features "${FEATURES:-}" >&2
LOADGEN=$(cargo bench --bench loadgen --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*loadgen[^"]*"' | tail -1 | sed 's/^"executable":"//; s/"$//')
[[ -n "$LOADGEN" && -x "$LOADGEN" ]] || { echo "could not build benches/loadgen.rs" >&2; exit 1; }

LOG="$OUT_DIR/server.log"
# shellcheck disable=SC2086 # SERVER_ARGS is a list of words
"${CARGO_TARGET_DIR:-target}/release/ferrite" serve --host 127.0.0.1 --port 0 $SERVER_ARGS >"$LOG" 2>&1 &
SERVER_PID=$!
URL=
deadline=$((SECONDS + READY_TIMEOUT))
while ((SECONDS < deadline)); do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited; log: $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
    if [[ -z "$URL" ]]; then
        URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$LOG" | head -1 || true)
    elif [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/health") == 200 ]]; then
        break
    fi
    sleep 0.5
done
[[ -n "$URL" ]] && [[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/health") == 200 ]] \
    || { echo "server not ready after ${READY_TIMEOUT}s; log: $LOG" >&2; exit 1; }
echo "server ready at $URL (pid $SERVER_PID); soaking for ${DURATION}s; output in $OUT_DIR" >&2

# One gauge from /metrics (0 when absent).
gauge() { curl -s --max-time 5 "$URL/metrics" | awk -v n="$1" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }'; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0; }

RERANK_BODY='{"query":"What is the capital of France?","documents":["Paris is the capital of France.","Berlin is in Germany.","The Eiffel Tower is in Paris.","Bananas are yellow.","France borders Spain."],"top_n":3}'
TEI_BODY='{"query":"fast programming languages","texts":["Rust compiles to native code.","Python is interpreted.","Gardening in spring."]}'
post() { curl -s -o /dev/null -w '%{http_code}' --max-time 120 -H 'content-type: application/json' -d "$2" "$URL$1"; }

probe=$(post /v1/rerank "$RERANK_BODY" || echo 000)
if [[ "$probe" == 404 ]]; then
    echo "/v1/rerank answers 404: rerank traffic skipped" >&2; RERANK_CLIENTS=0
elif [[ "$probe" != 200 ]]; then
    echo "/v1/rerank answers $probe (no encoder served?): rerank traffic skipped" >&2; RERANK_CLIENTS=0
fi

END=$((SECONDS + DURATION))

chat_loop() {
    local round=0
    while ((SECONDS < END)); do
        round=$((round + 1))
        "$LOADGEN" --url "$URL" --concurrency "$CHAT_CONCURRENCY" --requests "$((CHAT_CONCURRENCY * 2))" \
            --max-tokens "$MAX_TOKENS" --temperature 0.7 --timeout-secs 300 \
            --json "$OUT_DIR/chat-$(printf %05d "$round").json" >/dev/null 2>>"$OUT_DIR/loadgen.err" \
            || echo "loadgen round $round failed" >>"$OUT_DIR/chat-failures.txt"
    done
}

rerank_loop() {
    local out="$OUT_DIR/rerank-$1.txt" i=0
    while ((SECONDS < END)); do
        i=$((i + 1))
        if ((i % 2)); then post /v1/rerank "$RERANK_BODY" >>"$out" || echo 000 >>"$out"
        else post /rerank "$TEI_BODY" >>"$out" || echo 000 >>"$out"; fi
        echo >>"$out"
    done
}

sampler() {
    local t0=$SECONDS
    echo "t_s,rss_mib,running,waiting,kv_blocks_used" >"$OUT_DIR/samples.csv"
    while ((SECONDS < END)); do
        local line
        line="$((SECONDS - t0)),$(rss_mib),$(gauge ferrite_requests_running),$(gauge ferrite_requests_waiting),$(gauge ferrite_kv_cache_blocks_used)"
        echo "$line" >>"$OUT_DIR/samples.csv"
        echo "sample t_s,rss_mib,running,waiting,kv_blocks_used: $line" >&2
        sleep "$SAMPLE_SECS"
    done
}

chat_loop & BG_PIDS+=($!)
for k in $(seq 1 "$RERANK_CLIENTS"); do rerank_loop "$k" & BG_PIDS+=($!); done
sampler & BG_PIDS+=($!)
for p in "${BG_PIDS[@]}"; do wait "$p" || true; done
BG_PIDS=()
echo "traffic stopped after $((SECONDS - END + DURATION))s; waiting for the engine to drain" >&2

idle_deadline=$((SECONDS + IDLE_TIMEOUT))
while ((SECONDS < idle_deadline)); do
    [[ $(gauge ferrite_requests_running) == 0 && $(gauge ferrite_kv_cache_blocks_used) == 0 ]] && break
    sleep 1
done
sleep 1
final_rss=$(rss_mib)
leaked=$(gauge ferrite_kv_cache_blocks_used)
running=$(gauge ferrite_requests_running)
waiting=$(gauge ferrite_requests_waiting)

# Chat totals over every loadgen round.
read -r chat_requests chat_errors chat_short chat_tokens < <(
    cat "$OUT_DIR"/chat-*.json 2>/dev/null | awk -F'[:,]' '
        /"requests":/ { r += $2 } /"errors":/ { e += $2 } /"short_requests":/ { s += $2 }
        /"output_tokens":/ { t += $2 }
        END { printf "%d %d %d %d\n", r, e, s, t }')
chat_failed_rounds=0
[[ -f "$OUT_DIR/chat-failures.txt" ]] && chat_failed_rounds=$(wc -l <"$OUT_DIR/chat-failures.txt")
rerank_total=0
rerank_errors=0
if ((RERANK_CLIENTS > 0)); then
    rerank_total=$(cat "$OUT_DIR"/rerank-*.txt | grep -c . || true)
    rerank_errors=$(cat "$OUT_DIR"/rerank-*.txt | grep . | grep -vc '^200$' || true)
fi
# Growth is measured from the first sample after one minute of traffic (allocator and
# caches warmed up) to the idle server after traffic.
rss_stats=$(awk -F, -v last="$final_rss" 'NR > 1 {
        if (n == 0 || $2 < min) min = $2; if ($2 > max) max = $2; if (n == 0) first = $2
        if (warm == "" && $1 >= 60) warm = $2; n++ }
    END { if (warm == "") warm = first
        printf "start %.1f MiB, after 1 min %.1f, min %.1f, max %.1f, idle after traffic %.1f (growth since 1 min %+.1f MiB; %d samples)",
            first, warm, min, max, last, last - warm, n }' "$OUT_DIR/samples.csv")

echo
echo "== soak summary (${DURATION}s, $OUT_DIR)"
echo "chat:    $chat_requests requests, $chat_errors errors, $chat_short short answers, $chat_tokens tokens, $chat_failed_rounds failed loadgen rounds"
if ((RERANK_CLIENTS > 0)); then
    echo "rerank:  $rerank_total requests, $rerank_errors errors (non-200)"
else
    echo "rerank:  skipped"
fi
echo "RSS:     $rss_stats"
echo "engine:  running $running, waiting $waiting, KV blocks leaked $leaked"
if ((chat_errors + chat_failed_rounds + rerank_errors > 0)) || [[ "$leaked" != 0 ]]; then
    exit 1
fi
