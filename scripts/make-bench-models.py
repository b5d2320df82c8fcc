#!/usr/bin/env python3
"""Writes random-weight F16 GGUFs with the real shapes of popular models, for speed comparisons
with llama.cpp (speed does not depend on the values); scripts/perf-arch.sh quantizes them with
llama-quantize. Shapes: llama-3.2-1b (Llama 3.2 1B: 16 layers, hidden 2048, GQA 32/8, FFN 8192,
llama-bpe vocabulary, rope_freqs), qwen3-30b-a3b-2l (Qwen3-30B-A3B's layer shape, 128 experts of
width 768, top 8, 2 of its 48 layers).

usage: make-bench-models.py VOCAB_DIR OUT_DIR [NAME ...]
"""
import os, sys

import numpy as np
import gguf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_util import copy_tokenizer  # noqa: E402

vocab_dir, out_dir = sys.argv[1:3]
names = sys.argv[3:] or ["llama-3.2-1b", "qwen3-30b-a3b-2l"]
os.makedirs(out_dir, exist_ok=True)
SHAPES = {
    "llama-3.2-1b": dict(arch="llama", vocab="llama-bpe", L=16, H=2048, heads=32, kv=8, hd=64,
                         ffn=8192, base=500000.0, llama3=True),
    "qwen3-30b-a3b-2l": dict(arch="qwen3moe", vocab="qwen2", L=2, H=2048, heads=32, kv=4, hd=128,
                             ffn=6144, base=1000000.0, experts=128, used=8, eff=768),
}
for name in names:
    s = SHAPES[name]
    rng = np.random.default_rng(0)
    src = gguf.GGUFReader(os.path.join(vocab_dir, f"ggml-vocab-{s['vocab']}.gguf"))
    arch, H, L = s["arch"], s["H"], s["L"]
    path = os.path.join(out_dir, f"{name}-f16.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    copy_tokenizer(w, src)
    n_vocab = len(src.fields["tokenizer.ggml.tokens"].contents())
    w.add_context_length(8192); w.add_embedding_length(H); w.add_block_count(L)
    w.add_feed_forward_length(s["ffn"]); w.add_head_count(s["heads"]); w.add_head_count_kv(s["kv"])
    w.add_key_length(s["hd"]); w.add_value_length(s["hd"]); w.add_rope_dimension_count(s["hd"])
    w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(s["base"])
    if "experts" in s:
        w.add_expert_count(s["experts"]); w.add_expert_used_count(s["used"])
        w.add_expert_feed_forward_length(s["eff"])
    def t(name, *shape, dtype=np.float16):
        x = (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[-1])).astype(dtype)
        w.add_tensor(name, x)
    qd, kvd = s["heads"] * s["hd"], s["kv"] * s["hd"]
    t("token_embd.weight", n_vocab, H)
    t("output.weight", n_vocab, H)
    w.add_tensor("output_norm.weight", np.ones(H, np.float32))
    if s.get("llama3"):
        w.add_tensor("rope_freqs.weight", np.ones(s["hd"] // 2, np.float32))
    for i in range(L):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(H, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(H, np.float32))
        t(p + "attn_q.weight", qd, H); t(p + "attn_k.weight", kvd, H); t(p + "attn_v.weight", kvd, H)
        t(p + "attn_output.weight", H, qd)
        if arch == "qwen3moe":
            w.add_tensor(p + "attn_q_norm.weight", np.ones(s["hd"], np.float32))
            w.add_tensor(p + "attn_k_norm.weight", np.ones(s["hd"], np.float32))
            t(p + "ffn_gate_inp.weight", s["experts"], H, dtype=np.float32)
            t(p + "ffn_gate_exps.weight", s["experts"], s["eff"], H)
            t(p + "ffn_up_exps.weight", s["experts"], s["eff"], H)
            t(p + "ffn_down_exps.weight", s["experts"], H, s["eff"])
        else:
            t(p + "ffn_gate.weight", s["ffn"], H); t(p + "ffn_up.weight", s["ffn"], H)
            t(p + "ffn_down.weight", H, s["ffn"])
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    print(f"{path}: {os.path.getsize(path) / 2**30:.2f} GiB")
