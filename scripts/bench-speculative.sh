#!/usr/bin/env bash
# Speculative decoding beside plain decoding and beside llama-server's own n-gram speculation,
# same GGUF, same threads, one run: the code-edit and summarize-quotes workloads (bench serve
# datasets) through /v1/chat/completions, greedy, each server alone on the machine while it is
# measured; one stream, then 16 streams. Prints one line per server/workload/concurrency with
# output tokens/s; the acceptance rate from /metrics.
# Usage: scripts/bench-speculative.sh [MODEL_ALIAS]   env: THREADS (2), K (5: draft tokens),
#        NUM_PROMPTS (8 per point), OUT (results dir),
#        SERVERS ("sy sy-ngram llama llama-ngram sy-hf sy-hf-draft"), HF_TARGET (the draft pair's target)
set -euo pipefail
cd "$(dirname "$0")/.."
ALIAS="${1:-qwen2.5-coder-0.5b-instruct}"
THREADS="${THREADS:-2}"; K="${K:-5}"; NP="${NUM_PROMPTS:-8}"
OUT="${OUT:-benches/results/speculative-$(date -u +%Y-%m-%d)-$ALIAS}"
mkdir -p "$OUT"
cargo build --release -p switchyard >&2
BIN=target/release/switchyard
LB="$(bash scripts/build-llamacpp.sh)"
GGUF="$("$BIN" fetch "$ALIAS" | sed 's/^[^:]*: //')"
PORT=18097
wait_ready() { for _ in $(seq 1 240); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done; echo "server at $1 did not start" >&2; return 1; }
# The draft-model pair: the Hugging Face bf16 copy of the model (scripts/build-hf-test-models.sh:
# its GGUF dequantized, so about 2.5x the bytes a token reads) as the target, the Q4_K_M GGUF as
# its draft (servers sy-hf and sy-hf-draft).
HF_TARGET="${HF_TARGET:-${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/hf/$ALIAS-bf16}"
DRAFT_SPEC="{\"method\": \"draft_model\", \"model\": \"$ALIAS\", \"num_speculative_tokens\": $K}"
SPEC="{\"method\": \"ngram\", \"num_speculative_tokens\": $K, \"prompt_lookup_min\": 1, \"prompt_lookup_max\": 4}"
start() { # name
  # A server left on the port (an earlier run's) would answer for this one: refuse to run.
  if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
    echo "port $PORT is in use: stop what listens there first" >&2; exit 1
  fi
  case "$1" in
    sy) exec "$BIN" serve --no-fetch -m "$ALIAS" --port $PORT --threads "$THREADS" --max-num-seqs 16 ;;
    sy-ngram) exec "$BIN" serve --no-fetch -m "$ALIAS" --port $PORT --threads "$THREADS" --max-num-seqs 16 \
                --speculative-config "$SPEC" ;;
    sy-hf) exec "$BIN" serve --no-fetch -m "$HF_TARGET" --served-model-name "$ALIAS" --port $PORT \
                --threads "$THREADS" --max-num-seqs 16 ;;
    sy-hf-draft) exec "$BIN" serve --no-fetch -m "$HF_TARGET" --served-model-name "$ALIAS" --port $PORT \
                --threads "$THREADS" --max-num-seqs 16 --speculative-config "$DRAFT_SPEC" ;;
    llama) exec "$LB/llama-server" -m "$GGUF" --port $PORT -t "$THREADS" -np 16 -c $((16 * 4096)) --alias "$ALIAS" ;;
    llama-ngram) exec "$LB/llama-server" -m "$GGUF" --port $PORT -t "$THREADS" -np 16 -c $((16 * 4096)) --alias "$ALIAS" \
                --spec-type ngram-simple ;;
  esac > "$OUT/$1.log" 2>&1 &  # exec: $! is the server itself, so kill $PID stops it
  PID=$!
  trap 'kill $PID 2>/dev/null || true' EXIT
  wait_ready "http://127.0.0.1:$PORT/v1/models"
  kill -0 $PID 2>/dev/null || { echo "server $1 exited (see $OUT/$1.log)" >&2; exit 1; }
}
{
echo "# Speculative decoding run $(date -u +%FT%TZ)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) | threads $THREADS | K $K | git $(git rev-parse --short HEAD) | load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| server | workload | streams | output tok/s | mean TPOT ms | decode tok/s per stream (1000 / TPOT) | TTFT p50 ms | requests |"
echo "|---|---|---|---|---|---|---|---|"
} | tee "$OUT/summary.md"
for s in ${SERVERS:-sy sy-ngram llama llama-ngram sy-hf sy-hf-draft}; do
  start "$s"
  for ds in code-edit summarize-quotes; do
    for c in 1 16; do
      n=$NP; [ "$c" = 16 ] && n=$((NP * 2))
      "$BIN" bench serve --base-url "http://127.0.0.1:$PORT" --model "$ALIAS" --tokenizer "$ALIAS" \
        --endpoint /v1/chat/completions --dataset "$ds" --concurrency "$c" --num-prompts "$n" \
        --warmup 1 --temperature 0 --ignore-eos false --label "$s-$ds-$c" --no-progress \
        --result-file "$OUT/$s-$ds-$c.json" > "$OUT/$s-$ds-$c.txt" 2>&1
      python3 - "$OUT/$s-$ds-$c.json" "$s" "$ds" "$c" <<'PY' | tee -a "$OUT/summary.md"
import json, sys
r = json.load(open(sys.argv[1]))
p = r["points"][0]
tpot = p["tpot_ms"]["mean"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {p['output_throughput']:.1f} | {tpot:.1f} | "
      f"{1000 / tpot:.1f} | {p['ttft_ms']['median']:.0f} | {p['completed']} |")
PY
    done
  done
  if [ "$s" = sy-ngram ] || [ "$s" = sy-hf-draft ]; then
    curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^switchyard:spec_decode' | tee -a "$OUT/summary.md"
  fi
  kill $PID; wait $PID 2>/dev/null || true
done
echo "summary: $OUT/summary.md"
