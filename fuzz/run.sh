#!/usr/bin/env bash
# Bounded libFuzzer run of the request_parsing target (request parsing + validation).
#
#   fuzz/run.sh [SECONDS]        default 60; needs `cargo install cargo-fuzz`
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly
# flags (-Zsanitizer=address, coverage instrumentation). New interesting inputs are
# kept in fuzz/corpus/request_parsing/ (git-ignored; tests/request_parsing_corpus.rs
# replays them); crashes land in fuzz/artifacts/request_parsing/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
mkdir -p fuzz/corpus/request_parsing
export RUSTC_BOOTSTRAP=1
exec cargo fuzz run request_parsing \
    fuzz/corpus/request_parsing fuzz/seeds/request_parsing \
    -- -max_total_time="$SECS" -max_len=8192 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
