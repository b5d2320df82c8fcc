#!/usr/bin/env bash
# Removes what scripts/test.sh downloads and builds outside cargo's target/: the Python
# virtual environment (.venv), the Hugging Face-format test models and their converter ($CACHE/hf, ~5.4 GB),
# llama.cpp's test vocabularies ($CACHE/vocab, ~75 MB), the architecture test models ($CACHE/arch-models,
# ~110 MB) and,
# with --models, the registry models ($CACHE/models, ~710 MB; the server fetches them again).
# Cache: $SWITCHYARD_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/switchyard.  `cargo clean` removes target/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
targets=("${SWITCHYARD_VENV:-$ROOT/.venv}" "$CACHE/hf" "$CACHE/vocab" "$CACHE/arch-models")
[ "${1:-}" = "--models" ] && targets+=("$CACHE/models")
for t in "${targets[@]}"; do
  if [ -e "$t" ]; then
    echo "removing $t ($(du -sh "$t" | cut -f1))"
    rm -rf "$t"
  fi
done
