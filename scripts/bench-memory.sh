#!/usr/bin/env bash
# Peak and current resident memory of Switchyard and llama.cpp's llama-server after the same
# 16-stream load, at the same KV capacity; prints VmHWM / VmRSS of each and their ratio, and
# writes a markdown table (plus each server's smaps breakdown) under
# benches/results/memory-<date>-<machine>/.
#
# KV capacity is matched in tokens and bytes: llama-server gets `-np SLOTS -c SLOTS*CTX` (CTX
# tokens per slot, f16 K and V of every layer; CTX a multiple of 256, which llama.cpp would
# otherwise round to), and Switchyard `--max-num-seqs SLOTS --max-model-len CTX
# --kv-cache-memory SLOTS*CTX*B`, B the f16 K and V bytes of one token in every layer (what
# `switchyard info` prints): the same SLOTS*CTX token slots. llama-server allocates and clears
# its whole cache at start; Switchyard's pages become resident as blocks are first written.
#
# llama-server's figures do not depend on our binary: with SERVERS="switchyard" only our server
# runs, and the ratio is taken against the llama-server figures already in OUT.
#
# Usage: scripts/bench-memory.sh [MODEL_ALIAS ...]   (default: gemma-3-270m
#        qwen2.5-coder-0.5b-instruct)
#   env: BIN (switchyard binary for the server and the load generator; target/release/switchyard,
#        built if missing), LABEL (a name for BIN in the table: "switchyard"), THREADS (2),
#        SLOTS (16), INPUT_LEN (128), OUTPUT_LEN (128), NUM_PROMPTS (32), WARMUP (1), CTX (per-slot context,
#        512), SERVERS ("llama-server switchyard"), MACHINE (a name for the results folder: the
#        CPU model), OUT (results folder), NICE (a prefix for every process, e.g. "nice -n 19"),
#        PORT_L / PORT_S (18093 / 18094)
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(gemma-3-270m qwen2.5-coder-0.5b-instruct)
THREADS="${THREADS:-2}"; SLOTS="${SLOTS:-16}"
IN="${INPUT_LEN:-128}"; OUTL="${OUTPUT_LEN:-128}"; NP="${NUM_PROMPTS:-32}"
CTX="${CTX:-512}"
LABEL="${LABEL:-switchyard}"
SERVERS="${SERVERS:-llama-server switchyard}"
read -r -a NICE_CMD <<< "${NICE:-}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -p switchyard >&2
  BIN=target/release/switchyard
fi
CPU="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
MACHINE="${MACHINE:-$(echo "${CPU:-unknown}" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-//; s/-$//' | cut -c1-40)}"
OUT="${OUT:-benches/results/memory-$(date -u +%Y-%m-%d)-$MACHINE}"
mkdir -p "$OUT"
LB="$(bash scripts/build-llamacpp.sh)"
PORT_L="${PORT_L:-18093}"; PORT_S="${PORT_S:-18094}"

wait_ready() { # url pid
  for _ in $(seq 1 600); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "server for $1 exited" >&2; return 1; }
    sleep 0.5
  done
  echo "server at $1 did not start" >&2; return 1
}
kb() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$2/status"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
# Resident memory of each mapping, largest first: Rss and Anonymous kB, then the mapping.
smaps_table() { # pid
  awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anon] " $1 : $6) }
       /^Rss:/ { rss[name] += $2 } /^Anonymous:/ { anon[name] += $2 }
       END { for (n in rss) if (rss[n] >= 1024) printf "%8d %8d  %s\n", rss[n], anon[n], n }' \
    "/proc/$1/smaps" | sort -rn
}
load() { # label url alias
  "${NICE_CMD[@]}" "$BIN" bench serve --base-url "$2" --model "$3" --tokenizer "$3" \
    --concurrency "$SLOTS" --input-len "$IN" --output-len "$OUTL" --num-prompts "$NP" \
    --warmup "${WARMUP:-1}" --label "$1" --backend cpu --temperature 0 --no-progress \
    --result-file "$OUT/$3-$1.json" >/dev/null
}
# Prints "idle_rss hwm rss anon file" (kB) after loading PID at URL with the 16-stream run.
measure() { # label url alias pid
  local idle; idle="$(kb VmRSS "$4")"
  load "$1" "$2" "$3"
  echo "$idle $(kb VmHWM "$4") $(kb VmRSS "$4") $(kb RssAnon "$4") $(kb RssFile "$4")"
  { echo "# $1, $3, after the run: VmHWM $(kb VmHWM "$4") kB, VmRSS $(kb VmRSS "$4") kB"
    echo "#   rss_kB  anon_kB  mapping"; smaps_table "$4"; } > "$OUT/$3-$1.smaps.txt"
}

TABLE="$OUT/report.md"
if [ ! -f "$TABLE" ]; then
  { echo "# Peak RSS after a $SLOTS-stream run, $(date -u +%Y-%m-%d), $CPU"
    echo
    echo "$THREADS threads, $SLOTS slots, $NP prompts of $IN tokens, $OUTL output tokens, greedy;"
    echo "KV capacity: $SLOTS x $CTX tokens, f16, every layer, in both servers."
    echo
    echo "| model | server | KV MiB | RSS idle MB | VmHWM MB | VmRSS MB | anon MB | file MB | HWM vs llama-server |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"; } > "$TABLE"
fi
for ALIAS in "${MODELS[@]}"; do
  GGUF="$("$BIN" fetch "$ALIAS" | sed 's/^[^:]*: //')"
  KIB="$("$BIN" info -m "$ALIAS" --no-fetch 2>/dev/null | sed -n 's/.*KV cache (f16): \([0-9.]*\) KiB per token.*/\1/p')"
  KV_BYTES="$(awk -v k="$KIB" -v n=$((SLOTS * CTX)) 'BEGIN { printf "%.0f", k * 1024 * n }')"
  KV_MIB="$(awk -v b="$KV_BYTES" 'BEGIN { printf "%.0f", b / 1048576 }')"
  if [[ " $SERVERS " == *" llama-server "* ]]; then
    echo "== $ALIAS: llama-server (-np $SLOTS -c $((SLOTS * CTX)) -t $THREADS)" >&2
    "${NICE_CMD[@]}" "$LB/llama-server" -m "$GGUF" --port $PORT_L -t "$THREADS" -np "$SLOTS" \
      -c $((SLOTS * CTX)) --alias "$ALIAS" > "$OUT/$ALIAS-llama-server.log" 2>&1 &
    LPID=$!
    trap 'kill $LPID 2>/dev/null || true' EXIT
    wait_ready "http://127.0.0.1:$PORT_L/health" $LPID
    measure llama-server "http://127.0.0.1:$PORT_L" "$ALIAS" $LPID > "$OUT/$ALIAS-llama-server.kb"
    kill $LPID; wait $LPID 2>/dev/null || true
    read -r L_IDLE L_HWM L_RSS L_ANON L_FILE < "$OUT/$ALIAS-llama-server.kb"
    L_SLOT="$(sed -n 's/.*n_ctx_slot = \([0-9]*\).*/\1/p' "$OUT/$ALIAS-llama-server.log" | head -1)"
    printf '| %s | llama-server (%s x %s tokens) | %s | %s | %s | %s | %s | %s | 1.00 |\n' "$ALIAS" \
      "$SLOTS" "$L_SLOT" "$KV_MIB" "$(mb "$L_IDLE")" "$(mb "$L_HWM")" "$(mb "$L_RSS")" \
      "$(mb "$L_ANON")" "$(mb "$L_FILE")" >> "$TABLE"
    echo "$ALIAS: llama-server VmHWM $(mb "$L_HWM") MB VmRSS $(mb "$L_RSS") MB"
  fi
  if [[ " $SERVERS " == *" switchyard "* ]]; then
    echo "== $ALIAS: $LABEL (--max-num-seqs $SLOTS --max-model-len $CTX --kv-cache-memory $KV_BYTES)" >&2
    "${NICE_CMD[@]}" "$BIN" serve --no-fetch -m "$ALIAS" --port $PORT_S --threads "$THREADS" \
      --max-num-seqs "$SLOTS" --max-model-len "$CTX" --kv-cache-memory "$KV_BYTES" \
      > "$OUT/$ALIAS-$LABEL.log" 2>&1 &
    SPID=$!
    trap 'kill $SPID 2>/dev/null || true' EXIT
    wait_ready "http://127.0.0.1:$PORT_S/ready" $SPID
    measure "$LABEL" "http://127.0.0.1:$PORT_S" "$ALIAS" $SPID > "$OUT/$ALIAS-$LABEL.kb"
    kill $SPID; wait $SPID 2>/dev/null || true
    read -r S_IDLE S_HWM S_RSS S_ANON S_FILE < "$OUT/$ALIAS-$LABEL.kb"
    S_KV="$(sed -n 's/.*KV \([0-9]*\) blocks x \([0-9]*\) tokens.*/\1 x \2-token blocks/p' "$OUT/$ALIAS-$LABEL.log" | head -1)"
    L_HWM="$(cut -d' ' -f2 "$OUT/$ALIAS-llama-server.kb" 2>/dev/null || true)"
    RATIO="$(awk -v a="$S_HWM" -v b="${L_HWM:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
    printf '| %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s |\n' "$ALIAS" "$LABEL" "$S_KV" "$KV_MIB" \
      "$(mb "$S_IDLE")" "$(mb "$S_HWM")" "$(mb "$S_RSS")" "$(mb "$S_ANON")" "$(mb "$S_FILE")" "$RATIO" >> "$TABLE"
    echo "$ALIAS: $LABEL VmHWM $(mb "$S_HWM") MB VmRSS $(mb "$S_RSS") MB | vs llama-server $RATIO"
  fi
done
trap - EXIT
echo "table: $TABLE" >&2
