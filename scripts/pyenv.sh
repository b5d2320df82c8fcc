#!/usr/bin/env bash
# The test suite's Python environment: a virtual environment at $SWITCHYARD_VENV (default
# .venv in the checkout, git-ignored) with scripts/requirements-test.txt installed; rebuilt
# when that file changes, so the system's or the user's own Python packages are never touched.
# Prints the environment's python on stdout (everything else goes to stderr).
# Usage: PY="$(bash scripts/pyenv.sh)"
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${SWITCHYARD_VENV:-$ROOT/.venv}"
REQ="$ROOT/scripts/requirements-test.txt"
sum="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements" 2>/dev/null || true)" != "$sum" ]; then
  echo "pyenv: creating $VENV with $(basename "$REQ")" >&2
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
  echo "$sum" > "$VENV/.requirements"
fi
echo "$VENV/bin/python"
