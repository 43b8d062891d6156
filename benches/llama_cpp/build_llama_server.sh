#!/usr/bin/env bash
# Build llama.cpp's llama-server (plus llama-cli, llama-tokenize, llama-bench) as an
# independent reference for ferrite. The llama.cpp sources are taken from the
# sdist of the PyPI package llama-cpp-python (which vendors llama.cpp), unpacked
# OUTSIDE the repo under $LLAMA_CPP_DIR (default ~/.cache/ferrite/llama.cpp).
# Idempotent: skips download/unpack/build steps whose outputs already exist.
# Prints the llama-server path and the llama.cpp version on stdout (last 2 lines).
# Env: LLAMA_CPP_DIR, LLAMA_CPP_PYTHON_VERSION (pin, e.g. 0.3.36), JOBS (default 2),
# LLAMA_CPP_AMX=1: build with -march=native (AMX included) into build-amx/ instead, for
# a machine whose VM does grant the tile state (`ferrite serve` logs `amx-int8` there),
# so ferrite's AMX path is compared with llama.cpp's.
set -euo pipefail

DIR="${LLAMA_CPP_DIR:-$HOME/.cache/ferrite/llama.cpp}"
JOBS="${JOBS:-2}"
AMX="${LLAMA_CPP_AMX:-0}"
BUILD="$DIR/build"
[[ "$AMX" == 1 ]] && BUILD="$DIR/build-amx"
mkdir -p "$DIR/sdist"

SERVER="$BUILD/bin/llama-server"
if [[ ! -x "$SERVER" ]]; then
  command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
  # 1-2. sdist fetched from PyPI and fully unpacked (shared with the tokenizer and
  # chat-template tests; see tests/fixtures/llama_cpp_sdist.sh)
  SRC_TREE="$(LLAMA_CPP_DIR="$DIR" LLAMA_CPP_FULL=1 \
    bash "$(dirname "$0")/../../tests/fixtures/llama_cpp_sdist.sh")"
  ln -sfn "$SRC_TREE" "$DIR/llama.cpp"
  # 3. build, CPU only and offline: no curl/openssl, no web-UI download from HF.
  # -march=native turns on AMX wherever CPUID advertises it, and a VM that does not
  # grant the tile state then kills llama.cpp with SIGILL at its first tileloadd: on
  # such CPUs the ISA is named instead (everything /proc/cpuinfo lists but AMX).
  ISA_FLAGS=(-DGGML_NATIVE=ON)
  if [[ "$AMX" != 1 ]] && grep -qw amx_tile /proc/cpuinfo; then
    has() { grep -qw "$1" /proc/cpuinfo && echo ON || echo OFF; }
    ISA_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
      -DGGML_AVX512="$(has avx512f)" -DGGML_AVX512_VBMI="$(has avx512vbmi)"
      -DGGML_AVX512_VNNI="$(has avx512_vnni)" -DGGML_AVX512_BF16="$(has avx512_bf16)"
      -DGGML_AVX_VNNI="$(has avx_vnni)" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF
      -DGGML_AMX_BF16=OFF)
  fi
  cmake -S "$DIR/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    "${ISA_FLAGS[@]}" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
  cmake --build "$BUILD" -j"$JOBS" \
    --target llama-server llama-cli llama-tokenize llama-bench >&2
fi

# Version: llama.cpp's own version, the vendored commit (from the .git metadata the
# sdist ships; it is a shallow clone, so the "build N" number is meaningless) and
# the llama-cpp-python version.
SRC="$(readlink -f "$DIR/llama.cpp")"
LVER="$("$SERVER" --version 2>&1 | sed -n 's/^version: \([^ ]*\).*/\1/p')"
COMMIT="$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)"
PYVER="$(basename "$(dirname "$(dirname "$SRC")")" | sed 's/^llama_cpp_python-//')"
VERSION="${LVER:-unknown} commit $COMMIT (vendored in llama-cpp-python $PYVER)"
echo "$VERSION" > "$DIR/VERSION"
echo "$SERVER"
echo "$VERSION"
