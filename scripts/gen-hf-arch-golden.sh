#!/usr/bin/env bash
# Regenerates tests/golden/arch-hf/*.json (run by hand, not by the test suite): builds the
# Hugging Face-format architecture models (scripts/build-hf-test-models.sh), installs the pinned
# transformers + PyTorch environment (scripts/gen-hf-arch-golden.requirements.txt) into its own venv
# in the cache ($CACHE/hf-ref/venv, ~5 GB, rebuilt when the requirements change), and runs
# scripts/gen-hf-arch-golden.py with it.
# Usage: scripts/gen-hf-arch-golden.sh [name...]   (every model of scripts/gen-hf-arch-golden.py by default)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
REQ="$ROOT/scripts/gen-hf-arch-golden.requirements.txt"
VENV="$CACHE/hf-ref/venv"
bash "$ROOT/scripts/build-hf-test-models.sh" >&2
req_sum="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements" 2>/dev/null || true)" != "$req_sum" ]; then
  echo "gen-hf-arch-golden: installing transformers + torch (pinned) into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$CACHE/hf-ref"
  "${PYTHON:-python3}" -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
  echo "$req_sum" > "$VENV/.requirements"
fi
exec "$VENV/bin/python" "$ROOT/scripts/gen-hf-arch-golden.py" --hf "$CACHE/hf" --out "$ROOT/tests/golden/arch-hf" "$@"
