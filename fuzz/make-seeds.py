#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets into fuzz/seeds/<target>/.

Deterministic and small (a few KiB a file). GGUF seeds are synthetic files with the layout of
the real models (Gemma 3 / Qwen2 metadata keys, SentencePiece and byte-level vocabularies,
tensor directory, every supported tensor type); no model file is needed.
Files named regress-* are fuzz finds kept as regression seeds (not written by this script).

usage: python3 fuzz/make-seeds.py
"""
import json, os, random, struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
rng = random.Random(0)


def out(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- GGUF -------------------------------------------------------------------------------------

def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, val):
    k = s(key)
    if isinstance(val, bool):
        return k + struct.pack("<IB", 7, val)
    if isinstance(val, int):
        return k + struct.pack("<II", 4, val)
    if isinstance(val, float):
        return k + struct.pack("<If", 6, val)
    if isinstance(val, str):
        return k + struct.pack("<I", 8) + s(val)
    if isinstance(val, tuple):  # (element type, list)
        ety, items = val
        b = k + struct.pack("<IIQ", 9, ety, len(items))
        for it in items:
            b += s(it) if ety == 8 else struct.pack({4: "<I", 5: "<i", 6: "<f"}[ety], it)
        return b
    raise TypeError(val)


BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 6: (32, 22), 8: (32, 34), 12: (256, 144), 14: (256, 210)}


def gguf(kvs, tensors, align=32):
    """tensors: (name, dims, type)"""
    h = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, v in kvs:
        h += kv(k, v)
    datas, off = [], 0
    for name, dims, ty in tensors:
        n = 1
        for d in dims:
            n *= d
        bs, bb = BLOCK[ty]
        data = bytes(rng.randrange(256) for _ in range(n // bs * bb))
        if ty in (0,):
            data = b"".join(struct.pack("<f", rng.uniform(-1, 1)) for _ in range(n))
        h += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        h += struct.pack("<IQ", ty, off)
        datas.append(data)
        off += len(data)
        off = (off + align - 1) // align * align
    h += b"\0" * (-len(h) % align)
    for d in datas:
        h += d + b"\0" * (-len(d) % align)
    return h


GEMMA_TEMPLATE = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
CHATML = "{%- for message in messages %}{%- if loop.first and messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"


def llama_vocab():
    toks = [("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2), ("<start_of_turn>", 3),
            ("<end_of_turn>", 3), ("<b>", 4)]
    toks += [("<0x%02X>" % b, 6) for b in list(range(16)) + [0x9F, 0xA9, 0xC3, 0xF0]]
    toks += [(c, 1) for c in "abcdefghijklmnopqrstuvwxyz"]
    toks += [(t, 1) for t in ["\u2581", "\u2581t", "he", "\u2581the", "\u00e9", "\u65e5", "\n"]]
    return toks


def gemma_kvs(n_layers=2, vocab=None):
    toks = vocab or llama_vocab()
    return [
        ("general.architecture", "gemma3"),
        ("general.name", "gemma-3-270m (fuzz seed)"),
        ("gemma3.context_length", 32768),
        ("gemma3.embedding_length", 32),
        ("gemma3.block_count", n_layers),
        ("gemma3.feed_forward_length", 64),
        ("gemma3.attention.head_count", 2),
        ("gemma3.attention.head_count_kv", 1),
        ("gemma3.attention.key_length", 16),
        ("gemma3.attention.value_length", 16),
        ("gemma3.attention.layer_norm_rms_epsilon", 1e-6),
        ("gemma3.rope.freq_base", 1000000.0),
        ("gemma3.attention.sliding_window", 512),
        ("tokenizer.ggml.model", "llama"),
        ("tokenizer.ggml.tokens", (8, [t for t, _ in toks])),
        ("tokenizer.ggml.scores", (6, [-float(i) for i in range(len(toks))])),
        ("tokenizer.ggml.token_type", (5, [ty for _, ty in toks])),
        ("tokenizer.ggml.bos_token_id", 2),
        ("tokenizer.ggml.eos_token_id", 1),
        ("tokenizer.ggml.unknown_token_id", 3),
        ("tokenizer.ggml.padding_token_id", 0),
        ("tokenizer.ggml.add_bos_token", True),
        ("tokenizer.ggml.add_space_prefix", False),
        ("tokenizer.chat_template", GEMMA_TEMPLATE),
        ("general.alignment", 32),
    ]


def layer_tensors(i, types):
    q, k, ffn = types
    return [
        (f"blk.{i}.attn_norm.weight", [32], 0),
        (f"blk.{i}.attn_q.weight", [32, 32], q),
        (f"blk.{i}.attn_k.weight", [32, 16], k),
        (f"blk.{i}.attn_v.weight", [32, 16], k),
        (f"blk.{i}.attn_output.weight", [32, 32], q),
        (f"blk.{i}.attn_q_norm.weight", [16], 0),
        (f"blk.{i}.attn_k_norm.weight", [16], 0),
        (f"blk.{i}.post_attention_norm.weight", [32], 0),
        (f"blk.{i}.ffn_norm.weight", [32], 0),
        (f"blk.{i}.ffn_gate.weight", [32, 64], ffn),
        (f"blk.{i}.ffn_up.weight", [32, 64], ffn),
        (f"blk.{i}.ffn_down.weight", [64, 32], ffn),
        (f"blk.{i}.post_ffw_norm.weight", [32], 0),
    ]


n_vocab = len(llama_vocab())
# A complete tiny Gemma-shaped model: Q8_0 / Q4_0 / Q5_0 / F16 / BF16 weights.
out("gguf", "gemma3-tiny.gguf", gguf(gemma_kvs(1), [("token_embd.weight", [32, n_vocab], 8)]
                                     + layer_tensors(0, (2, 6, 1))
                                     + [("output_norm.weight", [32], 0)]))
# Header + metadata only (the start of a real file).
out("gguf", "gemma3-header.gguf", gguf(gemma_kvs(2), []))
# K-quants (256-element rows).
out("gguf", "kquants.gguf", gguf([("general.architecture", "llama"), ("general.alignment", 64)],
                                 [("a", [256, 2], 12), ("b", [256, 1], 14), ("c", [256], 30),
                                  ("d", [2, 2, 2, 2], 0)], align=64))
# Qwen2 with a byte-level vocabulary and merges.
bc = {}
printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
n = 0
for b in range(256):
    if b in printable:
        bc[b] = chr(b)
    else:
        bc[b] = chr(256 + n)
        n += 1
enc = lambda t: "".join(bc[b] for b in t.encode())
qtoks = [bc[b] for b in range(256)] + [enc(" t"), enc("he"), enc(" the"), "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
qtypes = [1] * (len(qtoks) - 3) + [3, 3, 3]
qkvs = [
    ("general.architecture", "qwen2"),
    ("qwen2.context_length", 32768), ("qwen2.embedding_length", 32), ("qwen2.block_count", 1),
    ("qwen2.feed_forward_length", 64), ("qwen2.attention.head_count", 2),
    ("qwen2.attention.head_count_kv", 1), ("qwen2.rope.freq_base", 1000000.0),
    ("qwen2.attention.layer_norm_rms_epsilon", 1e-6),
    ("tokenizer.ggml.model", "gpt2"), ("tokenizer.ggml.pre", "qwen2"),
    ("tokenizer.ggml.tokens", (8, qtoks)), ("tokenizer.ggml.token_type", (5, qtypes)),
    ("tokenizer.ggml.merges", (8, [f"{enc(' ')} {enc('t')}", f"{enc('h')} {enc('e')}", f"{enc(' t')} {enc('he')}"])),
    ("tokenizer.ggml.eos_token_id", len(qtoks) - 1), ("tokenizer.ggml.padding_token_id", len(qtoks) - 3),
    ("tokenizer.ggml.add_bos_token", False), ("tokenizer.chat_template", CHATML),
]
out("gguf", "qwen2-tiny.gguf", gguf(qkvs, [("token_embd.weight", [32, len(qtoks)], 8),
                                           ("blk.0.attn_q.bias", [32], 0)]))
# Truncated in the middle of the tensor directory; a v2 file; nested array types.
full = gguf(gemma_kvs(1), layer_tensors(0, (8, 8, 8)))
cut = full.index(b"blk.0.attn_k.weight")
out("gguf", "truncated.gguf", full[:cut + 10])
v2 = bytearray(gguf([("general.architecture", "llama"), ("x.u8", 7)], [("t", [4], 0)]))
v2[4] = 2
out("gguf", "v2.gguf", bytes(v2))
out("gguf", "arrays.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 3)
    + s("a.u64") + struct.pack("<IQ", 10, 1 << 40)
    + s("a.arr") + struct.pack("<IIQ", 9, 12, 2) + struct.pack("<dd", 1.5, -0.0)
    + s("a.nested") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 0, 0))

# --- safetensors ------------------------------------------------------------------------------

def st(tensors, metadata=None):
    header, off, data = {}, 0, b""
    for name, dtype, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        size = n * {"F32": 4, "F16": 2, "BF16": 2}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + size]}
        data += bytes(rng.randrange(256) for _ in range(size))
        off += size
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":"))
    h += " " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h.encode() + data


def hf_layer(i, dtype, bias=False):
    t = [
        (f"model.layers.{i}.input_layernorm.weight", dtype, [8]),
        (f"model.layers.{i}.self_attn.q_proj.weight", dtype, [8, 8]),
        (f"model.layers.{i}.self_attn.k_proj.weight", dtype, [4, 8]),
        (f"model.layers.{i}.self_attn.v_proj.weight", dtype, [4, 8]),
        (f"model.layers.{i}.self_attn.o_proj.weight", dtype, [8, 8]),
        (f"model.layers.{i}.post_attention_layernorm.weight", dtype, [8]),
        (f"model.layers.{i}.mlp.gate_proj.weight", dtype, [16, 8]),
        (f"model.layers.{i}.mlp.up_proj.weight", dtype, [16, 8]),
        (f"model.layers.{i}.mlp.down_proj.weight", dtype, [8, 16]),
    ]
    if bias:
        t += [(f"model.layers.{i}.self_attn.q_proj.bias", dtype, [8]),
              (f"model.layers.{i}.self_attn.k_proj.bias", dtype, [4])]
    return t


base = [("model.embed_tokens.weight", "BF16", [16, 8]), ("model.norm.weight", "BF16", [8]),
        ("lm_head.weight", "BF16", [16, 8])]
out("safetensors", "llama-bf16.safetensors", st(base + hf_layer(0, "BF16") + hf_layer(1, "BF16"), {"format": "pt"}))
out("safetensors", "qwen2-f32-bias.safetensors", st([("model.embed_tokens.weight", "F32", [16, 8])] + hf_layer(0, "F32", True)))
out("safetensors", "gemma3-f16.safetensors", st([("model.embed_tokens.weight", "F16", [16, 8]),
                                                  ("model.layers.0.self_attn.q_norm.weight", "F16", [4]),
                                                  ("model.layers.0.pre_feedforward_layernorm.weight", "F16", [8]),
                                                  ("scalar", "F32", []), ("empty", "F32", [0, 3])]))
out("safetensors", "index.json", json.dumps({"metadata": {"total_size": 14}, "weight_map": {
    "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
    "c": "model-00002-of-00002.safetensors"}}, indent=2))
out("safetensors", "config-llama.json", json.dumps({
    "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16,
    "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2, "vocab_size": 16,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "hidden_act": "silu", "tie_word_embeddings": False, "rope_scaling": None}, indent=2))
out("safetensors", "config-gemma3.json", json.dumps({
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 640,
    "intermediate_size": 2048, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
    "num_hidden_layers": 3, "vocab_size": 262144, "max_position_embeddings": 32768,
    "sliding_window": 512, "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
    "query_pre_attn_scalar": 256, "rope_local_base_freq": 10000.0, "rope_theta": 1000000.0,
    "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": None}, indent=2))

# --- manifests --------------------------------------------------------------------------------

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for m in sorted(os.listdir(os.path.join(here, "models"))):
    with open(os.path.join(here, "models", m)) as f:
        out("manifest", m, f.read())
out("manifest", "neuron.toml", """model = "qwen2.5-0.5b"
vocab_size = 151936

[kv]
block_size = 16
num_blocks = 2048
bytes_per_token = 24576
max_blocks_per_seq = 128

[[buckets]]
batch_size = 1
seq_len = 128
neff = "b1_s128.neff"

[[buckets]]
batch_size = 8
seq_len = 2048
neff = "b8_s2048.neff"

[tensors]
input_ids = "input_ids"
logits = "logits"
""")

out("manifest", "neuron-large.toml", """model = "m"
vocab_size = 262144

[kv]
block_size = 4294967296
num_blocks = 1
bytes_per_token = 1
max_blocks_per_seq = 4294967296

[[buckets]]
batch_size = 1
seq_len = 16
neff = "a.neff"
""")

# --- request bodies ---------------------------------------------------------------------------

reqs = {
    "completion-basic.json": {"model": "model", "prompt": "The capital of France is", "max_tokens": 16, "temperature": 0},
    "completion-full.json": {"prompt": ["a", "b"], "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                             "min_p": 0.05, "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1,
                             "seed": 42, "n": 2, "best_of": 2, "stop": ["\n", "END"], "stop_token_ids": [1],
                             "logit_bias": {"5": -100, "7": 3.5}, "logprobs": 2, "echo": True, "stream": True,
                             "stream_options": {"include_usage": True}, "ignore_eos": False, "min_tokens": 2,
                             "skip_special_tokens": False, "user": "u-1", "suffix": ""},
    "completion-ids.json": {"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 0, "echo": True, "logprobs": 0},
    "chat-basic.json": {"model": "model", "messages": [{"role": "user", "content": "Hello!"}]},
    "chat-full.json": {"messages": [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}], "name": "bob"},
                                    {"role": "assistant", "content": None},
                                    {"role": "developer", "content": "x"}],
                       "max_completion_tokens": 32, "logprobs": True, "top_logprobs": 3,
                       "response_format": {"type": "text"}, "tool_choice": "none", "add_generation_prompt": False,
                       "stream": True, "stream_options": {"include_usage": False}, "temperature": 1.5, "stop": "\n\n",
                       "tools": None, "frequency_penalty": 2},
    "chat-bad.json": {"messages": [{"role": "tool", "content": "x"}], "functions": [], "top_p": 0},
}
for name, body in reqs.items():
    out("request", name, json.dumps(body))
out("request", "numbers.json", '{"prompt": "x", "max_tokens": 1e3, "temperature": 1e-400, "seed": -9223372036854775808, "top_k": 4294967295, "n": 1.0}')

# --- chat templates ---------------------------------------------------------------------------

RS, US = "\x1e", "\x1f"
msgs = RS + "system" + US + "You are helpful." + RS + "user" + US + "Hi <|im_end|> {{ 7*7 }}" + RS + "assistant" + US + "Hello!" + RS + "user" + US + "\u65e5\u672c\u8a9e \U0001F44B"
out("chat_template", "chatml.txt", CHATML + msgs)
out("chat_template", "gemma.txt", GEMMA_TEMPLATE + msgs)
hostile = {
    "raise.txt": "{{ raise_exception('no system role') }}",
    "strftime.txt": "{{ strftime_now('%d %B %Y %b %m') }}{{ bos_token }}{{ eos_token }}",
    "macro-recursion.txt": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "loops.txt": "{% for i in range(100) %}{% for m in messages %}{{ m.content | upper }}{% endfor %}{% endfor %}",
    "pycompat.txt": "{% for m in messages %}{{ m.content.strip().split(' ') | join('|') }}{{ m.role.startswith('u') }}{{ m['content'][::-1] }}{{ m.content.replace('a', 'b') }}{% endfor %}",
    "filters.txt": "{{ messages | tojson }}{{ messages | length }}{{ (messages | last).content | title }}{{ 'x' * 3 }}{{ messages | map(attribute='role') | list }}{% set ns = namespace(a=0) %}{% for m in messages %}{% set ns.a = ns.a + 1 %}{% endfor %}{{ ns.a }}",
    "unclosed.txt": "{% for m in messages %}{{ m.content ",
    "deep.txt": "{{ " + "(" * 200 + "1" + ")" * 200 + " }}",
    "include.txt": "{% include 'chat' %}{% extends 'chat' %}{% import 'x' as y %}",
    "loop-controls.txt": "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ loop.revindex }}{% continue %}{% endfor %}",
}
for name, t in hostile.items():
    out("chat_template", name, t + msgs)

# --- detokenize -------------------------------------------------------------------------------

def ids(sel, xs):
    return bytes([sel]) + b"".join(struct.pack("<H", x) for x in xs)

# llama vocab ids: 0..7 specials, 8..263 bytes <0x00>..<0xFF>, then letters; byte fallback of
# "é" (C3 A9) and a 4-byte emoji split over tokens, specials in the middle, out of range at the end.
out("detokenize", "llama-bytes.bin", ids(0, [8 + 0xC3, 8 + 0xA9, 264, 2, 5, 8 + 0xF0, 8 + 0x9F, 8 + 0x91, 8 + 0x8B, 265]))
out("detokenize", "llama-skip.bin", ids(2, [2, 4, 270, 271, 5, 8 + 0xE6, 8 + 0x97, 1]))
out("detokenize", "gpt2-bytes.bin", ids(1, [0x41, 0xC3 - 0x21, 0x5E, 300, 301, 302, 303]))
out("detokenize", "gpt2-skip.bin", ids(3, [270, 271, 272, 0, 1, 2]))
out("detokenize", "out-of-range.bin", ids(0, [300, 400, 65535]))

# --- stop matcher -----------------------------------------------------------------------------

out("stop_matcher", "basic.txt", "\n\n" + RS + "END" + RS + RS + "one\n" + RS + "\ntwo" + RS + "E" + RS + "ND")
out("stop_matcher", "overlap.txt", "aaX" + RS + "aY" + RS + RS + "baa" + RS + "X")
out("stop_matcher", "utf8.txt", "\u00e9\u00e9" + RS + "\u65e5\u672c" + RS + RS + "caf" + RS + "\u00e9" + RS + "\u3053\u3093\u65e5" + RS + "\u672c\u8a9e")
out("stop_matcher", "min-tokens.txt", "\x01ab" + RS + RS + "xab" + RS + "a" + RS + "b")
print("seeds written to", ROOT)
