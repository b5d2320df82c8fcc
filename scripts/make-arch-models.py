#!/usr/bin/env python3
"""Writes the small random-weight models of tests/arch.rs: one per architecture we claim, each
around a real vocabulary from llama.cpp's sdist, with llama.cpp's tensor names and metadata,
deterministic (fixed seeds, gguf-py's reference quantizers). Weights are scaled so the logits
are peaked (a wrong rope, norm, routing or split moves the argmax), not flat.

usage: make-arch-models.py VOCAB_DIR OUT_DIR      (run by scripts/build-arch-models.sh)
"""
import os, sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_util import copy_tokenizer  # noqa: E402

vocab_dir, out_dir = sys.argv[1:3]
os.makedirs(out_dir, exist_ok=True)

# name: (arch, vocabulary, options)
MODELS = {
    # Llama 3.1+: llama-bpe vocabulary, GQA, interleaved RoPE with rope_freqs.weight factors.
    "llama3": ("llama", "llama-bpe", dict(rope_base=500000.0, llama3_rope=True)),
    # Llama 2 / Mistral / TinyLlama style, with linear RoPE scaling.
    "llama2-linear": ("llama", "llama-spm", dict(rope_base=10000.0, linear=4.0)),
    # Qwen 3: q/k RMSNorm, head_dim * heads != hidden.
    "qwen3": ("qwen3", "qwen2", dict(rope_base=1000000.0, head_dim=32, heads=4, kv_heads=2, hidden=96)),
    # Qwen 3 MoE: 8 experts, top 2.
    "qwen3moe": ("qwen3moe", "qwen2", dict(rope_base=1000000.0, experts=8, used=2, expert_ffn=64)),
    # Phi-3: fused qkv and gate/up.
    "phi3": ("phi3", "phi-3", dict(rope_base=10000.0, fused=True)),
    # Gemma 2: attention and final soft-capping (caps small enough to matter here), a sliding
    # window on every other layer (8 tokens, so the test's positions cross it), post norms.
    "gemma2": ("gemma2", "llama-spm", dict(rope_base=10000.0, L=4, window=8, attn_cap=5.0, final_cap=30.0)),
    # Qwen 3 with YaRN (convert_hf_to_gguf's keys for rope_scaling {rope_type: yarn, factor 4,
    # original_max_position_embeddings}): an original context of 64 rather than 32k, so that
    # the ramp splits the pairs (pairs 0..5 ramp, the rest are interpolated) and the positions
    # of the test (< 400) see it.
    "qwen3-yarn": ("qwen3", "qwen2", dict(rope_base=10000.0, head_dim=32, heads=4, kv_heads=2, hidden=96,
                                          yarn=4.0, orig_ctx=64)),
    # Phi-3 LongRoPE (as convert_hf_to_gguf writes Phi-3-mini-128k): rope_factors_long/short,
    # original_context_length, and attn_factor sqrt(1 + ln(ctx / orig) / ln(orig)); original
    # context 64, so llama.cpp (context > 64) and we (context 4096) use the long factors. A
    # sliding window of 256 that llama.cpp and our GGUF reader ignore (as in Phi-3's own GGUFs),
    # and that transformers applies to the Hugging Face copy (tests/arch_hf.rs).
    "phi3-longrope": ("phi3", "phi-3", dict(rope_base=10000.0, fused=True, longrope=True, orig_ctx=64,
                                            window=256)),
}

def longrope_factors(n):
    """Made-up LongRoPE factors of the shape of Phi-3's: ~1 for fast pairs, growing for slow ones;
    the short set much smaller than the long one."""
    x = np.arange(n, dtype=np.float64) / (n - 1)
    long = 1.0 + 23.0 * x ** 2
    short = 1.0 + 1.5 * x ** 3
    return long.astype(np.float32), short.astype(np.float32)

# Llama 3.1's formula with a short original context (64 rather than 8192), so that the factors
# change the angles of the test's positions (< 200) enough to be seen.
def llama3_factors(base, dim, factor=8.0, lo=1.0, hi=4.0, orig=64.0):
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / base ** (i / dim)
        wavelen = 2 * np.pi / freq
        if wavelen < orig / hi:
            out.append(1.0)
        elif wavelen > orig / lo:
            out.append(factor)
        else:
            smooth = (orig / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)

for seed, (name, (arch, vocab_name, o)) in enumerate(MODELS.items()):
    rng = np.random.default_rng(1000 + seed)
    src = gguf.GGUFReader(os.path.join(vocab_dir, f"ggml-vocab-{vocab_name}.gguf"))
    n_vocab = len(src.fields["tokenizer.ggml.tokens"].contents())
    H = o.get("hidden", 64)
    heads, kv_heads = o.get("heads", 4), o.get("kv_heads", 2)
    hd = o.get("head_dim", H // heads)
    ffn, L = 128, o.get("L", 3)
    qd, kvd = heads * hd, kv_heads * hd
    path = os.path.join(out_dir, f"{name}.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"switchyard-test-{name}")
    copy_tokenizer(w, src)
    w.add_context_length(4096); w.add_embedding_length(H); w.add_block_count(L)
    w.add_feed_forward_length(ffn); w.add_head_count(heads); w.add_head_count_kv(kv_heads)
    w.add_key_length(hd); w.add_value_length(hd); w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(o["rope_base"])
    if "linear" in o:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR); w.add_rope_scaling_factor(o["linear"])
    if "yarn" in o:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN); w.add_rope_scaling_factor(o["yarn"])
        w.add_rope_scaling_orig_ctx_len(o["orig_ctx"])
    if o.get("longrope"):
        w.add_rope_scaling_orig_ctx_len(o["orig_ctx"])
        w.add_rope_scaling_attn_factors(float(np.sqrt(1 + np.log(4096 / o["orig_ctx"]) / np.log(o["orig_ctx"]))))
    if "window" in o:
        w.add_sliding_window(o["window"])
    if "attn_cap" in o:
        w.add_float32(f"{arch}.attn_logit_softcapping", o["attn_cap"])
        w.add_float32(f"{arch}.final_logit_softcapping", o["final_cap"])
    if "experts" in o:
        w.add_expert_count(o["experts"]); w.add_expert_used_count(o["used"])
        w.add_expert_feed_forward_length(o["expert_ffn"])

    types = [Q.Q8_0, Q.Q5_0, Q.F16, Q.Q4_0, Q.BF16, Q.F32]
    k = [0]
    def mat(tname, rows, cols, scale=1.0, qt=None):
        x = (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)
        if qt is None:
            qt = types[k[0] % len(types)]; k[0] += 1
        w.add_tensor(tname, gguf.quants.quantize(x, qt), raw_dtype=qt)
    def mat3(tname, n, rows, cols, scale=1.0, qt=Q.Q8_0):
        x = (rng.standard_normal((n, rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)
        w.add_tensor(tname, gguf.quants.quantize(x, qt), raw_dtype=qt)
    def vec(tname, n, center=1.0, spread=0.1):
        w.add_tensor(tname, (center + spread * rng.standard_normal(n)).astype(np.float32))

    # Embedding rows of RMS ~1 and an untied output projection scaled for peaked logits.
    # (Gemma 2's tied output: rows of RMS 0.5, so its logits stay mostly below the final cap.)
    mat("token_embd.weight", n_vocab, H, np.sqrt(H) * (0.5 if arch == "gemma2" else 1.0), Q.Q8_0)
    vec("output_norm.weight", H)
    if arch == "gemma2":  # tied: the output reuses the embedding, scaled by sqrt(H) on input
        pass
    else:
        mat("output.weight", n_vocab, H, 6.0, Q.Q8_0)
    if o.get("llama3_rope"):
        w.add_tensor("rope_freqs.weight", llama3_factors(o["rope_base"], hd))
    if o.get("longrope"):
        long, short = longrope_factors(hd // 2)
        w.add_tensor("rope_factors_long.weight", long)
        w.add_tensor("rope_factors_short.weight", short)
    for i in range(L):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", H)
        if o.get("fused"):
            mat(p + "attn_qkv.weight", qd + 2 * kvd, H, 1.5)
        else:
            mat(p + "attn_q.weight", qd, H, 1.5)
            mat(p + "attn_k.weight", kvd, H, 1.5)
            mat(p + "attn_v.weight", kvd, H)
        mat(p + "attn_output.weight", H, qd)
        if arch in ("qwen3", "qwen3moe"):
            vec(p + "attn_q_norm.weight", hd); vec(p + "attn_k_norm.weight", hd)
        if arch == "gemma2":
            vec(p + "post_attention_norm.weight", H); vec(p + "post_ffw_norm.weight", H)
        vec(p + "ffn_norm.weight", H)
        if "experts" in o:
            E, F = o["experts"], o["expert_ffn"]
            mat(p + "ffn_gate_inp.weight", E, H, 8.0, Q.F32)
            mat3(p + "ffn_gate_exps.weight", E, F, H)
            mat3(p + "ffn_up_exps.weight", E, F, H)
            mat3(p + "ffn_down_exps.weight", E, H, F)
        elif o.get("fused"):
            mat(p + "ffn_up.weight", 2 * ffn, H)
            mat(p + "ffn_down.weight", H, ffn)
        else:
            mat(p + "ffn_gate.weight", ffn, H)
            mat(p + "ffn_up.weight", ffn, H)
            mat(p + "ffn_down.weight", H, ffn)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    print(f"{path}: {arch}, vocabulary {vocab_name} ({n_vocab}), {os.path.getsize(path) / 2**20:.1f} MiB")
