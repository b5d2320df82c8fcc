#!/usr/bin/env bash
# Regenerates tests/golden/arch/<model>.json from llama.cpp (the independent reference, built
# from the pinned sdist) for the random-weight architecture models of scripts/build-arch-models.sh:
# teacher-forced logits over a 400-token id sequence (top-20 + 16 probe ids per position, and the
# same with llama.cpp's flash-attention path as its self-noise), and 4 greedy continuations of 32
# steps. Token ids, not text, so the check is of the architecture alone (the tokenizers have their
# own tests). Usage: scripts/gen-arch-golden.sh [name...]   (every model by default)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
BIN="$(bash "$ROOT/scripts/build-llamacpp.sh")"
SRC="$(bash "$ROOT/scripts/llamacpp-sdist.sh")"
REFDUMP="$CACHE/refdump"
g++ -O2 -std=c++17 -I"$SRC/include" -I"$SRC/ggml/include" "$ROOT/scripts/refdump.cpp" \
  -L"$BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$BIN" -o "$REFDUMP"
MODELS="$(bash "$ROOT/scripts/build-arch-models.sh")"
mkdir -p "$ROOT/tests/golden/arch"
python3 - "$REFDUMP" "$MODELS" "$ROOT/tests/golden/arch" "$@" <<'PYEOF'
import hashlib, json, os, random, subprocess, sys, tempfile
refdump, models, out_dir = sys.argv[1:4]
only = set(sys.argv[4:])

def run(model, *args, env_add=None):
    env = dict(os.environ)
    env.update(env_add or {})
    r = subprocess.run([refdump, model, *args], capture_output=True, text=True, check=True, env=env)
    return r.stdout.splitlines()

def ids_file(lines):
    f = tempfile.NamedTemporaryFile("w", delete=False, suffix=".txt")
    for l in lines:
        f.write(" ".join(map(str, l)) + "\n")
    f.close()
    return f.name

def parse_logits(lines):
    out = []
    for l in lines[1:]:
        top, pr = l.split("|")
        out.append({"top": [[int(a), float(b)] for a, b in (x.split(":") for x in top.split())],
                    "probe": [float(x) for x in pr.split()]})
    return out

for name in sorted(f[:-5] for f in os.listdir(models) if f.endswith(".gguf")):
    if only and name not in only:
        continue
    model = os.path.join(models, name + ".gguf")
    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    rng = random.Random(name)
    text = [rng.randrange(100, 30000) for _ in range(400)]
    prompts = [[rng.randrange(100, 30000) for _ in range(n)] for n in (1, 5, 17, 40)]
    probes = [rng.randrange(0, 30000) for _ in range(16)]
    f = ids_file([text])
    positions = parse_logits(run(model, "logits-ids", f, *map(str, probes)))
    assert len(positions) == len(text), (len(positions), len(text))
    # llama.cpp's own rounding noise, three ways: its flash-attention path (f16 accumulation), an
    # f32 KV cache (its default f16 cache also rounds q to f16 for q . k), and one token per
    # micro-batch (other matmul kernels); the largest disagreement counts.
    noise = None
    for env_add in ({"REFDUMP_FLASH_ATTN": "1"}, {"REFDUMP_KV_F32": "1"}, {"REFDUMP_UBATCH": "1"}):
        other = parse_logits(run(model, "logits-ids", f, *map(str, probes), env_add=env_add))
        diffs, agree = [], 0
        for p, q in zip(positions, other):
            o_top = {i: v for i, v in q["top"]}
            agree += max(o_top, key=lambda i: (o_top[i], -i)) == p["top"][0][0]
            diffs += [abs(v - o_top[i]) for i, v in p["top"] if i in o_top]
        n = {"agreement": round(agree / len(positions), 4),
             "mean_abs_diff": round(sum(diffs) / len(diffs), 6), "max_abs_diff": round(max(diffs), 6)}
        noise = n if noise is None else {"agreement": min(noise["agreement"], n["agreement"]),
                                         "mean_abs_diff": max(noise["mean_abs_diff"], n["mean_abs_diff"]),
                                         "max_abs_diff": max(noise["max_abs_diff"], n["max_abs_diff"])}
    noise["what"] = ("llama.cpp against itself with flash attention, with an f32 KV cache, and one token per "
                     "micro-batch (the largest disagreement): top-1 agreement, |dlogit| over the top-20")
    greedy = []
    for p, line in zip(prompts, run(model, "greedy-ids", ids_file(prompts), "32")):
        _, rest = line.split("|")
        steps = [s.split(":") for s in rest.split()]
        greedy.append({"prompt_ids": p, "tokens": [int(a) for a, _ in steps],
                       "top2_gap": [round(float(b), 5) for _, b in steps]})
    json.dump({"model": name + ".gguf", "sha256": sha, "tokens": text, "probe_ids": probes,
               "positions": positions, "reference_self_noise": noise, "greedy": greedy},
              open(os.path.join(out_dir, name + ".json"), "w"), separators=(",", ":"))
    print(f"{name}: self-noise {noise}")
PYEOF
