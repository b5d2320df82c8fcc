#!/usr/bin/env bash
# Speed of the architectures and weight types beside llama.cpp, one run: random-weight models
# with real shapes (scripts/make-bench-models.py: Llama 3.2 1B; Qwen3-30B-A3B's layer shape,
# 2 of its 48 layers), quantized by llama.cpp's llama-quantize to each TYPE; for each file
# llama-bench (pp512, tg64) then switchyard bench engine (prompt 512 / decode, one request at a
# time), interleaved. Compare only within one run. (~3 GB + 4 GB of F16 sources in the cache.)
# Usage: scripts/perf-arch.sh [OUT_DIR]   env: THREADS (2), TYPES ("Q4_K_M Q5_K_M Q3_K_M"),
#        MODELS ("llama-3.2-1b qwen3-30b-a3b-2l")
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benches/results/arch-$(date -u +%Y-%m-%d)}"
mkdir -p "$OUT"
T="${THREADS:-2}"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
M="$CACHE/bench-models"; mkdir -p "$M"
cargo build --release -p switchyard >&2
BIN=target/release/switchyard
LB="$(bash scripts/build-llamacpp.sh)"
[ -x "$LB/llama-quantize" ] || cmake --build "$(dirname "$LB")" --target llama-quantize >&2
PY="$(bash scripts/convenv.sh)"
VOCAB="$(bash scripts/fetch-vocabs.sh)"
{
  echo "# Architecture / weight-type perf run $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | threads $T | git $(git rev-parse --short HEAD)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  for name in ${MODELS:-llama-3.2-1b qwen3-30b-a3b-2l}; do
    [ -f "$M/$name-f16.gguf" ] || "$PY" scripts/make-bench-models.py "$VOCAB" "$M" "$name" >&2
    for ty in ${TYPES:-Q4_K_M Q5_K_M Q3_K_M}; do
      f="$M/$name-$(echo "$ty" | tr 'A-Z' 'a-z').gguf"
      [ -f "$f" ] || "$LB/llama-quantize" "$M/$name-f16.gguf" "$f" "$ty" "$T" >/dev/null 2>&1
      echo; echo "## $name $ty ($(du -h "$f" | cut -f1)): $("$BIN" info --no-fetch -m "$f" 2>/dev/null | grep 'tensor types' | sed 's/^ *//')"
      echo '### llama-bench -p 512 -n 64 -r 2'
      "$LB/llama-bench" -m "$f" -t "$T" -p 512 -n 64 -r 2 -o md 2>/dev/null | grep '^|'
      echo '### switchyard: decode (input 128, output 64; rate = 1 / TPOT), then prompt (input 512; rate = 512 / TTFT)'
      "$BIN" bench engine --no-fetch --device cpu --threads "$T" -m "$f" --concurrency 1 \
        --num-requests 2 --input-len 128 --output-len 64 2>&1 | grep '^|'
      "$BIN" bench engine --no-fetch --device cpu --threads "$T" -m "$f" --concurrency 1 \
        --num-requests 2 --input-len 512 --output-len 2 2>&1 | grep '^|'
      echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
    done
  done
} | tee "$OUT/perf-arch.md"
