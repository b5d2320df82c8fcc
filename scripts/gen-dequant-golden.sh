#!/usr/bin/env bash
# Regenerates tests/data/dequant_golden.bin, the dequantization golden file of
# crates/core/src/dtype.rs (test `dequantize_matches_gguf_py`): random blocks of every quantized
# type, dequantized by gguf-py (llama.cpp's Python reference, `gguf.quants.dequantize`), an
# implementation independent of ours. The file is committed; run this only to change it.
# Environment: a venv in the cache with scripts/dequant-golden.requirements.txt ($PYTHON picks
# the interpreter that makes it). Cache: $SWITCHYARD_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/switchyard
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
REQ="$ROOT/scripts/dequant-golden.requirements.txt"
VENV="$CACHE/dequant-golden/venv"
sum="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements" 2>/dev/null || true)" != "$sum" ]; then
  echo "gen-dequant-golden: installing the pinned environment into $VENV" >&2
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
  echo "$sum" > "$VENV/.requirements"
fi
"$VENV/bin/python" "$ROOT/scripts/gen-dequant-golden.py" "$ROOT/tests/data/dequant_golden.bin"
