#!/usr/bin/env bash
# The model tools' pinned Python environment (gguf, numpy, transformers, ...: scripts/gguf-to-hf.requirements.txt),
# a venv in the cache rebuilt when the requirements change. Prints its python on stdout.
# Used by scripts/build-hf-test-models.sh and scripts/build-arch-models.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
REQ="$ROOT/scripts/gguf-to-hf.requirements.txt"
VENV="$CACHE/hf/venv"
req_sum="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements" 2>/dev/null || true)" != "$req_sum" ]; then
  echo "convenv: installing the model tools' pinned environment into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$CACHE/hf"
  "${PYTHON:-python3}" -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
  echo "$req_sum" > "$VENV/.requirements"
fi
echo "$VENV/bin/python"
