//! Shared helpers of the CUDA tests and the benchmark example: GPU detection with a visible skip,
//! random quantized weights (every GGML type we load) in an in-memory `WeightSource`, tiny and
//! real-shaped model configurations, and a block allocator that builds `ForwardBatch`es.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::collections::HashMap;

use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use switchyard_core::{
    Activation, Architecture, BlockId, ForwardBatch, GgmlType, LayerAttention, ModelConfig,
    SeqInBatch, Tensor, WeightBytes, WeightSource,
};

/// The first CUDA device, or `None` after printing why the test is skipped.
pub fn gpu_or_skip() -> Option<switchyard_backend_cuda::CudaDeviceInfo> {
    match switchyard_backend_cuda::probe() {
        Ok(mut devices) => {
            let d = devices.remove(0);
            eprintln!(
                "CUDA device: {} (sm_{}{}, {:.1} GiB, driver CUDA {}.{})",
                d.name,
                d.compute_capability.0,
                d.compute_capability.1,
                d.total_memory as f64 / (1u64 << 30) as f64,
                d.driver_version / 1000,
                d.driver_version % 1000 / 10
            );
            Some(d)
        }
        Err(e) => {
            eprintln!("SKIPPED: no CUDA device ({e})");
            None
        }
    }
}

/// Weights held in memory, by GGUF name.
#[derive(Default)]
pub struct MemWeights(pub HashMap<String, Tensor>);

impl WeightSource for MemWeights {
    fn tensor(&self, name: &str) -> Option<Tensor> {
        self.0.get(name).cloned()
    }
}

impl MemWeights {
    pub fn insert(&mut self, name: &str, dtype: GgmlType, shape: Vec<usize>, bytes: Vec<u8>) {
        let t = Tensor {
            name: name.to_string(),
            dtype,
            shape,
            data: WeightBytes::from_vec(bytes),
        };
        self.0.insert(name.to_string(), t);
    }

    pub fn f32_vec(&mut self, name: &str, v: &[f32]) {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.insert(name, GgmlType::F32, vec![v.len()], bytes);
    }
}

/// A standard normal sample (Box-Muller).
pub fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.gen_range(1e-12..1.0);
    let u2: f64 = rng.gen_range(0.0..1.0);
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

pub fn normals(rng: &mut impl Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| normal(rng) * std).collect()
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// One random block of `ty` whose dequantized values have RMS `std` (and mean ~0): random
/// quants, then the f16 scale fields set so the block's RMS is right.
fn random_block(ty: GgmlType, rng: &mut impl Rng, std: f32) -> Vec<u8> {
    let mut b = vec![0u8; ty.block_bytes()];
    rng.fill_bytes(&mut b);
    let mut y = vec![0f32; ty.block_size()];
    let measure = |b: &[u8], y: &mut [f32]| {
        switchyard_core::dtype::dequantize(ty, b, y);
        let n = y.len() as f64;
        let mean = y.iter().map(|v| *v as f64).sum::<f64>() / n;
        let rms = (y.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / n).sqrt();
        (mean, rms)
    };
    match ty {
        GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::Q4_0 => {
            put_f16(&mut b, 0, 1.0);
            let (_, rms) = measure(&b, &mut y);
            put_f16(&mut b, 0, std / rms.max(1e-6) as f32);
        }
        GgmlType::Q6_K => {
            // Keep the sub-block scales moderate so d stays a normal f16.
            for s in &mut b[192..208] {
                *s = (rng.gen_range(-40i32..=40) as i8) as u8;
            }
            put_f16(&mut b, 208, 1.0);
            let (_, rms) = measure(&b, &mut y);
            put_f16(&mut b, 208, std / rms.max(1e-6) as f32);
        }
        GgmlType::Q4_K => {
            // values = d * sc * q - dmin * m: pick dmin/d so the block is centred, then scale both.
            put_f16(&mut b, 0, 1.0);
            put_f16(&mut b, 2, 0.0);
            let (mean_a, _) = measure(&b, &mut y);
            put_f16(&mut b, 0, 0.0);
            put_f16(&mut b, 2, 1.0);
            let (mean_b, _) = measure(&b, &mut y);
            let ratio = if mean_b < -1e-6 {
                (mean_a / -mean_b) as f32
            } else {
                0.0
            };
            put_f16(&mut b, 0, 1.0);
            put_f16(&mut b, 2, ratio);
            let (_, rms) = measure(&b, &mut y);
            let s = std / rms.max(1e-6) as f32;
            put_f16(&mut b, 0, s);
            put_f16(&mut b, 2, ratio * s);
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_K => {
            unreachable!("not a block type")
        }
        GgmlType::Q2_K
        | GgmlType::Q3_K
        | GgmlType::Q5_K
        | GgmlType::Q4_1
        | GgmlType::Q5_1
        | GgmlType::IQ4_NL
        | GgmlType::IQ4_XS => {
            unimplemented!("no random {ty} blocks in these tests")
        }
    }
    b
}

/// Bytes of a random `[cols, rows]` matrix of `ty` with element RMS `std`.
pub fn random_matrix(
    ty: GgmlType,
    cols: usize,
    rows: usize,
    std: f32,
    rng: &mut impl Rng,
) -> Vec<u8> {
    let n = cols * rows;
    match ty {
        GgmlType::F32 => normals(rng, n, std)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        GgmlType::F16 => normals(rng, n, std)
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => normals(rng, n, std)
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => {
            assert_eq!(cols % ty.block_size(), 0, "{ty} rows of {cols}");
            let mut out = Vec::with_capacity(ty.bytes_for(n));
            for _ in 0..n / ty.block_size() {
                out.extend(random_block(ty, rng, std));
            }
            out
        }
    }
}

/// Fast random Q8_0 bytes (for the benchmark's real-shaped models, where values do not matter).
pub fn fast_q8_0(cols: usize, rows: usize, std: f32, seed: u64) -> Vec<u8> {
    let blocks = cols * rows / 32;
    let mut out = vec![0u8; blocks * 34];
    let mut rng = StdRng::seed_from_u64(seed);
    rng.fill_bytes(&mut out);
    let d = f16::from_f32(std / 73.6).to_le_bytes();
    for blk in out.chunks_exact_mut(34) {
        blk[0..2].copy_from_slice(&d);
    }
    out
}

/// Which GGML type each weight matrix of a test model gets.
#[derive(Debug, Clone)]
pub struct TypePlan {
    pub embed: GgmlType,
    pub output: GgmlType,
    /// Cycled over the 7 matrices of each layer, shifted by the layer index.
    pub layer_cycle: Vec<GgmlType>,
}

/// A Gemma-3-like tiny model: q/k norm, post norms, GELU-tanh, sliding window 16 on layers 0 and
/// 1 (global layer 2), tied embeddings scaled by sqrt(hidden), and a logit soft-cap (Gemma 3 has
/// none; it is on here so the kernel is exercised end to end).
pub fn gemma_like() -> ModelConfig {
    let hidden = 256;
    ModelConfig {
        arch: Architecture::Gemma3,
        n_layers: 3,
        hidden,
        ffn: 512,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        vocab_size: 1000,
        context_length: 4096,
        rms_eps: 1e-6,
        rope_base: 1_000_000.0,
        rope_base_local: 10_000.0,
        layers: vec![
            LayerAttention::Sliding { window: 16 },
            LayerAttention::Sliding { window: 16 },
            LayerAttention::Global,
        ],
        activation: Activation::GeluTanh,
        qk_norm: true,
        post_norms: true,
        embed_scale: (hidden as f32).sqrt(),
        query_scale: 1.0 / 8.0,
        final_logit_softcap: Some(30.0),
        attn_logit_softcap: None,
        tied_embeddings: true,
        rope_freq_factors: None,
        rope_freq_scale: 1.0,
        rope_freq_scale_local: 1.0,
        moe: None,
        rope_scaling: Default::default(),
    }
}

/// A Qwen-2-like tiny model: q/k/v biases, SiLU, separate output matrix, global attention.
pub fn qwen_like() -> ModelConfig {
    ModelConfig {
        arch: Architecture::Qwen2,
        n_layers: 3,
        hidden: 256,
        ffn: 512,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        vocab_size: 1000,
        context_length: 4096,
        rms_eps: 1e-6,
        rope_base: 1_000_000.0,
        rope_base_local: 1_000_000.0,
        layers: vec![LayerAttention::Global; 3],
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

/// A Llama-like tiny model (NORM-style RoPE pairs, SiLU, no biases), GQA 8/2.
pub fn llama_like() -> ModelConfig {
    ModelConfig {
        arch: Architecture::Llama,
        n_layers: 2,
        hidden: 256,
        ffn: 512,
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 32,
        vocab_size: 1000,
        context_length: 4096,
        rms_eps: 1e-5,
        rope_base: 10_000.0,
        rope_base_local: 10_000.0,
        layers: vec![LayerAttention::Global; 2],
        activation: Activation::Silu,
        qk_norm: false,
        post_norms: false,
        embed_scale: 1.0,
        query_scale: 1.0 / (32f32).sqrt(),
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

pub fn plan_for(arch: Architecture) -> TypePlan {
    use GgmlType::*;
    match arch {
        Architecture::Gemma3 => TypePlan {
            embed: Q8_0,
            output: Q8_0,
            layer_cycle: vec![Q5_0, Q4_K, Q8_0, Q6_K],
        },
        Architecture::Qwen2 => TypePlan {
            embed: Q5_0,
            output: Q6_K,
            layer_cycle: vec![Q5_0, Q8_0, Q4_K, Q6_K],
        },
        _ => TypePlan {
            embed: F16,
            output: BF16,
            layer_cycle: vec![F16, BF16, Q4_0, F32, Q8_0],
        },
    }
}

/// Random weights for `c`. Matrices have element RMS 1/sqrt(input width) (so activations keep
/// their scale); the embedding RMS is 1/embed_scale; norms are 1 ± 0.1 (the final norm ~3, to
/// spread the logits); biases have RMS 0.1.
pub fn random_weights(c: &ModelConfig, plan: &TypePlan, seed: u64) -> MemWeights {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = MemWeights::default();
    let mat = |w: &mut MemWeights,
               rng: &mut StdRng,
               name: &str,
               ty: GgmlType,
               cols: usize,
               rows: usize,
               std: f32| {
        let bytes = random_matrix(ty, cols, rows, std, rng);
        w.insert(name, ty, vec![cols, rows], bytes);
    };
    let norm = |rng: &mut StdRng, n: usize, mean: f32| -> Vec<f32> {
        (0..n).map(|_| mean + 0.1 * normal(rng)).collect()
    };
    mat(
        &mut w,
        &mut rng,
        "token_embd.weight",
        plan.embed,
        c.hidden,
        c.vocab_size,
        1.0 / c.embed_scale,
    );
    if !c.tied_embeddings {
        mat(
            &mut w,
            &mut rng,
            "output.weight",
            plan.output,
            c.hidden,
            c.vocab_size,
            1.0 / (c.hidden as f32).sqrt(),
        );
    }
    let final_norm = if c.tied_embeddings {
        3.0 * c.embed_scale / (c.hidden as f32).sqrt()
    } else {
        3.0
    };
    let v = norm(&mut rng, c.hidden, final_norm);
    w.f32_vec("output_norm.weight", &v);
    let (qd, kvd) = (c.q_dim(), c.kv_dim());
    for l in 0..c.n_layers {
        let ty = |i: usize| plan.layer_cycle[(l + i) % plan.layer_cycle.len()];
        let n = |s: &str| format!("blk.{l}.{s}");
        let inv = |cols: usize| 1.0 / (cols as f32).sqrt();
        mat(
            &mut w,
            &mut rng,
            &n("attn_q.weight"),
            ty(0),
            c.hidden,
            qd,
            inv(c.hidden),
        );
        mat(
            &mut w,
            &mut rng,
            &n("attn_k.weight"),
            ty(1),
            c.hidden,
            kvd,
            inv(c.hidden),
        );
        mat(
            &mut w,
            &mut rng,
            &n("attn_v.weight"),
            ty(2),
            c.hidden,
            kvd,
            inv(c.hidden),
        );
        mat(
            &mut w,
            &mut rng,
            &n("attn_output.weight"),
            ty(3),
            qd,
            c.hidden,
            inv(qd),
        );
        mat(
            &mut w,
            &mut rng,
            &n("ffn_gate.weight"),
            ty(4),
            c.hidden,
            c.ffn,
            inv(c.hidden),
        );
        mat(
            &mut w,
            &mut rng,
            &n("ffn_up.weight"),
            ty(5),
            c.hidden,
            c.ffn,
            inv(c.hidden),
        );
        mat(
            &mut w,
            &mut rng,
            &n("ffn_down.weight"),
            ty(6),
            c.ffn,
            c.hidden,
            inv(c.ffn),
        );
        for name in ["attn_norm.weight", "ffn_norm.weight"] {
            let v = norm(&mut rng, c.hidden, 1.0);
            w.f32_vec(&n(name), &v);
        }
        if c.post_norms {
            for name in ["post_attention_norm.weight", "post_ffw_norm.weight"] {
                let v = norm(&mut rng, c.hidden, 1.0);
                w.f32_vec(&n(name), &v);
            }
        }
        if c.qk_norm {
            for name in ["attn_q_norm.weight", "attn_k_norm.weight"] {
                let v = norm(&mut rng, c.head_dim, 1.0);
                w.f32_vec(&n(name), &v);
            }
        }
        if c.arch == Architecture::Qwen2 {
            let b = normals(&mut rng, qd, 0.1);
            w.f32_vec(&n("attn_q.bias"), &b);
            let b = normals(&mut rng, kvd, 0.1);
            w.f32_vec(&n("attn_k.bias"), &b);
            let b = normals(&mut rng, kvd, 0.1);
            w.f32_vec(&n("attn_v.bias"), &b);
        }
    }
    w
}

/// The same weights with every matrix dequantized to F32 (norms and biases unchanged): an exact
/// reference, since the CPU backend multiplies F32 weights with unquantized f32 activations.
pub fn f32_matrices(w: &MemWeights) -> MemWeights {
    let mut out = MemWeights::default();
    for (name, t) in &w.0 {
        if t.shape.len() == 2 {
            let bytes = t.to_f32().iter().flat_map(|v| v.to_le_bytes()).collect();
            out.insert(name, GgmlType::F32, t.shape.clone(), bytes);
        } else {
            out.0.insert(name.clone(), t.clone());
        }
    }
    out
}

/// The same weights with every matrix converted to BF16 (norms and biases stay F32): what the
/// GPU computes with, for estimating the share of the error budget that weight rounding takes.
pub fn bf16_matrices(w: &MemWeights) -> MemWeights {
    let mut out = MemWeights::default();
    for (name, t) in &w.0 {
        if t.shape.len() == 2 {
            let bytes = t
                .to_f32()
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                .collect();
            out.insert(name, GgmlType::BF16, t.shape.clone(), bytes);
        } else {
            out.0.insert(name.clone(), t.clone());
        }
    }
    out
}

/// Hands out KV blocks in a shuffled order, so block tables are not contiguous.
pub struct BlockAlloc {
    free: Vec<u32>,
}

impl BlockAlloc {
    pub fn new(num_blocks: usize, seed: u64) -> Self {
        let mut free: Vec<u32> = (0..num_blocks as u32).collect();
        let mut rng = StdRng::seed_from_u64(seed);
        for i in (1..free.len()).rev() {
            free.swap(i, rng.gen_range(0..=i));
        }
        Self { free }
    }

    pub fn take(&mut self) -> BlockId {
        BlockId(self.free.pop().expect("test ran out of KV blocks"))
    }
}

/// One sequence's state across steps.
#[derive(Debug, Clone, Default)]
pub struct Seq {
    /// Tokens already in the cache.
    pub cached: usize,
    pub blocks: Vec<BlockId>,
}

/// One entry of a step: a sequence and the tokens it runs now.
pub struct Part<'a> {
    pub seq: &'a mut Seq,
    pub tokens: Vec<u32>,
    /// Rows (within this part) whose logits are wanted.
    pub logits_rows: Vec<usize>,
}

/// Builds the `ForwardBatch` of one step (allocating blocks as sequences grow) and advances the
/// sequences' cached lengths.
pub fn build_batch(
    parts: Vec<Part<'_>>,
    alloc: &mut BlockAlloc,
    block_size: usize,
) -> ForwardBatch {
    let mut b = ForwardBatch::default();
    for p in parts {
        let start = b.token_ids.len();
        let ctx = p.seq.cached;
        let len = p.tokens.len();
        while p.seq.blocks.len() * block_size < ctx + len {
            p.seq.blocks.push(alloc.take());
        }
        b.token_ids.extend(&p.tokens);
        b.positions.extend((ctx..ctx + len).map(|x| x as u32));
        b.logits_indices
            .extend(p.logits_rows.iter().map(|r| start + r));
        b.seqs.push(SeqInBatch {
            start,
            len,
            context_before: ctx,
            block_table: p.seq.blocks.clone(),
            group_tables: Vec::new(),
        });
        p.seq.cached += len;
    }
    b
}

pub fn random_tokens(rng: &mut impl Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(0..vocab as u32)).collect()
}

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Differences between two sets of logits rows.
#[derive(Debug, Clone, Copy)]
pub struct Diff {
    pub max_abs: f32,
    pub rel_rms: f32,
    pub scale: f32,
}

pub fn diff(reference: &[f32], got: &[f32]) -> Diff {
    assert_eq!(reference.len(), got.len());
    let mut max_abs = 0f32;
    let (mut se, mut sr, mut scale) = (0f64, 0f64, 0f32);
    for (a, b) in reference.iter().zip(got) {
        let d = (a - b).abs();
        if d.is_nan() || max_abs.is_nan() {
            max_abs = f32::NAN;
        } else if d > max_abs {
            max_abs = d;
        }
        se += (d as f64) * (d as f64);
        sr += (*a as f64) * (*a as f64);
        scale = scale.max(a.abs());
    }
    Diff {
        max_abs,
        rel_rms: (se / sr.max(1e-30)).sqrt() as f32,
        scale,
    }
}
