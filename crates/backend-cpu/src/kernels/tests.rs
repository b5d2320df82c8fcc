//! Kernel tests: every weight type at every SIMD level this CPU has, against the dequantized
//! reference of `switchyard_core::dtype::dequantize`.
//!
//! Two references per output, both in f64:
//! - `exact`: dequantized weights times the f32 activations, what the model means;
//! - `quant`: dequantized weights times the activations as the kernels see them after 8-bit
//!   quantization (`d * q`; equal to `x` for float weights).
//!
//! Tolerances, with `A = sum_i |w_i x_i|` (the magnitude the rounding errors scale with):
//! - against `quant`, only f32 rounding remains: scale products, the i32 -> f32 conversion and
//!   an accumulation over `cols / 32` block terms, each with relative error 2^-24. `2e-5 * A + 1e-6` is
//!   several times the worst case seen and far below the size of any indexing or scaling bug
//!   (which moves the result by about `A / sqrt(cols)` or more).
//! - against `exact`, add the activation quantization error: `|x - d q| <= d / 2` (plus
//!   relative 1e-6 from rounding `x * (127 / amax)`), so the output moves by at most
//!   `sum_i |w_i| * d_block(i) / 2`; we allow `0.5005 * sum_i |w_i| d_block(i)` on top.
//! - SIMD against scalar: both compute the same integer block sums from bit-identical
//!   quantized activations, so they differ only by f32 summation order: `2e-5 * A + 1e-6`.

use half::{bf16, f16};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard_core::dtype::dequantize;
use switchyard_core::{Activation, GgmlType};

use super::quant::{quantize_q8_scalar, quantize_q8k_scalar, Q8Acts, Q8KActs, QK8, QKK};
use super::transposed::{k_quants, set_k_quants};
use super::*;

const TYPES: [GgmlType; 15] = [
    GgmlType::Q8_0,
    GgmlType::Q5_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q5_K,
    GgmlType::Q3_K,
    GgmlType::Q2_K,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

/// The K-quants and IQ4_XS: 256-element super-blocks over Q8_K activations.
fn is_k(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_XS
    )
}

/// The 32-element block types: Q8 activations.
fn is_q8(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q5_0
            | GgmlType::Q8_0
            | GgmlType::Q4_1
            | GgmlType::Q5_1
            | GgmlType::IQ4_NL
    )
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// A random `rows x cols` matrix of `ty`: random quant bytes, every scale a sane finite f16.
fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let mut data: Vec<u8> = (0..rows * ty.bytes_for(cols)).map(|_| rng.gen()).collect();
    for b in data.chunks_exact_mut(ty.block_bytes()) {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL => {
                put_f16(b, 0, rng.gen_range(-0.1..0.1))
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                put_f16(b, 0, rng.gen_range(-0.1..0.1));
                put_f16(b, 2, rng.gen_range(-1.0..1.0));
            }
            GgmlType::IQ4_XS => put_f16(b, 0, rng.gen_range(-0.01..0.01)),
            GgmlType::Q4_K | GgmlType::Q5_K => {
                put_f16(b, 0, rng.gen_range(-0.1..0.1));
                put_f16(b, 2, rng.gen_range(0.0..0.1));
            }
            GgmlType::Q6_K => put_f16(b, 208, rng.gen_range(-0.1..0.1)),
            GgmlType::Q3_K => put_f16(b, 108, rng.gen_range(-0.1..0.1)),
            GgmlType::Q2_K => {
                put_f16(b, 80, rng.gen_range(-0.1..0.1));
                put_f16(b, 82, rng.gen_range(0.0..0.1));
            }
            GgmlType::F16 => put_f16(b, 0, rng.gen_range(-1.0..1.0)),
            GgmlType::BF16 => {
                b.copy_from_slice(&bf16::from_f32(rng.gen_range(-1.0..1.0)).to_le_bytes())
            }
            GgmlType::F32 => b.copy_from_slice(&rng.gen_range(-1.0f32..1.0).to_le_bytes()),
            GgmlType::Q8_K => unreachable!(),
        }
    }
    data
}

/// Random activations: each token has its own magnitude, some elements are outliers, and token
/// 1 (when there are at least 3) is all zeros.
fn random_acts(cols: usize, n_tok: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut x = Vec::with_capacity(cols * n_tok);
    for t in 0..n_tok {
        let scale = 10f32.powf(rng.gen_range(-2.0..2.0));
        for _ in 0..cols {
            let mut v = rng.gen_range(-1.0f32..1.0) * scale;
            if rng.gen_ratio(1, 50) {
                v *= 30.0;
            }
            x.push(if n_tok >= 3 && t == 1 { 0.0 } else { v });
        }
    }
    x
}

/// The activations as the kernels see them (`d * q` per element) and each element's block
/// scale; the activations themselves (scale 0) for float weights.
fn seen_acts(ty: GgmlType, x: &[f32], cols: usize, n_tok: usize) -> (Vec<f32>, Vec<f32>) {
    match ty {
        ty if is_q8(ty) => {
            let a = Q8Acts::quantize(Isa::get(SimdLevel::Scalar), x, cols, n_tok);
            let d: Vec<f32> = (0..x.len()).map(|i| a.d[i / QK8]).collect();
            (
                a.qs.iter().zip(&d).map(|(&q, &d)| d * q as f32).collect(),
                d,
            )
        }
        ty if is_k(ty) => {
            let a = Q8KActs::quantize(Isa::get(SimdLevel::Scalar), x, cols, n_tok);
            let d: Vec<f32> = (0..x.len()).map(|i| a.d[i / QKK]).collect();
            (
                a.qs.iter().zip(&d).map(|(&q, &d)| d * q as f32).collect(),
                d,
            )
        }
        _ => (x.to_vec(), vec![0.0; x.len()]),
    }
}

/// Checks `matmul_with` at every available level (and `matmul`) against the references.
fn check(ty: GgmlType, rows: usize, cols: usize, n_tok: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = random_matrix(ty, rows, cols, &mut rng);
    let x = random_acts(cols, n_tok, &mut rng);
    let w = QMatrix {
        dtype: ty,
        rows,
        cols,
        data: &data,
    };
    let (xq, xd) = seen_acts(ty, &x, cols, n_tok);

    let mut wf = vec![0f32; rows * cols];
    dequantize(ty, &data, &mut wf);

    let mut results = Vec::new();
    for level in available_levels() {
        let mut out = vec![f32::NAN; rows * n_tok];
        Isa::get(level).matmul(&w, &x, n_tok, &mut out);
        results.push((level.to_string(), out));
    }
    let mut out = vec![f32::NAN; rows * n_tok];
    matmul(&w, &x, n_tok, &mut out);
    results.push((simd_level().to_string(), out));
    results.extend(packed(&w, &x, n_tok));

    let scalar = &results[0].1;
    // The NEON kernels of the K-quants do the scalar kernel's float operations on the same exact
    // integers: the same bits.
    if is_k(ty) {
        for (level, out) in &results {
            if level.starts_with("neon") {
                let same = out
                    .iter()
                    .zip(scalar)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{ty} {level}: not the scalar bits");
            }
        }
    }
    for t in 0..n_tok {
        let xt = &x[t * cols..(t + 1) * cols];
        let xqt = &xq[t * cols..(t + 1) * cols];
        let xdt = &xd[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let wr = &wf[r * cols..(r + 1) * cols];
            let (mut exact, mut quant, mut mag, mut qerr) = (0f64, 0f64, 0f64, 0f64);
            for i in 0..cols {
                let (w, x, xq) = (wr[i] as f64, xt[i] as f64, xqt[i] as f64);
                exact += w * x;
                quant += w * xq;
                mag += (w * x).abs().max((w * xq).abs());
                qerr += w.abs() * xdt[i] as f64;
            }
            let tight = 2e-5 * mag + 1e-6;
            let loose = tight + 0.5005 * qerr;
            let s = scalar[t * rows + r] as f64;
            for (level, out) in &results {
                let v = out[t * rows + r] as f64;
                let ctx = format!(
                    "{ty} {level} rows={rows} cols={cols} n_tok={n_tok} seed={seed} t={t} r={r}"
                );
                assert!(v.is_finite(), "{ctx}: not finite ({v})");
                assert!(
                    (v - quant).abs() <= tight,
                    "{ctx}: {v} vs quantized reference {quant} (tol {tight})"
                );
                assert!(
                    (v - exact).abs() <= loose,
                    "{ctx}: {v} vs exact reference {exact} (tol {loose})"
                );
                assert!(
                    (v - s).abs() <= tight,
                    "{ctx}: {v} vs scalar {s} (tol {tight})"
                );
            }
        }
    }
}

/// `matmul_packed_with` of `w` at every available level that has packed kernels (AVX2 and up),
/// when `PackedQ8` takes `w` (Q8_0 on a CPU with AVX2), labelled `packed-<level>`; empty
/// otherwise. The levels must agree to the bit (same integer sums, same float sequence).
/// Likewise `matmul_transposed_k_with` of the `TransposedK` copy of a Q4_K / Q6_K `w`
/// (`transposed-<level>`), which must give the bits of `matmul_with` on `w` at each level.
fn packed(w: &QMatrix<'_>, x: &[f32], n_tok: usize) -> Vec<(String, Vec<f32>)> {
    if let Some(t) = TransposedK::new(w) {
        assert_eq!(
            (t.rows(), t.cols(), t.bytes()),
            (w.rows, w.cols, w.rows * w.row_bytes())
        );
        return available_levels()
            .into_iter()
            .filter(|&l| l >= SimdLevel::Avx2)
            .map(|level| {
                let mut out = vec![f32::NAN; w.rows * n_tok];
                Isa::get(level).matmul_transposed_k(&t, x, n_tok, &mut out);
                let mut plain = vec![f32::NAN; w.rows * n_tok];
                Isa::get(level).matmul(w, x, n_tok, &mut plain);
                assert!(
                    out.iter()
                        .zip(&plain)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} {level}: transposed differs from the file layout (rows={} cols={} \
                     n_tok={n_tok})",
                    w.dtype,
                    w.rows,
                    w.cols
                );
                (format!("transposed-{level}"), out)
            })
            .collect();
    }
    // The transposed Q4_0 / Q5_0 / Q8_0 layout: the AVX2 kernel's bits, at every level.
    let mut pre = Vec::new();
    if let Some(t) = TransposedQ0::new(w) {
        assert_eq!((t.rows(), t.cols()), (w.rows, w.cols));
        assert_eq!(
            t.bytes(),
            w.rows * (w.cols / QK8).div_ceil(8) * 8 * w.dtype.block_bytes()
        );
        let mut plain = vec![f32::NAN; w.rows * n_tok];
        Isa::get(SimdLevel::Avx2).matmul(w, x, n_tok, &mut plain);
        for level in available_levels()
            .into_iter()
            .filter(|&l| l >= SimdLevel::Avx2)
        {
            let mut out = vec![f32::NAN; w.rows * n_tok];
            Isa::get(level).matmul_transposed_q0(&t, x, n_tok, &mut out);
            assert!(
                out.iter()
                    .zip(&plain)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} {level}: transposed differs from the AVX2 file layout (rows={} cols={} \
                 n_tok={n_tok})",
                w.dtype,
                w.rows,
                w.cols
            );
            pre.push((format!("transposed-q0-{level}"), out));
        }
    }
    let Some(p) = PackedQ8::new(w) else {
        return pre;
    };
    assert_eq!((p.rows(), p.cols()), (w.rows, w.cols));
    let outs: Vec<(String, Vec<f32>)> = available_levels()
        .into_iter()
        .filter(|&l| l >= SimdLevel::Avx2)
        .map(|level| {
            let mut out = vec![f32::NAN; w.rows * n_tok];
            Isa::get(level).matmul_packed(&p, x, n_tok, &mut out);
            (format!("packed-{level}"), out)
        })
        .collect();
    for (level, out) in &outs[1..] {
        assert!(
            out.iter()
                .zip(&outs[0].1)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{level} differs from {} (rows={} cols={} n_tok={n_tok})",
            outs[0].0,
            w.rows,
            w.cols
        );
    }
    pre.extend(outs);
    pre
}

#[test]
fn packed_q8_rows_dequantize_as_the_file_rows() {
    let mut rng = StdRng::seed_from_u64(39);
    // 21 rows: two full groups of 8 and a padded one; 3 blocks per row.
    let (rows, cols) = (21, 96);
    let data = random_matrix(GgmlType::Q8_0, rows, cols, &mut rng);
    let w = QMatrix {
        dtype: GgmlType::Q8_0,
        rows,
        cols,
        data: &data,
    };
    let Some(p) = PackedQ8::new(&w) else {
        assert!(detected_level() < SimdLevel::Avx2, "AVX2 packs Q8_0");
        return;
    };
    let (mut want, mut got) = (vec![0f32; cols], vec![f32::NAN; cols]);
    for r in 0..rows {
        switchyard_core::dtype::dequantize(GgmlType::Q8_0, w.row(r), &mut want);
        p.dequantize_row(r, &mut got);
        assert!(
            want.iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "row {r} differs"
        );
    }
}

#[test]
fn packed_q8_is_made_for_q8_0_with_avx2_only() {
    let data = vec![0u8; 3 * 34];
    let mut w = QMatrix {
        dtype: GgmlType::Q8_0,
        rows: 3,
        cols: 32,
        data: &data,
    };
    let p = PackedQ8::new(&w);
    assert_eq!(p.is_some(), detected_level() >= SimdLevel::Avx2);
    if let Some(p) = p {
        // One group of 8 rows (3 real, 5 padding) and one block: 256 quants, 8 f16 scales.
        assert_eq!(p.bytes(), 256 + 2 * 8);
    }
    w.dtype = GgmlType::Q4_0;
    assert!(PackedQ8::new(&w).is_none());
    assert!(TransposedK::new(&w).is_none());
    assert_eq!(
        TransposedQ0::new(&w).is_some(),
        detected_level() >= SimdLevel::Avx2
    );
}

/// `TransposedK`'s quant codec: reading a super-block's quants and writing them back gives the
/// same bytes, and what is written is read back (every quant value at every position).
#[test]
fn k_quant_codec_round_trips() {
    let mut rng = StdRng::seed_from_u64(5);
    for (ty, max) in [
        (GgmlType::Q4_K, 16),
        (GgmlType::Q6_K, 64),
        (GgmlType::Q5_K, 32),
        (GgmlType::Q3_K, 8),
        (GgmlType::Q2_K, 4),
        (GgmlType::IQ4_XS, 16),
    ] {
        for _ in 0..20 {
            let mut b: Vec<u8> = (0..ty.block_bytes()).map(|_| rng.gen()).collect();
            let orig = b.clone();
            let q = k_quants(ty, &b);
            set_k_quants(ty, &mut b, &q);
            assert_eq!(b, orig, "{ty}");
            let mut q2 = [0u8; QKK];
            for v in q2.iter_mut() {
                *v = rng.gen_range(0..max);
            }
            set_k_quants(ty, &mut b, &q2);
            assert_eq!(k_quants(ty, &b), q2, "{ty}");
        }
    }
}

fn cols_for(ty: GgmlType) -> &'static [usize] {
    match ty {
        ty if is_k(ty) => &[256, 512, 768, 2048],
        _ => &[32, 64, 224, 256, 416, 640, 896, 1312, 2048],
    }
}

fn grid(ty: GgmlType) {
    let mut seed = ty.id() as u64 * 1_000_003;
    for &cols in cols_for(ty) {
        for rows in [1, 3, 17, 33] {
            for n_tok in [1, 2, 3, 5, 7, 12, 16, 64] {
                seed += 1;
                check(ty, rows, cols, n_tok, seed);
            }
        }
    }
}

#[test]
fn matmul_q8_0() {
    grid(GgmlType::Q8_0);
}

#[test]
fn matmul_q5_0() {
    grid(GgmlType::Q5_0);
}

#[test]
fn matmul_q4_0() {
    grid(GgmlType::Q4_0);
}

#[test]
fn matmul_q4_k() {
    grid(GgmlType::Q4_K);
}

#[test]
fn matmul_q6_k() {
    grid(GgmlType::Q6_K);
}

#[test]
fn matmul_q5_k() {
    grid(GgmlType::Q5_K);
}

#[test]
fn matmul_q3_k() {
    grid(GgmlType::Q3_K);
}

#[test]
fn matmul_q2_k() {
    grid(GgmlType::Q2_K);
}

#[test]
fn matmul_q4_1() {
    grid(GgmlType::Q4_1);
}

#[test]
fn matmul_q5_1() {
    grid(GgmlType::Q5_1);
}

#[test]
fn matmul_iq4_nl() {
    grid(GgmlType::IQ4_NL);
}

#[test]
fn matmul_iq4_xs() {
    grid(GgmlType::IQ4_XS);
}

#[test]
fn matmul_f16() {
    grid(GgmlType::F16);
}

#[test]
fn matmul_bf16() {
    grid(GgmlType::BF16);
}

#[test]
fn matmul_f32() {
    grid(GgmlType::F32);
    // Row lengths that are not a multiple of the SIMD width.
    for (i, cols) in [1, 7, 9, 15, 17, 33, 100].into_iter().enumerate() {
        check(GgmlType::F32, 5, cols, 3, 77 + i as u64);
        check(GgmlType::F16, 5, cols, 5, 88 + i as u64);
        check(GgmlType::BF16, 5, cols, 2, 99 + i as u64);
    }
}

/// Quants at the ends of their ranges (Q8_0 -128 / 127, Q4_0 15, Q5_0 31, Q4_K 15 / Q5_K 31 with
/// scales and mins 63, Q6_K 63 with scales 127 / -128, Q3_K 3 with scales 31 and -4 with scales
/// -32, Q2_K 3 with scales and mins 15, Q4_1 15 / Q5_1 31 with min 1, IQ4_NL -127 and 113,
/// IQ4_XS -127 with scales -32 and 113 with scales 31) against activations
/// whose quants are all +-127: the kernels' i16 partial sums (pairs, and for Q4_0 / Q5_0 sums of
/// several vectors before widening) must not saturate, so every level gives the exact value.
#[test]
fn matmul_extreme_quants_do_not_saturate() {
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::Q3_K,
        GgmlType::Q2_K,
        GgmlType::Q4_1,
        GgmlType::Q5_1,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
    ];
    for ty in types {
        let k = is_k(ty);
        let col_set: &[usize] = if k {
            &[256, 512, 2048]
        } else {
            &[32, 224, 640, 2048]
        };
        for &cols in col_set {
            let rows = 5;
            let mut data = vec![0u8; rows * ty.bytes_for(cols)];
            for (bi, b) in data.chunks_exact_mut(ty.block_bytes()).enumerate() {
                match ty {
                    // Alternating blocks of all -128 and all 127.
                    GgmlType::Q8_0 => b[2..].fill(if bi % 2 == 0 { 0x80 } else { 0x7f }),
                    // Every quant 15, every scale and min 63 (all bits set), d = dmin = 1.
                    GgmlType::Q4_K | GgmlType::Q5_K => b[4..].fill(0xff),
                    // Alternating super-blocks: every quant 3 (all bits set) with scales 31, and
                    // every quant -4 (all bits clear) with scales -32.
                    GgmlType::Q3_K => b.fill(if bi % 2 == 0 { 0xff } else { 0 }),
                    // Every quant 3, every scale and min 15.
                    GgmlType::Q2_K => b.fill(0xff),
                    // Alternating blocks of all index 0 (-127) and all index 15 (113).
                    GgmlType::IQ4_NL => b[2..].fill(if bi % 2 == 0 { 0 } else { 0xff }),
                    // Alternating super-blocks: every value -127 with scales -32 (all bits
                    // clear), every value 113 with scales 31 (all bits set).
                    GgmlType::IQ4_XS => b.fill(if bi % 2 == 0 { 0 } else { 0xff }),
                    // Every quant 63, scales alternating 127 / -128 per super-block, d = 1.
                    GgmlType::Q6_K => {
                        b[..192].fill(0xff);
                        b[192..208].fill(if bi % 2 == 0 { 0x7f } else { 0x80 });
                    }
                    // Every quant 15 (Q4_0 / Q4_1) or 31 (Q5_0 / Q5_1: high bits all set).
                    _ => b[2..].fill(0xff),
                }
                match ty {
                    GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q4_1 | GgmlType::Q5_1 => {
                        put_f16(b, 0, 1.0);
                        put_f16(b, 2, 1.0);
                    }
                    GgmlType::Q6_K => put_f16(b, 208, 1.0),
                    GgmlType::Q3_K => put_f16(b, 108, 1.0),
                    GgmlType::Q2_K => {
                        put_f16(b, 80, 1.0);
                        put_f16(b, 82, 1.0);
                    }
                    _ => put_f16(b, 0, 1.0),
                }
            }
            let w = QMatrix {
                dtype: ty,
                rows,
                cols,
                data: &data,
            };
            let mut wf = vec![0f32; rows * cols];
            dequantize(ty, &data, &mut wf);
            for n_tok in [1, 4, 16] {
                // Token t: all +1 (quants 127) or all -1, or alternating signs per element.
                let x: Vec<f32> = (0..n_tok * cols)
                    .map(|i| match (i / cols) % 3 {
                        0 => 1.0,
                        1 => -1.0,
                        _ => {
                            if i % 2 == 0 {
                                1.0
                            } else {
                                -1.0
                            }
                        }
                    })
                    .collect();
                let mut outs: Vec<(String, Vec<f32>)> = available_levels()
                    .into_iter()
                    .map(|level| {
                        let mut out = vec![f32::NAN; rows * n_tok];
                        Isa::get(level).matmul(&w, &x, n_tok, &mut out);
                        (level.to_string(), out)
                    })
                    .collect();
                outs.extend(packed(&w, &x, n_tok));
                for (level, out) in outs {
                    for t in 0..n_tok {
                        for r in 0..rows {
                            let want: f64 = (0..cols)
                                .map(|i| wf[r * cols + i] as f64 * x[t * cols + i] as f64)
                                .sum();
                            let mag: f64 = (0..cols).map(|i| wf[r * cols + i].abs() as f64).sum();
                            let v = out[t * rows + r] as f64;
                            assert!(
                                (v - want).abs() <= 1e-5 * mag,
                                "{ty} {level} cols={cols} n_tok={n_tok} t={t} r={r}: {v} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Enough rows that the work is split over several rayon chunks.
#[test]
fn matmul_many_rows() {
    for (i, ty) in TYPES.into_iter().enumerate() {
        let cols = if is_k(ty) { 512 } else { 640 };
        check(ty, 517, cols, 1, 500 + i as u64);
        check(ty, 301, cols, 5, 600 + i as u64);
    }
}

/// Enough tokens that the activations are taken in several blocks (`TOKEN_BLOCK_BYTES`).
#[test]
fn matmul_many_tokens() {
    for (i, ty) in TYPES.into_iter().enumerate() {
        check(ty, 19, 4096, 41, 700 + i as u64);
    }
}

#[test]
fn matmul_empty_shapes() {
    let w = QMatrix {
        dtype: GgmlType::Q8_0,
        rows: 0,
        cols: 64,
        data: &[],
    };
    let mut out = [];
    matmul(&w, &[0.0; 64], 1, &mut out);
    let data = vec![0u8; 34 * 2 * 3];
    let w = QMatrix {
        dtype: GgmlType::Q8_0,
        rows: 3,
        cols: 64,
        data: &data,
    };
    matmul(&w, &[], 0, &mut []);
}

#[test]
#[should_panic(expected = "wrong length")]
fn matmul_rejects_bad_lengths() {
    let data = vec![0u8; 34 * 2 * 3];
    let w = QMatrix {
        dtype: GgmlType::Q8_0,
        rows: 3,
        cols: 64,
        data: &data,
    };
    let mut out = [0.0; 3];
    matmul(&w, &[0.0; 63], 1, &mut out);
}

/// The quantizers: every level bit-identical to the scalar one, and `|x - d q| <= d / 2`.
#[test]
fn activation_quantization() {
    let mut rng = StdRng::seed_from_u64(7);
    for n_tok in [1, 3, 8] {
        let cols = 1024;
        let mut x = random_acts(cols, n_tok, &mut rng);
        x[5] = -x.iter().fold(0f32, |m, v| m.max(v.abs())) * 2.0; // a negative maximum
        let q8 = Q8Acts::quantize(Isa::get(SimdLevel::Scalar), &x, cols, n_tok);
        let q8k = Q8KActs::quantize(Isa::get(SimdLevel::Scalar), &x, cols, n_tok);
        for (i, &v) in x.iter().enumerate() {
            for (q, d) in [(q8.qs[i], q8.d[i / QK8]), (q8k.qs[i], q8k.d[i / QKK])] {
                assert!(q >= -127);
                let err = (v - d * q as f32).abs();
                assert!(err <= d * 0.5 * (1.0 + 1e-5), "x={v} q={q} d={d}");
            }
        }
        for (b, s) in q8.s.iter().enumerate() {
            let sum: i32 = q8.qs[b * QK8..(b + 1) * QK8]
                .iter()
                .map(|&q| q as i32)
                .sum();
            assert_eq!(*s, q8.d[b] * sum as f32);
        }
        for (b, s) in q8k.bsums.iter().enumerate() {
            let sum: i32 = q8k.qs[b * 16..(b + 1) * 16].iter().map(|&q| q as i32).sum();
            assert_eq!(*s as i32, sum);
        }
        if n_tok >= 3 {
            let z = &q8k.qs[cols..2 * cols];
            assert!(z.iter().all(|&q| q == 0));
            assert!(q8k.d(1).iter().all(|&d| d == 0.0));
        }
        for level in available_levels() {
            let a = Q8Acts::quantize(Isa::get(level), &x, cols, n_tok);
            assert_eq!((&a.qs, &a.d, &a.s), (&q8.qs, &q8.d, &q8.s), "{level}");
            let a = Q8KActs::quantize(Isa::get(level), &x, cols, n_tok);
            assert_eq!(
                (&a.qs, &a.d, &a.bsums),
                (&q8k.qs, &q8k.d, &q8k.bsums),
                "{level}"
            );
        }
    }
    // The scalar functions on their own.
    let x: Vec<f32> = (0..256).map(|i| i as f32 - 128.0).collect();
    let (mut qs, mut d, mut s, mut bs) = (vec![0; 256], vec![0.0; 8], vec![0.0; 8], vec![0; 16]);
    quantize_q8_scalar(&x, &mut qs, &mut d, &mut s);
    assert_eq!(qs[0], -127);
    assert_eq!(d[0], 128.0 / 127.0);
    quantize_q8k_scalar(&x, &mut qs, &mut d[..1], &mut bs);
    assert_eq!((qs[0], qs[128], qs[255]), (-127, 0, 126));
}

#[test]
fn dot_f32_levels() {
    let mut rng = StdRng::seed_from_u64(3);
    for n in [0, 1, 7, 8, 9, 31, 32, 33, 100, 640, 1001] {
        let a: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let mag: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 * y as f64).abs())
            .sum();
        for level in available_levels() {
            let v = Isa::get(level).dot_f32(&a, &b) as f64;
            assert!(
                (v - exact).abs() <= 1e-5 * mag + 1e-6,
                "{level} n={n}: {v} vs {exact}"
            );
        }
        assert!((dot_f32(&a, &b) as f64 - exact).abs() <= 1e-5 * mag + 1e-6);
    }
}

#[test]
fn f16_attention_kernels_levels() {
    let mut rng = StdRng::seed_from_u64(4);
    for n in [0, 1, 7, 8, 9, 31, 32, 33, 100, 256, 1001] {
        let q: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let k: Vec<f16> = (0..n)
            .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
            .collect();
        let y0: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let a = rng.gen_range(-1.0f32..1.0);
        let exact: f64 = q.iter().zip(&k).map(|(&x, y)| x as f64 * y.to_f64()).sum();
        let mag: f64 = q
            .iter()
            .zip(&k)
            .map(|(&x, y)| (x as f64 * y.to_f64()).abs())
            .sum();
        for level in available_levels() {
            let v = Isa::get(level).dot_f16(&q, &k) as f64;
            assert!(
                (v - exact).abs() <= 1e-5 * mag + 1e-6,
                "{level} n={n}: {v} vs {exact}"
            );
            let mut y = y0.clone();
            Isa::get(level).axpy_f16(&mut y, a, &k);
            for i in 0..n {
                let e = y0[i] as f64 + a as f64 * k[i].to_f64();
                assert!((y[i] as f64 - e).abs() <= 1e-6, "{level} n={n} i={i}");
            }
        }
    }
}

#[test]
fn glu_levels() {
    let mut rng = StdRng::seed_from_u64(5);
    for act in [Activation::GeluTanh, Activation::Silu] {
        for n in [0, 1, 7, 8, 9, 100, 2048] {
            let g0: Vec<f32> = (0..n)
                .map(|i| rng.gen_range(-1.0f32..1.0) * [0.1, 3.0, 30.0, 200.0][i % 4])
                .collect();
            let u: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0..2.0)).collect();
            for level in available_levels() {
                let mut g = g0.clone();
                Isa::get(level).glu(act, &mut g, &u);
                for i in 0..n {
                    let x = g0[i] as f64;
                    let a = match act {
                        Activation::GeluTanh => {
                            let y = 0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x);
                            0.5 * x * (1.0 + y.tanh())
                        }
                        Activation::Silu => x / (1.0 + (-x).exp()),
                    };
                    let e = a * u[i] as f64;
                    assert!(
                        (g[i] as f64 - e).abs() <= 2e-6 * e.abs() + 1e-6,
                        "{act:?} {level} n={n} i={i}: {} vs {e}",
                        g[i]
                    );
                }
                // The same element gives the same bits wherever it lies (batch invariance).
                for (i, (&x, &y)) in g0.iter().zip(&u).enumerate() {
                    let mut one = [x];
                    Isa::get(level).glu(act, &mut one, &[y]);
                    assert_eq!(one[0].to_bits(), g[i].to_bits(), "{act:?} {level} i={i}");
                }
            }
        }
    }
}

#[test]
fn levels() {
    assert_eq!(SimdLevel::parse("scalar"), Some(SimdLevel::Scalar));
    assert_eq!(SimdLevel::parse(" AVX2\n"), Some(SimdLevel::Avx2));
    assert_eq!(SimdLevel::parse("avx512"), None);
    assert_eq!(SimdLevel::parse("AVX512VNNI"), Some(SimdLevel::Avx512Vnni));
    assert!(simd_level() <= detected_level());
    assert_eq!(available_levels()[0], SimdLevel::Scalar);
    assert!(available_levels().contains(&detected_level()));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        assert!(detected_level() >= SimdLevel::Avx2);
        assert_eq!(detected_features()[..3], ["avx2", "fma", "f16c"]);
        assert_eq!(
            detected_level() == SimdLevel::Avx512Vnni,
            detected_features().len() == 7
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        let dot = std::arch::is_aarch64_feature_detected!("dotprod");
        let want = if dot {
            SimdLevel::NeonDot
        } else {
            SimdLevel::Neon
        };
        assert_eq!(detected_level(), want);
        assert!(available_levels().contains(&SimdLevel::Neon));
        assert_eq!(detected_features().contains(&"dotprod"), dot);
    }
    // A level of another architecture is never supported and lowers to one that is.
    for l in SimdLevel::ALL {
        assert_eq!(l.is_supported(), available_levels().contains(&l), "{l}");
        assert!(l.lowered().is_supported() && l.lowered() <= l, "{l}");
        if !l.is_native() {
            assert!(!l.is_supported(), "{l}");
        }
    }
    assert_eq!(SimdLevel::parse("neondot"), Some(SimdLevel::NeonDot));
}

#[test]
fn token_groups_are_balanced() {
    use super::quant::token_groups;
    let g = |n, max| token_groups(n, max).collect::<Vec<_>>();
    assert_eq!(g(1, 8), [(0, 1)]);
    assert_eq!(g(8, 8), [(0, 8)]);
    assert_eq!(g(9, 8), [(0, 5), (5, 4)]);
    assert_eq!(g(16, 8), [(0, 8), (8, 8)]);
    assert_eq!(g(17, 8), [(0, 6), (6, 6), (12, 5)]);
    assert_eq!(g(0, 8), []);
    for n in 0..100 {
        let v = g(n, 4);
        assert_eq!(v.iter().map(|&(_, nt)| nt).sum::<usize>(), n);
        assert!(v.iter().all(|&(_, nt)| (1..=4).contains(&nt)));
        assert!(v.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
    }
}

#[test]
fn q3k_scale_unpacking_matches_core() {
    let mut rng = StdRng::seed_from_u64(12);
    for _ in 0..200 {
        let s: [u8; 12] = rng.gen();
        let u = unpack_q3k_scales(&s);
        let want = switchyard_core::dtype::q3k_scales(&s);
        for k in 0..16 {
            assert_eq!(u[k] as i32 - 32, want[k] as i32, "scale {k} of {s:?}");
        }
    }
}

#[test]
fn q4k_scale_unpacking_matches_core() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..200 {
        let s: [u8; 12] = rng.gen();
        let u = unpack_q4k_scales(&s);
        for j in 0..8 {
            assert_eq!(
                (u[j], u[8 + j]),
                switchyard_core::dtype::get_scale_min_k4(j, &s)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn matmul_random_shapes(
        ty in 0usize..TYPES.len(),
        rows in 1usize..40,
        blocks in 1usize..12,
        n_tok in 1usize..10,
        seed in any::<u64>(),
    ) {
        let ty = TYPES[ty];
        let cols = blocks * match ty {
            ty if is_k(ty) => 256,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 13,
            _ => 32,
        };
        check(ty, rows, cols, n_tok, seed);
    }
}

/// Batch invariance, bit for bit: each token's outputs of a many-token call equal those of a
/// call with that token alone, for every type, level and token count (the engine relies on it:
/// a request's greedy tokens must not depend on what else is in its batch).
#[test]
fn matmul_is_batch_invariant() {
    let mut rng = StdRng::seed_from_u64(77);
    // 640 and 1312 columns: groups of 8 blocks and a half group; wide groups of 16 blocks, a
    // group of 8 and a half group (the AVX-512 Q4_0 / Q5_0 / Q8_0 layouts). K-quants: 4608
    // columns, which the AVX2 kernel takes in column chunks once a token group's activations
    // pass 16 KiB (18 super-blocks: four chunks of 4 and one of 2; 19 rows: two sub-tiles).
    for (ty, cols) in TYPES.into_iter().flat_map(|ty| {
        if is_k(ty) {
            vec![(ty, 512), (ty, 4608)]
        } else {
            vec![(ty, 640), (ty, 1312)]
        }
    }) {
        let rows = 19;
        let data = random_matrix(ty, rows, cols, &mut rng);
        let w = QMatrix {
            dtype: ty,
            rows,
            cols,
            data: &data,
        };
        for n_tok in [2, 3, 5, 9, 17, 40] {
            let x = random_acts(cols, n_tok, &mut rng);
            let mut avx2: Option<Vec<f32>> = None;
            for level in available_levels() {
                let mut all = vec![f32::NAN; rows * n_tok];
                Isa::get(level).matmul(&w, &x, n_tok, &mut all);
                // The AVX-512 VNNI level runs the AVX2 kernels for K-quants, IQ4_XS, Q4_1 /
                // Q5_1 / IQ4_NL and float weights (its Q4_0 / Q5_0 / Q8_0 kernels sum whole
                // blocks in integers first).
                if level >= SimdLevel::Avx2
                    && !matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0)
                {
                    let bits: Vec<u32> = all.iter().map(|v| v.to_bits()).collect();
                    match &avx2 {
                        None => avx2 = Some(all.clone()),
                        Some(a) => assert_eq!(
                            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            bits,
                            "{ty} {level} n_tok={n_tok}: differs from avx2"
                        ),
                    }
                }
                for t in 0..n_tok {
                    let mut one = vec![f32::NAN; rows];
                    Isa::get(level).matmul(&w, &x[t * cols..(t + 1) * cols], 1, &mut one);
                    for r in 0..rows {
                        assert_eq!(
                            all[t * rows + r].to_bits(),
                            one[r].to_bits(),
                            "{ty} {level} n_tok={n_tok} t={t} r={r}: {} batched vs {} alone",
                            all[t * rows + r],
                            one[r]
                        );
                    }
                }
            }
            let all = packed(&w, &x, n_tok);
            for t in 0..n_tok {
                let one = packed(&w, &x[t * cols..(t + 1) * cols], 1);
                for ((level, all), (_, one)) in all.iter().zip(&one) {
                    for r in 0..rows {
                        assert_eq!(
                            all[t * rows + r].to_bits(),
                            one[r].to_bits(),
                            "{ty} {level} n_tok={n_tok} t={t} r={r}: batched vs alone"
                        );
                    }
                }
            }
        }
    }
}

/// `attend_f16` at every level against an f64 softmax-attention reference: 1 to 7 heads per KV
/// head (chunks of four and the remainders), head sizes that take the vector path (64, 256) and
/// one that does not (72), 1 to 600 rows (vector tails included), rows in a scrambled order
/// inside a cache of two KV heads, with and without soft-capped scores. A dirty scratch buffer
/// must not change the result.
#[test]
fn attend_levels() {
    let mut rng = StdRng::seed_from_u64(11);
    for &(hd, g, n, softcap) in &[
        (64, 1, 1, None),
        (64, 7, 9, None),
        (256, 4, 600, None),
        (256, 4, 8, None),
        (256, 3, 33, None),
        (64, 5, 130, None),
        (72, 2, 17, None),
        (256, 1, 7, None),
        // Soft-capped scores (Gemma 2), a cap small enough to change them.
        (256, 4, 33, Some(1.5f32)),
        (64, 7, 9, Some(1.5)),
        (72, 2, 17, Some(1.5)),
    ] {
        let kvd = 2 * hd;
        let slots = n + 5;
        let kc: Vec<f16> = (0..slots * kvd)
            .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
            .collect();
        let vc: Vec<f16> = (0..slots * kvd)
            .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
            .collect();
        let mut slot: Vec<usize> = (0..slots).collect();
        for i in (1..slots).rev() {
            slot.swap(i, rng.gen_range(0..=i));
        }
        let kvh = 1;
        let rows: Vec<usize> = slot[..n].iter().map(|&s| s * kvd + kvh * hd).collect();
        // Scaled queries as the model passes them (scores of a few units).
        let q: Vec<f32> = (0..g * hd).map(|_| rng.gen_range(-0.3..0.3)).collect();
        let mut want = vec![0f64; g * hd];
        for h in 0..g {
            let qh = &q[h * hd..(h + 1) * hd];
            let s: Vec<f64> = rows
                .iter()
                .map(|&r| (0..hd).map(|i| qh[i] as f64 * kc[r + i].to_f64()).sum())
                .map(|x: f64| match softcap {
                    Some(c) => c as f64 * (x / c as f64).tanh(),
                    None => x,
                })
                .collect();
            let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (j, &r) in rows.iter().enumerate() {
                for i in 0..hd {
                    want[h * hd + i] += e[j] / sum * vc[r + i].to_f64();
                }
            }
        }
        for level in available_levels() {
            let mut out = vec![f32::NAN; g * hd];
            let mut scratch = Vec::new();
            Isa::get(level).attend_f16(
                &Attend {
                    q: &q,
                    hd,
                    kc: &kc,
                    vc: &vc,
                    rows: &rows,
                    softcap,
                },
                &mut scratch,
                &mut out,
            );
            for (i, (&o, &w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (o as f64 - w).abs() <= 2e-6,
                    "{level} hd={hd} g={g} n={n} i={i}: {o} vs {w}"
                );
            }
            let mut dirty = vec![7.5f32; 4 * n + 3];
            let mut again = vec![0f32; g * hd];
            Isa::get(level).attend_f16(
                &Attend {
                    q: &q,
                    hd,
                    kc: &kc,
                    vc: &vc,
                    rows: &rows,
                    softcap,
                },
                &mut dirty,
                &mut again,
            );
            assert_eq!(
                out, again,
                "{level}: the scratch contents changed the result"
            );
        }
    }
}

/// The host's choice from a logits row, as a plain scan (the engine's `sampling::argmax` is
/// tested against the same scan): the first index of the largest non-NaN value, 0 when no
/// value is above negative infinity.
fn scan_argmax(row: &[f32]) -> u32 {
    let mut best = (f32::NEG_INFINITY, 0u32);
    for (i, &v) in row.iter().enumerate() {
        if v > best.0 {
            best = (v, i as u32);
        }
    }
    best.1
}

/// `matmul_packed_argmax` picks what the host would pick from `matmul_packed`'s AVX2 logits,
/// restricted to the first `limit` rows: random matrices, partial last groups, several chunks,
/// ties inside and across chunks (duplicated rows, all rows equal, an all-zero token), and rows
/// whose logits are NaN (a NaN block scale), which are never chosen.
#[test]
fn packed_argmax_matches_the_host_choice() {
    if detected_level() < SimdLevel::Avx2 {
        return;
    }
    let mut rng = StdRng::seed_from_u64(0xa5a5);
    let bb = GgmlType::Q8_0.block_bytes();
    for (case, &(rows, cols)) in [
        (1, 32),
        (7, 64),
        (9, 32),
        (300, 96),
        (4099, 640),
        (20000, 64),
    ]
    .iter()
    .enumerate()
    {
        let rb = GgmlType::Q8_0.bytes_for(cols);
        let mut data = random_matrix(GgmlType::Q8_0, rows, cols, &mut rng);
        if case == 3 {
            // Every row the same: all logits tie, the answer is row 0.
            let first = data[..rb].to_vec();
            for r in data.chunks_exact_mut(rb) {
                r.copy_from_slice(&first);
            }
        } else if rows > 8 {
            // Row 2 repeated near the end (another group, for the large shapes another chunk).
            let (head, tail) = data.split_at_mut((rows - 2) * rb);
            tail[..rb].copy_from_slice(&head[2 * rb..3 * rb]);
            // Row 5: NaN scales, so NaN logits.
            for b in head[5 * rb..6 * rb].chunks_exact_mut(bb) {
                b[..2].copy_from_slice(&f16::NAN.to_le_bytes());
            }
        }
        let w = QMatrix {
            dtype: GgmlType::Q8_0,
            rows,
            cols,
            data: &data,
        };
        let p = PackedQ8::new(&w).expect("AVX2 packs Q8_0");
        for n_tok in [1usize, 3, 9] {
            let mut x = random_acts(cols, n_tok, &mut rng);
            if n_tok > 1 {
                // Token 0 exactly along row 2 of the matrix: row 2 and its copy tie for the
                // largest logit more often than not.
                let src = if rows > 2 { 2 } else { 0 };
                dequantize(
                    GgmlType::Q8_0,
                    &data[src * rb..(src + 1) * rb],
                    &mut x[..cols],
                );
            }
            let mut logits = vec![0f32; n_tok * rows];
            Isa::get(SimdLevel::Avx2).matmul_packed(&p, &x, n_tok, &mut logits);
            for limit in [rows, rows.saturating_sub(3).max(1), 1, rows + 5] {
                let got = matmul_packed_argmax(&p, &x, n_tok, limit);
                let want: Vec<u32> = logits
                    .chunks_exact(rows)
                    .map(|l| scan_argmax(&l[..limit.min(rows)]))
                    .collect();
                assert_eq!(
                    got, want,
                    "rows {rows} cols {cols} tokens {n_tok} limit {limit}"
                );
            }
        }
    }
}
