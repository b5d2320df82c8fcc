#!/usr/bin/env bash
# Side-by-side CPU performance: llama.cpp (llama-bench) and Switchyard in one run, interleaved,
# on both test models (llama-bench pp512 + tg64 against our prompt and decode rates), plus the
# engine concurrency sweep (SWEEP=0 skips it). Compare only within one run.
# Usage: scripts/perf-cpu.sh [OUT_DIR]   (default benches/results/cpu-<date>)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benches/results/cpu-$(date -u +%Y-%m-%d)}"
mkdir -p "$OUT"
BIN=target/release/switchyard
cargo build --release -p switchyard >&2
LB="$(bash scripts/build-llamacpp.sh)"
M="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/models"
T="${THREADS:-2}"
{
  echo "# CPU perf run $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | threads $T | git $(git rev-parse --short HEAD)"
  echo "switchyard simd: $($BIN info --no-fetch 2>/dev/null | grep 'cpu features' || true)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  for f in gemma-3-270m-q4_k_m.gguf qwen2.5-coder-0.5b-instruct-q4_k_m.gguf; do
    alias=$([ "$f" = gemma-3-270m-q4_k_m.gguf ] && echo gemma-3-270m || echo qwen2.5-coder-0.5b-instruct)
    echo; echo "## $alias"
    echo '### llama-bench -p 512 -n 64 -r 3'
    "$LB/llama-bench" -m "$M/$f" -t "$T" -p 512 -n 64 -r 3 -o md 2>/dev/null
    echo '### switchyard bench engine, decode (one request at a time: input 128, output 64; rate = 1 / TPOT)'
    "$BIN" bench engine --no-fetch --device cpu --threads "$T" -m "$alias" --concurrency 1 \
      --num-requests 4 --input-len 128 --output-len 64 2>&1 | grep '^|'
    echo '### switchyard bench engine, prompt (one request at a time: input 512, output 2; rate = 512 / TTFT)'
    "$BIN" bench engine --no-fetch --device cpu --threads "$T" -m "$alias" --concurrency 1 \
      --num-requests 4 --input-len 512 --output-len 2 2>&1 | grep '^|'
    echo '### llama-bench again (drift check)'
    "$LB/llama-bench" -m "$M/$f" -t "$T" -p 512 -n 64 -r 3 -o md 2>/dev/null | grep "^| gemma\|^| qwen"
    echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  done
  [ "${SWEEP:-1}" = 0 ] || { echo; echo '## Engine sweep: Gemma, 128 in / 128 out, greedy'
  "$BIN" bench engine --no-fetch --device cpu --threads "$T" --concurrency 1,4,16,64 \
    --input-len 128 --output-len 128 2>&1 | grep -v WARN; }
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/perf-cpu.md"
