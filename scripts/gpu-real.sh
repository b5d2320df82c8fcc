#!/usr/bin/env bash
# The CUDA backend on the REAL Gemma 3 270M weights, on a lent GPU machine (no Rust toolchain, no
# network there; a device call carries at most 64 MiB, so the 241 MiB GGUF travels in parts over
# several calls to the same warm machine).
#
#   scripts/gpu-real.sh prepare         # HERE, after `scripts/gpu-check.sh prepare`: builds the
#                                       # switchyard binary and the golden / engine /
#                                       # batched_forward test executables, packs them with
#                                       # gpu-check's artifacts into gpu-artifacts/xfer/bin.tar.xz
#                                       # and splits the GGUF into gpu-artifacts/xfer/m00, m01, ...
#   scripts/gpu-real.sh plan            # HERE: the carry lists, one device call each
#   scripts/gpu-real.sh unpack          # THERE: unpacks bin.tar.xz (first call)
#   scripts/gpu-real.sh run [stage...]  # THERE: joins the parts (sha256-checked) and runs the
#                                       # stages: golden batched engine generate bench serve hf torch
#
# Stages (each with its own timeout; logs under $OUT, packed into $OUT/real-logs.tar.gz):
#   golden    tests/golden.rs on CUDA (SWITCHYARD_TEST_DEVICE=cuda): llama.cpp's greedy tokens
#             (teacher-forced, near-ties only) and teacher-forced logits, Gemma
#   batched   tests/batched_forward.rs on CUDA: a batch of 4 equals each alone
#   engine    tests/engine.rs on CUDA (Gemma): batch invariance, preemption, prefix cache, stops,
#             seeded sampling, logprobs, prompts past the sliding window
#   generate  `switchyard generate` greedy, CPU vs CUDA, on llama.cpp's 10 golden prompts
#   bench     `switchyard bench engine --device cuda`, concurrency 1/16/64/256
#   serve     `switchyard serve --device cuda` + `switchyard bench serve`, concurrency 1/16/64/256
#   hf        HF bf16 safetensors written there by scripts/gguf-to-hf.py (gguf wheel carried):
#             CUDA greedy on it vs on the GGUF
#   torch     scripts/torch_baseline.py (PyTorch eager, random weights, Gemma shapes) in the same run
#
# Dry run here (checks the script, not the GPU): GPU_REAL_DEVICE=cpu PYTHON=<python with numpy>
# OUT=/tmp/dry scripts/gpu-real.sh run generate serve hf   (done 2026-12-06: all stages ran; the
# serve stage's 256-stream point outlasts its timeout on 2 CPU cores, as expected).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ART="$ROOT/gpu-artifacts"
XFER="$ART/xfer"
ALIAS=gemma-3-270m
GGUF=gemma-3-270m-q4_k_m.gguf
SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
# What a device call carries besides the parts: the working tree (tracked and untracked files).
tree_bytes() {
    git -C "$ROOT" ls-files -co --exclude-standard -z | (cd "$ROOT" && du -cb --files0-from=-) | tail -1 | cut -f1
}
# MiB of parts per call: the 64 MiB a call carries, less the tree, less 2 MiB of margin (only
# `prepare` and `plan` use it, here where the tree is).
part_mib() {
    echo "${PART_MIB:-$(((64 * 1048576 - $(tree_bytes)) / 1048576 - 2))}"
}
# shellcheck source=scripts/gpu-libs.sh
source "$ROOT/scripts/gpu-libs.sh"
TESTS=(golden engine batched_forward)
# A dry run of the script's own logic on a machine without a GPU: GPU_REAL_DEVICE=cpu runs the
# generate / bench / serve / hf stages on the CPU backend (PYTHON: an interpreter with numpy).
DEVICE=${GPU_REAL_DEVICE:-cuda}
PY=${PYTHON:-python3}

prepare() {
    set -e
    cd "$ROOT"
    [ -f "$ART/MANIFEST" ] || { echo "run scripts/gpu-check.sh prepare first" >&2; exit 1; }
    local cache="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
    echo "== building switchyard and its test executables (release)"
    cargo build -p switchyard --release
    local args=()
    for t in "${TESTS[@]}"; do args+=(--test "$t"); done
    cargo test -p switchyard --release --no-run "${args[@]}" --message-format=json-render-diagnostics >"$ART/real-build.json"
    mkdir -p "$ART/real"
    test_executables "$ART/real-build.json" >"$ART/real/executables.txt"
    while read -r name exe; do
        strip --strip-debug -o "$ART/real/$name" "$exe"
    done <"$ART/real/executables.txt"
    strip -o "$ART/real/switchyard" target/release/switchyard
    rm -f "$ART/real-build.json"
    # Tokenizer files of the HF copy (the device has a different transformers than the pinned one).
    local hf="$cache/hf/$ALIAS-bf16"
    if [ -f "$hf/tokenizer.json" ]; then
        mkdir -p "$ART/real/hf-tokenizer"
        for f in tokenizer.json tokenizer_config.json special_tokens_map.json tokenizer.model; do
            [ -f "$hf/$f" ] && cp "$hf/$f" "$ART/real/hf-tokenizer/"
        done
    else
        echo "WARNING: $hf missing (scripts/build-hf-test-models.sh): the hf stage will be skipped" >&2
    fi
    rm -rf "$XFER"
    mkdir -p "$XFER"
    echo "== packing"
    tar -C "$ART" --exclude=xfer -cf - . | xz -T2 -6 >"$XFER/bin.tar.xz"
    # The converter's pinned gguf and safetensors (the device's safetensors has another API).
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$XFER/whl" gguf==0.17.1 safetensors==0.6.2
    echo "$SHA  $cache/models/$GGUF" | sha256sum -c
    # The first part rides with bin.tar.xz and the wheel: it is that much smaller.
    local part
    part=$(part_mib)
    local first=$((part - ($(du -sb "$XFER" | cut -f1) + 1048575) / 1048576 - 1))
    head -c "${first}M" "$cache/models/$GGUF" >"$XFER/m00"
    tail -c +$((first * 1048576 + 1)) "$cache/models/$GGUF" |
        split -b "${part}m" -d -a 2 --numeric-suffixes=1 - "$XFER/m"
    ls -l "$XFER" "$XFER/whl"
    plan
}

# Greedy carry lists: every call carries about `part_mib` MiB (bin.tar.xz and the wheel ride with the
# first part), leaving room for the working tree itself (64 MiB a call in all).
plan() {
    cd "$ROOT"
    local f size cur=0 list=""
    local part
    part=$(part_mib)
    local budget=$(( (part + 1) * 1024 * 1024 ))
    for f in gpu-artifacts/xfer/bin.tar.xz gpu-artifacts/xfer/whl gpu-artifacts/xfer/m*; do
        size=$(du -sb "$f" | cut -f1)
        if [ -n "$list" ] && [ $((cur + size)) -gt "$budget" ]; then
            echo "call: $list ($((cur / 1048576)) MiB)"
            list="" cur=0
        fi
        list="$list $f"
        cur=$((cur + size))
    done
    [ -n "$list" ] && echo "call: $list ($((cur / 1048576)) MiB)"
    echo "working tree (tracked + untracked): $(tree_bytes) bytes; parts of $part MiB"
}

unpack() {
    mkdir -p "$ART"
    if [ -f "$XFER/bin.tar.xz" ]; then
        xz -dc "$XFER/bin.tar.xz" | tar -C "$ART" -xf - && rm -f "$XFER/bin.tar.xz"
    fi
    ls -l "$ART" "$ART/real" "$XFER" 2>&1 | head -40
    df -h /tmp | tail -1
}

stage() { # name timeout command...
    local name=$1 t=$2 rc start
    shift 2
    start=$(date +%s)
    timeout "$t" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    echo "== $name: rc=$rc in $(($(date +%s) - start))s"
    SUMMARY+=("$name: rc=$rc ($(($(date +%s) - start))s)")
    return $rc
}

# A test executable on CUDA; prints its per-test lines and the figures it reports.
test_stage() { # name filter-args...
    local name=$1
    shift
    SWITCHYARD_TEST_DEVICE=cuda stage "$name" 300 "$ART/real/${name%%-*}" --nocapture --test-threads=1 "$@"
    grep -E "^test |test result|test device|^budget |prompts x 64|positions: top-1|greedy identical|panicked|assert" "$LOGS/$name.log" | head -n 60
}

gen_compare() {
    python3 - "$ROOT/tests/golden/$ALIAS/greedy.json" "$ART/real/switchyard" "$ALIAS" "$DEVICE" "${1:-}" <<'EOF'
import json, subprocess, sys
golden, exe, model, dev, hf = sys.argv[1:6]
cases = json.load(open(golden))
def ids(device, m, prompt):
    p = subprocess.run([exe, "generate", "--no-fetch", "--device", device, "--model", m, "--prompt", prompt,
                        "--max-tokens", "64", "--print-ids"], capture_output=True, text=True, timeout=120)
    line = [l for l in p.stderr.splitlines() if l.startswith("ids:")]
    if p.returncode != 0 or not line:
        print(p.stderr[-2000:])
        raise SystemExit(f"generate --device {device} failed on {prompt!r}")
    return line[0]
same = 0
(da, ma, db, mb) = ("cpu", model, dev, model) if not hf else (dev, model, dev, hf)
for c in cases:
    a, b = ids(da, ma, c["prompt"]), ids(db, mb, c["prompt"])
    if a == b:
        same += 1
        print(f"SAME  {c['prompt']!r}")
    else:
        ta, tb = a.split()[1:], b.split()[1:]
        k = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        gap = c["top2_gap"][k] if k < len(c["top2_gap"]) else None
        print(f"DIFF  {c['prompt']!r} from token {k} (llama.cpp top-2 gap there {gap})\n  {da} {ma}: {a}\n  {db} {mb}: {b}")
print(f"{same} of {len(cases)} prompts: 64 greedy tokens identical ({da} {ma} vs {db} {mb})")
EOF
}

serve_bench() {
    local port=8089 pid rc
    "$ART/real/switchyard" serve --no-fetch -m "$ALIAS" --device "$DEVICE" --port $port --max-num-seqs 256 \
        --max-queued-requests 1024 >"$LOGS/serve-server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do
        python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=2)" 2>/dev/null && break
        sleep 0.5
    done
    "$ART/real/switchyard" bench serve --base-url "http://127.0.0.1:$port" --model "$ALIAS" --tokenizer "$ALIAS" \
        --concurrency 1,16,64,256 --duration 15 --warmup 16 --input-len 128 --output-len 128 --no-progress \
        --label "switchyard $DEVICE" --result-file "$LOGS/serve.json" &&
        "$ART/real/switchyard" bench report "$LOGS/serve.json" --out "$LOGS/serve-report"
    rc=$?
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return $rc
}

run() {
    LOGS="${OUT:-/tmp/gpu-real-logs}/real"
    mkdir -p "$LOGS"
    SUMMARY=()
    local what=("$@")
    [ ${#what[@]} -eq 0 ] && what=(golden batched engine generate bench serve hf torch)
    echo "== gpu-real run $(date -u +%FT%TZ); $(head -2 "$ART/MANIFEST" 2>/dev/null | tr '\n' ' ')"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    setup_libs >"$LOGS/libs.log" 2>&1
    export SWITCHYARD_CACHE=/tmp/switchyard-cache SWITCHYARD_TEST_ROOT="$ROOT" RUST_BACKTRACE=1
    # The stages run functions under `timeout bash -c`.
    export ROOT ART XFER ALIAS LOGS DEVICE
    export -f gen_compare serve_bench
    mkdir -p "$SWITCHYARD_CACHE/models"
    local model="$SWITCHYARD_CACHE/models/$GGUF"
    if ! echo "$SHA  $model" | sha256sum -c --status 2>/dev/null; then
        ls -l "$XFER"/m* 2>&1
        cat "$XFER"/m* >"$model.partial" && mv "$model.partial" "$model"
        echo "$SHA  $model" | sha256sum -c || { echo "model parts incomplete: stop"; return 1; }
    fi
    for w in "${what[@]}"; do
        case "$w" in
        golden) test_stage golden gemma --skip tokenize ;;
        batched)
            # Gemma's sliding-window KV groups are a CPU-backend feature (CUDA: one group).
            test_stage batched_forward gemma --skip kv_groups ;;
        engine)
            # The CUDA backend runs one KV group: the tests that count KV groups and the blocks
            # or sequences the sliding groups make room for are CPU-only.
            test_stage engine gemma --skip sliding_window_kv_runs_more_long_sequences_at_once \
                --skip sliding_window_kv_gives_the_same_tokens_past_the_window \
                --skip preemption_and_cancel_with_sliding_window_kv
            # The long-prompt tests again without CUDA graphs (launch by launch), then traced
            # (every step's shape and logits summary, SWITCHYARD_CUDA_TRACE_STEPS) with and
            # without device greedy.
            SWITCHYARD_CUDA_GRAPHS=0 test_stage engine-nographs past_the_window long_prompt_chunking
            SWITCHYARD_CUDA_TRACE_STEPS=1 test_stage engine-trace past_the_window
            SWITCHYARD_CUDA_TRACE_STEPS=1 SWITCHYARD_DEVICE_GREEDY=0 test_stage engine-trace-host past_the_window
            grep -c "cuda .*step" "$LOGS/engine-trace.log" "$LOGS/engine-trace-host.log" ;;
        generate)
            stage generate 600 bash -c gen_compare
            tail -n 12 "$LOGS/generate.log" ;;
        bench)
            stage bench-engine 240 "$ART/real/switchyard" bench engine --no-fetch -m "$ALIAS" --device "$DEVICE" \
                --concurrency 1,16,64,256 --input-len 128 --output-len 128
            grep -v -i "warn\|info" "$LOGS/bench-engine.log" | tail -n 20
            # The same greedy load choosing on the host (the logits copied back every step).
            SWITCHYARD_DEVICE_GREEDY=0 stage bench-engine-host 120 "$ART/real/switchyard" bench engine --no-fetch \
                -m "$ALIAS" --device "$DEVICE" --concurrency 16,64 --input-len 128 --output-len 128
            grep -v -i "warn\|info" "$LOGS/bench-engine-host.log" | tail -n 4 ;;
        serve)
            stage serve 300 bash -c serve_bench
            tail -n 25 "$LOGS/serve.log"
            tail -n 5 "$LOGS/serve-server.log" ;;
        hf)
            if [ ! -f "$ART/real/hf-tokenizer/tokenizer.json" ]; then
                echo "== hf: SKIPPED (no tokenizer files were carried)"
                SUMMARY+=("hf: skipped")
                continue
            fi
            "$PY" -m pip install -q --no-index --no-deps --target /tmp/site "$XFER"/whl/*.whl >"$LOGS/hf-pip.log" 2>&1
            PYTHONPATH=/tmp/site stage hf-convert 240 "$PY" "$ROOT/scripts/gguf-to-hf.py" "$model" /tmp/hf-bf16 \
                --dtype bf16 --tokenizer-from "$ART/real/hf-tokenizer" &&
                stage hf 300 bash -c 'gen_compare /tmp/hf-bf16'
            tail -n 3 "$LOGS/hf-convert.log"
            tail -n 12 "$LOGS/hf.log" ;;
        torch)
            stage torch 300 python3 "$ROOT/scripts/torch_baseline.py" --models gemma --batches 1,16,64,256
            grep -v -i warn "$LOGS/torch.log" | tail -n 15 ;;
        *) echo "unknown stage $w" ;;
        esac
    done
    echo "== summary"
    printf '  %s\n' "${SUMMARY[@]}"
    tar -C "$LOGS/.." -czf "${OUT:-/tmp}/real-logs.tar.gz" real
}

case "${1:-}" in
prepare) prepare ;;
plan) plan ;;
unpack) unpack ;;
run)
    shift
    mkdir -p "${OUT:-/tmp}"
    run "$@" 2>&1 | tee "${OUT:-/tmp}/gpu-real.log"
    exit "${PIPESTATUS[0]}"
    ;;
*)
    echo "usage: $0 prepare | plan | unpack | run [golden batched engine generate bench serve hf torch]" >&2
    exit 2
    ;;
esac
