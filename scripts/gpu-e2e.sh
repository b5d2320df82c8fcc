#!/usr/bin/env bash
# End-to-end check of the switchyard binary on a GPU: tiny random-weight GGUF models that keep the
# real architectures and tokenizers (scripts/make-tiny-model.py) are generated here, run greedy on
# the CPU backend here, and on the CUDA backend on the device machine; the token ids are compared.
#   scripts/gpu-e2e.sh prepare   (here: binary + models + CPU expectations into gpu-artifacts/e2e)
#   scripts/gpu-e2e.sh run       (on the device: --device cuda, compare; writes into $OUT)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/gpu-artifacts/e2e"
PROMPTS=("The capital of France is" "def quicksort(arr):" "Once upon a time" "日本の首都は")
MODELS=(gemma-3-270m:gemma3-tiny:64 qwen2.5-coder-0.5b-instruct:qwen2-tiny:64)
case "${1:-}" in
prepare)
  mkdir -p "$DIR"
  cargo build --release -p switchyard >&2
  cp "$ROOT/target/release/switchyard" "$DIR/switchyard" && strip "$DIR/switchyard"
  CACHE="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
  : > "$DIR/expected.txt"
  for spec in "${MODELS[@]}"; do
    IFS=: read -r alias name hidden <<<"$spec"
    src="$(ls "$CACHE"/models/*.gguf | grep -i "${alias%%-*}" | head -n1)"
    python3 "$ROOT/scripts/make-tiny-model.py" "$src" "$DIR/$name.gguf" --hidden "$hidden" >&2
    for p in "${PROMPTS[@]}"; do
      ids="$("$DIR/switchyard" generate --device cpu --model "$DIR/$name.gguf" --prompt "$p" --max-tokens 32 --print-ids 2>&1 >/dev/null | grep '^ids:')"
      echo "$name|$p|$ids" >> "$DIR/expected.txt"
    done
  done
  du -sh "$DIR"; cat "$DIR/expected.txt" ;;
run)
  OUT="${OUT:-/tmp}"
  pass=0; total=0
  while IFS='|' read -r name p want; do
    total=$((total + 1))
    got="$("$DIR/switchyard" generate --device cuda --model "$DIR/$name.gguf" --prompt "$p" --max-tokens 32 --print-ids 2>"$OUT/e2e-stderr.txt" >/dev/null; grep '^ids:' "$OUT/e2e-stderr.txt" || true)"
    stats="$(grep '^load' "$OUT/e2e-stderr.txt" || tail -n1 "$OUT/e2e-stderr.txt")"
    if [ "$got" = "$want" ]; then pass=$((pass + 1)); echo "SAME  $name '$p'  | $stats"
    else echo "DIFF  $name '$p'"; echo "   cpu:  $want"; echo "   cuda: $got"; echo "   $stats"; fi
  done < "$DIR/expected.txt"
  echo "e2e: $pass of $total greedy runs identical on CUDA and CPU" ;;
*) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
