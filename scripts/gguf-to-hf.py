#!/usr/bin/env python3
"""Build a Hugging Face-format model directory from a GGUF file.

An implementation independent of Switchyard's Rust loader, used to test it: the weights are
read and dequantized by the PyPI `gguf` package (GGUFReader + gguf.quants.dequantize), written
with the PyPI `safetensors` package (numpy, no torch) as bf16 or f32, optionally sharded with a
`model.safetensors.index.json`. `config.json` and `generation_config.json` are written from the
GGUF metadata under Hugging Face's key names; the tokenizer comes from `transformers`' own
converters:

- GPT-2 style BPE (Qwen2): transformers' GGUF tokenizer conversion
  (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`). transformers refuses to read GGUF
  without torch although it needs no tensors for that (`return_tensors=False`); the check is
  patched out, nothing else is.
- Llama (GPT-2 style BPE of Llama 3, or SentencePiece of Llama 2) and Qwen 3: the same
  transformers GGUF conversion.
- SentencePiece BPE (Gemma 3): transformers' GGUF conversion turns it into a Unigram model,
  which tokenizes differently (it is meant for SentencePiece Unigram files). We instead write
  the SentencePiece model proto (`tokenizer.model`) from the GGUF vocabulary and convert it
  with transformers' `GemmaTokenizerFast(from_slow=True)`, the converter that produced the
  `tokenizer.json` of the published Gemma repositories.

llama.cpp's conversion conventions are inverted: Gemma's RMSNorm weights lose the +1 that
convert_hf_to_gguf adds (HF Gemma computes x * (1 + w)), Llama's Q/K rows are un-permuted
(GGUF stores them for interleaved RoPE, HF for rotate_half).

RoPE scaling: GGUF `rope.scaling.type linear` becomes `rope_scaling {"type": "linear", "factor"}`;
`yarn` (Qwen 3) `{"rope_type": "yarn", "factor", "original_max_position_embeddings"}` (other
`yarn_*` keys are refused); Phi-3's `rope_factors_long/short.weight` `{"type": "longrope",
"long_factor", "short_factor"}` with `original_max_position_embeddings` at the top level (its
`rope.scaling.attn_factor` must be transformers' default for those, else the conversion fails).
Llama 3.1-style frequency factors are stored in GGUF only as the tensor `rope_freqs.weight`, not
as the parameters that made them, so they are given with `--rope-scaling JSON` (HF's
`rope_scaling` object, `rope_type` llama3); the factors those parameters imply under transformers'
formula (`_compute_llama3_parameters`, re-implemented here in numpy) must equal the GGUF's tensor,
else the conversion fails. A GGUF with `rope_freqs.weight` and no `--rope-scaling` is refused.

Usage: gguf-to-hf.py MODEL.gguf OUTDIR [--dtype bf16|f16|f32] [--shard-size BYTES] [--rope-scaling JSON]
Writes OUTDIR atomically (OUTDIR.partial, then rename).
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize
from safetensors import _safetensors_rust as st_rust  # serialize_file: the backend of safetensors.numpy.save_file

def fields(reader):
    out = {}
    for k, f in reader.fields.items():
        try:
            out[k] = f.contents()
        except Exception:  # noqa: BLE001 - a field we cannot decode is one we do not need
            pass
    return out


def layer_types(n_layers, pattern):
    # llama.cpp (and HF Gemma 3): every `pattern`-th layer is global, the others slide.
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]


def llama3_inv_freq_factors(rs, base, dim):
    """Per-pair divisors of the RoPE frequencies that transformers' llama3 rope_type applies
    (`modeling_rope_utils._compute_llama3_parameters`: inv_freq / new inv_freq), in float64."""
    factor = float(rs["factor"])
    lo, hi = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
    orig = float(rs["original_max_position_embeddings"])
    inv_freq = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    low_wavelen, high_wavelen = orig / lo, orig / hi
    wavelen = 2 * np.pi / inv_freq
    new = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (orig / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * new / factor + smooth * new
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    new = np.where(medium, smoothed, new)
    return inv_freq / new


def rope_scaling(arch, md, reader, given):
    """HF `rope_scaling` from the GGUF (and --rope-scaling), checked against rope_freqs.weight."""
    a = lambda k, d=None: md.get(f"{arch}.{k}", d)  # noqa: E731
    kind = a("rope.scaling.type", "none")
    freqs = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if given is not None:
        if given.get("rope_type", given.get("type")) != "llama3":
            sys.exit(f"gguf-to-hf: --rope-scaling supports rope_type llama3 only, got {given}")
        if freqs is None:
            sys.exit("gguf-to-hf: --rope-scaling llama3 given but the GGUF has no rope_freqs.weight")
        if kind not in ("none",):
            sys.exit(f"gguf-to-hf: GGUF rope.scaling.type {kind!r} and rope_freqs.weight together are not supported")
        base = float(a("rope.freq_base", 10000.0))
        dim = int(a("rope.dimension_count", a("attention.key_length")))
        want = np.asarray(dequantize(freqs.data, freqs.tensor_type), dtype=np.float64).reshape(-1)
        got = llama3_inv_freq_factors(given, base, dim)
        if want.shape != got.shape or not np.allclose(got, want, rtol=1e-5, atol=0):
            sys.exit(
                f"gguf-to-hf: --rope-scaling {json.dumps(given)} implies frequency factors {got.tolist()}, "
                f"the GGUF's rope_freqs.weight is {want.tolist()}"
            )
        print(f"gguf-to-hf: rope_freqs.weight equals the factors of {json.dumps(given)} (max rel diff "
              f"{float(np.max(np.abs(got / want - 1))):.2e})", file=sys.stderr)
        return dict(given)
    if freqs is not None:
        sys.exit("gguf-to-hf: the GGUF has rope_freqs.weight; give its parameters with --rope-scaling "
                 "'{\"rope_type\": \"llama3\", ...}'")
    long = next((t for t in reader.tensors if t.name == "rope_factors_long.weight"), None)
    short = next((t for t in reader.tensors if t.name == "rope_factors_short.weight"), None)
    if long is not None or short is not None:
        # Phi-3 LongRoPE: config.json's rope_scaling holds the two factor lists (Phi3Config allows
        # no other key), the attention factor is transformers' default from max_position_embeddings
        # / original_max_position_embeddings, which must be the GGUF's rope.scaling.attn_factor.
        if arch != "phi3" or long is None or short is None or kind not in ("none", "longrope"):
            sys.exit("gguf-to-hf: rope_factors_long/short are supported for phi3, both present, only")
        ctx, orig = int(a("context_length")), int(a("rope.scaling.original_context_length", a("context_length")))
        factor = ctx / orig
        want = np.sqrt(1 + np.log(factor) / np.log(orig)) if factor > 1 else 1.0
        got = float(a("rope.scaling.attn_factor", 1.0))
        if abs(got - want) > 1e-6 * want:
            sys.exit(f"gguf-to-hf: rope.scaling.attn_factor {got} is not transformers' LongRoPE default {want}")
        vals = lambda t: [float(x) for x in np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)]  # noqa: E731
        return {"type": "longrope", "long_factor": vals(long), "short_factor": vals(short)}
    if f"{arch}.rope.scaling.attn_factor" in md:
        sys.exit("gguf-to-hf: rope.scaling.attn_factor is supported with LongRoPE factors only")
    if kind == "none":
        return None
    if kind == "linear":
        return {"type": "linear", "factor": float(a("rope.scaling.factor"))}
    if kind == "yarn":
        # transformers' yarn: beta_fast 32, beta_slow 1, attention factor 0.1 ln(factor) + 1, as
        # llama.cpp's defaults; a GGUF that sets other values is refused.
        extra = [k for k in md if k.startswith(f"{arch}.rope.scaling.yarn_")]
        if extra:
            sys.exit(f"gguf-to-hf: yarn with {extra} is not supported (factor and original_context_length only)")
        return {"rope_type": "yarn", "factor": float(a("rope.scaling.factor")),
                "original_max_position_embeddings": int(a("rope.scaling.original_context_length", a("context_length")))}
    sys.exit(f"gguf-to-hf: GGUF rope.scaling.type {kind!r} is not supported (none, linear, yarn, llama3 via "
             "rope_freqs.weight, Phi-3 LongRoPE via rope_factors_long/short)")


def hf_config(arch, md, vocab_size, tied, dtype, rope_scaling):
    a = lambda k, d=None: md.get(f"{arch}.{k}", d)  # noqa: E731
    n_heads = a("attention.head_count")
    hidden = a("embedding_length")
    head_dim = a("attention.key_length", hidden // n_heads)
    cfg = {
        "hidden_size": hidden,
        "intermediate_size": a("feed_forward_length"),
        "num_hidden_layers": a("block_count"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": a("attention.head_count_kv", n_heads),
        "head_dim": head_dim,
        "max_position_embeddings": a("context_length"),
        "rms_norm_eps": float(a("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(a("rope.freq_base", 10000.0)),
        "rope_scaling": rope_scaling,
        "vocab_size": vocab_size,
        "tie_word_embeddings": tied,
        "torch_dtype": {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype],
        "attention_bias": arch == "qwen2",
        "attention_dropout": 0.0,
        "use_cache": True,
    }
    for k, hk in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("padding_token_id", "pad_token_id")):
        if f"tokenizer.ggml.{k}" in md:
            cfg[hk] = int(md[f"tokenizer.ggml.{k}"])
    if arch == "gemma3":
        pattern = 6
        cfg.update(
            architectures=["Gemma3ForCausalLM"],
            model_type="gemma3_text",
            hidden_activation="gelu_pytorch_tanh",
            # llama.cpp scales queries by 1/sqrt(head_dim) for these sizes.
            query_pre_attn_scalar=head_dim,
            sliding_window=a("attention.sliding_window"),
            sliding_window_pattern=pattern,
            layer_types=layer_types(a("block_count"), pattern),
            rope_local_base_freq=10000.0,
            final_logit_softcapping=a("final_logit_softcapping"),
            attn_logit_softcapping=None,
        )
    elif arch == "qwen2":
        cfg.update(
            architectures=["Qwen2ForCausalLM"],
            model_type="qwen2",
            hidden_act="silu",
            use_sliding_window=False,
            sliding_window=a("context_length"),
            max_window_layers=a("block_count"),
        )
    elif arch == "qwen3":
        cfg.update(
            architectures=["Qwen3ForCausalLM"],
            model_type="qwen3",
            hidden_act="silu",
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=a("block_count"),
        )
    elif arch == "llama":
        cfg.update(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", mlp_bias=False)
    elif arch == "phi3":
        # Phi3Config: its sliding_window is applied by transformers (the GGUF's, which llama.cpp
        # ignores); original_max_position_embeddings defaults to 4096 there, so it is always written.
        cfg.update(
            architectures=["Phi3ForCausalLM"],
            model_type="phi3",
            hidden_act="silu",
            original_max_position_embeddings=int(a("rope.scaling.original_context_length", a("context_length"))),
            sliding_window=a("attention.sliding_window"),
            partial_rotary_factor=1.0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
        )
        del cfg["attention_bias"]
    else:
        sys.exit(f"gguf-to-hf: unsupported architecture {arch!r} (gemma3, qwen2, qwen3, llama, phi3)")
    kind = (rope_scaling or {}).get("rope_type", (rope_scaling or {}).get("type"))
    if rope_scaling is not None and (arch, kind) not in (("llama", "llama3"), ("llama", "linear"), ("qwen3", "yarn"),
                                                         ("phi3", "longrope")):
        sys.exit(f"gguf-to-hf: RoPE scaling {kind!r} is supported for llama (llama3, linear), qwen3 (yarn) and "
                 f"phi3 (longrope), not {arch!r}")
    return cfg


def hf_name(arch, name):
    """GGUF tensor name -> HF name (convert_hf_to_gguf's mapping, inverted)."""
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    parts = name.split(".")
    if parts[0] != "blk":
        sys.exit(f"gguf-to-hf: unexpected tensor {name}")
    i, rest = parts[1], ".".join(parts[2:])
    common = {
        "attn_norm.weight": "input_layernorm.weight",
        "attn_q.weight": "self_attn.q_proj.weight",
        "attn_k.weight": "self_attn.k_proj.weight",
        "attn_v.weight": "self_attn.v_proj.weight",
        "attn_q.bias": "self_attn.q_proj.bias",
        "attn_k.bias": "self_attn.k_proj.bias",
        "attn_v.bias": "self_attn.v_proj.bias",
        "attn_output.weight": "self_attn.o_proj.weight",
        "attn_q_norm.weight": "self_attn.q_norm.weight",
        "attn_k_norm.weight": "self_attn.k_norm.weight",
        "ffn_gate.weight": "mlp.gate_proj.weight",
        "ffn_up.weight": "mlp.up_proj.weight",
        "ffn_down.weight": "mlp.down_proj.weight",
    }
    if arch == "phi3":  # fused, the same rows: q, k, v; gate, up
        common["attn_qkv.weight"] = "self_attn.qkv_proj.weight"
        common["ffn_up.weight"] = "mlp.gate_up_proj.weight"
    if arch == "gemma3":
        common.update(
            {
                "post_attention_norm.weight": "post_attention_layernorm.weight",
                "ffn_norm.weight": "pre_feedforward_layernorm.weight",
                "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
            }
        )
    else:
        common["ffn_norm.weight"] = "post_attention_layernorm.weight"
    if rest not in common:
        sys.exit(f"gguf-to-hf: unexpected tensor {name}")
    return f"model.layers.{i}.{common[rest]}"


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf's LlamaModel.permute (rows of Q or K)."""
    shape = w.shape
    return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def to_bf16_bits(x):
    """f32 -> bf16 bit patterns (uint16), round to nearest even (as torch does)."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def weights(reader, arch, md):
    n_head = md.get(f"{arch}.attention.head_count")
    n_kv = md.get(f"{arch}.attention.head_count_kv", n_head)
    for t in reader.tensors:
        if t.name in ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"):
            continue  # config.json's rope_scaling (checked in rope_scaling())
        w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        # numpy order is GGML's reversed: [rows, cols] = HF [out_features, in_features].
        w = w.reshape([int(d) for d in reversed(t.shape.tolist())])
        if w.ndim == 2 and w.shape[0] == 1 and t.name.endswith(("norm.weight", ".bias")):
            w = w.reshape(-1)
        if arch == "gemma3" and t.name.endswith("norm.weight"):
            w = w - np.float32(1.0)
        if arch == "llama" and t.name.endswith(("attn_q.weight", "attn_q.bias")):
            w = unpermute(w, n_head)
        if arch == "llama" and t.name.endswith(("attn_k.weight", "attn_k.bias")):
            w = unpermute(w, n_kv)
        yield hf_name(arch, t.name), np.ascontiguousarray(w)


def write_safetensors(tensors, out, dtype, shard_size):
    """tensors: iterable of (name, f32 array). Writes one file or shards + index."""
    enc = []
    for name, w in tensors:
        if dtype == "bf16":
            data, st_dtype, nbytes = to_bf16_bits(w), "bfloat16", w.size * 2
        elif dtype == "f16":
            data, st_dtype, nbytes = w.astype(np.float16), "float16", w.size * 2
        else:
            data, st_dtype, nbytes = w.astype(np.float32), "float32", w.size * 4
        enc.append((name, {"dtype": st_dtype, "shape": list(w.shape), "data": data.tobytes()}, nbytes))
    shards, cur, cur_size = [], [], 0
    for e in enc:
        if cur and shard_size and cur_size + e[2] > shard_size:
            shards.append(cur)
            cur, cur_size = [], 0
        cur.append(e)
        cur_size += e[2]
    shards.append(cur)
    meta = {"format": "pt"}
    if len(shards) == 1:
        st_rust.serialize_file({n: d for n, d, _ in shards[0]}, os.path.join(out, "model.safetensors"), meta)
        return ["model.safetensors"]
    weight_map, files = {}, []
    for i, s in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        st_rust.serialize_file({n: d for n, d, _ in s}, os.path.join(out, fn), meta)
        files.append(fn)
        for n, _, _ in s:
            weight_map[n] = fn
    index = {"metadata": {"total_size": sum(e[2] for e in enc)}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return files + ["model.safetensors.index.json"]


def gemma_tokenizer(md, out, gguf_path):
    """SentencePiece BPE proto from the GGUF vocabulary, converted by transformers."""
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2
    from transformers import GemmaTokenizerFast

    if md.get("tokenizer.ggml.add_space_prefix", False):
        sys.exit("gguf-to-hf: add_space_prefix=true SentencePiece vocabularies are not supported")
    tokens = md["tokenizer.ggml.tokens"]
    scores = md["tokenizer.ggml.scores"]
    types = md["tokenizer.ggml.token_type"]
    m = spm_pb2.ModelProto()
    for t, s, ty in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece, p.score, p.type = t, float(s), int(ty)  # GGUF token types are SentencePiece's
    ts = m.trainer_spec
    ts.model_type = spm_pb2.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = True
    ts.split_digits = True
    ts.allow_whitespace_only_pieces = True
    ts.unk_id = int(md.get("tokenizer.ggml.unknown_token_id", 3))
    ts.bos_id = int(md.get("tokenizer.ggml.bos_token_id", 2))
    ts.eos_id = int(md.get("tokenizer.ggml.eos_token_id", 1))
    ts.pad_id = int(md.get("tokenizer.ggml.padding_token_id", 0))
    ts.unk_piece = tokens[ts.unk_id]
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = False
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    spm_path = os.path.join(out, "tokenizer.model")
    with open(spm_path, "wb") as f:
        f.write(m.SerializeToString())
    tok = GemmaTokenizerFast(
        vocab_file=spm_path,
        from_slow=True,
        bos_token=tokens[ts.bos_id],
        eos_token=tokens[ts.eos_id],
        unk_token=tokens[ts.unk_id],
        pad_token=tokens[ts.pad_id],
        add_bos_token=bool(md.get("tokenizer.ggml.add_bos_token", True)),
        add_eos_token=bool(md.get("tokenizer.ggml.add_eos_token", False)),
    )
    return tok


def gguf_tokenizer(md, gguf_path):
    """transformers' own GGUF tokenizer conversion (GPT-2 style BPE; Llama's SentencePiece)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoTokenizer

    # transformers only needs torch for tensors; the tokenizer path reads metadata only.
    gguf_utils.is_torch_available = lambda: True
    tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)), gguf_file=os.path.basename(gguf_path))
    # transformers takes EOS from `tokenizer.ggml.pad`-era conventions (<|endoftext|>); the
    # published Qwen repositories use the GGUF's eos (<|im_end|>) in tokenizer_config.json.
    tokens = md["tokenizer.ggml.tokens"]
    types = md.get("tokenizer.ggml.token_type")
    if "tokenizer.ggml.eos_token_id" in md:
        tok.eos_token = tokens[int(md["tokenizer.ggml.eos_token_id"])]
    # Control tokens of the GGUF vocabulary that transformers did not register (Qwen's FIM and
    # tool tokens): added as special tokens, as in the published tokenizer.json.
    if types is not None:
        have = set(tok.get_added_vocab())
        missing = [tokens[i] for i, ty in enumerate(types) if int(ty) == 3 and tokens[i] not in have]
        if missing:
            from tokenizers import AddedToken

            tok.add_special_tokens(
                {"additional_special_tokens": [AddedToken(t, normalized=False, special=True) for t in missing]},
                replace_additional_special_tokens=False,
            )
    return tok


# What --tokenizer-from copies (those present).
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "chat_template.jinja"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    ap.add_argument("--shard-size", type=int, default=0, help="bytes per shard (0: one file)")
    ap.add_argument(
        "--tokenizer-from",
        metavar="DIR",
        help="copy the tokenizer files from DIR (an earlier conversion of the same GGUF) instead of "
        "building them with transformers (for machines without the pinned transformers)",
    )
    ap.add_argument(
        "--rope-scaling",
        metavar="JSON",
        type=json.loads,
        help="config.json's rope_scaling for a GGUF with rope_freqs.weight (rope_type llama3); "
        "checked against that tensor",
    )
    args = ap.parse_args()

    reader = GGUFReader(args.gguf)
    md = fields(reader)
    arch = md["general.architecture"]
    names = {t.name for t in reader.tensors}
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    vocab_size = int(embd.shape[1])
    tied = "output.weight" not in names

    rs = rope_scaling(arch, md, reader, args.rope_scaling)
    tmp = args.out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    cfg = hf_config(arch, md, vocab_size, tied, args.dtype, rs)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    gen = {"do_sample": False}
    if "bos_token_id" in cfg:
        gen["bos_token_id"] = cfg["bos_token_id"]
    eos = [cfg["eos_token_id"]] if "eos_token_id" in cfg else []
    if "tokenizer.ggml.eot_token_id" in md:
        eos.append(int(md["tokenizer.ggml.eot_token_id"]))
    if eos:
        gen["eos_token_id"] = eos if len(eos) > 1 else eos[0]
    with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)

    model = md["tokenizer.ggml.model"]
    if args.tokenizer_from:
        copied = [f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(args.tokenizer_from, f))]
        if "tokenizer.json" not in copied or "tokenizer_config.json" not in copied:
            sys.exit(f"gguf-to-hf: {args.tokenizer_from} has no tokenizer.json / tokenizer_config.json")
        for f in copied:
            shutil.copy(os.path.join(args.tokenizer_from, f), os.path.join(tmp, f))
    elif model == "llama" and arch == "gemma3":
        tok = gemma_tokenizer(md, tmp, args.gguf)
    elif model in ("gpt2", "llama"):
        tok = gguf_tokenizer(md, args.gguf)
    else:
        sys.exit(f"gguf-to-hf: unsupported tokenizer model {model!r}")
    if not args.tokenizer_from:
        if "tokenizer.chat_template" in md:
            tok.chat_template = md["tokenizer.chat_template"]
        # The chat template goes into tokenizer_config.json (the format most Hub repos use).
        tok.save_pretrained(tmp, save_jinja_files=False)
        if model != "llama" or arch != "gemma3":
            # A tokenizer converted from GGUF saves the GGUF file itself as its `vocab_file`
            # (tokenizer.model for Llama): not a SentencePiece model, and a copy of all weights.
            p = os.path.join(tmp, "tokenizer.model")
            if os.path.isfile(p) and os.path.getsize(p) == os.path.getsize(args.gguf):
                os.remove(p)

    files = write_safetensors(weights(reader, arch, md), tmp, args.dtype, args.shard_size)
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)
    print(f"gguf-to-hf: {args.gguf} -> {args.out} ({arch}, {args.dtype}, {', '.join(files)})")


if __name__ == "__main__":
    main()
