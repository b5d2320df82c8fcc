//! AVX2 + FMA + F16C kernels.
//!
//! Every function here is `#[target_feature(enable = "avx2,fma,f16c")]`; the crate calls the
//! entry points (`rows`, `dot_f32`, `quantize_q8`, `quantize_q8k`) only after
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
//! Q4_0 / Q5_0 / Q8_0 (`rows_q0`, groups of up to 16 tokens) take the activations interleaved
//! (`Q8Acts::interleave`: lane `k` of a vector holds 4 quants of block `k` of a group of 8). A
//! group of 8 weight blocks is decoded and transposed the same way once per token group; then
//! per token `maddubs` + `madd` over the group's 8 vectors give the 8 exact block dot products in
//! the 8 i32 lanes, and one conversion and one FMA with the 8 products of block scales finish
//! the group: about 3 (Q4_0 / Q5_0) or 5 (Q8_0) instructions per token and block, against
//! about 9 when every block is converted and scaled on its own. Q4_K / Q6_K (`rows_k`) work the
//! same way on the 8 sub-blocks of a super-block, with the activations of `Q8KActs::interleave`,
//! for groups of up to 16 tokens.
//!
//! Integer tricks (the block sums are exact integers, as in the scalar code):
//! - `maddubs(u8, i8)` multiplies unsigned weight quants with signed activation quants and adds
//!   pairs into i16 without overflow (|x| <= 127 and weights <= 63, or the sign trick for Q8_0:
//!   `maddubs(|w|, sign(x, w))` with |w| <= 128); for Q4_0 / Q5_0 the i16 pairs of 8 / 4
//!   vectors are summed before one `madd` widens them (at most 30,480 / 31,496);
//! - Q4_0 / Q5_0 quants are used unsigned (0..16 / 0..32) and each block's sum starts from
//!   `-offset * sum(x quants of the block)`, so the offset 8 / 16 is taken off exactly;
//! - the Q4_K mins and the Q6_K offset 32 are applied through the activations' per-16 sums.

use std::arch::x86_64::*;

use switchyard_core::GgmlType;

use super::quant::{self, Q8Acts, Q8KActs, QK8, QKK};
use super::{f16_le, unpack_q4k_scales, Acts, OutPtr, QMatrix};

/// Most tokens multiplied with one weight row at a time (a group): the kernels keep one or two
/// accumulators per token in registers.
const NT_MAX: usize = 4;

// ---------------------------------------------------------------------------------------------
// Loads, stores, reductions.

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn ld_u8x16(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: `b` has at least 16 bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn ld_f32x8(b: &[f32]) -> __m256 {
    assert!(b.len() >= 8);
    // SAFETY: `b` has at least 8 floats; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(b.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn st_i8x32(b: &mut [i8], v: __m256i) {
    assert!(b.len() >= 32);
    // SAFETY: `b` has at least 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn st_f32x8(b: &mut [f32], v: __m256) {
    assert!(b.len() >= 8);
    // SAFETY: `b` has at least 8 writable floats; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(b.as_mut_ptr(), v) }
}

/// Sum of the 8 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sum of the 8 i32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Largest magnitude of the lanes of `v`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn hmax_abs(v: &[__m256]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for &x in v {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, x));
    }
    let s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

// ---------------------------------------------------------------------------------------------
// Activation quantization (bit-identical to `quant::quantize_q8*_scalar`).

/// Quantizes 32 floats with the inverse scale `id`: the 32 quants in order, and the four i32
/// vectors of quants (elements 0..8, 8..16, 16..24, 24..32) for sums.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn quantize_32(v: &[__m256; 4], id: f32) -> (__m256i, [__m256i; 4]) {
    let mul = _mm256_set1_ps(id);
    let i = v.map(|x| {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, mul),
        );
        _mm256_cvtps_epi32(r)
    });
    // packs work within 128-bit lanes: the bytes come out as 0-3 8-11 16-19 24-27 4-7 ...
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    let q = _mm256_packs_epi16(a, b);
    let q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    (q, i)
}

/// AVX2 version of `quant::quantize_q8_scalar`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn quantize_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (((xb, qb), d), s) in x
        .chunks_exact(QK8)
        .zip(qs.chunks_exact_mut(QK8))
        .zip(d.iter_mut())
        .zip(s.iter_mut())
    {
        let v = [
            ld_f32x8(xb),
            ld_f32x8(&xb[8..]),
            ld_f32x8(&xb[16..]),
            ld_f32x8(&xb[24..]),
        ];
        let (dd, id) = quant::scales(hmax_abs(&v));
        let (q, i) = quantize_32(&v, id);
        st_i8x32(qb, q);
        let sum = hsum_epi32(_mm256_add_epi32(
            _mm256_add_epi32(i[0], i[1]),
            _mm256_add_epi32(i[2], i[3]),
        ));
        *d = dd;
        *s = dd * sum as f32;
    }
}

/// AVX2 version of `quant::quantize_q8k_scalar`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn quantize_q8k(x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
    for (((xb, qb), d), bs) in x
        .chunks_exact(QKK)
        .zip(qs.chunks_exact_mut(QKK))
        .zip(d.iter_mut())
        .zip(bsums.chunks_exact_mut(QKK / 16))
    {
        let mut v = [_mm256_setzero_ps(); 32];
        for (k, v) in v.iter_mut().enumerate() {
            *v = ld_f32x8(&xb[8 * k..]);
        }
        let (dd, id) = quant::scales(hmax_abs(&v));
        for g in 0..8 {
            let (q, i) = quantize_32(&[v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]], id);
            st_i8x32(&mut qb[32 * g..], q);
            bs[2 * g] = hsum_epi32(_mm256_add_epi32(i[0], i[1])) as i16;
            bs[2 * g + 1] = hsum_epi32(_mm256_add_epi32(i[2], i[3])) as i16;
        }
        *d = dd;
    }
}

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
fn exp_ps(x: __m256) -> __m256 {
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
fn glu8(gelu: bool, g: __m256, u: __m256) -> __m256 {
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
pub(crate) fn glu(gelu: bool, g: &mut [f32], u: &[f32]) {
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
pub(crate) fn rows(
    w: &QMatrix<'_>,
    acts: &Acts<'_>,
    r0: usize,
    r1: usize,
    n_tok: usize,
    out: &OutPtr,
) {
    match (w.dtype, acts) {
        (GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0, Acts::Q8(a)) => {
            rows_q0::<false>(w, a, r0, r1, n_tok, out)
        }
        (GgmlType::Q4_K | GgmlType::Q6_K, Acts::Q8K(a)) => {
            rows_k::<false>(w, a, r0, r1, n_tok, out)
        }
        (GgmlType::F32 | GgmlType::F16 | GgmlType::BF16, Acts::F32(x)) => {
            rows_float(w, x, r0, r1, n_tok, out)
        }
        (ty, _) => unreachable!("no kernel for {ty}"),
    }
}

/// [`rows`] for the transposed layouts (`TransposedK`, `TransposedQ0`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows_transposed(
    w: &QMatrix<'_>,
    acts: &Acts<'_>,
    r0: usize,
    r1: usize,
    n_tok: usize,
    out: &OutPtr,
) {
    match acts {
        Acts::Q8K(a) => rows_k::<true>(w, a, r0, r1, n_tok, out),
        Acts::Q8(a) => rows_q0::<true>(w, a, r0, r1, n_tok, out),
        Acts::F32(_) => unreachable!("no transposed layout for float weights"),
    }
}

/// Activation bytes multiplied with one weight row before the next row is read: the kernels
/// take the rows of their chunk once per block of tokens this large, so that the activations
/// stay in L2 however many tokens there are.
const TOKEN_BLOCK_BYTES: usize = 128 << 10;

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

/// Rows a matmul kernel's first pass over a tile fetches ahead of the row it computes
/// (`prefetch_bytes`).
const ROW_PREFETCH_AHEAD: usize = 2;

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

// --- Q8_0 / Q4_0 / Q5_0 ----------------------------------------------------------------------

/// Q8_0 weights (kind parameter of the kernels below).
pub(crate) const Q8_0: u8 = 0;
/// Q4_0 weights.
pub(crate) const Q4_0: u8 = 1;
/// Q5_0 weights.
pub(crate) const Q5_0: u8 = 2;

/// Bytes of a block of kind `k`.
pub(crate) const fn q0_block_bytes(k: u8) -> usize {
    match k {
        Q8_0 => 34,
        Q4_0 => 18,
        _ => 22,
    }
}

/// The f16 at `p`, as f32 (F16C). Use inside `unsafe` with `p` valid for 2 bytes.
macro_rules! f16_at {
    ($p:expr) => {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            $p.cast::<u16>().read_unaligned() as i32,
        )))
    };
}

/// The 32 quants of the block of kind `$k` at `$p`, in element order: signed for Q8_0,
/// unsigned (0..16 or 0..32) for Q4_0 / Q5_0. Use inside `unsafe` with `$p` valid for a block.
macro_rules! q0_decode {
    ($k:expr, $p:expr) => {{
        let p: *const u8 = $p;
        match $k {
            Q8_0 => _mm256_loadu_si256(p.add(2).cast()),
            Q4_0 => {
                let v = _mm_loadu_si128(p.add(2).cast());
                let m4 = _mm_set1_epi8(0xF);
                _mm256_set_m128i(
                    _mm_and_si128(_mm_srli_epi16::<4>(v), m4),
                    _mm_and_si128(v, m4),
                )
            }
            _ => {
                let qh = p.add(2).cast::<u32>().read_unaligned();
                let v = _mm_loadu_si128(p.add(6).cast());
                let m4 = _mm_set1_epi8(0xF);
                let nib = _mm256_set_m128i(
                    _mm_and_si128(_mm_srli_epi16::<4>(v), m4),
                    _mm_and_si128(v, m4),
                );
                let hb = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
                _mm256_or_si256(nib, hb)
            }
        }
    }};
}

/// Spreads the 32 bits of `x` over 32 bytes: byte `i` is 0xFF if bit `i` is set, else 0.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn bytes_from_bits(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit)
}

/// Rows `r0..r1` of a Q4_0 / Q5_0 / Q8_0 matrix, in the file layout or (`PRE`) in the
/// transposed layout of `TransposedQ0` (`w.data` then holds `ceil(blocks / 8)` groups of
/// `tq0_group_bytes` per row).
#[target_feature(enable = "avx2,fma,f16c")]
fn rows_q0<const PRE: bool>(
    w: &QMatrix<'_>,
    a: &Q8Acts,
    r0: usize,
    r1: usize,
    n_tok: usize,
    out: &OutPtr,
) {
    match w.dtype {
        GgmlType::Q8_0 => rows_q0_k::<Q8_0, PRE>(w, a, r0, r1, n_tok, out),
        GgmlType::Q4_0 => rows_q0_k::<Q4_0, PRE>(w, a, r0, r1, n_tok, out),
        _ => rows_q0_k::<Q5_0, PRE>(w, a, r0, r1, n_tok, out),
    }
}

/// Bytes of one group of 8 blocks of kind `k` in the transposed layout (`TransposedQ0`): the 8
/// f16 scales, then the group's 8 transposed vectors (Q8_0: as they are; Q4_0 / Q5_0: vector
/// `m` in the low nibbles of 32 bytes and vector `m + 4` in the high ones; Q5_0 then 32 bytes,
/// bit `m` of byte `i` holding bit 4 of byte `i` of vector `m`, so each vector's fifth bits are
/// one shift and one mask away). The same size as 8 blocks.
pub(crate) const fn tq0_group_bytes(k: u8) -> usize {
    8 * q0_block_bytes(k)
}

/// The 8 vectors of a transposed group of kind `$k` whose vectors start at `$p` (see
/// `tq0_group_bytes`). Use inside `unsafe` with `$p` valid for the group's vector bytes.
macro_rules! q0_decode_t {
    ($k:expr, $p:expr) => {{
        let p: *const u8 = $p;
        let mut v = [_mm256_setzero_si256(); 8];
        if $k == Q8_0 {
            for (m, v) in v.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(p.add(32 * m).cast());
            }
        } else {
            let m4 = _mm256_set1_epi8(0xF);
            for m in 0..4 {
                let x = _mm256_loadu_si256(p.add(32 * m).cast());
                v[m] = _mm256_and_si256(x, m4);
                v[m + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4);
            }
            if $k == Q5_0 {
                // Bit `m` of each byte is bit 4 of that byte of vector `m`: shifted to bit 4
                // (within its byte: the 16-bit shifts move at most 4 places, the mask keeps
                // only bit 4) and or-ed in.
                let hb = _mm256_loadu_si256(p.add(128).cast());
                let b4 = _mm256_set1_epi8(0x10);
                let hi = [
                    _mm256_slli_epi16::<4>(hb),
                    _mm256_slli_epi16::<3>(hb),
                    _mm256_slli_epi16::<2>(hb),
                    _mm256_slli_epi16::<1>(hb),
                    hb,
                    _mm256_srli_epi16::<1>(hb),
                    _mm256_srli_epi16::<2>(hb),
                    _mm256_srli_epi16::<3>(hb),
                ];
                for (v, h) in v.iter_mut().zip(hi) {
                    *v = _mm256_or_si256(*v, _mm256_and_si256(h, b4));
                }
            }
        }
        v
    }};
}

/// Most tokens multiplied with one decoded, transposed group of 8 weight blocks (Q4_0 / Q5_0 /
/// Q8_0): a token takes one accumulator across the row.
const Q0_NT_MAX: usize = 16;

/// Rows of one tile: the results of a tile are written out per token in one run.
const TILE: usize = 64;

/// Rows `r0..r1` for weights of kind `K`, with the activations in their interleaved form
/// (`Q8Acts::interleave`, groups of 8 blocks): per tile of `TILE` rows and group of up to
/// `Q0_NT_MAX` tokens, each row's groups of weight blocks are decoded and transposed once and
/// multiplied with every token of the group (`q0_dot`); each token's results of a tile are
/// written in one run.
#[target_feature(enable = "avx2,fma,f16c")]
fn rows_q0_k<const K: u8, const PRE: bool>(
    w: &QMatrix<'_>,
    a: &Q8Acts,
    r0: usize,
    r1: usize,
    n_tok: usize,
    out: &OutPtr,
) {
    assert!(
        !a.qi.is_empty() && a.layout().0 == 0,
        "rows_q0: activations not interleaved"
    );
    let rb = if PRE {
        (w.cols / QK8).div_ceil(8) * tq0_group_bytes(K)
    } else {
        w.row_bytes()
    };
    assert!(w.data.len() >= w.rows * rb && r1 <= w.rows);
    // Every entry of a tile that is read was written for that tile: zeroed once per call.
    let mut tile = [[0f32; TILE]; Q0_NT_MAX];
    // Tokens per pass over a row: 16 for short rows; 8 for rows of more than 4 groups, where
    // 16 accumulators (more than the 16 vector registers leave room for) spill on every group
    // (mmbench Q5_0 640 x 2048 at 16 tokens: 21.0 -> 17.0 us per token).
    let nt_max = if w.cols > 4 * 8 * QK8 { 8 } else { Q0_NT_MAX };
    token_blocks(n_tok, w.cols, |tb0, tbn| {
        let mut r = r0;
        while r < r1 {
            let re = (r + TILE).min(r1);
            token_groups(tb0, tbn, nt_max, |t0, nt| {
                for rr in r..re {
                    let mut res = [0f32; Q0_NT_MAX];
                    let row = &w.data[rr * rb..(rr + 1) * rb];
                    let ahead = rr + ROW_PREFETCH_AHEAD;
                    if t0 == tb0 && ahead < r1 {
                        prefetch_bytes(&w.data[ahead * rb..(ahead + 1) * rb]);
                    }
                    macro_rules! go {
                        ($($n:literal)*) => {
                            match nt {
                                $($n => q0_dot::<$n, K, PRE>(row, a, t0, &mut res),)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    go!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
                    for (tl, &v) in tile.iter_mut().zip(&res).take(nt) {
                        tl[rr - r] = v;
                    }
                }
                for (i, tl) in tile.iter().enumerate().take(nt) {
                    // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
                    unsafe { out.write_run(t0 + i, r, &tl[..re - r]) };
                }
            });
            r = re;
        }
    });
}

/// Transposes the 8 x 8 matrix of i32 lanes `v` (`v[m]` lane `k` becomes `v[k]` lane `m`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn transpose8(v: &mut [__m256i; 8]) {
    let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
    let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
    let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
    let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
    let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    v[0] = _mm256_permute2x128_si256::<0x20>(u0, u4);
    v[1] = _mm256_permute2x128_si256::<0x20>(u1, u5);
    v[2] = _mm256_permute2x128_si256::<0x20>(u2, u6);
    v[3] = _mm256_permute2x128_si256::<0x20>(u3, u7);
    v[4] = _mm256_permute2x128_si256::<0x31>(u0, u4);
    v[5] = _mm256_permute2x128_si256::<0x31>(u1, u5);
    v[6] = _mm256_permute2x128_si256::<0x31>(u2, u6);
    v[7] = _mm256_permute2x128_si256::<0x31>(u3, u7);
}

/// The 4 x 4 transposes of i32 lanes in each 128-bit half of `v[0..4]` (a half group, see
/// `Q8Acts::interleave`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn transpose4x2(v: &[__m256i; 8]) -> [__m256i; 4] {
    let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
    let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
    let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// The exact integer dot products of `M` transposed weight vectors `v` with the interleaved
/// activation vectors at `x`, a block per i32 lane, added to `s`. Kind `K`: Q8_0 signed (the
/// sign trick, `av` = `|v|`, one `madd` per vector since a pair can reach 32,512), Q4_0 / Q5_0
/// unsigned (pairs reach 2 * 15 * 127 / 2 * 31 * 127, so the i16 sums of 8 / 4 vectors are
/// exact before one `madd`). Use inside `unsafe` with `x` valid for `32 * M` bytes.
macro_rules! q0_lanes {
    ($k:expr, $m:expr, $v:expr, $av:expr, $x:expr, $s:expr) => {{
        let ones = _mm256_set1_epi16(1);
        let mut s = $s;
        if $k == Q8_0 {
            for m in 0..$m {
                let xm = _mm256_loadu_si256($x.add(32 * m).cast());
                let p = _mm256_maddubs_epi16($av[m], _mm256_sign_epi8(xm, $v[m]));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
            }
        } else {
            let per = if $k == Q4_0 { 8 } else { 4 };
            let mut m0 = 0;
            while m0 < $m {
                let mut p = _mm256_setzero_si256();
                for m in m0..(m0 + per).min($m) {
                    let xm = _mm256_loadu_si256($x.add(32 * m).cast());
                    p = _mm256_add_epi16(p, _mm256_maddubs_epi16($v[m], xm));
                }
                s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
                m0 += per;
            }
        }
        s
    }};
}

/// One row of kind `K` against the `NT` tokens `t0..t0 + NT`: `res[t]`.
///
/// Per group of 8 weight blocks: the blocks are decoded (Q8_0 signed, Q4_0 / Q5_0 unsigned as
/// stored) and transposed like the interleaved activations, so that the `maddubs` / `madd` sums
/// over the 8 vectors give each block's exact integer dot product in its own i32 lane,
/// starting from `-offset * sum(x quants)`. Per token and group that is one conversion and one
/// FMA with the 8 products of block scales (a lane per block); then the horizontal sum. The same
/// operations for every `NT`, so a token gives the same bits in any group.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn q0_dot<const NT: usize, const K: u8, const PRE: bool>(
    row: &[u8],
    a: &Q8Acts,
    t0: usize,
    res: &mut [f32; Q0_NT_MAX],
) {
    let nb = a.cols / QK8;
    let ng = a.padded_blocks() / 8;
    let bb = q0_block_bytes(K);
    assert!(ng == nb.div_ceil(8));
    assert!(
        row.len()
            >= if PRE {
                ng * tq0_group_bytes(K)
            } else {
                nb * bb
            }
    );
    assert!(a.qi.len() >= (t0 + NT) * ng * 256);
    assert!(a.ni.len() >= (t0 + NT) * ng * 8 && a.di.len() >= (t0 + NT) * ng * 8);
    let rp = row.as_ptr();
    // SAFETY: in bounds by the assertions above (offsets of token `t0`).
    let (xp, np, dp) = unsafe {
        (
            a.qi.as_ptr().add(t0 * ng * 256),
            a.ni.as_ptr().add(t0 * ng * 8),
            a.di.as_ptr().add(t0 * ng * 8),
        )
    };
    let mut acc = [_mm256_setzero_ps(); NT];
    for g in 0..ng {
        let nbg = (nb - 8 * g).min(8);
        // SAFETY: blocks `8 g + k < nb` lie inside the row (`bb` bytes each), or with `PRE`
        // group `g` (`tq0_group_bytes` each); for every token `t < NT` the group
        // `(t0 + t) ng + g` lies inside `qi`, `ni` and `di` (assertions above): 256 bytes of
        // quants (128 for a half group) and 8 entries. Loads are unaligned.
        unsafe {
            let (mut v, dwv) = if PRE {
                let p = rp.add(g * tq0_group_bytes(K));
                let dwv = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
                (q0_decode_t!(K, p.add(16)), dwv)
            } else {
                let mut v = [_mm256_setzero_si256(); 8];
                let mut dw = [0u16; 8];
                for (k, (vk, dk)) in v.iter_mut().zip(dw.iter_mut()).enumerate().take(nbg) {
                    let b = rp.add((8 * g + k) * bb);
                    *dk = b.cast::<u16>().read_unaligned();
                    *vk = q0_decode!(K, b);
                }
                (v, _mm256_cvtph_ps(_mm_loadu_si128(dw.as_ptr().cast())))
            };
            if nbg <= 4 {
                let h = if PRE {
                    [v[0], v[1], v[2], v[3]]
                } else {
                    transpose4x2(&v)
                };
                let ah = h.map(|x| _mm256_sign_epi8(x, x));
                for (t, acc) in acc.iter_mut().enumerate() {
                    let o = (t * ng + g) * 8;
                    let s = _mm256_loadu_si256(np.add(o).cast());
                    let s = q0_lanes!(K, 4, h, ah, xp.add(32 * o), s);
                    // Lanes 4..8 hold the second halves of blocks 0..4: add them in.
                    let s = _mm256_add_epi32(s, _mm256_permute2x128_si256::<0x01>(s, s));
                    let dd = _mm256_mul_ps(dwv, _mm256_loadu_ps(dp.add(o)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
                }
                continue;
            }
            if !PRE {
                transpose8(&mut v);
            }
            let av = v.map(|x| _mm256_sign_epi8(x, x));
            for (t, acc) in acc.iter_mut().enumerate() {
                let o = (t * ng + g) * 8;
                let s = _mm256_loadu_si256(np.add(o).cast());
                let s = q0_lanes!(K, 8, v, av, xp.add(32 * o), s);
                let dd = _mm256_mul_ps(dwv, _mm256_loadu_ps(dp.add(o)));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
            }
        }
    }
    for t in 0..NT {
        res[t] = hsum_ps(acc[t]);
    }
}

// --- Packed Q8_0 (a row per lane) -------------------------------------------------------------

/// Most tokens multiplied with each packed weight vector while it is in a register.
const PACKED_NT: usize = 8;

/// Row groups `g0..g1` of a [`PackedQ8`](super::PackedQ8) matrix for all `n_tok` tokens, each
/// token's 8 results of a group stored in one run (see [`packed_groups`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows_packed_q8(
    w: &super::PackedQ8,
    a: &PackedActs,
    g0: usize,
    g1: usize,
    n_tok: usize,
    out: &OutPtr,
) {
    packed_groups(w, a, g0, g1, n_tok, |t, g, r, nr| {
        // SAFETY: this chunk owns the rows of groups `g0..g1` (see `OutPtr`).
        unsafe {
            if nr == 8 {
                out.write8(t, 8 * g, r);
            } else {
                out.write_run(t, 8 * g, &r[..nr]);
            }
        }
    });
}

/// Per token, the largest of the first `limit` outputs in row groups `g0..g1` of a
/// [`PackedQ8`](super::PackedQ8) matrix and its row, chosen like the engine's host argmax
/// (the first row on ties; NaN never chosen; `(-inf, 0)` when nothing is above negative
/// infinity). Whole groups below `limit` go through a running best per lane (a strict greater
/// comparison keeps each lane's first row on ties; a lane holds its group's first row, the lane
/// adds its offset), merged at the end by value and then smallest row; the group that `limit`
/// or the end of the matrix cuts is compared one value at a time, and its rows follow every
/// whole group's.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn packed_argmax(
    w: &super::PackedQ8,
    a: &PackedActs,
    g0: usize,
    g1: usize,
    n_tok: usize,
    limit: usize,
) -> Vec<(f32, u32)> {
    let mut bv = vec![_mm256_set1_ps(f32::NEG_INFINITY); n_tok];
    let mut bi = vec![_mm256_setzero_si256(); n_tok];
    let mut tail = vec![(f32::NEG_INFINITY, 0u32); n_tok];
    packed_groups(w, a, g0, g1, n_tok, |t, g, r, nr| {
        if nr == 8 && 8 * g + 8 <= limit {
            // SAFETY: `r` is 8 floats; the load is unaligned.
            let v = unsafe { _mm256_loadu_ps(r.as_ptr()) };
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v, bv[t]);
            // `max(v, best)` is `best` when `v` is NaN or equal: the blend by `gt`, but a plain
            // store (a blend into memory compiles to a masked store, slow on AMD cores).
            bv[t] = _mm256_max_ps(v, bv[t]);
            let base = _mm256_set1_epi32((8 * g) as i32);
            bi[t] = _mm256_blendv_epi8(bi[t], base, _mm256_castps_si256(gt));
        } else {
            let b = &mut tail[t];
            for (i, &v) in r
                .iter()
                .enumerate()
                .take(nr.min(limit.saturating_sub(8 * g)))
            {
                if v > b.0 {
                    *b = (v, (8 * g + i) as u32);
                }
            }
        }
    });
    (0..n_tok)
        .map(|t| {
            let (mut v, mut idx) = ([0f32; 8], [0i32; 8]);
            // SAFETY: 8 floats / 8 i32; the stores are unaligned.
            unsafe {
                _mm256_storeu_ps(v.as_mut_ptr(), bv[t]);
                _mm256_storeu_si256(idx.as_mut_ptr().cast(), bi[t]);
            }
            let mut best = (f32::NEG_INFINITY, 0u32);
            for l in 0..8 {
                let row = (idx[l] + l as i32) as u32;
                if v[l] > best.0 || (v[l] == best.0 && v[l] > f32::NEG_INFINITY && row < best.1) {
                    best = (v[l], row);
                }
            }
            if tail[t].0 > best.0 {
                best = tail[t];
            }
            best
        })
        .collect()
}

/// Row groups `g0..g1` of a [`PackedQ8`](super::PackedQ8) matrix for all `n_tok` tokens: per
/// group, the tokens up to `PACKED_NT` at a time (`packed_dot`); `sink(t, g, results, nr)` gets token `t`'s results for the group's rows
/// `8 g..8 g + nr` (`results[..nr]`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn packed_groups(
    w: &super::PackedQ8,
    a: &PackedActs,
    g0: usize,
    g1: usize,
    n_tok: usize,
    mut sink: impl FnMut(usize, usize, &[f32; 8], usize),
) {
    let nb = w.cols / QK8;
    let groups = w.rows.div_ceil(8);
    assert!(w.q.len() >= groups * nb * 256 && w.d.len() >= g1 * nb * 8 && g1 <= groups);
    assert!(a.nb == nb && a.x.len() >= n_tok.div_ceil(a.stride) * a.stride * 8 * nb);
    for g in g0..g1 {
        let q = &w.q[g * nb * 256..(g + 1) * nb * 256];
        let d = &w.d[g * nb * 8..(g + 1) * nb * 8];
        let nr = (w.rows - 8 * g).min(8);
        // The quants of the group `ahead` groups on (in the matrix, not only in this chunk) are
        // prefetched during the first pass over this one: its first touch of a group would
        // otherwise wait on memory (`prefetch_bytes`). One token computes little per group, so
        // it fetches further ahead.
        let ahead = if n_tok == 1 { 4 } else { 1 };
        let mut pf =
            (g + ahead < groups).then(|| &w.q[(g + ahead) * nb * 256..(g + ahead + 1) * nb * 256]);
        let mut t = 0;
        while t < n_tok {
            let mut res = [[0f32; 8]; PACKED_NT];
            let pf_now = pf.take();
            macro_rules! go {
                ($($n:literal)*) => {
                    match (n_tok - t).min(PACKED_NT) {
                        1 => packed_dot::<1>(q, d, a, t / a.stride, pf_now, &mut res),
                        $($n => packed_dot_call::<$n>(q, d, a, t / a.stride, pf_now, &mut res),)*
                        _ => unreachable!(),
                    }
                };
            }
            let nt = go!(2 3 4 5 6 7 8);
            for (i, r) in res.iter().enumerate().take(nt) {
                sink(t + i, g, r, nr);
            }
            t += nt;
        }
    }
}

/// The activations as the packed kernel reads them ([`PackedActs::new`]).
pub(crate) struct PackedActs {
    /// Blocks per token.
    nb: usize,
    /// Tokens per group: `PACKED_NT`, or 1 for a single token (its quants as they are).
    stride: usize,
    /// Per group of `stride` tokens and run `j < 8 nb` of 4 quants of a token: the group's
    /// tokens' 4 quants side by side (an i32 each; 0 for tokens past the end).
    x: Vec<i32>,
    /// Per group of `stride` tokens and block: the tokens' block scales side by side.
    d: Vec<f32>,
}

impl PackedActs {
    /// Regroups `a` (`n_tok` tokens, quantized, not interleaved): a token's quants for a weight
    /// vector then lie at a fixed offset from one pointer per token group, not at its own row.
    pub(crate) fn new(a: &Q8Acts, n_tok: usize) -> Self {
        let nb = a.cols / QK8;
        let stride = if n_tok == 1 { 1 } else { PACKED_NT };
        let tg = n_tok.div_ceil(stride);
        let mut x = vec![0i32; tg * stride * 8 * nb];
        let mut d = vec![0f32; tg * stride * nb];
        for t in 0..n_tok {
            let (g, i) = (t / stride, t % stride);
            let q = &a.qs[t * a.cols..(t + 1) * a.cols];
            for (j, c) in q.chunks_exact(4).enumerate() {
                x[(g * 8 * nb + j) * stride + i] =
                    i32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]);
            }
            for b in 0..nb {
                d[(g * nb + b) * stride + i] = a.d[t * nb + b];
            }
        }
        PackedActs { nb, stride, x, d }
    }
}

/// [`packed_dot`] for several tokens, kept out of line: inlined into `packed_groups`, LLVM
/// hoisted the weights' absolute values out of its loop over token groups into an array on the
/// stack, written and read back per group (the layout this kernel dropped), and the 16-sequence
/// decode step was slower (`bench engine --concurrency 16`, 6 alternated pairs: TPOT mean 54.9
/// -> 50.9 ms out of line). One token stays inline: a call per row group costs more there.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline(never)]
fn packed_dot_call<const NT: usize>(
    q: &[i8],
    d: &[u16],
    a: &PackedActs,
    tg: usize,
    prefetch: Option<&[i8]>,
    res: &mut [[f32; 8]; PACKED_NT],
) -> usize {
    packed_dot::<NT>(q, d, a, tg, prefetch, res)
}

/// One packed row group (quants `q`, scales `d`) against the first `NT` tokens of token group
/// `tg` of `a`: `res[t][i]` for row `i` of the group. Per block and token: 8 vectors of the
/// token's 4 quants broadcast to every lane, signed like the weights (the sign trick) and
/// multiplied with the weights' absolute values (`maddubs`, then `madd` to i32: a pair can
/// reach 32,258), which gives every row's exact integer block sum in its own lane; then one
/// conversion and one FMA with the 8 rows' scales times the token's. The same operations for
/// every `NT`. A weight vector's absolute value is taken as it is loaded, once per `NT` tokens
/// (an array of them made once per group and read back was slower: `mmbench Q8_0`, whole
/// Gemma lm_head, 2 threads, 8 / 16 tokens: 16.0 / 25.6 -> 13.0 / 23.8 ms).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn packed_dot<const NT: usize>(
    q: &[i8],
    d: &[u16],
    a: &PackedActs,
    tg: usize,
    prefetch: Option<&[i8]>,
    res: &mut [[f32; 8]; PACKED_NT],
) -> usize {
    let nb = a.nb;
    assert!(q.len() >= nb * 256 && d.len() >= nb * 8);
    assert!(prefetch.is_none_or(|p| p.len() >= nb * 256));
    // Tokens per group in `a`: `PACKED_NT` (the layout's offsets below are constants then), or
    // 1 for a lone token (`NT == 1`).
    let st = if NT == 1 { a.stride } else { PACKED_NT };
    assert!(NT <= st && st == a.stride);
    let xg = &a.x[tg * st * 8 * nb..(tg + 1) * st * 8 * nb];
    let dg = &a.d[tg * st * nb..(tg + 1) * st * nb];
    let pfp = prefetch.map(|p| p.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); NT];
    let (qp, xp, dxp) = (q.as_ptr(), xg.as_ptr(), dg.as_ptr());
    let mut s = [_mm256_setzero_si256(); NT];
    // One loop over the row group's vectors, two at a time (vector `i` is vector `i % 8` of
    // block `i / 8`, and the token group's quants for it are at `st i`), not a nest of
    // blocks and vectors: a nest unrolled 8 times had its weight vectors hoisted and spilled.
    let mut i = 0;
    while i < 8 * nb {
        // SAFETY: vectors `i, i + 1 < 8 nb` of the group (256 bytes per block, asserted), the
        // token group's `st` quant
        // runs at `st j` and block scales at `st b` (`t < NT <= st`) lie inside `xg` / `dg`
        // (`8 nb` / `nb` runs of `st`). Loads are unaligned.
        unsafe {
            if let Some(p) = pfp {
                // Bytes `32 i..32 i + 64` of the group to prefetch (asserted above): a hint.
                _mm_prefetch::<_MM_HINT_T0>(p.add(32 * i));
            }
            for j in i..i + 2 {
                let wv = _mm256_loadu_si256(qp.add(32 * j).cast());
                let av = _mm256_sign_epi8(wv, wv);
                for (t, s) in s.iter_mut().enumerate() {
                    let xb = _mm256_set1_epi32(xp.add(st * j + t).read_unaligned());
                    let p = _mm256_maddubs_epi16(av, _mm256_sign_epi8(xb, wv));
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
                }
            }
            if i % 8 == 6 {
                let b = i / 8;
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(8 * b).cast()));
                for (t, acc) in acc.iter_mut().enumerate() {
                    let dd = _mm256_mul_ps(dw, _mm256_set1_ps(*dxp.add(st * b + t)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), dd, *acc);
                    s[t] = _mm256_setzero_si256();
                }
            }
        }
        i += 2;
    }
    for (r, acc) in res.iter_mut().zip(&acc) {
        // SAFETY: `r` is 8 floats; the store is unaligned.
        unsafe { _mm256_storeu_ps(r.as_mut_ptr(), *acc) };
    }
    NT
}

// --- Q4_K / Q6_K ------------------------------------------------------------------------------

/// Most tokens multiplied with one decoded, transposed K-quant super-block.
const K_NT_MAX: usize = 16;

/// Rows `r0..r1` of a Q4_K / Q6_K matrix, with the activations interleaved
/// (`Q8KActs::interleave`): per tile of `TILE` rows and group of up to `K_NT_MAX` tokens, each
/// super-block of a row is decoded to its 8 sub-blocks of 32 unsigned quants and transposed
/// once, so that per token `maddubs` over its 8 vectors gives the 8 sub-block dot products in
/// the 8 i32 lanes, summed in i16 (Q4_K: 8 vectors, at most 8 * 2 * 15 * 127 = 30,480; Q6_K: 2
/// vectors, at most 32,004) before one `madd` with the sub-block scales widens them. That is
/// about 1.1 (Q4_K) / 1.5 (Q6_K) multiply instructions per 32 weights and token, against 2 when
/// each run of 32 is scaled on its own. Each token's results of a tile are written in one run.
/// `PRE`: the super-blocks are stored transposed already (`TransposedK`), so the transposes are
/// skipped; the rest is the same, and so are the results.
#[target_feature(enable = "avx2,fma,f16c")]
fn rows_k<const PRE: bool>(
    w: &QMatrix<'_>,
    a: &Q8KActs,
    r0: usize,
    r1: usize,
    n_tok: usize,
    out: &OutPtr,
) {
    assert!(!a.qi.is_empty(), "rows_k: activations not interleaved");
    let q4 = w.dtype == GgmlType::Q4_K;
    // Every entry of a tile that is read was written for that tile: zeroed once per call.
    let mut tile = [[0f32; TILE]; K_NT_MAX];
    // 8 tokens per pass for rows of more than 4 super-blocks, as in `rows_q0_k` (mmbench Q4_K
    // 640 x 2048 at 16 tokens: 20.0 -> 18.5 us per token).
    let nt_max = if w.cols > 4 * QKK { 8 } else { K_NT_MAX };
    token_blocks(n_tok, w.cols, |tb0, tbn| {
        let mut r = r0;
        while r < r1 {
            let re = (r + TILE).min(r1);
            token_groups(tb0, tbn, nt_max, |t0, nt| {
                for rr in r..re {
                    let mut res = [0f32; K_NT_MAX];
                    let row = w.row(rr);
                    let ahead = rr + ROW_PREFETCH_AHEAD;
                    if t0 == tb0 && ahead < r1 {
                        prefetch_bytes(w.row(ahead));
                    }
                    macro_rules! go {
                        ($($n:literal)*) => {
                            match (q4, nt) {
                                $((true, $n) => q4k_dot::<$n, PRE>(row, a, t0, &mut res),)*
                                $((false, $n) => q6k_dot::<$n, PRE>(row, a, t0, &mut res),)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    go!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
                    for (tl, &v) in tile.iter_mut().zip(&res).take(nt) {
                        tl[rr - r] = v;
                    }
                }
                for (i, tl) in tile.iter().enumerate().take(nt) {
                    // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
                    unsafe { out.write_run(t0 + i, r, &tl[..re - r]) };
                }
            });
            r = re;
        }
    });
}

/// The slices of the tokens `t0..t0 + NT` of `a` that a K-quant row of `nsb` super-blocks
/// reads, as pointers: (interleaved quants, scales, per-16 sums), each token after the other.
#[inline]
fn k_ptrs<const NT: usize>(a: &Q8KActs, t0: usize) -> (*const i8, *const f32, *const i16) {
    let cols = a.cols;
    let nsb = cols / QKK;
    (
        a.qi[t0 * cols..(t0 + NT) * cols].as_ptr(),
        a.d[t0 * nsb..(t0 + NT) * nsb].as_ptr(),
        a.bsums[t0 * cols / 16..(t0 + NT) * cols / 16].as_ptr(),
    )
}

/// One Q4_K row against the `NT` tokens from `t0` on: `res[t]`, with
/// `res = sum_sb d dx sum_j sc_j dot_j - dmin dx sum_j m_j bsum_j` over the sub-blocks `j`.
/// The same operations for every `NT`, so a token gives the same bits in any group.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn q4k_dot<const NT: usize, const PRE: bool>(
    row: &[u8],
    a: &Q8KActs,
    t0: usize,
    res: &mut [f32; K_NT_MAX],
) {
    let cols = a.cols;
    let nsb = cols / QKK;
    assert!(row.len() >= nsb * 144);
    let (xp, dp, bp) = k_ptrs::<NT>(a, t0);
    let rp = row.as_ptr();
    let m4 = _mm256_set1_epi8(0xF);
    let dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    let mut acc = [_mm256_setzero_ps(); NT];
    for sb in 0..nsb {
        // SAFETY: `sb < nsb`: super-block `sb` of the row (144 bytes at `144 sb`, asserted) and,
        // for every token `t < NT`, its quants `t cols + 256 sb ..+256`, scale `t nsb + sb` and
        // sums `t cols / 16 + 16 sb ..+16`, inside the slices `k_ptrs` took. Loads are unaligned.
        unsafe {
            let b = rp.add(144 * sb);
            let d = f16_at!(b);
            let dmin = f16_at!(b.add(2));
            let sm = unpack_q4k_scales(&*b.add(4).cast::<[u8; 12]>());
            let smv = _mm_loadu_si128(sm.as_ptr().cast());
            // Lane j: scale j in both i16 halves (`madd` then scales the lane's two sums).
            let sc = _mm256_cvtepu8_epi32(smv);
            let sc = _mm256_or_si256(sc, _mm256_slli_epi32::<16>(sc));
            // Mins duplicated pairwise, m0 m0 m1 m1 ..., against the per-16 sums.
            let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, dup_mins));
            let mut v = [_mm256_setzero_si256(); 8];
            for j in 0..4 {
                let q = _mm256_loadu_si256(b.add(16 + 32 * j).cast());
                v[2 * j] = _mm256_and_si256(q, m4);
                v[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            }
            if !PRE {
                transpose8(&mut v);
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let x = xp.add(t * cols + QKK * sb);
                let mut p = _mm256_setzero_si256();
                for (m, v) in v.iter().enumerate() {
                    let xm = _mm256_loadu_si256(x.add(32 * m).cast());
                    p = _mm256_add_epi16(p, _mm256_maddubs_epi16(*v, xm));
                }
                let s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, sc));
                let dx = *dp.add(t * nsb + sb);
                let bsums = _mm256_loadu_si256(bp.add(t * cols / 16 + 16 * sb).cast());
                let mn = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins));
                let mn = _mm256_mul_ps(mn, _mm256_set1_ps(dmin * dx));
                // One add on the accumulator's chain per super-block, not two FMAs.
                *acc = _mm256_add_ps(*acc, _mm256_fmsub_ps(s, _mm256_set1_ps(d * dx), mn));
            }
        }
    }
    for t in 0..NT {
        res[t] = hsum_ps(acc[t]);
    }
}

/// One Q6_K row against the `NT` tokens from `t0` on: `res[t]`, with
/// `res = sum_sb d dx sum_k sc_k (dot_k(q, x) - 32 bsum_k)` over the runs `k` of 16.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn q6k_dot<const NT: usize, const PRE: bool>(
    row: &[u8],
    a: &Q8KActs,
    t0: usize,
    res: &mut [f32; K_NT_MAX],
) {
    let cols = a.cols;
    let nsb = cols / QKK;
    assert!(row.len() >= nsb * 210);
    let (xp, dp, bp) = k_ptrs::<NT>(a, t0);
    let rp = row.as_ptr();
    let mut acc = [_mm256_setzero_ps(); NT];
    for sb in 0..nsb {
        // SAFETY: `sb < nsb`: super-block `sb` of the row (210 bytes at `210 sb`, asserted) and,
        // for every token `t < NT`, its quants `t cols + 256 sb ..+256`, scale `t nsb + sb` and
        // sums `t cols / 16 + 16 sb ..+16`, inside the slices `k_ptrs` took. Loads are unaligned.
        unsafe {
            let b = rp.add(210 * sb);
            let d = f16_at!(b.add(208));
            // The 16 scales as i16; lane j: scale 2j (elements 0..16 of sub-block j) or 2j + 1
            // (elements 16..32) in both halves.
            let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192).cast()));
            let sc_lo = _mm256_blend_epi16::<0xAA>(sc, _mm256_slli_epi32::<16>(sc));
            let sc_hi = _mm256_blend_epi16::<0xAA>(_mm256_srli_epi32::<16>(sc), sc);
            let mut v = [_mm256_setzero_si256(); 8];
            for n in 0..2 {
                let ql0 = _mm256_loadu_si256(b.add(64 * n).cast());
                let ql1 = _mm256_loadu_si256(b.add(64 * n + 32).cast());
                let qh = _mm256_loadu_si256(b.add(128 + 32 * n).cast());
                let q = q6k_quants(ql0, ql1, qh);
                v[4 * n..4 * n + 4].copy_from_slice(&q);
            }
            if !PRE {
                transpose8(&mut v);
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let x = xp.add(t * cols + QKK * sb);
                // Vectors 0..4 hold elements 0..16 of each sub-block, 4..8 elements 16..32.
                let mut s = _mm256_setzero_si256();
                for pair in 0..4 {
                    let x0 = _mm256_loadu_si256(x.add(64 * pair).cast());
                    let x1 = _mm256_loadu_si256(x.add(64 * pair + 32).cast());
                    let p = _mm256_add_epi16(
                        _mm256_maddubs_epi16(v[2 * pair], x0),
                        _mm256_maddubs_epi16(v[2 * pair + 1], x1),
                    );
                    let scp = if pair < 2 { sc_lo } else { sc_hi };
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(p, scp));
                }
                let bsums = _mm256_loadu_si256(bp.add(t * cols / 16 + 16 * sb).cast());
                let corr = _mm256_madd_epi16(sc, bsums);
                let s = _mm256_sub_epi32(s, _mm256_slli_epi32::<5>(corr));
                let dd = _mm256_set1_ps(d * *dp.add(t * nsb + sb));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
            }
        }
    }
    for t in 0..NT {
        res[t] = hsum_ps(acc[t]);
    }
}

/// The four runs of 32 unsigned Q6_K quants (0..64) of one half of a super-block, from its low
/// bits `ql0` / `ql1` (64 bytes) and high bits `qh` (32 bytes).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn q6k_quants(ql0: __m256i, ql1: __m256i, qh: __m256i) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0xF);
    let hmask = |m: i8| _mm256_and_si256(qh, _mm256_set1_epi8(m));
    [
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
    ]
}

// --- F32 / F16 / BF16 -------------------------------------------------------------------------

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// Eight weights starting at element `i` of a row of kind `K`, as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn ld_w8<const K: u8>(row: &[u8], i: usize) -> __m256 {
    match K {
        F32 => {
            let b = &row[4 * i..4 * i + 32];
            // SAFETY: `b` has 32 bytes = 8 floats; `loadu` has no alignment requirement.
            unsafe { _mm256_loadu_ps(b.as_ptr().cast()) }
        }
        F16 => _mm256_cvtph_ps(ld_u8x16(&row[2 * i..])),
        _ => {
            let h = _mm256_cvtepu16_epi32(ld_u8x16(&row[2 * i..]));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
        }
    }
}

/// Weight `i` of a row of kind `K`.
#[inline]
fn w1<const K: u8>(row: &[u8], i: usize) -> f32 {
    match K {
        F32 => f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]),
        F16 => f16_le(&row[2 * i..]),
        _ => half::bf16::from_le_bytes([row[2 * i], row[2 * i + 1]]).to_f32(),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rows_float(w: &QMatrix<'_>, x: &[f32], r0: usize, r1: usize, n_tok: usize, out: &OutPtr) {
    let cols = w.cols;
    token_blocks(n_tok, 4 * cols, |tb0, tbn| {
        for r in r0..r1 {
            let row = w.row(r);
            token_groups(tb0, tbn, NT_MAX, |t0, nt| {
                let mut res = [0f32; NT_MAX];
                let xs = &x[t0 * cols..(t0 + nt) * cols];
                match (w.dtype, nt) {
                    (GgmlType::F32, 1) => float_dot::<1, F32>(row, xs, cols, &mut res),
                    (GgmlType::F32, 2) => float_dot::<2, F32>(row, xs, cols, &mut res),
                    (GgmlType::F32, 3) => float_dot::<3, F32>(row, xs, cols, &mut res),
                    (GgmlType::F32, _) => float_dot::<4, F32>(row, xs, cols, &mut res),
                    (GgmlType::F16, 1) => float_dot::<1, F16>(row, xs, cols, &mut res),
                    (GgmlType::F16, 2) => float_dot::<2, F16>(row, xs, cols, &mut res),
                    (GgmlType::F16, 3) => float_dot::<3, F16>(row, xs, cols, &mut res),
                    (GgmlType::F16, _) => float_dot::<4, F16>(row, xs, cols, &mut res),
                    (_, 1) => float_dot::<1, BF16>(row, xs, cols, &mut res),
                    (_, 2) => float_dot::<2, BF16>(row, xs, cols, &mut res),
                    (_, 3) => float_dot::<3, BF16>(row, xs, cols, &mut res),
                    (_, _) => float_dot::<4, BF16>(row, xs, cols, &mut res),
                }
                for (i, &v) in res.iter().enumerate().take(nt) {
                    // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
                    unsafe { out.write(t0 + i, r, v) };
                }
            });
        }
    });
}

/// `res[t] = dot(row, xs[t * cols..])` for `t < NT`, the row of element kind `K`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn float_dot<const NT: usize, const K: u8>(
    row: &[u8],
    xs: &[f32],
    cols: usize,
    res: &mut [f32; NT_MAX],
) {
    let x: [&[f32]; NT] = std::array::from_fn(|t| &xs[t * cols..(t + 1) * cols]);
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    let mut i = 0;
    while i + 16 <= cols {
        let w0 = ld_w8::<K>(row, i);
        let w1 = ld_w8::<K>(row, i + 8);
        for t in 0..NT {
            acc[0][t] = _mm256_fmadd_ps(w0, ld_f32x8(&x[t][i..]), acc[0][t]);
            acc[1][t] = _mm256_fmadd_ps(w1, ld_f32x8(&x[t][i + 8..]), acc[1][t]);
        }
        i += 16;
    }
    if i + 8 <= cols {
        let w0 = ld_w8::<K>(row, i);
        for t in 0..NT {
            acc[0][t] = _mm256_fmadd_ps(w0, ld_f32x8(&x[t][i..]), acc[0][t]);
        }
        i += 8;
    }
    for t in 0..NT {
        let mut s = hsum_ps(_mm256_add_ps(acc[0][t], acc[1][t]));
        for (k, &xk) in x[t].iter().enumerate().skip(i) {
            s += w1::<K>(row, k) * xk;
        }
        res[t] = s;
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
pub(crate) fn attend_f16(
    q: &[f32],
    hd: usize,
    kc: &[half::f16],
    vc: &[half::f16],
    rows: &[usize],
    scores: &mut [f32],
    out: &mut [f32],
) {
    let g = out.len() / hd;
    let mut h0 = 0;
    while h0 < g {
        let nh = (g - h0).min(4);
        let (qs, os) = (
            &q[h0 * hd..(h0 + nh) * hd],
            &mut out[h0 * hd..(h0 + nh) * hd],
        );
        match nh {
            4 => attend_heads::<4>(qs, hd, kc, vc, rows, scores, os),
            3 => attend_heads::<3>(qs, hd, kc, vc, rows, scores, os),
            2 => attend_heads::<2>(qs, hd, kc, vc, rows, scores, os),
            _ => attend_heads::<1>(qs, hd, kc, vc, rows, scores, os),
        }
        h0 += nh;
    }
}

/// `NH` heads of [`attend_f16`] (`q`, `out`: `NH * hd`; preconditions as there).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn attend_heads<const NH: usize>(
    q: &[f32],
    hd: usize,
    kc: &[half::f16],
    vc: &[half::f16],
    rows: &[usize],
    scores: &mut [f32],
    out: &mut [f32],
) {
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
            let s = hsum_ps(_mm256_add_ps(a[0], a[1]));
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
