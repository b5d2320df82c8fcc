//! Decode and prefill throughput of the CUDA backend on random-weight models with the real shapes
//! of Gemma 3 270M and Qwen2.5-0.5B (speed does not depend on the values), next to the
//! memory-bandwidth roofline. Decode runs twice per batch size on the same sequences: launch by
//! launch (CUDA graphs off), then replaying the per-bucket decode graphs; a few extra profiled
//! steps of each give the per-step breakdown (driver calls, host enqueue time, device time
//! between events).
//!
//! ```text
//! cargo run --release -p switchyard-backend-cuda --example cuda_bench -- \
//!     [--models gemma,qwen] [--batches 1,16,64,256] [--ctx 128] [--steps 32] \
//!     [--prefill 1x512,4x1024] [--bandwidth 3.35e12]
//! ```
//! Without a GPU it prints `SKIPPED: ...` and exits successfully.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{fast_q8_0, BlockAlloc, MemWeights, Part, Seq};
use switchyard_backend_cuda::CudaBackend;
use switchyard_core::{
    Activation, Architecture, Backend, ForwardBatch, GgmlType, KvCacheConfig, LayerAttention,
    ModelConfig,
};

const BLOCK: usize = 16;
/// Decode steps before each timed run.
const WARMUP: usize = 3;
/// Profiled decode steps after each timed run.
const PROFILED: usize = 5;
/// Most tokens in one prefill forward.
const PREFILL_CHUNK_TOKENS: usize = 8192;

fn gemma3_270m() -> ModelConfig {
    let hidden = 640;
    ModelConfig {
        arch: Architecture::Gemma3,
        n_layers: 18,
        hidden,
        ffn: 2048,
        n_heads: 4,
        n_kv_heads: 1,
        head_dim: 256,
        vocab_size: 262_144,
        context_length: 32_768,
        rms_eps: 1e-6,
        rope_base: 1_000_000.0,
        rope_base_local: 10_000.0,
        layers: (0..18)
            .map(|i| {
                if (i + 1) % 6 == 0 {
                    LayerAttention::Global
                } else {
                    LayerAttention::Sliding { window: 512 }
                }
            })
            .collect(),
        activation: Activation::GeluTanh,
        qk_norm: true,
        post_norms: true,
        embed_scale: (hidden as f32).sqrt(),
        query_scale: 1.0 / 16.0,
        final_logit_softcap: None,
        attn_logit_softcap: None,
        tied_embeddings: true,
        rope_freq_factors: None,
        rope_freq_scale: 1.0,
        rope_freq_scale_local: 1.0,
        moe: None,
        rope_scaling: Default::default(),
    }
}

fn qwen25_05b() -> ModelConfig {
    ModelConfig {
        arch: Architecture::Qwen2,
        n_layers: 24,
        hidden: 896,
        ffn: 4864,
        n_heads: 14,
        n_kv_heads: 2,
        head_dim: 64,
        vocab_size: 151_936,
        context_length: 32_768,
        rms_eps: 1e-6,
        rope_base: 1_000_000.0,
        rope_base_local: 1_000_000.0,
        layers: vec![LayerAttention::Global; 24],
        activation: Activation::Silu,
        qk_norm: false,
        post_norms: false,
        embed_scale: 1.0,
        query_scale: 1.0 / 8.0,
        final_logit_softcap: None,
        attn_logit_softcap: None,
        tied_embeddings: false,
        rope_freq_factors: None,
        rope_freq_scale: 1.0,
        rope_freq_scale_local: 1.0,
        moe: None,
        rope_scaling: Default::default(),
    }
}

/// Q8_0 matrices (fast to generate), F32 norms of ones, zero biases.
fn weights(c: &ModelConfig) -> MemWeights {
    let mut w = MemWeights::default();
    let mut seed = 1u64;
    let mut mat = |w: &mut MemWeights, name: &str, cols: usize, rows: usize| {
        seed += 1;
        let std = 1.0 / (cols as f32).sqrt();
        w.insert(
            name,
            GgmlType::Q8_0,
            vec![cols, rows],
            fast_q8_0(cols, rows, std, seed),
        );
    };
    mat(&mut w, "token_embd.weight", c.hidden, c.vocab_size);
    if !c.tied_embeddings {
        mat(&mut w, "output.weight", c.hidden, c.vocab_size);
    }
    w.f32_vec("output_norm.weight", &vec![1.0; c.hidden]);
    let (qd, kvd) = (c.q_dim(), c.kv_dim());
    for l in 0..c.n_layers {
        let n = |s: &str| format!("blk.{l}.{s}");
        mat(&mut w, &n("attn_q.weight"), c.hidden, qd);
        mat(&mut w, &n("attn_k.weight"), c.hidden, kvd);
        mat(&mut w, &n("attn_v.weight"), c.hidden, kvd);
        mat(&mut w, &n("attn_output.weight"), qd, c.hidden);
        mat(&mut w, &n("ffn_gate.weight"), c.hidden, c.ffn);
        mat(&mut w, &n("ffn_up.weight"), c.hidden, c.ffn);
        mat(&mut w, &n("ffn_down.weight"), c.ffn, c.hidden);
        w.f32_vec(&n("attn_norm.weight"), &vec![1.0; c.hidden]);
        w.f32_vec(&n("ffn_norm.weight"), &vec![1.0; c.hidden]);
        if c.post_norms {
            w.f32_vec(&n("post_attention_norm.weight"), &vec![1.0; c.hidden]);
            w.f32_vec(&n("post_ffw_norm.weight"), &vec![1.0; c.hidden]);
        }
        if c.qk_norm {
            w.f32_vec(&n("attn_q_norm.weight"), &vec![1.0; c.head_dim]);
            w.f32_vec(&n("attn_k_norm.weight"), &vec![1.0; c.head_dim]);
        }
        if c.arch == Architecture::Qwen2 {
            w.f32_vec(&n("attn_q.bias"), &vec![0.0; qd]);
            w.f32_vec(&n("attn_k.bias"), &vec![0.0; kvd]);
            w.f32_vec(&n("attn_v.bias"), &vec![0.0; kvd]);
        }
    }
    w
}

struct Args {
    models: Vec<String>,
    batches: Vec<usize>,
    ctx: usize,
    steps: usize,
    /// (sequences, tokens each) of the prefill-only measurements.
    prefill: Vec<(usize, usize)>,
    bandwidth: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        models: vec!["gemma".into(), "qwen".into()],
        batches: vec![1, 16, 64, 256],
        ctx: 128,
        steps: 32,
        prefill: vec![(1, 512), (4, 1024)],
        bandwidth: 3.35e12,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--models" => a.models = val.split(',').map(str::to_string).collect(),
            "--batches" => {
                a.batches = val
                    .split(',')
                    .map(|v| v.parse().expect("--batches"))
                    .collect()
            }
            "--ctx" => a.ctx = val.parse().expect("--ctx"),
            "--steps" => a.steps = val.parse().expect("--steps"),
            "--bandwidth" => a.bandwidth = val.parse().expect("--bandwidth"),
            "--prefill" => {
                a.prefill = val
                    .split(',')
                    .map(|p| {
                        let (s, t) = p.split_once('x').expect("--prefill SEQSxTOKENS");
                        (s.parse().expect("--prefill"), t.parse().expect("--prefill"))
                    })
                    .collect()
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// Deterministic pseudo-random prompt tokens.
fn prompt(seed: usize, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((seed * 7919 + i * 104_729 + 17) % vocab) as u32)
        .collect()
}

fn run(b: &mut CudaBackend, batch: &ForwardBatch) -> Vec<u32> {
    b.forward_argmax(batch).expect("forward")
}

/// Prefills `seqs` with `ctx`-token prompts in chunks of at most PREFILL_CHUNK_TOKENS; returns
/// each sequence's next token and the seconds taken.
fn prefill(
    b: &mut CudaBackend,
    seqs: &mut [Seq],
    alloc: &mut BlockAlloc,
    ctx: usize,
) -> (Vec<u32>, f64) {
    let vocab = b.config().vocab_size;
    let per_chunk = (PREFILL_CHUNK_TOKENS / ctx).max(1);
    let start = Instant::now();
    let mut next = Vec::with_capacity(seqs.len());
    for (ci, chunk) in seqs.chunks_mut(per_chunk).enumerate() {
        let parts = chunk
            .iter_mut()
            .enumerate()
            .map(|(i, s)| Part {
                seq: s,
                tokens: prompt(ci * per_chunk + i, ctx, vocab),
                logits_rows: vec![ctx - 1],
            })
            .collect();
        let batch = common::build_batch(parts, alloc, BLOCK);
        next.extend(run(b, &batch));
    }
    (next, start.elapsed().as_secs_f64())
}

fn decode_step(
    b: &mut CudaBackend,
    seqs: &mut [Seq],
    next: &[u32],
    alloc: &mut BlockAlloc,
) -> Vec<u32> {
    let parts = seqs
        .iter_mut()
        .zip(next)
        .map(|(s, &t)| Part {
            seq: s,
            tokens: vec![t],
            logits_rows: vec![0],
        })
        .collect();
    let batch = common::build_batch(parts, alloc, BLOCK);
    run(b, &batch)
}

fn bench_model(name: &str, cfg: &ModelConfig, a: &Args) {
    let t0 = Instant::now();
    let w = weights(cfg);
    let gen_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut b = CudaBackend::load(0, cfg, &w).expect("load");
    let load_s = t1.elapsed().as_secs_f64();
    drop(w);
    let kb = b.kernel_build().clone();
    let step_bytes = b.step_weight_bytes() as f64;
    println!();
    println!(
        "## {name} (random weights, real shapes): {} layers, hidden {}, ffn {}, heads {}/{} x {}, vocab {}",
        cfg.n_layers, cfg.hidden, cfg.ffn, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.vocab_size
    );
    println!(
        "weights on GPU {:.1} MiB bf16, read per step {:.1} MiB; generated in {gen_s:.1}s, loaded (dequant + upload) in \
         {load_s:.1}s; kernels {} {} ({}, {:.2}s)",
        b.weight_bytes() as f64 / (1 << 20) as f64,
        step_bytes / (1 << 20) as f64,
        kb.format,
        kb.arch,
        if kb.from_cache { "cached" } else { "compiled" },
        kb.compile_seconds
    );

    let max_b = a.batches.iter().copied().max().unwrap_or(1);
    // Both modes decode WARMUP + steps + PROFILED steps on the same sequences.
    let per_seq = (a.ctx + 2 * (a.steps + WARMUP + PROFILED) + 4).div_ceil(BLOCK);
    let prefill_blocks = a
        .prefill
        .iter()
        .map(|&(s, t)| s * t.div_ceil(BLOCK))
        .max()
        .unwrap_or(0);
    let num_blocks = (max_b * per_seq).max(prefill_blocks) + 16;
    let info = b
        .init_kv_cache(KvCacheConfig {
            block_size: BLOCK,
            num_blocks,
        })
        .expect("kv cache");
    println!(
        "KV cache: {num_blocks} blocks of {BLOCK} tokens, {:.1} MiB",
        (info.bytes_per_block * num_blocks) as f64 / (1 << 20) as f64
    );
    let kv_bytes_per_token = b.kv_bytes_per_block(1) as f64;

    // Warm-up (cuBLAS heuristics, allocations of the largest buffers).
    {
        let mut alloc = BlockAlloc::new(num_blocks, 1);
        let mut seqs = vec![Seq::default(); max_b.min(64)];
        let (next, _) = prefill(&mut b, &mut seqs, &mut alloc, a.ctx);
        decode_step(&mut b, &mut seqs, &next, &mut alloc);
    }

    println!();
    println!(
        "| batch | graphs | ctx | decode ms/step | decode tok/s | roofline tok/s (weights) | % of it | roofline tok/s (weights+KV) | \
         prefill tok/s (B x {}) |",
        a.ctx
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut breakdown = Vec::new();
    for &bsz in &a.batches {
        let mut alloc = BlockAlloc::new(num_blocks, bsz as u64);
        let mut seqs = vec![Seq::default(); bsz];
        b.set_cuda_graphs(false);
        let (mut next, prefill_s) = prefill(&mut b, &mut seqs, &mut alloc, a.ctx);
        let mut ms_off = 0.0;
        for graphs in [false, true] {
            b.set_cuda_graphs(graphs);
            for _ in 0..WARMUP {
                next = decode_step(&mut b, &mut seqs, &next, &mut alloc);
            }
            let ctx_start = seqs[0].cached;
            let t = Instant::now();
            for _ in 0..a.steps {
                next = decode_step(&mut b, &mut seqs, &next, &mut alloc);
            }
            let s = t.elapsed().as_secs_f64();
            let ms = 1e3 * s / a.steps as f64;
            let toks = (bsz * a.steps) as f64 / s;
            let avg_ctx = ctx_start as f64 + a.steps as f64 / 2.0;
            let roof_w = bsz as f64 / (step_bytes / a.bandwidth);
            let kv = bsz as f64 * avg_ctx * kv_bytes_per_token;
            let roof_wkv = bsz as f64 / ((step_bytes + kv) / a.bandwidth);
            let mode = match (graphs, b.cuda_graphs()) {
                (false, _) => "off".to_string(),
                (true, Ok(())) => format!("on ({:.2}x)", ms_off / ms),
                (true, Err(why)) => format!("FELL BACK: {why}"),
            };
            if !graphs {
                ms_off = ms;
            }
            println!(
                "| {bsz} | {mode} | {ctx_start}..{} | {ms:.3} | {toks:.0} | {roof_w:.0} | {:.1}% | {roof_wkv:.0} | {:.0} |",
                ctx_start + a.steps,
                100.0 * toks / roof_w,
                (bsz * a.ctx) as f64 / prefill_s
            );
            // Profiled steps: device time between events, host enqueue time, driver calls.
            b.set_profiling(true);
            let mut acc = (0.0f64, 0.0f64, 0.0f64, 0usize);
            let mut last = b.last_step();
            for _ in 0..PROFILED {
                next = decode_step(&mut b, &mut seqs, &next, &mut alloc);
                last = b.last_step();
                acc.0 += last.host_enqueue_s;
                acc.1 += last.wall_s;
                acc.2 += f64::from(last.gpu_ms.unwrap_or(f32::NAN));
                acc.3 += 1;
            }
            b.set_profiling(false);
            let k = acc.3 as f64;
            breakdown.push(format!(
                "| {bsz} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |",
                if last.graph { "on" } else { "off" },
                last.rows_launched,
                1e3 * acc.1 / k,
                1e3 * acc.0 / k,
                acc.2 / k,
                last.counters.kernel_launches,
                last.counters.gemm_calls,
                last.counters.graph_launches,
                last.counters.htod_copies + last.counters.dtoh_copies,
            ));
        }
    }
    println!();
    println!(
        "Per decode step (mean of {PROFILED} profiled steps; forward_argmax, host batch building excluded): \
         wall = the backend call, enqueue = host time until all work is queued, device = time between \
         events around the step's work on the stream."
    );
    println!();
    println!(
        "| batch | graphs | rows run | wall ms | host enqueue ms | device ms | kernel launches | cuBLAS calls | graph launches | copies |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in breakdown {
        println!("{l}");
    }

    // Prefill alone: one forward of several long prompts (after a warm-up of the same shape).
    println!();
    println!("| prefill | tokens | ms | tok/s |");
    println!("|---|---:|---:|---:|");
    for &(nseq, len) in &a.prefill {
        let mut best = f64::MAX;
        for rep in 0..2 {
            let mut alloc = BlockAlloc::new(num_blocks, 100 + rep);
            let mut seqs = vec![Seq::default(); nseq];
            let (_, s) = prefill(&mut b, &mut seqs, &mut alloc, len);
            best = best.min(s);
        }
        println!(
            "| {nseq} x {len} | {} | {:.2} | {:.0} |",
            nseq * len,
            1e3 * best,
            (nseq * len) as f64 / best
        );
    }
}

fn main() {
    let a = parse_args();
    let Some(dev) = common::gpu_or_skip() else {
        return;
    };
    println!(
        "# cuda_bench on {} (sm_{}{}, {} SMs, {:.0} GiB); roofline at {:.2} TB/s",
        dev.name,
        dev.compute_capability.0,
        dev.compute_capability.1,
        dev.multiprocessors,
        dev.total_memory as f64 / (1u64 << 30) as f64,
        a.bandwidth / 1e12
    );
    for m in &a.models {
        match m.as_str() {
            "gemma" => bench_model("gemma3-270m", &gemma3_270m(), &a),
            "qwen" => bench_model("qwen2.5-0.5b", &qwen25_05b(), &a),
            other => eprintln!("unknown model {other} (gemma, qwen)"),
        }
    }
}
