#!/usr/bin/env bash
# Many models in one process (issue 12): the same mixed traffic
#   - chat streams on two LLMs (the default GGUF served as `chat-a` and `chat-b`),
#   - embeddings requests (the default encoder as `embed`),
#   - rerank requests (the default encoder again as `rerank`, cosine mode),
# run (1) all at once against ONE ferrite process serving all four models, and (2) one
# workload after the other, each against a server holding only its model. Reports each
# workload's throughput and latency (chat: ITL p50/p99) and the wall time of all of it.
#
# Usage: benches/run_multi_model_bench.sh
# Environment (all optional): STREAMS=4 (per LLM), CHAT_REQUESTS=16 (per LLM),
#   MAX_TOKENS=96, ENC_REQUESTS=24 (per encoder workload), DOCS=16, CLIENTS=2 (per
#   encoder workload), OUT_DIR= (default: a temp dir)
# FEATURES= (optional): cargo features of the ferrite build, e.g. cuda: build what the
# test suite builds, so neither overwrites the other's target/release/ferrite.
set -euo pipefail

cd "$(dirname "$0")/.."
STREAMS=${STREAMS:-4}
CHAT_REQUESTS=${CHAT_REQUESTS:-16}
MAX_TOKENS=${MAX_TOKENS:-96}
ENC_REQUESTS=${ENC_REQUESTS:-24}
DOCS=${DOCS:-16}
CLIENTS=${CLIENTS:-2}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t ferrite-multi.XXXXXX)}
mkdir -p "$OUT_DIR"

SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
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
ENCLOAD=$(exe rerank_load)
[[ -x "$LOADGEN" && -x "$ENCLOAD" ]] || { echo "could not build the bench binaries" >&2; exit 1; }
MODEL=$(./target/release/ferrite fetch-model)
ENCODER=$(./target/release/ferrite fetch-model --encoder)

start() { # $1 = log name, rest = serve flags; sets BASE_URL
    local log="$OUT_DIR/$1.log"; shift
    ./target/release/ferrite serve --host 127.0.0.1 --port 0 --kv-cache-memory 512MiB "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    BASE_URL=
    for _ in $(seq 600); do
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited; see $log" >&2; tail -20 "$log" >&2; exit 1; }
        [[ -z "$BASE_URL" ]] && BASE_URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1 || true)
        if [[ -n "$BASE_URL" && $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE_URL/health") == 200 ]]; then
            return
        fi
        sleep 0.5
    done
    echo "server not ready; see $log" >&2; exit 1
}

chat() { # $1 = model, $2 = output json
    "$LOADGEN" --url "$BASE_URL" --model "$1" --concurrency "$STREAMS" --requests "$CHAT_REQUESTS" \
        --max-tokens "$MAX_TOKENS" --warmup 1 --unique-prompts --json "$2" >"$2.log" 2>&1
}
enc() { # $1 = model, $2 = route, $3 = output json
    "$ENCLOAD" --url "$BASE_URL" --model "$1" --route "$2" --concurrency "$CLIENTS" \
        --requests "$ENC_REQUESTS" --docs "$DOCS" --warmup 1 --json "$3" >"$3.log" 2>&1
}
now() { date +%s.%N; }
jget() { sed -n "s/^  \"$1\": \([^,]*\),\{0,1\}$/\1/p" "$2" | head -1; }
fmt() { printf "%.${2}f" "$1"; }

# (1) One process, everything at once.
start together --model "chat-a=$MODEL" --model "chat-b=$MODEL" \
    --encoder "embed=$ENCODER" --encoder "rerank=$ENCODER"
t0=$(now)
chat chat-a "$OUT_DIR/t-chat-a.json" & p1=$!
chat chat-b "$OUT_DIR/t-chat-b.json" & p2=$!
enc embed embeddings "$OUT_DIR/t-embed.json" & p3=$!
enc rerank rerank "$OUT_DIR/t-rerank.json" & p4=$!
wait $p1 $p2 $p3 $p4
together=$(awk "BEGIN{print $(now) - $t0}")
cleanup

# (2) One model per server, one workload after the other.
alone=0
run_alone() { # $1 = name, $2 = kind (chat|embeddings|rerank), $3 = serve flags...
    local name=$1 kind=$2; shift 2
    start "alone-$name" "$@"
    local t=$(now)
    case $kind in
        chat) chat "$name" "$OUT_DIR/a-$name.json" ;;
        *) enc "$name" "$kind" "$OUT_DIR/a-$name.json" ;;
    esac
    alone=$(awk "BEGIN{print $alone + $(now) - $t}")
    cleanup
}
run_alone chat-a chat --model "chat-a=$MODEL" --encoder none
run_alone chat-b chat --model "chat-b=$MODEL" --encoder none
run_alone embed embeddings --model none --encoder "embed=$ENCODER"
run_alone rerank rerank --model none --encoder "rerank=$ENCODER"

row_chat() { # $1 = name
    local t="$OUT_DIR/t-$1.json" a="$OUT_DIR/a-$1.json"
    echo "| $1: $STREAMS streams x $MAX_TOKENS tokens | $(fmt "$(jget agg_tok_s "$t")" 1) tok/s, ITL p50 $(fmt "$(jget itl_ms_p50 "$t")" 1) / p99 $(fmt "$(jget itl_ms_p99 "$t")" 1) ms | $(fmt "$(jget agg_tok_s "$a")" 1) tok/s, ITL p50 $(fmt "$(jget itl_ms_p50 "$a")" 1) / p99 $(fmt "$(jget itl_ms_p99 "$a")" 1) ms |"
}
row_enc() { # $1 = name, $2 = what
    local t="$OUT_DIR/t-$1.json" a="$OUT_DIR/a-$1.json"
    echo "| $1: $2, $CLIENTS clients x $DOCS texts | $(fmt "$(jget docs_s "$t")" 1) texts/s, p99 $(fmt "$(jget latency_ms_p99 "$t")" 0) ms | $(fmt "$(jget docs_s "$a")" 1) texts/s, p99 $(fmt "$(jget latency_ms_p99 "$a")" 0) ms |"
}
echo
echo "results and logs in $OUT_DIR; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo
echo "| workload | one process, all at once | its own server, one after the other |"
echo "|---|---|---|"
row_chat chat-a
row_chat chat-b
row_enc embed embeddings
row_enc rerank rerank
echo "| all of it, wall time | $(fmt "$together" 1) s | $(fmt "$alone" 1) s |"
