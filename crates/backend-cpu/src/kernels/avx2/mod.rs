//! AVX2 + FMA + F16C kernels.
//!
//! Every function here is `#[target_feature(enable = "avx2,fma,f16c")]`; the crate calls the
//! entry points (`rows`, `dot_f32`, and the quantizers in `quant/avx2.rs`) only after
//! `detected_level()` found those features at run time. Inside, helpers with the same features
//! are called safely; the only unsafe operations are unaligned loads and stores through pointers
//! into slices whose lengths are checked first. Hot loops are macros rather than helper
//! functions: LLVM does not always inline `#[target_feature]` helpers, and a call sends the
//! accumulators through memory.
//!
//! Structure: each weight row is read from memory once per block of tokens (128 KiB of
//! activations, so that these stay in L2) and multiplied with groups of tokens, each weight
//! block decoded once per group in registers. Every token has its own accumulators and its
//! float operations are the same sequence whatever the group size, so a token's outputs are
//! bit-identical alone and in any batch (batch invariance).
//!
//! Q4_0 / Q5_0 / Q8_0, Q4_1 / Q5_1 and IQ4_NL (`rows_q0`, groups of up to 16 tokens) take the
//! activations interleaved
//! (`Q8Acts::interleave`: lane `k` of a vector holds 4 quants of block `k` of a group of 8). A
//! group of 8 weight blocks is decoded and transposed the same way once per token group; then
//! per token `maddubs` + `madd` over the group's 8 vectors give the 8 exact block dot products in
//! the 8 i32 lanes, and one conversion and one FMA with the 8 products of block scales finish
//! the group: about 3 (Q4_0 / Q5_0) or 5 (Q8_0) instructions per token and block, against
//! about 9 when every block is converted and scaled on its own (Q4_1 / Q5_1: one more FMA of
//! the 8 block mins with the activations' block sums). The K-quants Q2_K / Q3_K / Q4_K / Q5_K /
//! Q6_K and IQ4_XS (`rows_k`) work the same way on the 8 sub-blocks of a super-block, with the
//! activations of `Q8KActs::interleave`, for groups of up to 16 tokens. IQ4_NL / IQ4_XS map
//! their 4-bit indices to the table values with one `_mm256_shuffle_epi8` per vector and then
//! multiply them as signed quants (the sign trick of Q8_0).
//!
//! Integer tricks (the block sums are exact integers, as in the scalar code):
//! - `maddubs(u8, i8)` multiplies unsigned weight quants with signed activation quants and adds
//!   pairs into i16 without overflow (|x| <= 127 and weights <= 63, or the sign trick for Q8_0:
//!   `maddubs(|w|, sign(x, w))` with |w| <= 128); for Q4_0 / Q5_0 the i16 pairs of 8 / 4
//!   vectors are summed before one `madd` widens them (at most 30,480 / 31,496);
//! - Q4_0 / Q5_0 quants are used unsigned (0..16 / 0..32) and each block's sum starts from
//!   `-offset * sum(x quants of the block)`, so the offset 8 / 16 is taken off exactly; Q4_1 /
//!   Q5_1 quants are unsigned as stored;
//! - the Q4_K / Q5_K / Q2_K mins and the Q6_K / Q3_K offsets 32 / 4 are applied through the
//!   activations' per-16 sums.

use std::arch::x86_64::*;
use std::ops::Range;

use switchyard_core::GgmlType;

use super::quant::{self, Q8Acts, Q8KActs, QK8, QKK};
pub(crate) use super::x86::*;
use super::{f16_le, unpack_q3k_scales, unpack_q4k_scales, Attend, Family, OutPtr, RowJob};
use switchyard_core::Activation;

/// `f::<nt, G...>(args)` for a token count `nt` known at run time (1 to 16): the kernels take
/// their token count as a const generic, so that each token's accumulators are registers.
/// Written `by_nt!(nt, f::<_, G...>(args))`.
macro_rules! by_nt {
    ($nt:expr, $f:ident::<_ $(, $g:tt)*>($($arg:expr),* $(,)?)) => {
        match $nt {
            1 => $f::<1 $(, $g)*>($($arg),*),
            2 => $f::<2 $(, $g)*>($($arg),*),
            3 => $f::<3 $(, $g)*>($($arg),*),
            4 => $f::<4 $(, $g)*>($($arg),*),
            5 => $f::<5 $(, $g)*>($($arg),*),
            6 => $f::<6 $(, $g)*>($($arg),*),
            7 => $f::<7 $(, $g)*>($($arg),*),
            8 => $f::<8 $(, $g)*>($($arg),*),
            9 => $f::<9 $(, $g)*>($($arg),*),
            10 => $f::<10 $(, $g)*>($($arg),*),
            11 => $f::<11 $(, $g)*>($($arg),*),
            12 => $f::<12 $(, $g)*>($($arg),*),
            13 => $f::<13 $(, $g)*>($($arg),*),
            14 => $f::<14 $(, $g)*>($($arg),*),
            15 => $f::<15 $(, $g)*>($($arg),*),
            16 => $f::<16 $(, $g)*>($($arg),*),
            n => unreachable!("a group of {n} tokens"),
        }
    };
}

// The kernels by weight layout; macros first (`q0` defines the decoding macros the others and
// the AVX-512 kernels use).
#[macro_use]
mod q0;
mod float;
mod kquant;
mod packed;

pub(crate) use float::*;
pub(crate) use kquant::*;
pub(crate) use packed::*;
pub(crate) use q0::*;

/// Most tokens multiplied with one weight row at a time (a group): the kernels keep one or two
/// accumulators per token in registers.
const NT_MAX: usize = 4;

// ---------------------------------------------------------------------------------------------
// f32 dot product.

/// AVX2 version of `scalar::dot_f32` (lengths checked by the caller).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            *acc = _mm256_fmadd_ps(ld_f32x8(&a[o..]), ld_f32x8(&b[o..]), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(ld_f32x8(&a[i..]), ld_f32x8(&b[i..]), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_ps(v);
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

/// AVX2 version of `scalar::dot_f16` (lengths checked by the caller).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f16(q: &[f32], k: &[half::f16]) -> f32 {
    let n = q.len().min(k.len());
    let kp = k.as_ptr().cast::<u8>();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY: every load reads elements `i .. i + 8` with `i + 8 <= n`, inside both slices
    // (`k` as 16 bytes at `2 i`). Loads are unaligned.
    unsafe {
        while i + 32 <= n {
            for (u, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * u;
                let kv = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(2 * o).cast()));
                *acc = _mm256_fmadd_ps(ld_f32x8(&q[o..]), kv, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            let kv = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(2 * i).cast()));
            acc[0] = _mm256_fmadd_ps(ld_f32x8(&q[i..]), kv, acc[0]);
            i += 8;
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_ps(v);
    for j in i..n {
        s += q[j] * k[j].to_f32();
    }
    s
}

/// AVX2 version of `scalar::axpy_f16` (lengths checked by the caller).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn axpy_f16(y: &mut [f32], a: f32, x: &[half::f16]) {
    let n = y.len().min(x.len());
    let xp = x.as_ptr().cast::<u8>();
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: elements `i .. i + 8 <= n` of `x` (16 bytes at `2 i`); unaligned load.
        let xv = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(xp.add(2 * i).cast()) });
        let yv = _mm256_fmadd_ps(av, xv, ld_f32x8(&y[i..]));
        st_f32x8(&mut y[i..], yv);
        i += 8;
    }
    for j in i..n {
        y[j] = a.mul_add(x[j].to_f32(), y[j]);
    }
}

/// `e^x` of each lane: `x` clamped to [-87, 88], `x = n ln2 + r` with `|r| <= ln2 / 2`, a
/// degree-6 Taylor polynomial for `e^r` (relative error below 2e-7) scaled by `2^n`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn exp_ps(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(e))
}

/// `act(g) * u` for 8 lanes: `g / (1 + exp(z)) * u` with `z = -2 sqrt(2/pi) (g + 0.044715 g^3)`
/// (GELU, tanh form) or `z = -g` (SiLU).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn glu8(gelu: bool, g: __m256, u: __m256) -> __m256 {
    let z = if gelu {
        let g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
        let y = _mm256_fmadd_ps(g3, _mm256_set1_ps(0.044715), g);
        _mm256_mul_ps(y, _mm256_set1_ps(-2.0 * 0.797_884_6))
    } else {
        _mm256_sub_ps(_mm256_setzero_ps(), g)
    };
    let den = _mm256_add_ps(_mm256_set1_ps(1.0), exp_ps(z));
    _mm256_mul_ps(_mm256_div_ps(g, den), u)
}

/// AVX2 version of the gated activation (`super::glu`; lengths checked by the caller). A tail
/// shorter than 8 goes through the same vector code in a padded buffer, so every element gets
/// the same operations wherever it lies.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn glu(act: Activation, g: &mut [f32], u: &[f32]) {
    let gelu = act == Activation::GeluTanh;
    let n = g.len().min(u.len());
    let mut i = 0;
    while i + 8 <= n {
        let v = glu8(gelu, ld_f32x8(&g[i..]), ld_f32x8(&u[i..]));
        st_f32x8(&mut g[i..], v);
        i += 8;
    }
    if i < n {
        let (mut gb, mut ub) = ([0f32; 8], [0f32; 8]);
        gb[..n - i].copy_from_slice(&g[i..n]);
        ub[..n - i].copy_from_slice(&u[i..n]);
        let v = glu8(gelu, ld_f32x8(&gb), ld_f32x8(&ub));
        st_f32x8(&mut gb, v);
        g[i..n].copy_from_slice(&gb[..n - i]);
    }
}

// ---------------------------------------------------------------------------------------------
// Matmul rows.

/// Computes rows `r0..r1` of the output for all `n_tok` tokens (see `scalar::rows`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows(job: &RowJob<'_>) {
    match job.family() {
        Family::Q8(j) => rows_q0::<false>(&j),
        Family::Q8K(j) => rows_k::<false>(&j),
        Family::F32(j) => rows_float(&j),
    }
}

/// [`rows`] for the transposed layouts (`TransposedK`, `TransposedQ0`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows_transposed(job: &RowJob<'_>) {
    match job.family() {
        Family::Q8(j) => rows_q0::<true>(&j),
        Family::Q8K(j) => rows_k::<true>(&j),
        Family::F32(_) => unreachable!("no transposed layout for float weights"),
    }
}

/// Activation bytes multiplied with one weight row before the next row is read: the kernels
/// take the rows of their chunk once per block of tokens this large, so that the activations
/// stay in L2 however many tokens there are.
pub(crate) const TOKEN_BLOCK_BYTES: usize = 128 << 10;

/// Calls `f(t0, nt)` for consecutive blocks of tokens of at most `TOKEN_BLOCK_BYTES` (at least
/// `NT_MAX` tokens) when a token takes `token_bytes`.
#[inline]
pub(crate) fn token_blocks(n_tok: usize, token_bytes: usize, mut f: impl FnMut(usize, usize)) {
    let per = (TOKEN_BLOCK_BYTES / token_bytes.max(1) / NT_MAX).max(1) * NT_MAX;
    let mut t0 = 0;
    while t0 < n_tok {
        let nt = per.min(n_tok - t0);
        f(t0, nt);
        t0 += nt;
    }
}

/// Calls `f(t0, nt)` for the groups `quant::token_groups(n_tok, max)`, shifted by `base`.
#[inline]
pub(crate) fn token_groups(base: usize, n_tok: usize, max: usize, mut f: impl FnMut(usize, usize)) {
    for (t0, nt) in quant::token_groups(n_tok, max) {
        f(base + t0, nt);
    }
}

/// Rows of one tile: the results of a tile are written out per token in one run.
pub(crate) const TILE: usize = 64;

/// The loops of a rows kernel around its dot products: blocks of tokens (`token_blocks`, a
/// token taking `w.cols` bytes), tiles of `TILE` rows, and groups of up to `nt_max` (at most
/// `N`) tokens; `tile(rows, tb0, t0, nt, res)` fills `res[i][r - rows.start]` for the group's
/// tokens `t0 + i` (`i < nt`) and the tile's rows `r`, whose results are then written out per
/// token in one run (`tb0`: the first token of the block).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn tiles<A: ?Sized, const N: usize>(
    job: &RowJob<'_, A>,
    nt_max: usize,
    mut tile: impl FnMut(Range<usize>, usize, usize, usize, &mut [[f32; TILE]; N]),
) {
    assert!(nt_max <= N);
    let RowJob { r0, r1, out, .. } = *job;
    // Every entry of a tile that is read was written for that tile: zeroed once per call.
    let mut res = [[0f32; TILE]; N];
    token_blocks(job.n_tok, job.w.cols, |tb0, tbn| {
        let mut r = r0;
        while r < r1 {
            let re = (r + TILE).min(r1);
            token_groups(tb0, tbn, nt_max, |t0, nt| {
                tile(r..re, tb0, t0, nt, &mut res);
                for (i, tl) in res.iter().enumerate().take(nt) {
                    // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
                    unsafe { out.write_run(t0 + i, r, &tl[..re - r]) };
                }
            });
            r = re;
        }
    });
}

/// [`tiles`] with one dot product per row: `dot(row, t0, nt, res)` sets `res[i]` to row
/// `row`'s result for token `t0 + i` (`i < nt`), the rows being `rb` bytes each from the
/// start of `w.data`. `prefetch`: the first group of a token block fetches the row
/// `ROW_PREFETCH_AHEAD` on.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn row_tiles<A: ?Sized, const N: usize>(
    job: &RowJob<'_, A>,
    (rb, nt_max, prefetch): (usize, usize, bool),
    mut dot: impl FnMut(&[u8], usize, usize, &mut [f32; N]),
) {
    let data = job.w.data;
    let r1 = job.r1;
    assert!(data.len() >= r1 * rb && r1 <= job.w.rows);
    tiles::<A, N>(job, nt_max, |rows, tb0, t0, nt, tile| {
        for rr in rows.clone() {
            let mut res = [0f32; N];
            let ahead = rr + ROW_PREFETCH_AHEAD;
            if prefetch && t0 == tb0 && ahead < r1 {
                prefetch_bytes(&data[ahead * rb..(ahead + 1) * rb]);
            }
            dot(&data[rr * rb..(rr + 1) * rb], t0, nt, &mut res);
            for (tl, &v) in tile.iter_mut().zip(&res).take(nt) {
                tl[rr - rows.start] = v;
            }
        }
    });
}

/// Rows a matmul kernel's first pass over a tile fetches ahead of the row it computes
/// (`prefetch_bytes`).
pub(crate) const ROW_PREFETCH_AHEAD: usize = 2;

/// Hints the cache to fetch `b` (every 64-byte line of it). The kernels read a row (or a
/// packed group) in a short burst and then compute on it from L1 for a long while, so the
/// hardware's stream prefetcher, which runs only a few lines ahead of the misses, leaves each
/// burst waiting on memory; fetching the next rows during the compute hides that.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn prefetch_bytes(b: &[u8]) {
    for line in b.chunks(64) {
        _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
    }
}

// ---------------------------------------------------------------------------------------------
// Attention over f16 KV rows.

/// AVX2 version of `scalar::attend_f16`. The caller checked: `hd % 16 == 0`, `q` and `out` hold
/// the same whole number of heads, every `r + hd` of `rows` is within `kc` and `vc`, and
/// `scores` holds at least `4 * rows.len()` floats. Heads go four at a time (`attend_heads`):
/// each key and value row is loaded and converted once for the four, and the score and output
/// accumulators stay in registers.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn attend_f16(a: &Attend<'_>, scores: &mut [f32], out: &mut [f32]) {
    let (q, hd) = (a.q, a.hd);
    let g = out.len() / hd;
    let mut h0 = 0;
    while h0 < g {
        let nh = (g - h0).min(4);
        let (qs, os) = (
            &q[h0 * hd..(h0 + nh) * hd],
            &mut out[h0 * hd..(h0 + nh) * hd],
        );
        match nh {
            4 => attend_heads::<4>(&Attend { q: qs, ..*a }, scores, os),
            3 => attend_heads::<3>(&Attend { q: qs, ..*a }, scores, os),
            2 => attend_heads::<2>(&Attend { q: qs, ..*a }, scores, os),
            _ => attend_heads::<1>(&Attend { q: qs, ..*a }, scores, os),
        }
        h0 += nh;
    }
}

/// `NH` heads of [`attend_f16`] (`q`, `out`: `NH * hd`; preconditions as there).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn attend_heads<const NH: usize>(a: &Attend<'_>, scores: &mut [f32], out: &mut [f32]) {
    let cap = a;
    let Attend {
        q,
        hd,
        kc,
        vc,
        rows,
        ..
    } = *a;
    let n = rows.len();
    assert!(q.len() == NH * hd && out.len() == NH * hd && scores.len() >= NH * n);
    let (kp, vp, qp) = (
        kc.as_ptr().cast::<u8>(),
        vc.as_ptr().cast::<u8>(),
        q.as_ptr(),
    );
    // Scores, head-major: scores[h * n + j] = q_h . k_j.
    let mut mx = [f32::NEG_INFINITY; NH];
    for (j, &r) in rows.iter().enumerate() {
        let mut acc = [[_mm256_setzero_ps(); 2]; NH];
        let mut i = 0;
        while i < hd {
            // SAFETY: `r + hd <= kc.len()` (caller) and `i + 16 <= hd`, so both 8-element f16
            // loads are inside `kc`; `h * hd + i + 16 <= NH * hd = q.len()` for the q loads.
            // All loads are unaligned.
            unsafe {
                let k0 = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(2 * (r + i)).cast()));
                let k1 = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(2 * (r + i + 8)).cast()));
                for (h, a) in acc.iter_mut().enumerate() {
                    let qh = qp.add(h * hd + i);
                    a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(qh), k0, a[0]);
                    a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(8)), k1, a[1]);
                }
            }
            i += 16;
        }
        for (h, a) in acc.iter().enumerate() {
            let s = cap.capped(hsum_ps(_mm256_add_ps(a[0], a[1])));
            scores[h * n + j] = s;
            mx[h] = mx[h].max(s);
        }
    }
    // e^(s - max) in place and the reciprocal of each head's sum. A tail shorter than 8 goes
    // through the same vector code in a buffer padded with the max.
    let mut inv = [0f32; NH];
    for (h, inv) in inv.iter_mut().enumerate() {
        let sc = &mut scores[h * n..(h + 1) * n];
        let m = _mm256_set1_ps(mx[h]);
        let mut sum = _mm256_setzero_ps();
        let mut j = 0;
        while j + 8 <= n {
            let e = exp_ps(_mm256_sub_ps(ld_f32x8(&sc[j..]), m));
            st_f32x8(&mut sc[j..], e);
            sum = _mm256_add_ps(sum, e);
            j += 8;
        }
        let mut s = hsum_ps(sum);
        if j < n {
            let mut buf = [mx[h]; 8];
            buf[..n - j].copy_from_slice(&sc[j..]);
            let e = exp_ps(_mm256_sub_ps(ld_f32x8(&buf), m));
            st_f32x8(&mut buf, e);
            for (d, &e) in sc[j..].iter_mut().zip(&buf) {
                *d = e;
                s += e;
            }
        }
        *inv = 1.0 / s;
    }
    // Outputs, 16 dimensions at a time for all heads: sum_j e_j v_j, times 1 / sum.
    let sp = scores.as_ptr();
    let mut d0 = 0;
    while d0 < hd {
        let mut acc = [[_mm256_setzero_ps(); 2]; NH];
        for (j, &r) in rows.iter().enumerate() {
            // SAFETY: `r + hd <= vc.len()` (caller) and `d0 + 16 <= hd` for the value loads;
            // `h * n + j < NH * n <= scores.len()` for the weights.
            unsafe {
                let v0 = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(2 * (r + d0)).cast()));
                let v1 = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(2 * (r + d0 + 8)).cast()));
                for (h, a) in acc.iter_mut().enumerate() {
                    let w = _mm256_set1_ps(*sp.add(h * n + j));
                    a[0] = _mm256_fmadd_ps(w, v0, a[0]);
                    a[1] = _mm256_fmadd_ps(w, v1, a[1]);
                }
            }
        }
        for (h, a) in acc.iter().enumerate() {
            let s = _mm256_set1_ps(inv[h]);
            st_f32x8(&mut out[h * hd + d0..], _mm256_mul_ps(a[0], s));
            st_f32x8(&mut out[h * hd + d0 + 8..], _mm256_mul_ps(a[1], s));
        }
        d0 += 16;
    }
}
