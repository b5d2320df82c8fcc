#!/usr/bin/env bash
# Build the Hugging Face-format test models from the cached GGUFs (after scripts/fetch-models.sh)
# with scripts/gguf-to-hf.py, an implementation independent of Switchyard's loader, into
# $CACHE/hf/<alias>-<variant>/ (git-ignored, outside the repository). A directory is rebuilt
# only when its stamp (script + pinned requirements + GGUF sha256 + options + output file sizes)
# does not match. tests/hf.rs uses these directories.
# Cache: $SWITCHYARD_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/switchyard
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
PY="${PYTHON:-python3}"
OUT="$CACHE/hf"
REQ="$ROOT/scripts/gguf-to-hf.requirements.txt"
mkdir -p "$OUT"

# alias  variant  dtype  shard-size (bytes, 0 = one file)
VARIANTS=(
  "gemma-3-270m f32 f32 0"
  "gemma-3-270m bf16 bf16 300000000"
  "qwen2.5-coder-0.5b-instruct f32 f32 1000000000"
  "qwen2.5-coder-0.5b-instruct bf16 bf16 0"
)

# The converter's environment: a venv in the cache (scripts/convenv.sh).
CONV_PY="$(bash "$ROOT/scripts/convenv.sh")"

manifest_field() { "$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))[sys.argv[2]])' "$1" "$2"; }
listing() { (cd "$1" && find . -type f ! -name .stamp -printf '%P %s\n' | sort); }

for v in "${VARIANTS[@]}"; do
  read -r alias variant dtype shard <<<"$v"
  manifest="$ROOT/models/$alias.toml"
  gguf="$CACHE/models/$(manifest_field "$manifest" file)"
  [ -f "$gguf" ] || { echo "build-hf-test-models: $gguf missing; run scripts/fetch-models.sh $alias" >&2; exit 1; }
  dest="$OUT/$alias-$variant"
  key="$(cat "$ROOT/scripts/gguf-to-hf.py" "$REQ" | sha256sum | cut -d' ' -f1) $(manifest_field "$manifest" sha256) $dtype $shard"
  if [ -f "$dest/.stamp" ] && [ "$(head -n1 "$dest/.stamp")" = "$key" ] \
     && [ "$(tail -n +2 "$dest/.stamp")" = "$(listing "$dest")" ]; then
    echo "build-hf-test-models: $alias-$variant ok ($dest)"; continue
  fi
  echo "build-hf-test-models: converting $alias -> $dest ($dtype, shard size $shard)" >&2
  "$CONV_PY" "$ROOT/scripts/gguf-to-hf.py" "$gguf" "$dest" --dtype "$dtype" --shard-size "$shard" 2>&1 \
    | grep -v "None of PyTorch, TensorFlow" >&2 || true
  [ -f "$dest/config.json" ] || { echo "build-hf-test-models: conversion of $alias failed" >&2; exit 1; }
  { echo "$key"; listing "$dest"; } > "$dest/.stamp"
  echo "build-hf-test-models: $alias-$variant ok ($dest)"
done
