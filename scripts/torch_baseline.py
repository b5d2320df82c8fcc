#!/usr/bin/env python3
"""PyTorch + transformers decode baseline for the CUDA backend's benchmark.

Builds random-weight Gemma 3 270M and Qwen2.5-0.5B models with the real shapes from config
objects (bf16, on the GPU, nothing downloaded) and measures greedy decode tokens/s with a
128-token context at several batch sizes, printing a table to set beside
`crates/backend-cuda/examples/cuda_bench.rs`. Eager PyTorch with SDPA attention and a dynamic
KV cache: the plain `model(...)` loop, no CUDA graphs or torch.compile.

Usage: python3 scripts/torch_baseline.py [--models gemma,qwen] [--batches 1,16,64] [--ctx 128] [--steps 32]
"""

import argparse
import sys
import time


def build(name, torch):
    import transformers

    if name == "gemma":
        from transformers import Gemma3TextConfig

        cfg = Gemma3TextConfig(
            vocab_size=262144,
            hidden_size=640,
            intermediate_size=2048,
            num_hidden_layers=18,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=256,
            sliding_window=512,
            sliding_window_pattern=6,
            rope_theta=1_000_000.0,
            rope_local_base_freq=10_000.0,
            query_pre_attn_scalar=256,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
        )
    else:
        from transformers import Qwen2Config

        cfg = Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rope_theta=1_000_000.0,
            tie_word_embeddings=False,  # as in the GGUF we serve (separate output.weight)
            use_sliding_window=False,
        )
    torch.manual_seed(0)
    with torch.device("cuda"):
        try:
            model = transformers.AutoModelForCausalLM.from_config(
                cfg, attn_implementation="sdpa", torch_dtype=torch.bfloat16
            )
        except TypeError:
            model = transformers.AutoModelForCausalLM.from_config(cfg)
    return model.to(device="cuda", dtype=torch.bfloat16).eval(), cfg.vocab_size


def step(model, ids, past):
    try:
        out = model(input_ids=ids, past_key_values=past, use_cache=True, logits_to_keep=1)
    except TypeError:
        out = model(input_ids=ids, past_key_values=past, use_cache=True, num_logits_to_keep=1)
    return out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values


def bench(model, vocab, batch, ctx, steps, torch):
    ids = torch.randint(0, vocab, (batch, ctx), device="cuda")
    torch.cuda.synchronize()
    t = time.perf_counter()
    nxt, past = step(model, ids, None)
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - t
    for _ in range(3):
        nxt, past = step(model, nxt, past)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        nxt, past = step(model, nxt, past)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return 1e3 * dt / steps, batch * steps / dt, batch * ctx / prefill_s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="gemma,qwen")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--steps", type=int, default=32)
    a = p.parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"SKIPPED: torch/transformers not importable ({e})")
        return 0
    if not torch.cuda.is_available():
        print("SKIPPED: torch sees no CUDA device")
        return 0
    print(
        f"# PyTorch baseline: torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.cuda.get_device_name(0)}; eager, SDPA, bf16, random weights"
    )
    for name in a.models.split(","):
        try:
            t = time.perf_counter()
            model, vocab = build(name, torch)
            n_params = sum(p.numel() for p in model.parameters())
            print(f"\n## {name}: {n_params / 1e6:.1f} M parameters, built in {time.perf_counter() - t:.1f}s")
            with torch.inference_mode():
                bench(model, vocab, 1, 16, 2, torch)  # warm-up (kernels, allocator)
                print(f"\n| batch | ctx | decode ms/step | decode tok/s | prefill tok/s (B x {a.ctx}) |")
                print("|---:|---:|---:|---:|---:|")
                for b in [int(x) for x in a.batches.split(",")]:
                    ms, tps, pps = bench(model, vocab, b, a.ctx, a.steps, torch)
                    print(f"| {b} | {a.ctx} | {ms:.3f} | {tps:.0f} | {pps:.0f} |", flush=True)
            del model
            torch.cuda.empty_cache()
        except Exception as e:  # keep going with the other model
            print(f"{name}: FAILED: {type(e).__name__}: {e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
