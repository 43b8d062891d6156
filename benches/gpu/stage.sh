#!/usr/bin/env bash
# Stages ferrite for a GPU machine that has no Rust toolchain and no network:
# builds `ferrite` with the CUDA backend, strips and xz-compresses it, and copies it
# with run.sh (the driver there) and loadgen.py (a stdlib-only streaming load
# generator) into one folder of at most 60 MiB, whose path it prints last.
#
# Usage: benches/gpu/stage.sh [DIR]      (default DIR: shared/gpu-stage in the repo)
# Environment: CARGO_FLAGS (extra cargo build flags), SKIP_BUILD=1 (stage the binary
#   already in target/release).
# Then, on the GPU machine: DIR/run.sh   (see run.sh; --device cpu for a dry run)
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$PWD
DIR=${1:-$REPO/shared/gpu-stage}
LIMIT=$((60 * 1024 * 1024))

if [[ "${SKIP_BUILD:-}" != 1 ]]; then
    echo "building ferrite (release, --features cuda) ..." >&2
    # shellcheck disable=SC2086 # CARGO_FLAGS is a list of words
    cargo build --release --features cuda --bin ferrite ${CARGO_FLAGS:-} >&2
fi
BIN=$REPO/target/release/ferrite
[[ -x "$BIN" ]] || { echo "no $BIN: build failed?" >&2; exit 1; }

mkdir -p "$DIR"
rm -f "$DIR"/ferrite "$DIR"/ferrite.xz "$DIR"/run.sh "$DIR"/loadgen.py "$DIR"/MANIFEST
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp "$BIN" "$TMP/ferrite"
strip "$TMP/ferrite"
# xz, not zstd: the GPU image may lack zstd, and Python's lzma can always unpack xz.
xz -T0 -6 -c "$TMP/ferrite" >"$DIR/ferrite.xz"
cp benches/gpu/run.sh benches/gpu/loadgen.py "$DIR/"
chmod +x "$DIR/run.sh" "$DIR/loadgen.py"
{
    echo "ferrite $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "built $(date -u +%FT%TZ) on $(uname -m), $(ldd --version 2>/dev/null | head -1)"
    echo "stripped binary $(stat -c %s "$TMP/ferrite") bytes, sha256 $(sha256sum "$TMP/ferrite" | cut -d' ' -f1)"
} >"$DIR/MANIFEST"

SIZE=$(du -sb "$DIR" | cut -f1)
if ((SIZE > LIMIT)); then
    echo "staged folder is $SIZE bytes, over the 60 MiB limit" >&2
    exit 1
fi
echo "staged $(ls "$DIR" | tr '\n' ' ')($((SIZE / 1024)) KiB)" >&2
echo "$DIR"
