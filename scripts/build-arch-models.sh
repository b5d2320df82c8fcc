#!/usr/bin/env bash
# Builds the random-weight architecture test models of tests/arch.rs (scripts/make-arch-models.py:
# llama3, llama2-linear, qwen3, qwen3moe, phi3, gemma2, qwen3-yarn, phi3-longrope, around real vocabularies from llama.cpp's sdist)
# into $CACHE/arch-models (~100 MB), rebuilt when the script or the pinned tools change. The
# golden files (tests/golden/arch/*.json, scripts/gen-arch-golden.sh) name each model's sha256,
# which the test checks. Prints the directory.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
OUT="$CACHE/arch-models"
PY="$(bash "$ROOT/scripts/convenv.sh")"
VOCAB="$(bash "$ROOT/scripts/fetch-vocabs.sh")"
key="$(cat "$ROOT/scripts/make-arch-models.py" "$ROOT/scripts/gguf_util.py" "$ROOT/scripts/gguf-to-hf.requirements.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$OUT/.stamp" 2>/dev/null || true)" != "$key" ]; then
  echo "build-arch-models: writing the test models into $OUT" >&2
  rm -rf "$OUT"
  "$PY" "$ROOT/scripts/make-arch-models.py" "$VOCAB" "$OUT" >&2
  echo "$key" > "$OUT/.stamp"
fi
echo "$OUT"
