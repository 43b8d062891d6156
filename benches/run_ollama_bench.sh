#!/usr/bin/env bash
# The Ollama layer's cost: the same 32-stream load through Ollama's /api/generate and
# through /v1/chat/completions on one server (equal throughput expected), and both
# through a one-request-at-a-time server (--max-num-seqs 1, what Ollama does by default).
# Every knob of benches/run_serving_bench.sh applies (MAX_TOKENS, REQUESTS, SERVER_ARGS...).
#
# Usage: benches/run_ollama_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export APIS=${APIS:-"openai ollama"}
export CONCURRENCIES=${CONCURRENCIES:-32}
export MODES=${MODES:-"batched serial"}
exec benches/run_serving_bench.sh
