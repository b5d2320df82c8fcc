//! AVX-512 VNNI kernels (AVX2 + FMA + F16C + AVX-512 F/BW/VL/VNNI), on 256-bit vectors.
//!
//! The quantized matmul kernels of `avx2` with two changes: the integer dot products use the
//! VNNI instructions (`vpdpbusd` for `madd(maddubs(w, x), 1)`, `vpdpwssd` for the scaled
//! K-quant sums), which compute the same exact integers in fewer instructions, and with the 32
//! vector registers of AVX-512 a weight block is decoded once for groups of up to 8 tokens.
//! The float operations per token are those of `avx2`, so the results are bit-identical to the
//! AVX2 level, and as there independent of the group size (batch invariance). Everything else
//! (quantization, float weights, attention) uses the AVX2 code.
//!
//! Every function here is `#[target_feature(enable = "...avx512vnni")]`; the crate calls
//! `rows` only after `detected_level()` found those features at run time.

use std::arch::x86_64::*;

use switchyard_core::GgmlType;

use super::avx2::{
    bcast16_mask, bcast16_mask2, bytes_from_bits, hsum_ps, q0_block_bytes, q0_offset, token_blocks,
    token_groups, Q4_0, Q5_0, Q8_0,
};
use super::quant::{Q8Acts, Q8KActs, QK8, QKK};
use super::{unpack_q4k_scales, Acts, OutPtr, QMatrix};

/// Most tokens multiplied with one decoded weight block.
const NT_MAX: usize = 8;

/// Computes rows `r0..r1` of the output for all `n_tok` tokens (see `scalar::rows`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) fn rows(
    w: &QMatrix<'_>,
    acts: &Acts<'_>,
    r0: usize,
    r1: usize,
    n_tok: usize,
    out: &OutPtr,
) {
    match (w.dtype, acts) {
        (GgmlType::Q8_0, Acts::Q8(a)) => rows_q0::<Q8_0>(w, a, r0, r1, n_tok, out),
        (GgmlType::Q4_0, Acts::Q8(a)) => rows_q0::<Q4_0>(w, a, r0, r1, n_tok, out),
        (GgmlType::Q5_0, Acts::Q8(a)) => rows_q0::<Q5_0>(w, a, r0, r1, n_tok, out),
        (GgmlType::Q4_K | GgmlType::Q6_K, Acts::Q8K(a)) => rows_k(w, a, r0, r1, n_tok, out),
        _ => super::avx2::rows(w, acts, r0, r1, n_tok, out),
    }
}

/// Rows `r0..r1` for weights of kind `K` (see `avx2::rows_q0_k`), groups of up to 8 tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn rows_q0<const K: u8>(
    w: &QMatrix<'_>,
    a: &Q8Acts,
    r0: usize,
    r1: usize,
    n_tok: usize,
    out: &OutPtr,
) {
    token_blocks(n_tok, w.cols, |tb0, tbn| {
        for r in r0..r1 {
            let row = w.row(r);
            token_groups(tb0, tbn, NT_MAX, |t0, nt| {
                let mut res = [0f32; NT_MAX];
                match nt {
                    1 => q0_dot::<1, K>(row, a, t0, &mut res),
                    2 => q0_dot::<2, K>(row, a, t0, &mut res),
                    3 => q0_dot::<3, K>(row, a, t0, &mut res),
                    4 => q0_dot::<4, K>(row, a, t0, &mut res),
                    5 => q0_dot::<5, K>(row, a, t0, &mut res),
                    6 => q0_dot::<6, K>(row, a, t0, &mut res),
                    7 => q0_dot::<7, K>(row, a, t0, &mut res),
                    _ => q0_dot::<8, K>(row, a, t0, &mut res),
                }
                for (i, &v) in res.iter().enumerate().take(nt) {
                    // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
                    unsafe { out.write(t0 + i, r, v) };
                }
            });
        }
    });
}

/// `avx2::q0_step` with `vpdpbusd`.
macro_rules! q0_step_vnni {
    ($k:expr, $nt:expr, $rp:expr, $xp:expr, $dp:expr, $sp:expr, $cols:expr, $nb:expr, $j:expr, $acc:ident, $c:ident) => {{
        let j = $j;
        let b = $rp.add(j * q0_block_bytes($k));
        let dw = f16_at!(b);
        let w = q0_decode!($k, b);
        let aw = _mm256_sign_epi8(w, w);
        for t in 0..$nt {
            let x = _mm256_loadu_si256($xp.add(t * $cols + QK8 * j).cast());
            let zero = _mm256_setzero_si256();
            let p32 = if $k == Q8_0 {
                _mm256_dpbusd_epi32(zero, aw, _mm256_sign_epi8(x, w))
            } else {
                _mm256_dpbusd_epi32(zero, w, x)
            };
            let p = _mm256_cvtepi32_ps(p32);
            let dd = dw * *$dp.add(t * $nb + j);
            $acc[t] = _mm256_fmadd_ps(p, _mm256_set1_ps(dd), $acc[t]);
            if $k != Q8_0 {
                $c[t] = dw.mul_add(*$sp.add(t * $nb + j), $c[t]);
            }
        }
    }};
}

/// `avx2::q0_dot` (same float operations per token) for up to 8 tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn q0_dot<const NT: usize, const K: u8>(
    row: &[u8],
    a: &Q8Acts,
    t0: usize,
    res: &mut [f32; NT_MAX],
) {
    let cols = a.cols;
    let nb = cols / QK8;
    assert!(row.len() >= nb * q0_block_bytes(K));
    assert!(a.qs.len() >= (t0 + NT) * cols);
    assert!(a.d.len() >= (t0 + NT) * nb && a.s.len() >= (t0 + NT) * nb);
    let rp = row.as_ptr();
    // SAFETY: in bounds by the assertions above (offsets of token `t0`).
    let (xp, dp, sp) = unsafe {
        (
            a.qs.as_ptr().add(t0 * cols),
            a.d.as_ptr().add(t0 * nb),
            a.s.as_ptr().add(t0 * nb),
        )
    };
    let mut acc0 = [_mm256_setzero_ps(); NT];
    let mut acc1 = [_mm256_setzero_ps(); NT];
    let mut c = [0f32; NT];
    let mut j = 0;
    // SAFETY: every block index used is below `nb`, and the assertions above make block `j` of
    // the row, quants `t cols + 32 j ..+32` and entries `t nb + j` of the scales of every token
    // `t < NT` (from `t0`) lie inside their slices. Loads are unaligned.
    unsafe {
        while j + 2 <= nb {
            q0_step_vnni!(K, NT, rp, xp, dp, sp, cols, nb, j, acc0, c);
            q0_step_vnni!(K, NT, rp, xp, dp, sp, cols, nb, j + 1, acc1, c);
            j += 2;
        }
        for t in 0..NT {
            acc0[t] = _mm256_add_ps(acc0[t], acc1[t]);
        }
        if j < nb {
            q0_step_vnni!(K, NT, rp, xp, dp, sp, cols, nb, j, acc0, c);
        }
    }
    for t in 0..NT {
        res[t] = hsum_ps(acc0[t]) - q0_offset(K) * c[t];
    }
}

/// Rows `r0..r1` of a Q4_K / Q6_K matrix (see `avx2::rows_k`), groups of up to 8 tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn rows_k(w: &QMatrix<'_>, a: &Q8KActs, r0: usize, r1: usize, n_tok: usize, out: &OutPtr) {
    let q4 = w.dtype == GgmlType::Q4_K;
    token_blocks(n_tok, w.cols, |tb0, tbn| {
        for r in r0..r1 {
            let row = w.row(r);
            token_groups(tb0, tbn, NT_MAX, |t0, nt| {
                let mut res = [0f32; NT_MAX];
                macro_rules! go {
                    ($($n:literal)*) => {
                        match (q4, nt) {
                            $((true, $n) => q4k::<$n>(row, a, t0, &mut res),)*
                            $((false, $n) => q6k::<$n>(row, a, t0, &mut res),)*
                            _ => unreachable!(),
                        }
                    };
                }
                go!(1 2 3 4 5 6 7 8);
                for (i, &v) in res.iter().enumerate().take(nt) {
                    // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
                    unsafe { out.write(t0 + i, r, v) };
                }
            });
        }
    });
}

/// The activations of tokens `t0..t0 + nt`: (quants, super-block scales, per-16 sums).
fn k_acts(a: &Q8KActs, t0: usize, nt: usize) -> (&[i8], &[f32], &[i16]) {
    let cols = a.cols;
    let nsb = cols / QKK;
    (
        &a.qs[t0 * cols..(t0 + nt) * cols],
        &a.d[t0 * nsb..(t0 + nt) * nsb],
        &a.bsums[t0 * cols / 16..(t0 + nt) * cols / 16],
    )
}

/// `avx2::KRow::q4k` (same float operations per token) with `vpdpwssd`, up to 8 tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn q4k<const NT: usize>(row: &[u8], a: &Q8KActs, t0: usize, res: &mut [f32; NT_MAX]) {
    let cols = a.cols;
    let nsb = cols / QKK;
    let (xs, xd, bs) = k_acts(a, t0, NT);
    assert!(row.len() >= nsb * 144);
    let (rp, xp, dp, bp) = (row.as_ptr(), xs.as_ptr(), xd.as_ptr(), bs.as_ptr());
    let m4 = _mm256_set1_epi8(0xF);
    let dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    let mut acc = [_mm256_setzero_ps(); NT];
    for sb in 0..nsb {
        // SAFETY: `sb < nsb`: super-block `sb` of the row (144 bytes at `144 sb`), quants
        // `t cols + 256 sb ..+256`, scale `t nsb + sb` and sums `t cols / 16 + 16 sb ..+16` of
        // every token `t < NT` lie inside the slices checked above. Loads are unaligned.
        unsafe {
            let b = rp.add(144 * sb);
            let d = f16_at!(b);
            let dmin = f16_at!(b.add(2));
            let sm = unpack_q4k_scales(&*b.add(4).cast::<[u8; 12]>());
            let smv = _mm_loadu_si128(sm.as_ptr().cast());
            let sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(smv));
            let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, dup_mins));
            let mut sumi = [_mm256_setzero_si256(); NT];
            for j in 0..4 {
                let q = _mm256_loadu_si256(b.add(16 + 32 * j).cast());
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                let scl = _mm256_shuffle_epi8(sc, bcast16_mask(2 * j as i16));
                let sch = _mm256_shuffle_epi8(sc, bcast16_mask(2 * j as i16 + 1));
                for (t, sumi) in sumi.iter_mut().enumerate() {
                    let x = xp.add(t * cols + QKK * sb + 64 * j);
                    let xl = _mm256_loadu_si256(x.cast());
                    let xh = _mm256_loadu_si256(x.add(32).cast());
                    *sumi = _mm256_dpwssd_epi32(*sumi, _mm256_maddubs_epi16(lo, xl), scl);
                    *sumi = _mm256_dpwssd_epi32(*sumi, _mm256_maddubs_epi16(hi, xh), sch);
                }
            }
            for t in 0..NT {
                let dx = *dp.add(t * nsb + sb);
                let bsums = _mm256_loadu_si256(bp.add(t * cols / 16 + 16 * sb).cast());
                let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins));
                let m = _mm256_mul_ps(m, _mm256_set1_ps(dmin * dx));
                let s = _mm256_cvtepi32_ps(sumi[t]);
                acc[t] = _mm256_add_ps(acc[t], _mm256_fmsub_ps(s, _mm256_set1_ps(d * dx), m));
            }
        }
    }
    for t in 0..NT {
        res[t] = hsum_ps(acc[t]);
    }
}

/// `avx2::KRow::q6k` (same float operations per token) with `vpdpwssd`, up to 8 tokens.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn q6k<const NT: usize>(row: &[u8], a: &Q8KActs, t0: usize, res: &mut [f32; NT_MAX]) {
    let cols = a.cols;
    let nsb = cols / QKK;
    let (xs, xd, bs) = k_acts(a, t0, NT);
    assert!(row.len() >= nsb * 210);
    let (rp, xp, dp, bp) = (row.as_ptr(), xs.as_ptr(), xd.as_ptr(), bs.as_ptr());
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); NT];
    for sb in 0..nsb {
        // SAFETY: `sb < nsb`: super-block `sb` of the row (210 bytes at `210 sb`), quants
        // `t cols + 256 sb ..+256`, scale `t nsb + sb` and sums `t cols / 16 + 16 sb ..+16` of
        // every token `t < NT` lie inside the slices checked above. Loads are unaligned.
        unsafe {
            let b = rp.add(210 * sb);
            let d = f16_at!(b.add(208));
            let sc_all = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192).cast()));
            let mut sumi = [_mm256_setzero_si256(); NT];
            for n in 0..2 {
                let ql0 = _mm256_loadu_si256(b.add(64 * n).cast());
                let ql1 = _mm256_loadu_si256(b.add(64 * n + 32).cast());
                let qh = _mm256_loadu_si256(b.add(128 + 32 * n).cast());
                let sc8 = _mm_loadl_epi64(b.add(192 + 8 * n).cast());
                let sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8));
                let hmask = |m: i8| _mm256_and_si256(qh, _mm256_set1_epi8(m));
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_slli_epi16::<4>(hmask(0x03)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_slli_epi16::<2>(hmask(0x0C)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                        hmask(0x30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                        _mm256_srli_epi16::<2>(hmask(0xC0u8 as i8)),
                    ),
                ];
                for (m, &q) in q.iter().enumerate() {
                    let mask = bcast16_mask2(2 * m as i16, 2 * m as i16 + 1);
                    let scm = _mm256_shuffle_epi8(sc, mask);
                    for (t, sumi) in sumi.iter_mut().enumerate() {
                        let x = xp.add(t * cols + QKK * sb + 128 * n + 32 * m);
                        let x = _mm256_loadu_si256(x.cast());
                        *sumi = _mm256_dpwssd_epi32(*sumi, _mm256_maddubs_epi16(q, x), scm);
                    }
                }
            }
            for t in 0..NT {
                let bsums = _mm256_loadu_si256(bp.add(t * cols / 16 + 16 * sb).cast());
                let corr = _mm256_madd_epi16(sc_all, bsums);
                let s = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32::<5>(corr));
                let dd = _mm256_set1_ps(d * *dp.add(t * nsb + sb));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, acc[t]);
            }
        }
    }
    for t in 0..NT {
        res[t] = hsum_ps(acc[t]);
    }
}
