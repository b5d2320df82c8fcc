#!/usr/bin/env bash
# API property tests: schemathesis generates requests from the server's own /openapi.json and
# checks that no response is a 5xx, every status code and content type is documented, and
# every response (JSON or SSE event) matches its schema. Seeded, so a run is repeatable.
# Requests get 60 s (`ST_REQUEST_TIMEOUT`), not schemathesis's 10: valid requests with many
# sequences (`n: 49` over 3 prompts, `n: 63` over 5) take 10-20 s on a 2-core CPU.
# Usage: scripts/schemathesis.sh [path/to/switchyard]   (run by scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${1:-${CARGO_TARGET_DIR:-target}/release/switchyard}"
# schemathesis comes from the project's virtual environment (scripts/pyenv.sh).
PY="${PYTHON:-$(bash scripts/pyenv.sh)}"
LOG="$(mktemp)"
"$BIN" serve --no-fetch --model gemma-3-270m --port 0 --max-model-len 256 >/dev/null 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
URL=""
for _ in $(seq 1 240); do
  URL="$(grep -o 'on http://[^ ]*' "$LOG" | head -n1 | cut -c4- || true)"
  [ -n "$URL" ] && break
  sleep 0.5
done
[ -n "$URL" ] || { cat "$LOG" >&2; echo "schemathesis: server did not start" >&2; exit 1; }
"$PY" -m schemathesis.cli run "$URL/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing --max-examples "${ST_MAX_EXAMPLES:-40}" --seed 1 -w 1 \
  --request-timeout "${ST_REQUEST_TIMEOUT:-60}"
