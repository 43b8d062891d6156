#!/usr/bin/env bash
# Runs the staged ferrite on a GPU machine (no cargo, no network needed): unpacks the
# binary, finds the CUDA driver (libcuda) and NVRTC (libnvrtc, e.g. from PyTorch's
# install), then, each step under its own timeout so one hang cannot eat the budget:
#   1. ferrite selftest --device cuda   every kernel + a tiny model vs the CPU reference
#   2. ferrite bench --device cuda      bandwidth, decode vs roofline, 8-128 sequences,
#                                       prefill, rerank (writes the 7B-shaped model)
#   3. ferrite serve on that model + loadgen.py (streaming chat, tok/s, TTFT, ITL)
# Everything is written to $OUT (default ./out): env.txt, selftest.{log,json},
# bench.{log,json}, serve.log, loadgen.json, summary.txt (7 files); the summary is
# printed last. Exit status: 0 when every step passed.
#
# Usage: run.sh [--device cuda[:N]|cpu] [--quick|--full]
#   --device cpu   a dry run on any machine (implies --quick: tiny shapes)
#   --quick        tiny bench and serving model
# Environment: OUT, WORK (scratch for the binary, kernel cache and the model; default
#   /tmp/ferrite-gpu), SELFTEST_TIMEOUT (150), BENCH_TIMEOUT (300), BENCH_BUDGET (240,
#   the bench's own budget), SERVE_TIMEOUT (120), CONCURRENCY (32), REQUESTS (64),
#   MAX_TOKENS (64), FERRITE_BIN (use this binary instead of unpacking ferrite.xz).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DEVICE=cuda
QUICK=
while (($#)); do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --device=*) DEVICE=${1#--device=}; shift ;;
        --quick) QUICK=1; shift ;;
        --full) QUICK=0; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -z "$QUICK" && "$DEVICE" == cpu ]] && QUICK=1
[[ "$QUICK" == 1 ]] || QUICK=

OUT=${OUT:-$PWD/out}
WORK=${WORK:-/tmp/ferrite-gpu}
mkdir -p "$OUT" "$WORK/lib"
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
FAILED=0

# ---- unpack ----
FERRITE=${FERRITE_BIN:-$WORK/ferrite}
if [[ -z "${FERRITE_BIN:-}" ]]; then
    if command -v xz >/dev/null; then
        xz -dc "$HERE/ferrite.xz" >"$FERRITE"
    else
        python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' \
            "$HERE/ferrite.xz" "$FERRITE"
    fi || { note "unpack: FAILED"; exit 1; }
    chmod +x "$FERRITE"
fi

# ---- CUDA libraries ----
first_with() { # first directory (of the rest) holding one of the names in $1 (a glob)
    local pat=$1 d f
    shift
    for d in "$@"; do
        for f in "$d"/$pat; do
            [[ -e "$f" ]] && { echo "$f"; return 0; }
        done
    done
    return 1
}
LIBCUDA=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
[[ -n "$LIBCUDA" ]] || LIBCUDA=$(first_with 'libcuda.so.1' /usr/local/nvidia/lib64 \
    /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib \
    /usr/local/cuda/compat /usr/local/cuda/lib64/stubs) || LIBCUDA=
PY_DIRS=()
if command -v python3 >/dev/null; then
    TORCH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)
    [[ -n "$TORCH" ]] && PY_DIRS+=("$TORCH/lib")
    while read -r sp; do
        [[ -n "$sp" ]] && PY_DIRS+=("$sp/nvidia/cuda_nvrtc/lib" "$sp/nvidia/cu13/lib" "$sp/nvidia/cu12/lib")
    done < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null)
fi
NVRTC=$(first_with 'libnvrtc.so*' "${PY_DIRS[@]}" /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 \
    /usr/lib/x86_64-linux-gnu 2>/dev/null | grep -v builtins) || true
[[ -n "$NVRTC" ]] || NVRTC=$(first_with 'libnvrtc-*.so*' "${PY_DIRS[@]}" 2>/dev/null | grep -v builtins) || true
LIBDIRS=$WORK/lib
if [[ -n "$LIBCUDA" ]]; then
    LIBDIRS=$LIBDIRS:$(dirname "$LIBCUDA")
fi
if [[ -n "$NVRTC" ]]; then
    # cudarc asks for libnvrtc.so / libnvrtc.so.13: a link covers hashed names too.
    ln -sf "$NVRTC" "$WORK/lib/libnvrtc.so"
    ln -sf "$NVRTC" "$WORK/lib/libnvrtc.so.13"
    LIBDIRS=$LIBDIRS:$(dirname "$NVRTC")
fi
export LD_LIBRARY_PATH=$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FERRITE_KERNEL_CACHE=$WORK/kernels
{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -a)"
    cat "$HERE/MANIFEST" 2>/dev/null
    echo "device: $DEVICE quick: ${QUICK:-0}"
    echo "libcuda: ${LIBCUDA:-not found}"
    echo "libnvrtc: ${NVRTC:-not found}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "nproc: $(nproc)"; free -g 2>/dev/null | head -2
    command -v nvidia-smi >/dev/null && nvidia-smi 2>&1 | head -20
} >"$OUT/env.txt" 2>&1
note "libcuda: ${LIBCUDA:-not found}; libnvrtc: ${NVRTC:-not found}"

# step NAME TIMEOUT CMD...: runs CMD with stdout+stderr to $OUT/NAME.log
step() {
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    if ((rc == 0)); then
        note "$name: ok ($((SECONDS - t0)) s)"
    else
        FAILED=1
        ((rc == 124 || rc == 137)) && note "$name: TIMED OUT after ${limit} s" \
            || note "$name: FAILED (exit $rc, $((SECONDS - t0)) s)"
    fi
    return $rc
}

# ---- 1. selftest ----
step selftest "${SELFTEST_TIMEOUT:-150}" "$FERRITE" selftest --device "$DEVICE" --json "$OUT/selftest.json"
grep -E "checks passed|^device:|compute capability|driver|NVRTC" "$OUT/selftest.log" | sed 's/^/  /' | tee -a "$SUMMARY"
grep -E "FAIL|->" "$OUT/selftest.log" | head -20 | sed 's/^/  /' | tee -a "$SUMMARY"

# ---- 2. bench ----
MODEL=$WORK/model${QUICK:+-quick}.gguf
step bench "${BENCH_TIMEOUT:-300}" "$FERRITE" bench --device "$DEVICE" ${QUICK:+--quick} \
    --model-out "$MODEL" --budget-secs "${BENCH_BUDGET:-240}" --json "$OUT/bench.json"
sed -n '/^ferrite bench on/,$p' "$OUT/bench.log" | sed 's/^/  /' | tee -a "$SUMMARY"

# ---- 3. serve + load generator ----
SERVER_PID=
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill "$SERVER_PID" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}
trap stop_server EXIT
serve_and_load() { # server log in serve.log; the load generator's lines on stdout
    local limit=${SERVE_TIMEOUT:-120} url="" deadline
    [[ -f "$MODEL" ]] || { echo "no model at $MODEL (bench did not write it)"; return 1; }
    "$FERRITE" serve --model "$MODEL" --device "$DEVICE" --encoder none --host 127.0.0.1 \
        --port 0 --max-num-seqs 64 --max-batched-tokens 2048 >"$OUT/serve.log" 2>&1 &
    SERVER_PID=$!
    deadline=$((SECONDS + limit / 2))
    while ((SECONDS < deadline)); do
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited:"; tail -5 "$OUT/serve.log"; return 1; }
        [[ -n "$url" ]] || url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$OUT/serve.log" 2>/dev/null | head -1)
        if [[ -n "$url" ]] && python3 -c 'import sys,urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1]+"/health",timeout=2).status!=200)' "$url" 2>/dev/null; then
            break
        fi
        sleep 0.5
    done
    ((SECONDS < deadline)) || { echo "server not ready after $((limit / 2)) s"; return 1; }
    local c=${CONCURRENCY:-32} n=${REQUESTS:-64} words=400
    [[ -n "$QUICK" ]] && { c=${CONCURRENCY:-4}; n=${REQUESTS:-8}; words=40; }
    timeout -k 5 $((deadline - SECONDS + limit / 2)) python3 "$HERE/loadgen.py" --url "$url" \
        --concurrency "$c" --requests "$n" --max-tokens "${MAX_TOKENS:-64}" \
        --prompt-words "$words" --json "$OUT/loadgen.json"
}
t0=$SECONDS
serve_and_load >"$WORK/loadgen.out" 2>&1
rc=$?
stop_server
if ((rc == 0)); then note "serve+loadgen: ok ($((SECONDS - t0)) s)"; else FAILED=1; note "serve+loadgen: FAILED (exit $rc)"; fi
tail -5 "$WORK/loadgen.out" | sed 's/^/  /' | tee -a "$SUMMARY"

echo
echo "results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $FAILED
