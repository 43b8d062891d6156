#!/usr/bin/env bash
# The GPU benchmark of issue 5, for a machine with an NVIDIA GPU (H100 in the issue):
#   1. `cargo bench --features cuda --bench gpu_decode`: generates the Mistral-7B-shaped
#      Q4_K_M synthetic GGUF (once), then measures the engine-less step: batch-1 decode
#      against the copy-bandwidth roofline, and 1-128 sequences of 512 + 256 tokens.
#   2. benches/run_serving_bench.sh against `ferrite serve --device cuda` on that file:
#      8, 32, 64 and 128 concurrent streams of ~512 prompt tokens and 256 output tokens
#      (TTFT and inter-token latency p50/p99, aggregate output tok/s).
#
# Usage: benches/run_gpu_bench.sh
# Environment (all optional): CONCURRENCIES (default "8 32 64 128"), OUT_DIR,
#   FERRITE_BENCH_GGUF (the model file), PROMPT_WORDS (default 480: with the chat
#   template and prompt text about 512 tokens), LD_LIBRARY_PATH (where libcuda and
#   libnvrtc are, when not on the default path).
set -euo pipefail

cd "$(dirname "$0")/.."
MODEL=${FERRITE_BENCH_GGUF:-target/bench-models/mistral-7b-q4km-synthetic.gguf}
export FERRITE_BENCH_GGUF=$MODEL

echo "## Engine-less steps (benches/gpu_decode.rs)"
cargo bench --features cuda --bench gpu_decode

echo
echo "## Serving (benches/run_serving_bench.sh, --device cuda)"
FEATURES=cuda \
CONCURRENCIES=${CONCURRENCIES:-"8 32 64 128"} \
MAX_TOKENS=256 \
MODES=batched \
MIN_REQUESTS=${MIN_REQUESTS:-16} \
LOADGEN_ARGS="--unique-prompts --prompt-words ${PROMPT_WORDS:-480}" \
SERVER_ARGS="--model $MODEL --device cuda --encoder none --max-num-seqs 128 --max-batched-tokens 4096 ${SERVER_ARGS:-}" \
    benches/run_serving_bench.sh
