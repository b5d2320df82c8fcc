#!/usr/bin/env bash
# Switchyard vs llama.cpp's llama-server, same GGUF, same threads, same parallel slots, same
# sweep, one run (each server alone on the machine while it is measured), then a side-by-side
# report (markdown + SVG) under benches/results/.
# Usage: scripts/bench-vs-llamacpp.sh [MODEL_ALIAS] [CONCURRENCY_LIST]
#   env: THREADS (2), SLOTS (16), INPUT_LEN (128), OUTPUT_LEN (128), NUM_PROMPTS (32 per point),
#        TEMPERATURE (0: greedy, as the CPU issue's table asks; llama-server's own default is 0.8,
#        Switchyard's the model's or 1), ENDPOINT (/v1/completions or /v1/chat/completions),
#        OUT (results dir)
set -euo pipefail
cd "$(dirname "$0")/.."
ALIAS="${1:-gemma-3-270m}"
SWEEP="${2:-1,4,16}"
THREADS="${THREADS:-2}"; SLOTS="${SLOTS:-16}"
IN="${INPUT_LEN:-128}"; OUTL="${OUTPUT_LEN:-128}"; NP="${NUM_PROMPTS:-32}"
OUT="${OUT:-benches/results/vs-llamacpp-$(date -u +%Y-%m-%d)-$ALIAS}"
mkdir -p "$OUT"
cargo build --release -p switchyard >&2
BIN=target/release/switchyard
LB="$(bash scripts/build-llamacpp.sh)"
GGUF="$("$BIN" fetch "$ALIAS" | sed 's/^[^:]*: //')"
PORT_L=18091; PORT_S=18092
wait_ready() { for _ in $(seq 1 240); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done; echo "server at $1 did not start" >&2; return 1; }
bench() { # label url
  "$BIN" bench serve --base-url "$2" --model "$ALIAS" --tokenizer "$ALIAS" --concurrency "$SWEEP" \
    --input-len "$IN" --output-len "$OUTL" --num-prompts "$NP" --warmup 2 --label "$1" --backend cpu \
    --temperature "${TEMPERATURE:-0}" --endpoint "${ENDPOINT:-/v1/completions}" \
    --note "threads=$THREADS" --note "slots=$SLOTS" --no-progress --result-file "$OUT/$1.json"
}
echo "== llama-server (-np $SLOTS -t $THREADS)"
# -c is the total context, split across slots.
"$LB/llama-server" -m "$GGUF" --port $PORT_L -t "$THREADS" -np "$SLOTS" -c $((SLOTS * (IN + OUTL + 64))) \
  --alias "$ALIAS" > "$OUT/llama-server.log" 2>&1 &
LPID=$!
trap 'kill $LPID 2>/dev/null || true' EXIT
wait_ready "http://127.0.0.1:$PORT_L/health"
bench llama-server "http://127.0.0.1:$PORT_L"
kill $LPID; wait $LPID 2>/dev/null || true
echo "== switchyard serve (--max-num-seqs $SLOTS --threads $THREADS)"
"$BIN" serve --no-fetch -m "$ALIAS" --port $PORT_S --threads "$THREADS" --max-num-seqs "$SLOTS" \
  > "$OUT/switchyard.log" 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null || true' EXIT
wait_ready "http://127.0.0.1:$PORT_S/ready"
bench switchyard "http://127.0.0.1:$PORT_S"
kill $SPID; wait $SPID 2>/dev/null || true
"$BIN" bench report "$OUT/switchyard.json" "$OUT/llama-server.json" -o "$OUT"
echo "report: $OUT/report.md"
