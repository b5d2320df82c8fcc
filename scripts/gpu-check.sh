#!/usr/bin/env bash
# CUDA backend check on a lent GPU machine, which has no Rust toolchain and no network.
#
#   scripts/gpu-check.sh prepare          # HERE: build the test executables and the benchmark,
#                                         # copy them (debug info stripped) into gpu-artifacts/
#   scripts/gpu-check.sh run [what...]    # THERE: run them; what = tests bench torch (default all)
#
# `run` prints nvidia-smi, finds NVRTC and cuBLAS (CUDA toolkit or pip `nvidia-*` wheels) and
# puts them on LD_LIBRARY_PATH, runs each test executable with --nocapture --test-threads=1,
# then the cuda_bench example, then scripts/torch_baseline.py when torch and transformers import.
# Logs go to "$OUT" when set (the device tool brings that folder back), else gpu-artifacts/logs.
# Budget: about 5 minutes in all; every stage has its own timeout.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ART="$ROOT/gpu-artifacts"
CRATE=switchyard-backend-cuda

prepare() {
    set -e
    cd "$ROOT"
    rm -rf "$ART"
    mkdir -p "$ART/tests"
    echo "== building test executables of $CRATE (release)"
    if ! cargo test -p "$CRATE" --release --no-run --message-format=json-render-diagnostics >"$ART/build.json"; then
        echo "build failed" >&2
        exit 1
    fi
    cargo build -p "$CRATE" --release --examples
    test_executables "$ART/build.json" >"$ART/executables.txt"
    while read -r name exe; do
        strip --strip-debug -o "$ART/tests/$name" "$exe"
    done <"$ART/executables.txt"
    strip --strip-debug -o "$ART/cuda_bench" "$ROOT/target/release/examples/cuda_bench"
    rm -f "$ART/build.json"
    {
        echo "built: $(date -u +%FT%TZ)"
        echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) (plus working-tree changes)"
        echo "rustc: $(rustc --version)"
    } >"$ART/MANIFEST"
    echo "== artifacts"
    (cd "$ART" && ls -l cuda_bench tests/*)
    du -sh "$ART"
    local total
    total=$(du -sb "$ART" | cut -f1)
    if [ "$total" -gt $((60 * 1024 * 1024)) ]; then
        echo "WARNING: $total bytes: more than the 64 MiB a device call can carry" >&2
    fi
    echo "carry: gpu-artifacts   then on the device: scripts/gpu-check.sh run"
}

# candidate_dirs, pick_lib, setup_libs: NVRTC / cuBLAS on LD_LIBRARY_PATH.
# shellcheck source=scripts/gpu-libs.sh
source "$ROOT/scripts/gpu-libs.sh"

run_tests() {
    local t exe rc start
    for t in probe unit kernels parity; do
        exe="$ART/tests/$t"
        if [ ! -x "$exe" ]; then
            echo "== test $t: MISSING ($exe)"
            SUMMARY+=("test $t: missing")
            STATUS=1
            continue
        fi
        start=$(date +%s)
        timeout 300 "$exe" --nocapture --test-threads=1 >"$LOGS/test-$t.log" 2>&1
        rc=$?
        echo "== test $t: rc=$rc in $(($(date +%s) - start))s (full log: test-$t.log)"
        grep -m1 -E "CUDA device|SKIPPED" "$LOGS/test-$t.log"
        grep -m1 -E "^kernels:" "$LOGS/test-$t.log"
        grep -E "^test |test result|FAILED|worst|batch invariance|graph replay|graphs\]: Device" "$LOGS/test-$t.log" |
            sed -E 's/ \.\.\. (CUDA device|gemma|qwen|llama|kernel cache|found|NVRTC).*/ .../' | tail -n 60
        if [ "$rc" -ne 0 ]; then
            echo "-- failures of $t:"
            grep -A8 -E "panicked at" "$LOGS/test-$t.log" | grep -v deliberate | head -n 60
        fi
        SUMMARY+=("test $t: rc=$rc")
        [ "$rc" -ne 0 ] && STATUS=1
    done
}

run_bench() {
    local rc start
    start=$(date +%s)
    timeout 300 "$ART/cuda_bench" >"$LOGS/cuda_bench.md" 2>"$LOGS/cuda_bench.err"
    rc=$?
    echo "== cuda_bench: rc=$rc in $(($(date +%s) - start))s"
    cat "$LOGS/cuda_bench.md"
    tail -n 20 "$LOGS/cuda_bench.err"
    SUMMARY+=("cuda_bench: rc=$rc")
    [ "$rc" -ne 0 ] && STATUS=1
}

run_torch() {
    local rc start
    if ! python3 -c 'import torch, transformers' 2>/dev/null; then
        echo "== torch baseline: SKIPPED (torch/transformers not importable)"
        SUMMARY+=("torch baseline: skipped")
        return
    fi
    start=$(date +%s)
    timeout 240 python3 "$ROOT/scripts/torch_baseline.py" >"$LOGS/torch_baseline.md" 2>"$LOGS/torch_baseline.err"
    rc=$?
    echo "== torch baseline: rc=$rc in $(($(date +%s) - start))s"
    cat "$LOGS/torch_baseline.md"
    grep -v -i warn "$LOGS/torch_baseline.err" | tail -n 10
    SUMMARY+=("torch baseline: rc=$rc")
}

run() {
    LOGS="${OUT:-$ART/logs}"
    mkdir -p "$LOGS"
    STATUS=0
    SUMMARY=()
    local what=("$@")
    [ ${#what[@]} -eq 0 ] && what=(tests bench torch)
    echo "== gpu-check run $(date -u +%FT%TZ), artifacts: $(head -1 "$ART/MANIFEST" 2>/dev/null)"
    nvidia-smi || echo "nvidia-smi failed"
    ldd --version 2>&1 | head -1
    setup_libs
    export SWITCHYARD_CACHE="$LOGS/cache"
    export RUST_BACKTRACE=1
    for w in "${what[@]}"; do
        case "$w" in
        tests) run_tests ;;
        bench) run_bench ;;
        torch) run_torch ;;
        *) echo "unknown stage $w (tests bench torch)" ;;
        esac
    done
    echo "== summary"
    printf '  %s\n' "${SUMMARY[@]}"
    ls -l "$SWITCHYARD_CACHE"/cuda-kernels 2>/dev/null
    return $STATUS
}

case "${1:-}" in
prepare) prepare ;;
run)
    shift
    mkdir -p "${OUT:-$ART/logs}"
    run "$@" 2>&1 | tee "${OUT:-$ART/logs}/gpu-check.log"
    exit "${PIPESTATUS[0]}"
    ;;
*)
    echo "usage: $0 prepare | run [tests] [bench] [torch]" >&2
    exit 2
    ;;
esac
