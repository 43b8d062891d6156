#!/usr/bin/env bash
# The cost of constrained decoding: the same streaming load at 1 and 32 streams on one
# server build, once plain and once with every request constrained by a JSON schema
# (an object holding an array of at least 200 short strings, so every request still
# generates MAX_TOKENS tokens). Reports ITL p50/p99 and aggregate tok/s per run; the
# server's own view of the mask cost is `ferrite_grammar_mask_seconds` (mask time per
# step, overlapped with the forward) and `ferrite_grammar_stall_seconds` (what the step
# waited beyond the forward) on /metrics. Every knob of benches/run_serving_bench.sh
# applies (MAX_TOKENS, REQUESTS, SERVER_ARGS, ...).
#
# Usage: benches/run_structured_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
set -f # the schema's brackets are not globs
SCHEMA='{"type":"object","properties":{"items":{"type":"array","minItems":200,"items":{"type":"string","maxLength":12}}},"required":["items"],"additionalProperties":false}'
export CONCURRENCIES=${CONCURRENCIES:-"1 32"}
export MODES=${MODES:-batched}
export SERVER_ARGS=${SERVER_ARGS:-"--encoder none"}
BASE_ARGS=${LOADGEN_ARGS:-}
echo "## plain"
LOADGEN_ARGS="$BASE_ARGS" benches/run_serving_bench.sh
echo "## JSON schema (response_format json_schema)"
LOADGEN_ARGS="$BASE_ARGS --schema=$SCHEMA" benches/run_serving_bench.sh
