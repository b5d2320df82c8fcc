#!/usr/bin/env bash
# Build the Hugging Face-format test models from the cached GGUFs (after scripts/fetch-models.sh)
# with scripts/gguf-to-hf.py, an implementation independent of Switchyard's loader, into
# $CACHE/hf/<alias>-<variant>/ (git-ignored, outside the repository); and, in f32, the
# random-weight architecture models of tests/arch.rs (llama3, llama2-linear, qwen3, qwen3-yarn, phi3,
# phi3-longrope: built here
# first by scripts/build-arch-models.sh) into $CACHE/hf/arch-<name>-f32/. A directory is rebuilt
# only when its stamp (script + pinned requirements + GGUF sha256 + options + output file sizes)
# does not match. tests/hf.rs and tests/arch_hf.rs use these directories.
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

# convert NAME GGUF SHA256 DTYPE SHARD [converter options...]: $OUT/NAME, unless its stamp matches.
convert() {
  local name="$1" gguf="$2" sha="$3" dtype="$4" shard="$5"
  shift 5
  local dest="$OUT/$name"
  local key
  key="$(cat "$ROOT/scripts/gguf-to-hf.py" "$REQ" | sha256sum | cut -d' ' -f1) $sha $dtype $shard $*"
  if [ -f "$dest/.stamp" ] && [ "$(head -n1 "$dest/.stamp")" = "$key" ] \
     && [ "$(tail -n +2 "$dest/.stamp")" = "$(listing "$dest")" ]; then
    echo "build-hf-test-models: $name ok ($dest)"; return
  fi
  echo "build-hf-test-models: converting $gguf -> $dest ($dtype, shard size $shard)" >&2
  rm -f "$dest/.stamp"
  TQDM_DISABLE=1 "$CONV_PY" "$ROOT/scripts/gguf-to-hf.py" "$gguf" "$dest" --dtype "$dtype" --shard-size "$shard" "$@" 2>&1 \
    | grep -v -e "None of PyTorch, TensorFlow" -e "default legacy behaviour" >&2 || true
  [ -f "$dest/config.json" ] && [ ! -e "$dest.partial" ] \
    || { echo "build-hf-test-models: conversion of $gguf failed" >&2; exit 1; }
  { echo "$key"; listing "$dest"; } > "$dest/.stamp"
  echo "build-hf-test-models: $name ok ($dest)"
}

for v in "${VARIANTS[@]}"; do
  read -r alias variant dtype shard <<<"$v"
  manifest="$ROOT/models/$alias.toml"
  gguf="$CACHE/models/$(manifest_field "$manifest" file)"
  [ -f "$gguf" ] || { echo "build-hf-test-models: $gguf missing; run scripts/fetch-models.sh $alias" >&2; exit 1; }
  convert "$alias-$variant" "$gguf" "$(manifest_field "$manifest" sha256)" "$dtype" "$shard"
done

# The architecture models (tests/arch_hf.rs), f32, one file. Llama 3's rope_freqs.weight is stored
# in GGUF without the parameters that made it: these are scripts/make-arch-models.py's, and the
# converter checks that they reproduce the tensor.
ARCH="$(bash "$ROOT/scripts/build-arch-models.sh")"
LLAMA3_ROPE='{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}'
for name in llama3 llama2-linear qwen3 qwen3-yarn phi3 phi3-longrope; do
  gguf="$ARCH/$name.gguf"
  opts=()
  [ "$name" = llama3 ] && opts=(--rope-scaling "$LLAMA3_ROPE")
  convert "arch-$name-f32" "$gguf" "$(sha256sum "$gguf" | cut -d' ' -f1)" f32 0 "${opts[@]}"
done
