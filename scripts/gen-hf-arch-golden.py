#!/usr/bin/env python3
"""Golden logits of the Hugging Face-format architecture models from PyPI `transformers` on the
CPU (the reference of tests/arch_hf.rs). Run by scripts/gen-hf-arch-golden.sh, by hand.

For each model NAME, the directory $HF/arch-NAME-f32 (scripts/build-hf-test-models.sh: the random
weight GGUF of tests/arch.rs converted by scripts/gguf-to-hf.py) is loaded with
`AutoModelForCausalLM.from_pretrained` (float32, eager attention, CPU) and fed the same 400-token
teacher-forced sequence as tests/golden/arch/NAME.json (its `tokens`, one forward pass).

Switchyard's CPU backend keeps its KV cache in f16 (as llama.cpp does by default); everything
else runs in f32 as transformers does here. So the model is run twice in float32: plainly, and
with the keys and values that reach attention (after RoPE and the q/k norms, where our cache
stores them) rounded to f16 and back (`eager_f16_kv`: a registered attention function that rounds
them and then calls the model's own `eager_attention_forward`; nothing else changes). The test
compares tightly with the second run and, within the f16-cache effect measured here, with the
first. Written to OUT/NAME.json:

- `model_dir`, `safetensors_sha256`: the directory and the sha256 of its model.safetensors (the
  test refuses a drifted model by that);
- `tokens`, `probe_ids`: the input, and 16 fixed vocabulary ids `i * (n_vocab / 16) + 7`;
- `positions`: per position, from the f16-KV run, the top-20 `[id, logit]` and the logits of the
  probe ids; and `plain`: the plain run's logits of the same ids (top-20 then probes); logits
  rounded to 5 decimals;
- `reference_noise` (max and mean |dlogit| over the recorded ids): `f32_vs_f64`: the plain run
  in float64 against float32 (float32 rounding alone); `kv_f16_f32_vs_f64`: the f16-KV run in
  float64 against float32: float32 rounding, plus the f16 roundings of K/V elements it tips over
  (an f16 step is ~5e-4 relative, so a 1e-7 change can move an element by that much): the scale
  of the test's bound, since our kernels are one more float32 summation order;
  `kv_f16_vs_plain`: the f16-KV run against the plain one (and the positions whose top-1
  differs): what an f16 KV cache alone does to these logits;
- `config`: what transformers made of config.json (rope_scaling, its RoPE frequencies).
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AttentionInterface, AutoModelForCausalLM
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["llama3", "llama2-linear", "qwen3", "qwen3-yarn", "phi3", "phi3-longrope"]
TOP = 20


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def eager_f16_kv(module, query, key, value, attention_mask, **kwargs):
    """The model's eager attention with keys and values rounded to f16 (an f16 KV cache)."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return eager(module, query, key.half().to(query.dtype), value.half().to(query.dtype), attention_mask, **kwargs)


AttentionInterface.register("eager_f16_kv", eager_f16_kv)
# The same causal mask as "eager" (transformers builds no mask for an attention name it does not know).
AttentionMaskInterface.register("eager_f16_kv", eager_mask)


def logits(model, tokens, dtype, attn="eager"):
    m = model.to(dtype)
    m.set_attn_implementation(attn)
    with torch.no_grad():
        out = m(input_ids=torch.tensor([tokens], dtype=torch.long), use_cache=False)
    return out.logits[0].to(torch.float64).numpy()


def stats(a, b):
    return {"max_abs_diff": float(np.max(np.abs(a - b))), "mean_abs_diff": float(np.mean(np.abs(a - b)))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hf", required=True, help="the HF test model directory ($CACHE/hf)")
    ap.add_argument("--out", required=True)
    ap.add_argument("names", nargs="*", default=NAMES)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    for name in args.names:
        d = os.path.join(args.hf, f"arch-{name}-f32")
        if not os.path.isfile(os.path.join(d, ".stamp")):
            sys.exit(f"gen-hf-arch-golden: {d} missing; run scripts/build-hf-test-models.sh")
        arch_golden = json.load(open(os.path.join(ROOT, "tests/golden/arch", f"{name}.json")))
        tokens = arch_golden["tokens"]
        model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")
        model.eval()
        n_vocab = model.config.vocab_size
        probe = [i * (n_vocab // 16) + 7 for i in range(16)]
        l32 = logits(model, tokens, torch.float32)
        l64 = logits(model, tokens, torch.float64)
        lkv = logits(model, tokens, torch.float32, "eager_f16_kv")
        lkv64 = logits(model, tokens, torch.float64, "eager_f16_kv")
        positions, rec32, rec64, reckv, reckv64, top1_differ = [], [], [], [], [], []
        for i in range(len(tokens)):
            row = lkv[i]
            top = np.argsort(-row, kind="stable")[:TOP]
            ids = [int(t) for t in top] + probe
            rec32.append(l32[i][ids])
            rec64.append(l64[i][ids])
            reckv.append(row[ids])
            reckv64.append(lkv64[i][ids])
            if int(np.argmax(l32[i])) != ids[0]:
                top1_differ.append(i)
            positions.append(
                {
                    "top": [[t, round(float(row[t]), 5)] for t in ids[:TOP]],
                    "probe": [round(float(row[p]), 5) for p in probe],
                    "plain": [round(float(l32[i][t]), 5) for t in ids],
                }
            )
        rec32, rec64, reckv, reckv64 = map(np.array, (rec32, rec64, reckv, reckv64))
        rotary = model.model.rotary_emb
        g = {
            "model_dir": f"arch-{name}-f32",
            "safetensors_sha256": sha256(os.path.join(d, "model.safetensors")),
            "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, CPU, float32, eager attention "
            "(positions: keys and values rounded to f16; plain: as is)",
            "architecture": model.config.architectures[0],
            "config": {
                "rope_scaling": model.config.rope_scaling,
                "rope_type": rotary.rope_type,
                "inv_freq": [float(x) for x in rotary.inv_freq.to(torch.float64)],
                "attention_scaling": float(rotary.attention_scaling),
            },
            "tokens": tokens,
            "probe_ids": probe,
            "reference_noise": {
                "what": "|dlogit| over the recorded ids (top-20 and probes) between transformers runs",
                "f32_vs_f64": stats(rec32, rec64),
                "kv_f16_f32_vs_f64": stats(reckv, reckv64),
                "kv_f16_vs_plain": dict(stats(reckv, rec32), top1_differ=top1_differ),
            },
            "positions": positions,
        }
        path = os.path.join(args.out, f"{name}.json")
        with open(path, "w") as f:
            json.dump(g, f, separators=(",", ":"))
            f.write("\n")
        gaps = [p["top"][0][1] - p["top"][1][1] for p in positions]
        print(
            f"{path}: {g['architecture']} rope {g['config']['rope_type']}; {json.dumps(g['reference_noise'])}; "
            f"smallest top-2 gap {min(gaps):.5f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
