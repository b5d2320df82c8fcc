//! Plain scalar kernels: the specification of every SIMD kernel.
//!
//! Each quantized dot product is a sum over blocks of `d_w * d_x * (exact integer block dot)`,
//! accumulated in f32; the SIMD kernels compute the same integers.

use switchyard_core::dtype::{iq4xs_scales, IQ4NL_VALUES};
use switchyard_core::{Activation, GgmlType};

use super::quant::{Q8Acts, Q8KActs, QK8, QKK};
use super::{f16_le, unpack_q4k_scales, Acts, Attend, RowJob};

/// Computes rows `r0..r1` of the output for all `n_tok` tokens.
pub(crate) fn rows(job: &RowJob<'_>) {
    let RowJob { w, a: acts, .. } = *job;
    let mut buf = Vec::new();
    for r in job.r0..job.r1 {
        let row = w.row(r);
        if let Acts::F32(_) = acts {
            buf.resize(w.cols, 0.0);
            switchyard_core::dtype::dequantize(w.dtype, row, &mut buf);
        }
        for t in 0..job.n_tok {
            let v = match (w.dtype, acts) {
                (GgmlType::Q8_0, Acts::Q8(a)) => dot_q8_0(row, a, t),
                (GgmlType::Q4_0, Acts::Q8(a)) => dot_q4_0(row, a, t),
                (GgmlType::Q5_0, Acts::Q8(a)) => dot_q5_0(row, a, t),
                (GgmlType::Q4_1, Acts::Q8(a)) => dot_q4_1(row, a, t),
                (GgmlType::Q5_1, Acts::Q8(a)) => dot_q5_1(row, a, t),
                (GgmlType::IQ4_NL, Acts::Q8(a)) => dot_iq4_nl(row, a, t),
                (GgmlType::IQ4_XS, Acts::Q8K(a)) => dot_iq4_xs(row, a, t),
                (GgmlType::Q4_K, Acts::Q8K(a)) => dot_q4_k(row, a, t),
                (GgmlType::Q6_K, Acts::Q8K(a)) => dot_q6_k(row, a, t),
                (GgmlType::Q5_K, Acts::Q8K(a)) => dot_q5_k(row, a, t),
                (GgmlType::Q3_K, Acts::Q8K(a)) => dot_q3_k(row, a, t),
                (GgmlType::Q2_K, Acts::Q8K(a)) => dot_q2_k(row, a, t),
                (_, Acts::F32(x)) => dot_f32(&buf, &x[t * w.cols..(t + 1) * w.cols]),
                (ty, _) => unreachable!("no kernel for {ty}"),
            };
            // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
            unsafe { job.out.write(t, r, v) };
        }
    }
}

/// f32 dot product.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `sum_i q[i] * k[i]`, `k` in f16.
pub(crate) fn dot_f16(q: &[f32], k: &[half::f16]) -> f32 {
    q.iter().zip(k).map(|(a, b)| a * b.to_f32()).sum()
}

/// `y[i] += a * x[i]`, `x` in f16.
pub(crate) fn axpy_f16(y: &mut [f32], a: f32, x: &[half::f16]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x.to_f32();
    }
}

/// `sum_i q[i] * x[i]` (the weight quants already offset).
#[inline]
fn block_dot(q: impl Iterator<Item = i32>, x: &[i8]) -> i32 {
    q.zip(x).map(|(q, &x)| q * x as i32).sum()
}

/// `sum_b f(block b of row, token t's quants of it, their scale, their scaled sum)` over the
/// 32-element blocks of `row` (`bytes` each), added in block order from 0.
#[inline]
fn sum_q8_blocks(
    (row, bytes): (&[u8], usize),
    a: &Q8Acts,
    t: usize,
    f: impl Fn(&[u8], &[i8], f32, f32) -> f32,
) -> f32 {
    let (xq, xd, xs) = (a.qs(t), a.d(t), a.s(t));
    row.chunks_exact(bytes)
        .zip(xq.chunks_exact(QK8))
        .zip(xd.iter().zip(xs))
        .fold(0f32, |sum, ((b, x), (&dx, &sx))| sum + f(b, x, dx, sx))
}

/// As [`sum_q8_blocks`] over 256-element super-blocks, with token `t`'s per-16 sums of each.
#[inline]
fn sum_q8k_blocks(
    (row, bytes): (&[u8], usize),
    a: &Q8KActs,
    t: usize,
    f: impl Fn(&[u8], &[i8], f32, &[i16]) -> f32,
) -> f32 {
    let (xq, xd, bsums) = (a.qs(t), a.d(t), a.bsums(t));
    row.chunks_exact(bytes)
        .zip(xq.chunks_exact(QKK))
        .zip(xd.iter().zip(bsums.chunks_exact(16)))
        .fold(0f32, |sum, ((b, x), (&dx, bs))| sum + f(b, x, dx, bs))
}

fn dot_q8_0(row: &[u8], a: &Q8Acts, t: usize) -> f32 {
    sum_q8_blocks((row, 34), a, t, |b, x, dx, _| {
        let isum = block_dot(b[2..34].iter().map(|&q| q as i8 as i32), x);
        f16_le(b) * dx * isum as f32
    })
}

fn dot_q4_0(row: &[u8], a: &Q8Acts, t: usize) -> f32 {
    sum_q8_blocks((row, 18), a, t, |b, x, dx, _| {
        let qs = &b[2..18];
        let lo = qs.iter().map(|&q| (q & 0xF) as i32 - 8);
        let hi = qs.iter().map(|&q| (q >> 4) as i32 - 8);
        let isum = block_dot(lo, &x[..16]) + block_dot(hi, &x[16..]);
        f16_le(b) * dx * isum as f32
    })
}

fn dot_q5_0(row: &[u8], a: &Q8Acts, t: usize) -> f32 {
    sum_q8_blocks((row, 22), a, t, |b, x, dx, _| {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        let lo = (0..16).map(|j| ((qs[j] & 0xF) as u32 | ((qh >> j) & 1) << 4) as i32 - 16);
        let hi = (0..16).map(|j| ((qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i32 - 16);
        let isum = block_dot(lo, &x[..16]) + block_dot(hi, &x[16..]);
        f16_le(b) * dx * isum as f32
    })
}

/// Q4_1: `sum_b d dx sum(q x) + m sx` over the blocks `b`, with the unsigned quants `q`
/// (0..16), the block's min `m` and the activations' `sx = dx sum(x)` (`Q8Acts::s`).
fn dot_q4_1(row: &[u8], a: &Q8Acts, t: usize) -> f32 {
    sum_q8_blocks((row, 20), a, t, |b, x, dx, sx| {
        let qs = &b[4..20];
        let lo = qs.iter().map(|&q| (q & 0xF) as i32);
        let hi = qs.iter().map(|&q| (q >> 4) as i32);
        let isum = block_dot(lo, &x[..16]) + block_dot(hi, &x[16..]);
        f16_le(b) * dx * isum as f32 + f16_le(&b[2..4]) * sx
    })
}

/// Q5_1: as [`dot_q4_1`] with 5-bit quants (bit `j` of `qh` as bit 4 of element `j`).
fn dot_q5_1(row: &[u8], a: &Q8Acts, t: usize) -> f32 {
    sum_q8_blocks((row, 24), a, t, |b, x, dx, sx| {
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        let lo = (0..16).map(|j| ((qs[j] & 0xF) as u32 | ((qh >> j) & 1) << 4) as i32);
        let hi = (0..16).map(|j| ((qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i32);
        let isum = block_dot(lo, &x[..16]) + block_dot(hi, &x[16..]);
        f16_le(b) * dx * isum as f32 + f16_le(&b[2..4]) * sx
    })
}

/// IQ4_NL: as Q4_0 with each 4-bit index mapped through `IQ4NL_VALUES` instead of `q - 8`.
fn dot_iq4_nl(row: &[u8], a: &Q8Acts, t: usize) -> f32 {
    sum_q8_blocks((row, 18), a, t, |b, x, dx, _| {
        let qs = &b[2..18];
        let lo = qs.iter().map(|&q| IQ4NL_VALUES[(q & 0xF) as usize] as i32);
        let hi = qs.iter().map(|&q| IQ4NL_VALUES[(q >> 4) as usize] as i32);
        let isum = block_dot(lo, &x[..16]) + block_dot(hi, &x[16..]);
        f16_le(b) * dx * isum as f32
    })
}

/// IQ4_XS: `sum_sb d dx sum_s sc_s dot_s(v, x)` over the 8 sub-blocks `s` of 32, with the
/// values `v = IQ4NL_VALUES[q]` (sub-block `s`: elements `l < 16` in the low nibbles of
/// `qs[16 s + l]`, `l + 16` in the high ones) and the scales of `iq4xs_scales`.
fn dot_iq4_xs(row: &[u8], a: &Q8KActs, t: usize) -> f32 {
    sum_q8k_blocks((row, 136), a, t, |b, x, dx, _| {
        let sc = iq4xs_scales(b);
        let qs = &b[8..136];
        let mut sumi = 0i32;
        for (s, &sc) in sc.iter().enumerate() {
            let q = &qs[16 * s..16 * s + 16];
            let x = &x[32 * s..32 * s + 32];
            let lo = q.iter().map(|&q| IQ4NL_VALUES[(q & 0xF) as usize] as i32);
            let hi = q.iter().map(|&q| IQ4NL_VALUES[(q >> 4) as usize] as i32);
            sumi += sc as i32 * (block_dot(lo, &x[..16]) + block_dot(hi, &x[16..]));
        }
        f16_le(b) * dx * sumi as f32
    })
}

/// Q4_K's and Q5_K's min term: `sum_s m_s (bsum_2s + bsum_2s+1)` over the 8 sub-blocks of 32.
#[inline]
fn q4k_mins(sm: &[u8; 16], bs: &[i16]) -> i32 {
    (0..8)
        .map(|s| sm[8 + s] as i32 * (bs[2 * s] as i32 + bs[2 * s + 1] as i32))
        .sum()
}

fn dot_q4_k(row: &[u8], a: &Q8KActs, t: usize) -> f32 {
    sum_q8k_blocks((row, 144), a, t, |b, x, dx, bs| {
        let d = f16_le(&b[0..2]);
        let dmin = f16_le(&b[2..4]);
        let sm = unpack_q4k_scales(b[4..16].try_into().expect("12 bytes"));
        let qs = &b[16..144];
        let mut sumi = 0i32;
        for j in 0..4 {
            let q = &qs[32 * j..32 * j + 32];
            let x = &x[64 * j..64 * j + 64];
            let lo = block_dot(q.iter().map(|&q| (q & 0xF) as i32), &x[..32]);
            let hi = block_dot(q.iter().map(|&q| (q >> 4) as i32), &x[32..]);
            sumi += sm[2 * j] as i32 * lo + sm[2 * j + 1] as i32 * hi;
        }
        d * dx * sumi as f32 - dmin * dx * q4k_mins(&sm, bs) as f32
    })
}

/// As [`dot_q4_k`], with 5-bit quants: the low 4 bits of sub-block `s` in nibble `s % 2` of
/// `qs[32 (s / 2) + l]`, the fifth at bit `s` of `qh[l]`.
fn dot_q5_k(row: &[u8], a: &Q8KActs, t: usize) -> f32 {
    sum_q8k_blocks((row, 176), a, t, |b, x, dx, bs| {
        let d = f16_le(&b[0..2]);
        let dmin = f16_le(&b[2..4]);
        let sm = unpack_q4k_scales(b[4..16].try_into().expect("12 bytes"));
        let (qh, qs) = (&b[16..48], &b[48..176]);
        let mut sumi = 0i32;
        for s in 0..8 {
            let q = (0..32).map(|l| {
                let lo = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF;
                (lo | ((qh[l] >> s) & 1) << 4) as i32
            });
            sumi += sm[s] as i32 * block_dot(q, &x[32 * s..32 * s + 32]);
        }
        d * dx * sumi as f32 - dmin * dx * q4k_mins(&sm, bs) as f32
    })
}

/// Q3_K: `sum_sb d dx sum_k sc_k dot_k(q - 4, x)` over the 16 runs `k` of 16 elements. Element
/// `128 n + 32 j + l` has its low 2 bits at bit `2 j` of `qs[32 n + l]` and its high bit at bit
/// `4 n + j` of `hmask[l]` (clear: the value is 4 lower).
fn dot_q3_k(row: &[u8], a: &Q8KActs, t: usize) -> f32 {
    sum_q8k_blocks((row, 110), a, t, |b, x, dx, _| {
        let (hmask, qs) = (&b[0..32], &b[32..96]);
        let sc = switchyard_core::dtype::q3k_scales(&b[96..108]);
        let d = f16_le(&b[108..110]);
        let mut sumi = 0i32;
        for e0 in (0..QKK).step_by(16) {
            let (n, j, l0) = (e0 / 128, (e0 % 128) / 32, e0 % 32);
            let q = (l0..l0 + 16).map(|l| {
                let lo = (qs[32 * n + l] >> (2 * j)) & 3;
                let hi = (hmask[l] >> (4 * n + j)) & 1;
                (lo | hi << 2) as i32 - 4
            });
            sumi += sc[e0 / 16] as i32 * block_dot(q, &x[e0..e0 + 16]);
        }
        d * dx * sumi as f32
    })
}

/// Q2_K: `sum_sb d dx sum_k sc_k dot_k(q, x) - dmin dx sum_k m_k bsum_k` over the 16 runs `k`
/// of 16 elements, with the scale `sc_k` and min `m_k` in the low and high nibbles of
/// `scales[k]`. Element `128 n + 32 j + l` is at bits `2 j..` of `qs[32 n + l]`.
fn dot_q2_k(row: &[u8], a: &Q8KActs, t: usize) -> f32 {
    sum_q8k_blocks((row, 84), a, t, |b, x, dx, bs| {
        let (scales, qs) = (&b[0..16], &b[16..80]);
        let d = f16_le(&b[80..82]);
        let dmin = f16_le(&b[82..84]);
        let mut sumi = 0i32;
        let mut summ = 0i32;
        for (k, &sc) in scales.iter().enumerate() {
            let (n, j, l0) = (k / 8, (k % 8) / 2, 16 * (k % 2));
            let q = (l0..l0 + 16).map(|l| ((qs[32 * n + l] >> (2 * j)) & 3) as i32);
            sumi += (sc & 0xF) as i32 * block_dot(q, &x[16 * k..16 * k + 16]);
            summ += (sc >> 4) as i32 * bs[k] as i32;
        }
        d * dx * sumi as f32 - dmin * dx * summ as f32
    })
}

fn dot_q6_k(row: &[u8], a: &Q8KActs, t: usize) -> f32 {
    sum_q8k_blocks((row, 210), a, t, |b, x, dx, _| {
        let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
        let d = f16_le(&b[208..210]);
        let mut sumi = 0i32;
        // Element `128 n + 32 m + l` (l < 32) has its low 4 bits in the low (m < 2) or high
        // nibble of `ql[64 n + 32 (m % 2) + l]`, its high 2 bits at bit `2 m` of `qh[32 n + l]`,
        // and the scale `sc[e / 16]`.
        for e0 in (0..QKK).step_by(16) {
            let (n, m, l0) = (e0 / 128, (e0 % 128) / 32, e0 % 32);
            let q = (l0..l0 + 16).map(|l| {
                let src = ql[64 * n + 32 * (m % 2) + l];
                let lo = if m < 2 { src & 0xF } else { src >> 4 };
                let hi = (qh[32 * n + l] >> (2 * m)) & 3;
                (lo | hi << 4) as i32 - 32
            });
            sumi += sc[e0 / 16] as i8 as i32 * block_dot(q, &x[e0..e0 + 16]);
        }
        d * dx * sumi as f32
    })
}

/// Attention of the `out.len() / hd` query heads of one KV head's group, for one token, over
/// the key and value rows at element offsets `rows` of `kc` / `vc` (lengths checked by the
/// caller): per head, `softmax(q . k_j)` over `j`, then the weighted sum of the `v_j`.
/// `scores` is scratch of at least `rows.len()` floats.
pub(crate) fn attend_f16(a: &Attend<'_>, scores: &mut [f32], out: &mut [f32]) {
    attend_with(a, scores, out, dot_f16, axpy_f16);
}

/// [`attend_f16`] with the given dot product and weighted sum (the NEON level passes its own).
#[inline]
pub(crate) fn attend_with(
    a: &Attend<'_>,
    scores: &mut [f32],
    out: &mut [f32],
    dot: impl Fn(&[f32], &[half::f16]) -> f32,
    mut axpy: impl FnMut(&mut [f32], f32, &[half::f16]),
) {
    let Attend {
        q,
        hd,
        kc,
        vc,
        rows,
        ..
    } = *a;
    let scores = &mut scores[..rows.len()];
    for (qh, oh) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
        let mut mx = f32::NEG_INFINITY;
        for (sc, &r) in scores.iter_mut().zip(rows) {
            *sc = a.capped(dot(qh, &kc[r..r + hd]));
            mx = mx.max(*sc);
        }
        let mut sum = 0f32;
        for sc in scores.iter_mut() {
            *sc = (*sc - mx).exp();
            sum += *sc;
        }
        oh.fill(0.0);
        for (sc, &r) in scores.iter().zip(rows) {
            axpy(oh, sc / sum, &vc[r..r + hd]);
        }
    }
}

/// The gated activation: `g[i] = act(g[i]) * u[i]` with `ops::gelu_tanh` / `ops::silu` (lengths
/// checked by the caller).
pub(crate) fn glu(act: Activation, g: &mut [f32], u: &[f32]) {
    for (a, b) in g.iter_mut().zip(u) {
        let v = match act {
            Activation::GeluTanh => crate::ops::gelu_tanh(*a),
            Activation::Silu => crate::ops::silu(*a),
        };
        *a = v * b;
    }
}
