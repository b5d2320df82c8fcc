//! Each CUDA kernel against scalar reference math written here (f64 where it matters), on random
//! data with awkward sizes. Without a GPU every test prints `SKIPPED: ...` and passes.
//!
//! Tolerances: f32 kernels must agree to ~1e-5 relative (only summation order and `expf`/`tanhf`
//! ulps differ); bf16 outputs to one bf16 rounding (2^-8 relative, 1/200 allowed for a rounding
//! tie broken the other way); the f16 KV cache written by the kernel must equal
//! `half::f16::from_f32` bit for bit; embedding gather, bias add and argmax exactly.

mod common;

use common::*;
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_backend_cuda::ops::{GpuOps, HeadNormRope, PagedAttention};
use switchyard_core::{Activation, BlockId, SeqInBatch};

fn ops() -> Option<GpuOps> {
    gpu_or_skip()?;
    let ops = GpuOps::new(0).expect("GpuOps::new");
    let b = ops.kernel_build();
    eprintln!(
        "kernels: {} for {} (NVRTC {}.{}), {}, {:.2}s compile",
        b.format,
        b.arch,
        b.nvrtc_version.0,
        b.nvrtc_version.1,
        if b.from_cache {
            "from cache"
        } else {
            "compiled"
        },
        b.compile_seconds
    );
    Some(ops)
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[track_caller]
fn assert_close(what: &str, reference: &[f32], got: &[f32], rel: f32, abs: f32) {
    assert_eq!(reference.len(), got.len(), "{what}: lengths");
    let mut worst = (0usize, 0f32);
    for (i, (r, g)) in reference.iter().zip(got).enumerate() {
        let err = (r - g).abs();
        let tol = abs + rel * r.abs();
        assert!(
            err <= tol,
            "{what}: element {i}: expected {r}, got {g} (|Δ| {err:e} > {tol:e})"
        );
        if err > worst.1 {
            worst = (i, err);
        }
    }
    eprintln!(
        "{what}: {} values, max|Δ| {:.3e} at {}",
        reference.len(),
        worst.1,
        worst.0
    );
}

fn bf16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect()
}

fn ref_rmsnorm(row: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ss = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / row.len() as f64;
    let inv = 1.0 / (ss + eps as f64).sqrt();
    row.iter()
        .zip(w)
        .map(|(v, g)| (*v as f64 * inv * *g as f64) as f32)
        .collect()
}

fn inv_freq(base: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / head_dim as f64) as f32)
        .collect()
}

#[test]
fn gemm_uses_row_major_weights_and_activations() {
    let Some(ops) = ops() else { return };
    let mut r = rng(1);
    for (rows, cols, n) in [(300, 256, 1), (300, 256, 7), (77, 96, 64), (1000, 640, 3)] {
        let w = bf16_round(&normals(&mut r, rows * cols, 1.0));
        let x = bf16_round(&normals(&mut r, n * cols, 1.0));
        let got = ops.gemm_bf16(&w, rows, &x, n).unwrap();
        let mut reference = vec![0f32; n * rows];
        let mut bound = vec![0f32; n * rows];
        for t in 0..n {
            for o in 0..rows {
                let (mut s, mut a) = (0f64, 0f64);
                for c in 0..cols {
                    let p = w[o * cols + c] as f64 * x[t * cols + c] as f64;
                    s += p;
                    a += p.abs();
                }
                reference[t * rows + o] = s as f32;
                bound[t * rows + o] = a as f32;
            }
        }
        for (i, ((r, g), b)) in reference.iter().zip(&got).zip(&bound).enumerate() {
            assert!(
                (r - g).abs() <= 2e-4 * b + 1e-5,
                "gemm {rows}x{cols}x{n}: [{i}] expected {r}, got {g}"
            );
        }
        eprintln!("gemm {rows}x{cols}, n={n}: ok");
    }
}

#[test]
fn rmsnorm_matches_reference() {
    let Some(ops) = ops() else { return };
    let mut r = rng(2);
    for (rows, width) in [(5, 640), (3, 896), (7, 100), (1, 2048)] {
        let x = normals(&mut r, rows * width, 2.0);
        let w: Vec<f32> = (0..width).map(|_| 1.0 + 0.2 * normal(&mut r)).collect();
        let got = ops.rmsnorm(&x, &w, 1e-6).unwrap();
        let reference: Vec<f32> = x
            .chunks(width)
            .flat_map(|row| ref_rmsnorm(row, &w, 1e-6))
            .collect();
        assert_close(
            &format!("rmsnorm {rows}x{width}"),
            &reference,
            &got,
            1e-5,
            1e-6,
        );
    }
}

#[test]
fn rmsnorm_gathers_rows_to_bf16() {
    let Some(ops) = ops() else { return };
    let mut r = rng(3);
    let width = 896;
    let x = normals(&mut r, 6 * width, 1.0);
    let w: Vec<f32> = (0..width).map(|_| 1.0 + 0.2 * normal(&mut r)).collect();
    let rows = [5u32, 0, 5, 2];
    let got = ops.rmsnorm_gather_bf16(&x, &rows, &w, 1e-6).unwrap();
    let reference: Vec<f32> = rows
        .iter()
        .flat_map(|&i| ref_rmsnorm(&x[i as usize * width..(i as usize + 1) * width], &w, 1e-6))
        .collect();
    assert_close(
        "rmsnorm gather -> bf16",
        &reference,
        &got,
        1.0 / 256.0,
        1e-6,
    );
}

#[test]
fn residual_rmsnorm_all_variants() {
    let Some(ops) = ops() else { return };
    let mut r = rng(4);
    let (rows, width) = (9, 640);
    let x = normals(&mut r, rows * width, 1.0);
    let o = normals(&mut r, rows * width, 3.0);
    let pw: Vec<f32> = (0..width).map(|_| 1.0 + 0.2 * normal(&mut r)).collect();
    let nw: Vec<f32> = (0..width).map(|_| 1.0 + 0.2 * normal(&mut r)).collect();
    for (post, next) in [(false, false), (true, false), (false, true), (true, true)] {
        let got = ops
            .residual_rmsnorm(
                &x,
                &o,
                width,
                (post.then_some(&pw[..]), next.then_some(&nw[..])),
                1e-6,
            )
            .unwrap();
        let mut xr = x.clone();
        for (xrow, orow) in xr.chunks_mut(width).zip(o.chunks(width)) {
            let add = if post {
                ref_rmsnorm(orow, &pw, 1e-6)
            } else {
                orow.to_vec()
            };
            for (a, b) in xrow.iter_mut().zip(add) {
                *a += b;
            }
        }
        assert_close(
            &format!("residual x (post {post}, next {next})"),
            &xr,
            &got.0,
            1e-5,
            1e-5,
        );
        if next {
            let h: Vec<f32> = xr
                .chunks(width)
                .flat_map(|row| ref_rmsnorm(row, &nw, 1e-6))
                .collect();
            assert_close(
                &format!("residual h (post {post})"),
                &h,
                &got.1,
                1.0 / 256.0,
                1e-5,
            );
        } else {
            assert!(got.1.is_empty());
        }
    }
}

#[test]
fn bias_add_matches_reference() {
    let Some(ops) = ops() else { return };
    let mut r = rng(5);
    let cols = 1152;
    let y = normals(&mut r, 5 * cols, 1.0);
    let b = normals(&mut r, cols, 1.0);
    let got = ops.add_bias(&y, &b).unwrap();
    let reference: Vec<f32> = y.iter().enumerate().map(|(i, v)| v + b[i % cols]).collect();
    assert_close("add_bias", &reference, &got, 0.0, 0.0);
}

/// The reference: CPU backend semantics, rmsnorm → rope → (q) * scale, per head.
fn ref_head_norm_rope(p: &HeadNormRope<'_>) -> Vec<f32> {
    let mut out = p.qkv.to_vec();
    let hd = p.head_dim;
    let half = hd / 2;
    for (t, row) in out.chunks_mut(p.row_stride).enumerate() {
        for h in 0..p.n_q_heads + p.n_k_heads {
            let is_q = h < p.n_q_heads;
            let head = &mut row[h * hd..(h + 1) * hd];
            let norm = if is_q { p.q_norm } else { p.k_norm };
            if let Some(w) = norm {
                let v = ref_rmsnorm(head, w, p.eps);
                head.copy_from_slice(&v);
            }
            let pos = p.positions[t];
            for i in 0..half {
                let theta = pos as f32 * p.inv_freq[i];
                let (s, c) = theta.sin_cos();
                let (a, b) = if p.neox {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
            if is_q {
                for e in head.iter_mut() {
                    *e *= p.q_scale;
                }
            }
        }
    }
    out
}

#[test]
fn head_norm_rope_neox_and_norm_styles() {
    let Some(ops) = ops() else { return };
    let mut r = rng(6);
    let positions = [0u32, 1, 17, 511, 4000];
    for (head_dim, nq, nk) in [(64, 4, 2), (256, 4, 1), (32, 8, 2)] {
        let stride = (nq + 2 * nk) * head_dim; // [q | k | v] like the model
        let qkv = normals(&mut r, positions.len() * stride, 1.5);
        let qn: Vec<f32> = (0..head_dim).map(|_| 1.0 + 0.2 * normal(&mut r)).collect();
        let kn: Vec<f32> = (0..head_dim).map(|_| 1.0 + 0.2 * normal(&mut r)).collect();
        let inv = inv_freq(10_000.0, head_dim);
        for neox in [true, false] {
            for with_norm in [true, false] {
                let p = HeadNormRope {
                    qkv: &qkv,
                    row_stride: stride,
                    n_q_heads: nq,
                    n_k_heads: nk,
                    head_dim,
                    q_norm: with_norm.then_some(&qn[..]),
                    k_norm: with_norm.then_some(&kn[..]),
                    eps: 1e-6,
                    positions: &positions,
                    inv_freq: &inv,
                    neox,
                    q_scale: 1.0 / (head_dim as f32).sqrt(),
                };
                let got = ops.head_norm_rope(&p).unwrap();
                let reference = ref_head_norm_rope(&p);
                assert_close(
                    &format!("head_norm_rope d={head_dim} neox={neox} norm={with_norm}"),
                    &reference,
                    &got,
                    2e-5,
                    2e-5,
                );
            }
        }
    }
}

#[test]
fn gelu_and_silu_times_up() {
    let Some(ops) = ops() else { return };
    let mut r = rng(7);
    for (ffn, act) in [
        (2048, Activation::GeluTanh),
        (4864, Activation::Silu),
        (100, Activation::GeluTanh),
    ] {
        let gu = normals(&mut r, 3 * 2 * ffn, 3.0);
        let got = ops.act_mul(&gu, ffn, act).unwrap();
        // f32 reference in the CPU backend's operation order. Where 1 + tanh(...) nearly cancels
        // (x around -4), one ulp of tanhf is a large relative error of a tiny result, so the
        // tolerance also scales with |gate * up|.
        let mut worst = 0f32;
        for (t, row) in gu.chunks(2 * ffn).enumerate() {
            for c in 0..ffn {
                let (g, u) = (row[c], row[ffn + c]);
                let a = match act {
                    Activation::GeluTanh => {
                        0.5 * g * (1.0 + (0.797_884_6f32 * (g + 0.044715 * g * g * g)).tanh())
                    }
                    Activation::Silu => g / (1.0 + (-g).exp()),
                };
                let (r, v) = (a * u, got[t * ffn + c]);
                let tol = 2e-5 * r.abs() + 1e-6 * (g * u).abs() + 1e-7;
                assert!(
                    (r - v).abs() <= tol,
                    "act_mul {act:?}: gate {g}, up {u}: expected {r}, got {v}"
                );
                worst = worst.max((r - v).abs());
            }
        }
        eprintln!("act_mul {act:?} ffn={ffn}: max|Δ| {worst:.3e}");
    }
}

struct AttnCase {
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    window: usize,
    /// (context_before, len) per sequence.
    seqs: Vec<(usize, usize)>,
}

fn run_attention_case(ops: &GpuOps, case: &AttnCase, seed: u64) {
    let mut r = rng(seed);
    let (hd, kvd, qd) = (
        case.head_dim,
        case.n_kv_heads * case.head_dim,
        case.n_heads * case.head_dim,
    );
    let blocks_needed: usize = case
        .seqs
        .iter()
        .map(|(c, l)| (c + l).div_ceil(case.block_size))
        .sum();
    let num_blocks = blocks_needed + 3;
    let mut alloc = BlockAlloc::new(num_blocks, seed);
    let mut seqs = Vec::new();
    let mut start = 0;
    for &(ctx, len) in &case.seqs {
        let nb = (ctx + len).div_ceil(case.block_size);
        let table: Vec<BlockId> = (0..nb).map(|_| alloc.take()).collect();
        seqs.push(SeqInBatch {
            start,
            len,
            context_before: ctx,
            block_table: table,
            group_tables: Vec::new(),
        });
        start += len;
    }
    let n = start;
    let slots = num_blocks * case.block_size;
    let k_cache: Vec<f16> = normals(&mut r, slots * kvd, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let v_cache: Vec<f16> = normals(&mut r, slots * kvd, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    // Scaled queries: scores of order a few units, so the softmax is neither flat nor one-hot.
    let q = normals(&mut r, n * qd, 2.0 / (hd as f32).sqrt());
    let new_k = normals(&mut r, n * kvd, 1.0);
    let new_v = normals(&mut r, n * kvd, 1.0);
    let p = PagedAttention {
        n_heads: case.n_heads,
        n_kv_heads: case.n_kv_heads,
        head_dim: hd,
        block_size: case.block_size,
        num_blocks,
        window: case.window,
        q: &q,
        new_k: &new_k,
        new_v: &new_v,
        k_cache: &k_cache,
        v_cache: &v_cache,
        seqs: &seqs,
    };
    let got = ops.paged_attention(&p).unwrap();

    // Reference: write the step's k/v as f16, then exact softmax attention in f64.
    let (mut kc, mut vc) = (k_cache.clone(), v_cache.clone());
    let slot = |s: &SeqInBatch, pos: usize| {
        s.block_table[pos / case.block_size].0 as usize * case.block_size + pos % case.block_size
    };
    for s in &seqs {
        for i in 0..s.len {
            let sl = slot(s, s.context_before + i);
            let t = s.start + i;
            for c in 0..kvd {
                kc[sl * kvd + c] = f16::from_f32(new_k[t * kvd + c]);
                vc[sl * kvd + c] = f16::from_f32(new_v[t * kvd + c]);
            }
        }
    }
    assert!(
        got.k_cache == kc,
        "K cache after kv_write differs from f16::from_f32"
    );
    assert!(
        got.v_cache == vc,
        "V cache after kv_write differs from f16::from_f32"
    );
    let group = case.n_heads / case.n_kv_heads;
    let mut reference = vec![0f32; n * qd];
    for s in &seqs {
        for i in 0..s.len {
            let t = s.start + i;
            let pos = s.context_before + i;
            let lo = if case.window == 0 {
                0
            } else {
                (pos + 1).saturating_sub(case.window)
            };
            for h in 0..case.n_heads {
                let kvh = h / group;
                let qh = &q[t * qd + h * hd..t * qd + (h + 1) * hd];
                let scores: Vec<f64> = (lo..=pos)
                    .map(|j| {
                        let base = slot(s, j) * kvd + kvh * hd;
                        (0..hd).map(|d| qh[d] as f64 * kc[base + d].to_f64()).sum()
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let ws: Vec<f64> = scores.iter().map(|x| (x - mx).exp()).collect();
                let sum: f64 = ws.iter().sum();
                for d in 0..hd {
                    let acc: f64 = (lo..=pos)
                        .zip(&ws)
                        .map(|(j, w)| w * vc[slot(s, j) * kvd + kvh * hd + d].to_f64())
                        .sum();
                    reference[t * qd + h * hd + d] = (acc / sum) as f32;
                }
            }
        }
    }
    assert_close(
        &format!(
            "attention {}q/{}kv d={} block={} window={} seqs={:?}",
            case.n_heads, case.n_kv_heads, hd, case.block_size, case.window, case.seqs
        ),
        &reference,
        &got.out,
        1e-4,
        1e-5,
    );
}

#[test]
fn paged_attention_varlen_gqa_causal() {
    let Some(ops) = ops() else { return };
    let seqs = vec![(0, 37), (5, 1), (100, 1), (17, 7), (0, 1), (31, 2)];
    run_attention_case(
        &ops,
        &AttnCase {
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 64,
            block_size: 16,
            window: 0,
            seqs,
        },
        8,
    );
}

#[test]
fn paged_attention_sliding_window() {
    let Some(ops) = ops() else { return };
    let seqs = vec![(0, 37), (5, 1), (100, 1), (17, 7), (0, 1), (14, 3)];
    run_attention_case(
        &ops,
        &AttnCase {
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 64,
            block_size: 16,
            window: 16,
            seqs,
        },
        9,
    );
}

#[test]
fn paged_attention_gemma_shape_long_context_window() {
    let Some(ops) = ops() else { return };
    // Gemma 3 270M: 4 query heads on 1 kv head of 256, window 512, contexts past the window.
    let seqs = vec![(700, 1), (0, 600), (511, 1), (512, 2)];
    let case = AttnCase {
        n_heads: 4,
        n_kv_heads: 1,
        head_dim: 256,
        block_size: 16,
        window: 512,
        seqs: seqs.clone(),
    };
    run_attention_case(&ops, &case, 10);
    run_attention_case(&ops, &AttnCase { window: 0, ..case }, 11);
}

#[test]
fn paged_attention_odd_block_size_and_head_dim() {
    let Some(ops) = ops() else { return };
    let seqs = vec![(0, 13), (9, 4), (3, 1)];
    run_attention_case(
        &ops,
        &AttnCase {
            n_heads: 14,
            n_kv_heads: 2,
            head_dim: 96,
            block_size: 5,
            window: 3,
            seqs,
        },
        12,
    );
    let seqs = vec![(0, 9), (40, 1)];
    run_attention_case(
        &ops,
        &AttnCase {
            n_heads: 2,
            n_kv_heads: 2,
            head_dim: 128,
            block_size: 1,
            window: 0,
            seqs,
        },
        13,
    );
}

#[test]
fn argmax_picks_lowest_index_of_the_maximum() {
    let Some(ops) = ops() else { return };
    let mut r = rng(14);
    for cols in [1000, 262_144, 151_936, 31] {
        let rows = 4;
        let mut x = normals(&mut r, rows * cols, 1.0);
        // Row 1: a tie at two indices; row 2: everything -inf but one; row 3: all equal.
        let (i1, i2) = (cols / 7, cols - 2);
        x[cols + i1] = 50.0;
        x[cols + i2] = 50.0;
        for v in &mut x[2 * cols..3 * cols] {
            *v = f32::NEG_INFINITY;
        }
        x[2 * cols + cols / 2] = -1e30;
        for v in &mut x[3 * cols..4 * cols] {
            *v = 0.25;
        }
        let got = ops.argmax(&x, cols).unwrap();
        assert_eq!(
            got[0] as usize,
            argmax(&x[..cols]),
            "cols {cols}: random row"
        );
        assert_eq!(got[1] as usize, i1.min(i2), "cols {cols}: tie");
        assert_eq!(got[2] as usize, cols / 2, "cols {cols}: -inf row");
        assert_eq!(got[3], 0, "cols {cols}: constant row");
    }
}

#[test]
fn embedding_gather_and_softcap() {
    let Some(ops) = ops() else { return };
    let mut r = rng(15);
    let (vocab, hidden) = (1000, 640);
    let table = normals(&mut r, vocab * hidden, 0.05);
    let ids = [3u32, 999, 0, 3, 512];
    let scale = (hidden as f32).sqrt();
    let got = ops.embed(&table, hidden, &ids, scale).unwrap();
    let reference: Vec<f32> = ids
        .iter()
        .flat_map(|&i| bf16_round(&table[i as usize * hidden..(i as usize + 1) * hidden]))
        .map(|v| v * scale)
        .collect();
    assert_close("embedding gather", &reference, &got, 0.0, 0.0);

    let x: Vec<f32> = (0..5000).map(|_| r.gen_range(-200.0..200.0)).collect();
    let got = ops.softcap(&x, 30.0).unwrap();
    let reference: Vec<f32> = x
        .iter()
        .map(|v| (30.0 * (*v as f64 / 30.0).tanh()) as f32)
        .collect();
    assert_close("softcap", &reference, &got, 2e-6, 1e-6);
}

#[test]
fn kv_block_copy() {
    let Some(ops) = ops() else { return };
    let block_elems = 16 * 128;
    let cache: Vec<u16> = (0..10 * block_elems).map(|i| (i % 65_521) as u16).collect();
    let pairs = [(1u32, 7u32), (2, 8), (1, 9)];
    let got = ops.copy_blocks(&cache, block_elems, &pairs).unwrap();
    let mut reference = cache.clone();
    for &(s, d) in &pairs {
        let (s, d) = (s as usize * block_elems, d as usize * block_elems);
        reference.copy_within(s..s + block_elems, d);
    }
    assert!(got == reference, "copy_blocks result differs");
}
