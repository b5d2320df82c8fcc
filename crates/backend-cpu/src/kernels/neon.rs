//! Arm NEON kernels (aarch64), with and without the dot-product extension.
//!
//! NEON is part of every aarch64 CPU, so the base level ([`super::SimdLevel::Neon`]) needs no
//! detection. The `sdot` instruction (ARMv8.2 dotprod: Graviton 2 and later, Apple M1, Ampere
//! Altra) is detected at run time ([`super::SimdLevel::NeonDot`]); the kernels are generic over
//! `DOT` and the `_dot` entry points are compiled with `dotprod` enabled. `sdot` is written as
//! inline assembly because its Rust intrinsic is not stable yet.
//!
//! Every kernel takes the activations in their plain form (`Q8Acts::qs` / `Q8KActs::qs`, token
//! after token) and the weights in their file encoding: a weight block is decoded once into
//! signed 8-bit vectors and multiplied with a group of up to 8 tokens, so batched decode reads
//! each weight row once per group. Per token and block:
//! - Q4_0 / Q5_0 / Q8_0 / Q4_1 / Q5_1 / IQ4_NL: two 16-byte dot products give 4 exact partial
//!   sums in i32 lanes, which are converted and accumulated with the product of the block scales
//!   (one FMA; the 4 lanes are added at the end of the row); Q4_1 / Q5_1 add their min times the
//!   activations' block sum in a scalar accumulator; IQ4_NL's indices become its table values
//!   with one `tbl` per 16;
//! - the K-quants and IQ4_XS: the dot product of each 32-element (Q4_K / Q5_K / IQ4_XS) or
//!   16-element (Q6_K / Q3_K / Q2_K) sub-block is multiplied by its scale in i32 lanes, the
//!   super-block's integer sum taken once, then the same float operations as the scalar kernel,
//!   so they give the scalar kernel's bits.
//!
//! Without `sdot` the 16 products are formed by `smull` and added pairwise (`sadalp`): the same
//! integer totals, spread differently over the lanes.
//!
//! Every token has its own accumulators and the same operations whatever the group size (batch
//! invariance). Loads go through pointers into slices whose lengths are checked first.

// The tile loops index several per-token arrays in lockstep.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;
use std::arch::asm;

use switchyard_core::GgmlType;

use super::quant::{self, Q8Acts, Q8KActs, QK8, QKK};
use super::{f16_le, unpack_q3k_scales, unpack_q4k_scales, Family, RowJob};

/// Most tokens multiplied with one weight row at a time.
const NT_MAX: usize = 8;
/// Rows whose results are collected before they are stored.
const TILE: usize = 16;

// ---------------------------------------------------------------------------------------------
// Loads and primitives.

#[target_feature(enable = "neon")]
#[inline]
fn ld_s8(b: &[i8]) -> int8x16_t {
    assert!(b.len() >= 16);
    // SAFETY: `b` has at least 16 bytes; `vld1q_s8` has no alignment requirement.
    unsafe { vld1q_s8(b.as_ptr()) }
}

#[target_feature(enable = "neon")]
#[inline]
fn ld_u8(b: &[u8]) -> uint8x16_t {
    assert!(b.len() >= 16);
    // SAFETY: as in `ld_s8`.
    unsafe { vld1q_u8(b.as_ptr()) }
}

#[target_feature(enable = "neon")]
#[inline]
fn ld_f32(b: &[f32]) -> float32x4_t {
    assert!(b.len() >= 4);
    // SAFETY: `b` has at least 4 floats; `vld1q_f32` has no alignment requirement.
    unsafe { vld1q_f32(b.as_ptr()) }
}

#[target_feature(enable = "neon")]
#[inline]
fn st_f32(b: &mut [f32], v: float32x4_t) {
    assert!(b.len() >= 4);
    // SAFETY: `b` has room for 4 floats.
    unsafe { vst1q_f32(b.as_mut_ptr(), v) }
}

/// 4 f16 values (as bits) to f32, exactly (`fcvtl`, part of base aarch64 floating point).
#[target_feature(enable = "neon")]
#[inline]
fn f16x4(h: &[half::f16]) -> float32x4_t {
    assert!(h.len() >= 4);
    // SAFETY: `h` has at least 4 elements of 2 bytes; no alignment requirement.
    let bits = unsafe { vld1_u16(h.as_ptr().cast()) };
    let r: float32x4_t;
    // SAFETY: `fcvtl` only reads and writes the named registers.
    unsafe {
        asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) r, in(vreg) bits,
             options(pure, nomem, nostack, preserves_flags));
    }
    r
}

/// Adds the 16 products `a[i] * b[i]` into the lanes of `acc`: lane `k` gets products
/// `4k .. 4k + 4` with `sdot`; without it (`DOT` false) the same total spread over the lanes in
/// pairs. Exact: a product fits in i16, a lane's sum in i32.
///
/// `DOT` must be true only in functions compiled with the `dotprod` feature.
#[target_feature(enable = "neon")]
#[inline]
fn dot16<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DOT {
        let mut acc = acc;
        // SAFETY: `sdot` only reads and writes the named registers; with `DOT` this is inlined
        // only into functions compiled with `dotprod`, called after its run-time detection (the
        // directive lets the assembler accept it in any case).
        unsafe {
            asm!(".arch_extension dotprod", "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
                 inout(vreg) acc, in(vreg) a, in(vreg) b,
                 options(pure, nomem, nostack, preserves_flags));
        }
        acc
    } else {
        let p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let p1 = vmull_high_s8(a, b);
        vpadalq_s16(vpadalq_s16(acc, p0), p1)
    }
}

/// The 32 signed quants of a 32-element block (`K` as in [`q0_kind`]), as elements `0..16`
/// and `16..32`: Q4_0 / Q5_0 with the offset already taken off, Q4_1 / Q5_1 unsigned as stored
/// (their min is applied by the caller), IQ4_NL its table values.
#[target_feature(enable = "neon")]
#[inline]
fn q0_decode<const K: u8>(b: &[u8]) -> (int8x16_t, int8x16_t) {
    // Bytes before the quants: the scale, and the min of Q4_1 / Q5_1.
    let h = if q0_has_min(K) { 4 } else { 2 };
    match K {
        Q0_Q8 => {
            let q: &[i8] = bytemuck::cast_slice(&b[2..34]);
            (ld_s8(q), ld_s8(&q[16..]))
        }
        Q0_Q4 | Q0_Q41 | Q0_IQ4NL => {
            let q = ld_u8(&b[h..h + 16]);
            let lo = vandq_u8(q, vdupq_n_u8(0xF));
            let hi = vshrq_n_u8::<4>(q);
            match K {
                Q0_Q4 => (
                    vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(8)),
                    vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(8)),
                ),
                Q0_Q41 => (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)),
                _ => {
                    let tbl = ld_s8(&switchyard_core::dtype::IQ4NL_VALUES);
                    (vqtbl1q_s8(tbl, lo), vqtbl1q_s8(tbl, hi))
                }
            }
        }
        _ => {
            const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
            let qh = [b[h], b[h + 1], b[h + 2], b[h + 3]];
            let bits = ld_u8(&BITS);
            let q = ld_u8(&b[h + 4..h + 20]);
            // Bit `j` of `qh` is the fifth bit of element `j`: byte `j / 8`, bit `j % 8`.
            let high = |b0: u8, b1: u8| {
                let v = vcombine_u8(vdup_n_u8(b0), vdup_n_u8(b1));
                vandq_u8(vtstq_u8(v, bits), vdupq_n_u8(0x10))
            };
            let lo = vorrq_u8(vandq_u8(q, vdupq_n_u8(0xF)), high(qh[0], qh[1]));
            let hi = vorrq_u8(vshrq_n_u8::<4>(q), high(qh[2], qh[3]));
            let off = if K == Q0_Q5 { 16 } else { 0 };
            (
                vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(off)),
                vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(off)),
            )
        }
    }
}

/// Kinds of the 32-element block types ([`q0_decode`], [`q0_rows`]).
const Q0_Q8: u8 = 0;
const Q0_Q4: u8 = 1;
const Q0_Q5: u8 = 2;
const Q0_Q41: u8 = 3;
const Q0_Q51: u8 = 4;
const Q0_IQ4NL: u8 = 5;

/// Whether kind `k` has a per-block min (Q4_1 / Q5_1).
const fn q0_has_min(k: u8) -> bool {
    k == Q0_Q41 || k == Q0_Q51
}

/// The kernel number of a 32-element block type.
fn q0_kind(ty: GgmlType) -> u8 {
    match ty {
        GgmlType::Q8_0 => Q0_Q8,
        GgmlType::Q4_0 => Q0_Q4,
        GgmlType::Q5_0 => Q0_Q5,
        GgmlType::Q4_1 => Q0_Q41,
        GgmlType::Q5_1 => Q0_Q51,
        _ => Q0_IQ4NL,
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points.

/// Computes rows `r0..r1` of the output for all `n_tok` tokens (base NEON).
#[target_feature(enable = "neon")]
pub(crate) fn rows(job: &RowJob<'_>) {
    rows_impl::<false>(job)
}

/// [`rows`] with `sdot`.
///
/// # Safety
/// The CPU must have the dot-product extension (`dotprod`).
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn rows_dot(job: &RowJob<'_>) {
    rows_impl::<true>(job)
}

#[target_feature(enable = "neon")]
#[inline]
fn rows_impl<const DOT: bool>(job: &RowJob<'_>) {
    match job.family() {
        Family::Q8(j) => {
            let k = q0_kind(j.w.dtype);
            for (t0, nt) in quant::token_groups(j.n_tok, NT_MAX) {
                macro_rules! go {
                    ($($n:literal)*) => {
                        match (nt, k) {
                            $(($n, Q0_Q8) => q0_rows::<$n, Q0_Q8, DOT>(&j, t0),
                              ($n, Q0_Q4) => q0_rows::<$n, Q0_Q4, DOT>(&j, t0),
                              ($n, Q0_Q5) => q0_rows::<$n, Q0_Q5, DOT>(&j, t0),
                              ($n, Q0_Q41) => q0_rows::<$n, Q0_Q41, DOT>(&j, t0),
                              ($n, Q0_Q51) => q0_rows::<$n, Q0_Q51, DOT>(&j, t0),
                              ($n, _) => q0_rows::<$n, Q0_IQ4NL, DOT>(&j, t0),)*
                            _ => unreachable!("token group of {nt}"),
                        }
                    };
                }
                go!(1 2 3 4 5 6 7 8);
            }
        }
        Family::Q8K(j) => {
            let k = k_kind(j.w.dtype);
            for (t0, nt) in quant::token_groups(j.n_tok, NT_MAX) {
                macro_rules! go {
                    ($($n:literal)*) => {
                        match (nt, k) {
                            $(($n, KQ4) => k_rows::<$n, KQ4, DOT>(&j, t0),
                              ($n, KQ5) => k_rows::<$n, KQ5, DOT>(&j, t0),
                              ($n, KQ6) => k_rows::<$n, KQ6, DOT>(&j, t0),
                              ($n, KQ3) => k_rows::<$n, KQ3, DOT>(&j, t0),
                              ($n, KQ2) => k_rows::<$n, KQ2, DOT>(&j, t0),
                              ($n, KIQ4) => k_rows::<$n, KIQ4, DOT>(&j, t0),)*
                            _ => unreachable!("token group of {nt}"),
                        }
                    };
                }
                go!(1 2 3 4 5 6 7 8);
            }
        }
        Family::F32(j) => float_rows(&j),
    }
}

/// Runs `row(r)` (the results of row `r` for tokens `t0..t0 + N`) for the job's rows `r0..r1`,
/// storing the results a tile of rows at a time.
#[target_feature(enable = "neon")]
#[inline]
fn tiles<A: ?Sized, const N: usize>(
    job: &RowJob<'_, A>,
    t0: usize,
    mut row: impl FnMut(usize) -> [f32; N],
) {
    let RowJob { r0, r1, out, .. } = *job;
    let mut r = r0;
    while r < r1 {
        let n = TILE.min(r1 - r);
        let mut res = [[0f32; TILE]; N];
        for i in 0..n {
            for (t, v) in row(r + i).into_iter().enumerate() {
                res[t][i] = v;
            }
        }
        for (t, res) in res.iter().enumerate() {
            // SAFETY: this chunk owns rows `r0..r1`, which include `r..r + n` (see `OutPtr`).
            unsafe { out.write_run(t0 + t, r, &res[..n]) };
        }
        r += n;
    }
}

/// Rows `r0..r1` of a 32-element block type for tokens `t0..t0 + N`; Q4_1 / Q5_1 add
/// `m * sx` per block (the block's min times the activations' `d * sum(x quants)`) in a scalar
/// accumulator per token, added to the vector one at the end of the row.
#[target_feature(enable = "neon")]
#[inline]
fn q0_rows<const N: usize, const K: u8, const DOT: bool>(job: &RowJob<'_, Q8Acts>, t0: usize) {
    let (w, a) = (job.w, job.a);
    let bb = w.dtype.block_bytes();
    let nb = w.cols / QK8;
    let xq: [&[i8]; N] = std::array::from_fn(|t| a.qs(t0 + t));
    let xd: [&[f32]; N] = std::array::from_fn(|t| a.d(t0 + t));
    let xs: [&[f32]; N] = std::array::from_fn(|t| a.s(t0 + t));
    tiles(job, t0, |r| -> [f32; N] {
        let row = w.row(r);
        let mut acc = [vdupq_n_f32(0.0); N];
        let mut macc = [0f32; N];
        for b in 0..nb {
            let blk = &row[b * bb..(b + 1) * bb];
            let (w0, w1) = q0_decode::<K>(blk);
            let dw = f16_le(blk);
            for t in 0..N {
                let x = &xq[t][QK8 * b..QK8 * (b + 1)];
                let p = dot16::<DOT>(vdupq_n_s32(0), w0, ld_s8(x));
                let p = dot16::<DOT>(p, w1, ld_s8(&x[16..]));
                acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(p), dw * xd[t][b]);
            }
            if q0_has_min(K) {
                let m = f16_le(&blk[2..4]);
                for t in 0..N {
                    macc[t] += m * xs[t][b];
                }
            }
        }
        std::array::from_fn(|t| vaddvq_f32(acc[t]) + macc[t])
    });
}

/// K-quant kinds of [`k_decode`] and [`k_rows`].
const KQ4: u8 = 0;
const KQ5: u8 = 1;
const KQ6: u8 = 2;
const KQ3: u8 = 3;
const KQ2: u8 = 4;
/// IQ4_XS (8 signed scales of 32 elements, no mins, table values).
const KIQ4: u8 = 5;

fn k_kind(ty: GgmlType) -> u8 {
    match ty {
        GgmlType::Q4_K => KQ4,
        GgmlType::Q5_K => KQ5,
        GgmlType::Q6_K => KQ6,
        GgmlType::Q3_K => KQ3,
        GgmlType::IQ4_XS => KIQ4,
        _ => KQ2,
    }
}

/// Whether a kind has 16 scales of 16 elements (Q6_K, Q3_K, Q2_K) rather than 8 scales (and
/// mins) of 32 elements (Q4_K, Q5_K, IQ4_XS).
const fn k16(k: u8) -> bool {
    k == KQ6 || k == KQ3 || k == KQ2
}

/// A K-quant super-block decoded: 16 vectors of 16 signed quants (elements `16 i ..`; Q6_K /
/// Q3_K without their offsets 32 / 4, which are applied exactly here too; IQ4_XS its table
/// values), and the integer scale of each.
struct KBlock {
    q: [int8x16_t; 16],
    /// Q4_K / Q5_K: the 8 sub-block scales, then the 8 mins. IQ4_XS: the 8 sub-block scales
    /// (mins 0). Q6_K / Q3_K / Q2_K: the 16 scales.
    sc: [i32; 16],
    /// Q2_K: the 16 mins.
    mn: [i32; 16],
    d: f32,
    dmin: f32,
}

#[target_feature(enable = "neon")]
#[inline]
fn k_decode<const K: u8>(b: &[u8]) -> KBlock {
    let mut q = [vdupq_n_s8(0); 16];
    let mut sc = [0i32; 16];
    let m4 = vdupq_n_u8(0xF);
    match K {
        KQ6 => {
            let (ql, qh, s) = (&b[0..128], &b[128..192], &b[192..208]);
            for n in 0..2 {
                for h in 0..2 {
                    let l0 = ql[64 * n + 16 * h..].first_chunk::<16>().expect("16");
                    let l1 = ql[64 * n + 32 + 16 * h..].first_chunk::<16>().expect("16");
                    let (l0, l1) = (ld_u8(l0), ld_u8(l1));
                    let hb = ld_u8(&qh[32 * n + 16 * h..]);
                    let m3 = vdupq_n_u8(3);
                    // Element `128 n + 32 m + 16 h + l`: vector `8 n + 2 m + h`.
                    let v = [
                        vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8::<4>(vandq_u8(hb, m3))),
                        vorrq_u8(
                            vandq_u8(l1, m4),
                            vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(hb), m3)),
                        ),
                        vorrq_u8(
                            vshrq_n_u8::<4>(l0),
                            vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(hb), m3)),
                        ),
                        vorrq_u8(vshrq_n_u8::<4>(l1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(hb))),
                    ];
                    for (m, v) in v.into_iter().enumerate() {
                        q[8 * n + 2 * m + h] = vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(32));
                    }
                }
            }
            for (sc, &s) in sc.iter_mut().zip(s) {
                *sc = i32::from(s as i8);
            }
            KBlock {
                q,
                sc,
                mn: [0; 16],
                d: f16_le(&b[208..210]),
                dmin: 0.0,
            }
        }
        KQ2 => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            for h in 0..2 {
                for n in 0..2 {
                    let mut v = ld_u8(&qs[32 * n + 16 * h..]);
                    // Element `128 n + 32 j + 16 h + l`: vector `8 n + 2 j + h`, bits 2 j.. of
                    // the `qs` byte.
                    for j in 0..4 {
                        q[8 * n + 2 * j + h] = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(3)));
                        v = vshrq_n_u8::<2>(v);
                    }
                }
            }
            let mut mn = [0i32; 16];
            for ((sc, mn), &s) in sc.iter_mut().zip(&mut mn).zip(scales) {
                *sc = i32::from(s & 0xF);
                *mn = i32::from(s >> 4);
            }
            KBlock {
                q,
                sc,
                mn,
                d: f16_le(&b[80..82]),
                dmin: f16_le(&b[82..84]),
            }
        }
        KIQ4 => {
            // Sub-block `s`: elements `0..16` in the low nibbles of `qs[16 s ..+16]`, `16..32`
            // in the high ones.
            let tbl = ld_s8(&switchyard_core::dtype::IQ4NL_VALUES);
            for s in 0..8 {
                let v = ld_u8(&b[8 + 16 * s..]);
                q[2 * s] = vqtbl1q_s8(tbl, vandq_u8(v, m4));
                q[2 * s + 1] = vqtbl1q_s8(tbl, vshrq_n_u8::<4>(v));
            }
            for (sc, s) in sc.iter_mut().zip(switchyard_core::dtype::iq4xs_scales(b)) {
                *sc = i32::from(s);
            }
            KBlock {
                q,
                sc,
                mn: [0; 16],
                d: f16_le(&b[0..2]),
                dmin: 0.0,
            }
        }
        KQ3 => {
            let (hmask, qs) = (&b[0..32], &b[32..96]);
            for h in 0..2 {
                let mut hm = ld_u8(&hmask[16 * h..]);
                for n in 0..2 {
                    let mut v = ld_u8(&qs[32 * n + 16 * h..]);
                    // Element `128 n + 32 j + 16 h + l`: vector `8 n + 2 j + h`; low 2 bits at
                    // bit 2 j of the `qs` byte, the high bit at bit 4 n + j of the `hmask` byte.
                    for j in 0..4 {
                        let hb = vshlq_n_u8::<2>(vandq_u8(hm, vdupq_n_u8(1)));
                        let u = vorrq_u8(vandq_u8(v, vdupq_n_u8(3)), hb);
                        q[8 * n + 2 * j + h] = vsubq_s8(vreinterpretq_s8_u8(u), vdupq_n_s8(4));
                        v = vshrq_n_u8::<2>(v);
                        hm = vshrq_n_u8::<1>(hm);
                    }
                }
            }
            let s = unpack_q3k_scales(b[96..108].try_into().expect("12 bytes"));
            for (sc, &s) in sc.iter_mut().zip(&s) {
                *sc = i32::from(s) - 32;
            }
            KBlock {
                q,
                sc,
                mn: [0; 16],
                d: f16_le(&b[108..110]),
                dmin: 0.0,
            }
        }
        _ => {
            let sm = unpack_q4k_scales(b[4..16].try_into().expect("12 bytes"));
            let q5 = K == KQ5;
            let qs = if q5 { &b[48..176] } else { &b[16..144] };
            for h in 0..2 {
                // Q5_K: bit `s` of `qh[16 h + l]` is the fifth bit of sub-block `s`.
                let mut qh = if q5 {
                    ld_u8(&b[16 + 16 * h..])
                } else {
                    vdupq_n_u8(0)
                };
                for j in 0..4 {
                    let v = ld_u8(&qs[32 * j + 16 * h..]);
                    let (mut lo, mut hi) = (vandq_u8(v, m4), vshrq_n_u8::<4>(v));
                    if q5 {
                        let one = vdupq_n_u8(1);
                        lo = vorrq_u8(lo, vshlq_n_u8::<4>(vandq_u8(qh, one)));
                        hi = vorrq_u8(hi, vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<1>(qh), one)));
                        qh = vshrq_n_u8::<2>(qh);
                    }
                    q[4 * j + h] = vreinterpretq_s8_u8(lo);
                    q[4 * j + 2 + h] = vreinterpretq_s8_u8(hi);
                }
            }
            for (sc, &s) in sc.iter_mut().zip(&sm) {
                *sc = i32::from(s);
            }
            KBlock {
                q,
                sc,
                mn: [0; 16],
                d: f16_le(&b[0..2]),
                dmin: f16_le(&b[2..4]),
            }
        }
    }
}

/// K-quant rows `r0..r1` for tokens `t0..t0 + N`.
#[target_feature(enable = "neon")]
#[inline]
fn k_rows<const N: usize, const K: u8, const DOT: bool>(job: &RowJob<'_, Q8KActs>, t0: usize) {
    let (w, a) = (job.w, job.a);
    let bb = w.dtype.block_bytes();
    let nb = w.cols / QKK;
    let xq: [&[i8]; N] = std::array::from_fn(|t| a.qs(t0 + t));
    let xd: [&[f32]; N] = std::array::from_fn(|t| a.d(t0 + t));
    let xs: [&[i16]; N] = std::array::from_fn(|t| a.bsums(t0 + t));
    tiles(job, t0, |r| {
        let row = w.row(r);
        let mut sum = [0f32; N];
        for b in 0..nb {
            let kb = k_decode::<K>(&row[b * bb..(b + 1) * bb]);
            for t in 0..N {
                let x = &xq[t][QKK * b..QKK * (b + 1)];
                let mut isum = vdupq_n_s32(0);
                if k16(K) {
                    for (v, (&q, &s)) in kb.q.iter().zip(&kb.sc).enumerate() {
                        let p = dot16::<DOT>(vdupq_n_s32(0), q, ld_s8(&x[16 * v..]));
                        isum = vmlaq_n_s32(isum, p, s);
                    }
                    let sumi = vaddvq_s32(isum);
                    if K == KQ2 {
                        let bs = &xs[t][16 * b..16 * (b + 1)];
                        let summ: i32 = (0..16).map(|k| kb.mn[k] * i32::from(bs[k])).sum();
                        let dx = xd[t][b];
                        sum[t] += kb.d * dx * sumi as f32 - kb.dmin * dx * summ as f32;
                    } else {
                        sum[t] += kb.d * xd[t][b] * sumi as f32;
                    }
                } else {
                    for s in 0..8 {
                        let p = dot16::<DOT>(vdupq_n_s32(0), kb.q[2 * s], ld_s8(&x[32 * s..]));
                        let p = dot16::<DOT>(p, kb.q[2 * s + 1], ld_s8(&x[32 * s + 16..]));
                        isum = vmlaq_n_s32(isum, p, kb.sc[s]);
                    }
                    let sumi = vaddvq_s32(isum);
                    if K == KIQ4 {
                        sum[t] += kb.d * xd[t][b] * sumi as f32;
                        continue;
                    }
                    let bs = &xs[t][16 * b..16 * (b + 1)];
                    let summ: i32 = (0..8)
                        .map(|s| kb.sc[8 + s] * (i32::from(bs[2 * s]) + i32::from(bs[2 * s + 1])))
                        .sum();
                    let dx = xd[t][b];
                    sum[t] += kb.d * dx * sumi as f32 - kb.dmin * dx * summ as f32;
                }
            }
        }
        sum
    });
}

/// F32 / F16 / BF16 rows: each row converted to f32 once, then dotted with every token.
#[target_feature(enable = "neon")]
fn float_rows(job: &RowJob<'_, [f32]>) {
    let RowJob {
        w,
        a: x,
        r0,
        r1,
        n_tok,
        out,
    } = *job;
    let mut buf = vec![0f32; w.cols];
    for r in r0..r1 {
        switchyard_core::dtype::dequantize(w.dtype, w.row(r), &mut buf);
        for t in 0..n_tok {
            let v = dot_f32(&buf, &x[t * w.cols..(t + 1) * w.cols]);
            // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
            unsafe { out.write(t, r, v) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Vector helpers of attention and the float matmuls.

/// f32 dot product (4 accumulators of 4 lanes, then the tail in order).
#[target_feature(enable = "neon")]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let j = i + 4 * k;
            *acc = vfmaq_f32(*acc, ld_f32(&a[j..]), ld_f32(&b[j..]));
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = vfmaq_f32(acc[0], ld_f32(&a[i..]), ld_f32(&b[i..]));
        i += 4;
    }
    let v = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut s = vaddvq_f32(v);
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

/// `sum_i q[i] * k[i]` with `k` in f16.
#[target_feature(enable = "neon")]
pub(crate) fn dot_f16(q: &[f32], k: &[half::f16]) -> f32 {
    let n = q.len().min(k.len());
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut i = 0;
    while i + 8 <= n {
        acc[0] = vfmaq_f32(acc[0], ld_f32(&q[i..]), f16x4(&k[i..]));
        acc[1] = vfmaq_f32(acc[1], ld_f32(&q[i + 4..]), f16x4(&k[i + 4..]));
        i += 8;
    }
    let mut s = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    for j in i..n {
        s += q[j] * k[j].to_f32();
    }
    s
}

/// `y[i] += a * x[i]` with `x` in f16.
#[target_feature(enable = "neon")]
pub(crate) fn axpy_f16(y: &mut [f32], a: f32, x: &[half::f16]) {
    let n = y.len().min(x.len());
    let mut i = 0;
    while i + 4 <= n {
        let v = vfmaq_n_f32(ld_f32(&y[i..]), f16x4(&x[i..]), a);
        st_f32(&mut y[i..], v);
        i += 4;
    }
    for j in i..n {
        y[j] += a * x[j].to_f32();
    }
}

/// Attention of one KV head's query heads for one token: `scalar::attend_with` with the NEON
/// dot products and weighted sums.
#[target_feature(enable = "neon")]
pub(crate) fn attend_f16(a: &super::Attend<'_>, scores: &mut [f32], out: &mut [f32]) {
    super::scalar::attend_with(
        a,
        scores,
        out,
        |q, k| dot_f16(q, k),
        |y, a, x| axpy_f16(y, a, x),
    );
}

/// `e^x` of each lane, as `avx2::exp_ps`: `x` clamped to [-87, 88], `x = n ln2 + r`, a degree-6
/// Taylor polynomial for `e^r` scaled by `2^n`.
#[target_feature(enable = "neon")]
#[inline]
fn exp4(x: float32x4_t) -> float32x4_t {
    let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
    let n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(std::f32::consts::LOG2_E)));
    let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
    let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
    let mut p = vdupq_n_f32(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    let e = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(p, vreinterpretq_f32_s32(e))
}

/// `act(g) * u` for 4 lanes (see `avx2::glu8`).
#[target_feature(enable = "neon")]
#[inline]
fn glu4(gelu: bool, g: float32x4_t, u: float32x4_t) -> float32x4_t {
    let z = if gelu {
        let g3 = vmulq_f32(vmulq_f32(g, g), g);
        let y = vfmaq_f32(g, g3, vdupq_n_f32(0.044715));
        vmulq_f32(y, vdupq_n_f32(-2.0 * 0.797_884_6))
    } else {
        vnegq_f32(g)
    };
    let den = vaddq_f32(vdupq_n_f32(1.0), exp4(z));
    vmulq_f32(vdivq_f32(g, den), u)
}

/// NEON version of the gated activation (`super::glu`; lengths checked by the caller); a tail
/// shorter than 4 goes through the same vector code in a padded buffer.
#[target_feature(enable = "neon")]
pub(crate) fn glu(act: switchyard_core::Activation, g: &mut [f32], u: &[f32]) {
    let gelu = act == switchyard_core::Activation::GeluTanh;
    let n = g.len().min(u.len());
    let mut i = 0;
    while i + 4 <= n {
        let v = glu4(gelu, ld_f32(&g[i..]), ld_f32(&u[i..]));
        st_f32(&mut g[i..], v);
        i += 4;
    }
    if i < n {
        let (mut gb, mut ub) = ([0f32; 4], [0f32; 4]);
        gb[..n - i].copy_from_slice(&g[i..n]);
        ub[..n - i].copy_from_slice(&u[i..n]);
        let v = glu4(gelu, ld_f32(&gb), ld_f32(&ub));
        st_f32(&mut gb, v);
        g[i..n].copy_from_slice(&gb[..n - i]);
    }
}
