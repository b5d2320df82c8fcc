#!/usr/bin/env python3
"""Writes a tiny random-weight GGUF that keeps a real model's architecture and tokenizer.

Used to run the whole binary (GGUF load -> backend -> generate) on machines that cannot receive
the real weights (the GPU machine takes at most 64 MiB per call). Needs numpy and llama.cpp's
gguf-py (from the sdist built by scripts/build-llamacpp.sh).

usage: make-tiny-model.py SOURCE.gguf OUT.gguf [--layers 2] [--hidden 128] [--seed 0]
"""
import argparse, glob, os, sys

import numpy as np

cache = os.environ.get("SWITCHYARD_CACHE", os.path.expanduser("~/.cache/switchyard"))
for p in glob.glob(os.path.join(cache, "llama.cpp-*/src/llama.cpp/gguf-py")):
    sys.path.insert(0, p)
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("source"); ap.add_argument("out")
ap.add_argument("--layers", type=int, default=2); ap.add_argument("--hidden", type=int, default=128)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
rng = np.random.default_rng(a.seed)
src = gguf.GGUFReader(a.source)
arch = src.fields["general.architecture"].contents()
vocab = len(src.fields["tokenizer.ggml.tokens"].contents())
H, L = a.hidden, a.layers
heads, kv_heads, head_dim, ffn = 4, 2, 32, 4 * a.hidden

w = gguf.GGUFWriter(a.out, arch)
skip_prefix = (arch + ".", "general.architecture", "GGUF.")
for name, field in src.fields.items():
    if name.startswith(skip_prefix) or not name.startswith(("tokenizer.", "general.")):
        continue
    v = field.contents()
    t = field.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        w.add_array(name, v)
    elif t == gguf.GGUFValueType.STRING:
        w.add_string(name, v)
    elif t == gguf.GGUFValueType.BOOL:
        w.add_bool(name, v)
    elif t == gguf.GGUFValueType.FLOAT32:
        w.add_float32(name, v)
    else:
        w.add_uint32(name, int(v))
w.add_context_length(4096); w.add_embedding_length(H); w.add_block_count(L)
w.add_feed_forward_length(ffn); w.add_head_count(heads); w.add_head_count_kv(kv_heads)
w.add_key_length(head_dim); w.add_value_length(head_dim)
w.add_layer_norm_rms_eps(1e-6); w.add_rope_freq_base(1e6 if arch == "gemma3" else 1e6)
if arch == "gemma3":
    w.add_sliding_window(16)

def mat(name, rows, cols, qt, scale=0.25):
    x = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    w.add_tensor(name, gguf.quants.quantize(x, qt), raw_dtype=qt)

def vec(name, n, center=1.0):
    w.add_tensor(name, (center + 0.1 * rng.standard_normal(n)).astype(np.float32))

mat("token_embd.weight", vocab, H, Q.Q8_0, 0.05 if arch == "gemma3" else 0.5)
vec("output_norm.weight", H)
for i in range(L):
    p = f"blk.{i}."
    vec(p + "attn_norm.weight", H)
    mat(p + "attn_q.weight", heads * head_dim, H, Q.Q8_0)
    mat(p + "attn_k.weight", kv_heads * head_dim, H, Q.Q5_0)
    mat(p + "attn_v.weight", kv_heads * head_dim, H, Q.Q8_0)
    mat(p + "attn_output.weight", H, heads * head_dim, Q.Q8_0)
    vec(p + "ffn_norm.weight", H)
    mat(p + "ffn_gate.weight", ffn, H, Q.Q5_0)
    mat(p + "ffn_up.weight", ffn, H, Q.Q8_0)
    mat(p + "ffn_down.weight", H, ffn, Q.Q8_0)
    if arch == "gemma3":
        vec(p + "attn_q_norm.weight", head_dim); vec(p + "attn_k_norm.weight", head_dim)
        vec(p + "post_attention_norm.weight", H); vec(p + "post_ffw_norm.weight", H)
    if arch == "qwen2":
        vec(p + "attn_q.bias", heads * head_dim, 0.0); vec(p + "attn_k.bias", kv_heads * head_dim, 0.0)
        vec(p + "attn_v.bias", kv_heads * head_dim, 0.0)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print(f"{a.out}: {arch}, {L} layers, hidden {H}, vocab {vocab}, {os.path.getsize(a.out) / 2**20:.1f} MiB")
