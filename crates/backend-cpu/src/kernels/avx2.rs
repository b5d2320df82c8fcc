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
//! Structure: for one token (decode) each weight block is decoded in registers and used once
//! (`q0_dot1`, `KRow`); for more tokens each weight row is unpacked once into a small buffer
//! (unsigned quants and scale vectors) and multiplied with groups of up to 8 tokens whose
//! activations were interleaved block by block at quantization time (`Q0Row::dot`,
//! `k_group_dot`), taking the rows once per 128 KiB of activations so that these stay in L2.
//!
//! Integer tricks (the block sums are exact integers, as in the scalar code):
//! - `maddubs(u8, i8)` multiplies unsigned weight quants with signed activation quants and adds
//!   pairs into i16 without overflow (|x| <= 127 and weights <= 63, or the sign trick for Q8_0:
//!   `maddubs(|w|, sign(x, w))` with |w| <= 128);
//! - Q4_0 / Q5_0 quants are used unsigned (0..16 / 0..32) and the offset 8 / 16 is taken off
//!   in f32, once per row and token, as `offset * sum_j d_w[j] * (d_x[j] * sum(x quants of j))`;
//! - the Q4_K mins and the Q6_K offset 32 are applied through the activations' per-16 sums.

use std::arch::x86_64::*;

use switchyard_core::GgmlType;

use super::quant::{self, Q8Acts, Q8Group, Q8KActs, Q8KGroup, GROUP_MAX, QK8, QKK};
use super::{f16_le, unpack_q4k_scales, Acts, OutPtr, QMatrix};

/// Most tokens multiplied with one weight row at a time by the float kernels, which keep two
/// vectors per token in registers. The quantized kernels take groups of up to
/// `quant::GROUP_MAX` (8) tokens, laid out for them at quantization time.
const NT_MAX: usize = 4;

// ---------------------------------------------------------------------------------------------
// Loads, stores, reductions.

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn ld_u8x32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: `b` has at least 32 bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn ld_u8x8(b: &[u8]) -> __m128i {
    assert!(b.len() >= 8);
    // SAFETY: `b` has at least 8 bytes; `loadl_epi64` reads 8 bytes, unaligned.
    unsafe { _mm_loadl_epi64(b.as_ptr().cast()) }
}

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
fn st_u8x32(b: &mut [u8], v: __m256i) {
    assert!(b.len() >= 32);
    // SAFETY: `b` has at least 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
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
fn hsum_ps(v: __m256) -> f32 {
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
            rows_q0(w, a, r0, r1, n_tok, out)
        }
        (GgmlType::Q4_K, Acts::Q8K(a)) => rows_k(w, a, r0, r1, n_tok, out),
        (GgmlType::Q6_K, Acts::Q8K(a)) => rows_k(w, a, r0, r1, n_tok, out),
        (GgmlType::F32 | GgmlType::F16 | GgmlType::BF16, Acts::F32(x)) => {
            rows_float(w, x, r0, r1, n_tok, out)
        }
        (ty, _) => unreachable!("no kernel for {ty}"),
    }
}

/// Activation bytes multiplied with one weight row before the next row is read: the kernels
/// take the rows of their chunk once per block of tokens this large, so that the activations
/// stay in L2 however many tokens there are.
const TOKEN_BLOCK_BYTES: usize = 128 << 10;

/// Calls `f(t0, nt)` for consecutive blocks of tokens of at most `TOKEN_BLOCK_BYTES` (at least
/// `NT_MAX` tokens) when a token takes `token_bytes`.
#[inline]
fn token_blocks(n_tok: usize, token_bytes: usize, mut f: impl FnMut(usize, usize)) {
    let per = (TOKEN_BLOCK_BYTES / token_bytes.max(1) / NT_MAX).max(1) * NT_MAX;
    let mut t0 = 0;
    while t0 < n_tok {
        let nt = per.min(n_tok - t0);
        f(t0, nt);
        t0 += nt;
    }
}

/// Splits consecutive token groups of `sizes` bytes of activations into runs of at most
/// `TOKEN_BLOCK_BYTES` (at least one group each): the ranges of group indices.
fn group_blocks(sizes: impl Iterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut blocks: Vec<std::ops::Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (i, n) in sizes.enumerate() {
        match blocks.last_mut() {
            Some(b) if bytes + n <= TOKEN_BLOCK_BYTES => {
                b.end = i + 1;
                bytes += n;
            }
            _ => {
                blocks.push(i..i + 1);
                bytes = n;
            }
        }
    }
    blocks
}

/// Calls `f(t0, nt)` for the groups `quant::token_groups(n_tok, max)`, shifted by `base`.
#[inline]
fn token_groups(base: usize, n_tok: usize, max: usize, mut f: impl FnMut(usize, usize)) {
    for (t0, nt) in quant::token_groups(n_tok, max) {
        f(base + t0, nt);
    }
}

// --- Q8_0 / Q4_0 / Q5_0 ----------------------------------------------------------------------

/// Q8_0 weights (kind parameter of the kernels below).
const Q8_0: u8 = 0;
/// Q4_0 weights.
const Q4_0: u8 = 1;
/// Q5_0 weights.
const Q5_0: u8 = 2;

/// Bytes of a block of kind `k`.
const fn q0_block_bytes(k: u8) -> usize {
    match k {
        Q8_0 => 34,
        Q4_0 => 18,
        _ => 22,
    }
}

/// The offset subtracted from the unsigned quants of kind `k` (0 for the signed Q8_0).
const fn q0_offset(k: u8) -> f32 {
    match k {
        Q8_0 => 0.0,
        Q4_0 => 8.0,
        _ => 16.0,
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

/// `sum` of the 32 products of weight quants `$w` (signed when `$signed`, else unsigned) and
/// activation quants `$x`, as 8 f32 lanes.
macro_rules! q0_products {
    ($signed:expr, $w:expr, $x:expr) => {{
        let (w, x) = ($w, $x);
        let p16 = if $signed {
            _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
        } else {
            _mm256_maddubs_epi16(w, x)
        };
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }};
}

/// Spreads the 32 bits of `x` over 32 bytes: byte `i` is 0xFF if bit `i` is set, else 0.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn bytes_from_bits(x: u32) -> __m256i {
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

#[target_feature(enable = "avx2,fma,f16c")]
fn rows_q0(w: &QMatrix<'_>, a: &Q8Acts, r0: usize, r1: usize, n_tok: usize, out: &OutPtr) {
    match w.dtype {
        GgmlType::Q8_0 => rows_q0_k::<Q8_0>(w, a, r0, r1, n_tok, out),
        GgmlType::Q4_0 => rows_q0_k::<Q4_0>(w, a, r0, r1, n_tok, out),
        _ => rows_q0_k::<Q5_0>(w, a, r0, r1, n_tok, out),
    }
}

/// Rows `r0..r1` for weights of kind `K`: one token with the weights decoded in registers
/// (`q0_dot1`), more tokens with each row decoded once into a buffer and multiplied with the
/// token groups of `a.groups` (`Q0Row::dot`).
#[target_feature(enable = "avx2,fma,f16c")]
fn rows_q0_k<const K: u8>(
    w: &QMatrix<'_>,
    a: &Q8Acts,
    r0: usize,
    r1: usize,
    n_tok: usize,
    out: &OutPtr,
) {
    if n_tok == 1 {
        let (xq, xd, xs) = (a.qs(0), a.d(0), a.s(0));
        for r in r0..r1 {
            let v = q0_dot1::<K>(w.row(r), xq, xd, xs);
            // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
            unsafe { out.write(0, r, v) };
        }
        return;
    }
    let nb = w.cols / QK8;
    let offset = q0_offset(K);
    let mut buf = vec![0u8; if K == Q8_0 { 0 } else { w.cols }];
    let mut dw = vec![0f32; nb];
    let mut dprod = vec![0f32; GROUP_MAX * nb];
    assert!(!a.groups.is_empty());
    for blk in group_blocks(a.groups.iter().map(|g| g.qs.len())) {
        for r in r0..r1 {
            let row = w.row(r);
            block_scales(row, q0_block_bytes(K), &mut dw);
            // The weight quants decoded once for these tokens: (quants, block stride, offset of
            // the first quant).
            let (wq, stride, off) = match K {
                Q8_0 => (row, 34, 2),
                _ => {
                    unpack_q0::<K>(row, &mut buf);
                    (&buf[..], QK8, 0)
                }
            };
            for g in &a.groups[blk.clone()] {
                let corr = group_scales(&dw, g, &mut dprod, K != Q8_0);
                let mut res = [0f32; GROUP_MAX];
                let k = Q0Row {
                    wq,
                    stride,
                    off,
                    nb,
                    xq: &g.qs,
                    dprod: &dprod,
                };
                match g.nt {
                    1 => k.dot::<1, K>(&mut res),
                    2 => k.dot::<2, K>(&mut res),
                    3 => k.dot::<3, K>(&mut res),
                    4 => k.dot::<4, K>(&mut res),
                    5 => k.dot::<5, K>(&mut res),
                    6 => k.dot::<6, K>(&mut res),
                    7 => k.dot::<7, K>(&mut res),
                    _ => k.dot::<8, K>(&mut res),
                }
                for i in 0..g.nt {
                    // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
                    unsafe { out.write(g.t0 + i, r, res[i] - offset * corr[i]) };
                }
            }
        }
    }
}

/// Adds block `$j` of one token to `$acc` (and `d_w * s_x` to `$c` for unsigned kinds).
/// Use inside `unsafe`, with block `$j` inside the row and the activations.
macro_rules! q0_step1 {
    ($k:expr, $rp:expr, $xp:expr, $xd:expr, $xs:expr, $j:expr, $acc:ident, $c:ident) => {{
        let j = $j;
        let b = $rp.add(j * q0_block_bytes($k));
        let dw = f16_at!(b);
        let w = q0_decode!($k, b);
        let x = _mm256_loadu_si256($xp.add(QK8 * j).cast());
        let p = q0_products!($k == Q8_0, w, x);
        $acc = _mm256_fmadd_ps(p, _mm256_set1_ps(dw * *$xd.get_unchecked(j)), $acc);
        if $k != Q8_0 {
            // One FMA chain in block order, exactly as `group_scales` sums it.
            $c = dw.mul_add(*$xs.get_unchecked(j), $c);
        }
    }};
}

/// One row of kind `K` against one token: decodes each block once, in registers.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn q0_dot1<const K: u8>(row: &[u8], xq: &[i8], xd: &[f32], xs: &[f32]) -> f32 {
    let nb = xd.len();
    assert!(row.len() >= nb * q0_block_bytes(K) && xq.len() >= nb * QK8 && xs.len() >= nb);
    let (rp, xp) = (row.as_ptr(), xq.as_ptr());
    // Two accumulators (even and odd blocks) so that the FMA chain does not bound the speed;
    // combined, the odd tail block and the correction summed exactly as `Q0Row::dot::<1>` and
    // `group_scales` do it, so that a token alone gives the same bits as in a batch.
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut c = 0f32;
    let mut j = 0;
    // SAFETY: every block index used is below `nb`, and the assertion above makes block `j` of
    // the row (`bb` bytes at `j * bb`), quants `32 j .. 32 j + 32` of `xq` and entries `j` of
    // `xd` / `xs` lie inside their slices. Loads are unaligned.
    unsafe {
        while j + 2 <= nb {
            q0_step1!(K, rp, xp, xd, xs, j, acc0, c);
            q0_step1!(K, rp, xp, xd, xs, j + 1, acc1, c);
            j += 2;
        }
        acc0 = _mm256_add_ps(acc0, acc1);
        if j < nb {
            q0_step1!(K, rp, xp, xd, xs, j, acc0, c);
        }
    }
    hsum_ps(acc0) - q0_offset(K) * c
}

/// Converts the f16 scale at the start of every `bb`-byte block of `row` into `dw`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn block_scales(row: &[u8], bb: usize, dw: &mut [f32]) {
    let n = dw.len();
    assert!(row.len() >= n * bb);
    for (j, dw) in dw.chunks_mut(8).enumerate() {
        let mut h = [0u16; 8];
        for (k, h) in h.iter_mut().enumerate().take(dw.len()) {
            let o = (8 * j + k) * bb;
            *h = u16::from_le_bytes([row[o], row[o + 1]]);
        }
        // SAFETY: `h` is 16 readable bytes; `loadu` has no alignment requirement.
        let v = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h.as_ptr().cast()) });
        let mut f = [0f32; 8];
        st_f32x8(&mut f, v);
        dw.copy_from_slice(&f[..dw.len()]);
    }
}

/// Q4_0 / Q5_0 blocks -> 32 unsigned quants per block, in element order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn unpack_q0<const K: u8>(row: &[u8], buf: &mut [u8]) {
    let bb = q0_block_bytes(K);
    for (b, o) in row.chunks_exact(bb).zip(buf.chunks_exact_mut(QK8)) {
        // SAFETY: `b` is one whole block of kind `K`.
        let q = unsafe { q0_decode!(K, b.as_ptr()) };
        st_u8x32(o, q);
    }
}

/// `dprod[8 j + i] = dw[j] * d_x` of block `j` of token `i` of the group; returns
/// `sum_j dw[j] * s_x[j]` per token of the group when `corr`, else zeros.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn group_scales(dw: &[f32], g: &Q8Group, dprod: &mut [f32], corr: bool) -> [f32; GROUP_MAX] {
    let n = dw.len();
    assert!(g.d.len() >= GROUP_MAX * n && g.s.len() >= GROUP_MAX * n);
    assert!(dprod.len() >= GROUP_MAX * n);
    let mut c = _mm256_setzero_ps();
    for (j, &w) in dw.iter().enumerate() {
        let w = _mm256_set1_ps(w);
        let o = GROUP_MAX * j;
        st_f32x8(&mut dprod[o..], _mm256_mul_ps(w, ld_f32x8(&g.d[o..])));
        if corr {
            c = _mm256_fmadd_ps(w, ld_f32x8(&g.s[o..]), c);
        }
    }
    let mut out = [0f32; GROUP_MAX];
    st_f32x8(&mut out, c);
    out
}

/// One weight row of 32-element blocks, decoded, against a group of tokens.
struct Q0Row<'a> {
    /// Weight quants: block `j` at `wq[j * stride + off..][..32]`.
    wq: &'a [u8],
    stride: usize,
    off: usize,
    nb: usize,
    /// The group's activation quants (`Q8Group::qs`).
    xq: &'a [i8],
    /// `d_w[j] * d_x` of block `j` of token `i` of the group at `dprod[8 j + i]`.
    dprod: &'a [f32],
}

/// Adds block `$j` of the `$nt` tokens to the accumulators `$acc`. Use inside `unsafe`, with
/// block `$j` inside the row, the group's activations and `dprod`.
macro_rules! q0_block {
    ($k:expr, $j:expr, $wp:expr, $stride:expr, $xp:expr, $dp:expr, $acc:ident, $nt:expr) => {{
        let j = $j;
        let w = _mm256_loadu_si256($wp.add(j * $stride).cast());
        let x = $xp.add(j * $nt * QK8);
        let d = $dp.add(GROUP_MAX * j);
        for t in 0..$nt {
            let p = q0_products!($k == Q8_0, w, _mm256_loadu_si256(x.add(t * QK8).cast()));
            $acc[t] = _mm256_fmadd_ps(p, _mm256_broadcast_ss(&*d.add(t)), $acc[t]);
        }
    }};
}

impl Q0Row<'_> {
    /// `res[i] = sum_j dprod[8 j + i] * dot(w_j, x_{i, j})` (before the offset correction).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn dot<const NT: usize, const K: u8>(&self, res: &mut [f32; GROUP_MAX]) {
        let (nb, stride) = (self.nb, self.stride);
        assert!(nb == 0 || self.wq.len() >= (nb - 1) * stride + self.off + 32);
        assert!(self.xq.len() >= nb * NT * QK8 && self.dprod.len() >= nb * GROUP_MAX);
        let wp = self.wq.as_ptr().wrapping_add(self.off);
        let (xp, dp) = (self.xq.as_ptr(), self.dprod.as_ptr());
        let mut acc0 = [_mm256_setzero_ps(); NT];
        let mut j = 0;
        if NT <= 2 {
            // A second set of accumulators (odd blocks), so that the FMA chain of one token
            // does not bound the speed; from 3 tokens on the chains are independent enough.
            let mut acc1 = [_mm256_setzero_ps(); NT];
            // SAFETY: every block index used is below `nb`; the assertions above make the 32
            // weight quants at `off + j * stride`, the activation quants `(j NT + t) 32 ..+32`
            // and `dprod[8 j + t]` (t < NT) lie inside their slices. Loads are unaligned.
            unsafe {
                while j + 2 <= nb {
                    q0_block!(K, j, wp, stride, xp, dp, acc0, NT);
                    q0_block!(K, j + 1, wp, stride, xp, dp, acc1, NT);
                    j += 2;
                }
            }
            for t in 0..NT {
                acc0[t] = _mm256_add_ps(acc0[t], acc1[t]);
            }
        }
        // SAFETY: as above.
        unsafe {
            while j < nb {
                q0_block!(K, j, wp, stride, xp, dp, acc0, NT);
                j += 1;
            }
        }
        for t in 0..NT {
            res[t] = hsum_ps(acc0[t]);
        }
    }
}

// --- Q4_K / Q6_K ------------------------------------------------------------------------------

/// Rows `r0..r1` of a Q4_K / Q6_K matrix: one token with the super-blocks decoded in registers
/// (`KRow`), more tokens with each row unpacked once into `KSuper`s and multiplied with the
/// token groups of `a.groups` (`k_group_dot`).
#[target_feature(enable = "avx2,fma,f16c")]
fn rows_k(w: &QMatrix<'_>, a: &Q8KActs, r0: usize, r1: usize, n_tok: usize, out: &OutPtr) {
    let q4 = w.dtype == GgmlType::Q4_K;
    if n_tok == 1 {
        for r in r0..r1 {
            let mut res = [0f32; NT_MAX];
            let k = KRow {
                row: w.row(r),
                a,
                t0: 0,
            };
            if q4 {
                k.q4k::<1>(&mut res);
            } else {
                k.q6k::<1>(&mut res);
            }
            // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
            unsafe { out.write(0, r, res[0]) };
        }
        return;
    }
    assert!(!a.groups.is_empty());
    let mut u = vec![KSuper::ZERO; w.cols / QKK];
    for blk in group_blocks(a.groups.iter().map(|g| g.qs.len())) {
        for r in r0..r1 {
            let row = w.row(r);
            if q4 {
                unpack_q4k(row, &mut u);
            } else {
                unpack_q6k(row, &mut u);
            }
            for g in &a.groups[blk.clone()] {
                let mut res = [0f32; GROUP_MAX];
                if q4 {
                    k_group_dispatch::<false>(&u, g, &mut res);
                } else {
                    k_group_dispatch::<true>(&u, g, &mut res);
                }
                for (i, &v) in res.iter().enumerate().take(g.nt) {
                    // SAFETY: this chunk owns rows `r0..r1` (see `OutPtr`).
                    unsafe { out.write(g.t0 + i, r, v) };
                }
            }
        }
    }
}

/// A Q4_K / Q6_K super-block unpacked for multiplying with many tokens:
/// `dot = d dx sum_c madd(maddubs(q_c, x_c), sc_c) + cmul dx madd(bsums, corr)`.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct KSuper {
    /// The 256 quants, unsigned (Q4_K 0..16, Q6_K 0..64), in element order.
    q: [u8; QKK],
    /// For each run of 32 quants, the scale of each i16 lane of `maddubs`.
    sc: [[i16; 16]; 8],
    /// Multipliers of the 16 per-16 activation sums: Q4_K each min twice, Q6_K the scales.
    corr: [i16; 16],
    /// Factor of the scaled integer sum.
    d: f32,
    /// Factor of the correction: `-dmin` (Q4_K) or `-32 d` (Q6_K).
    cmul: f32,
}

impl KSuper {
    const ZERO: KSuper = KSuper {
        q: [0; QKK],
        sc: [[0; 16]; 8],
        corr: [0; 16],
        d: 0.0,
        cmul: 0.0,
    };
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn st_i16x16(b: &mut [i16; 16], v: __m256i) {
    // SAFETY: `b` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// Unpacks a Q4_K row into `u` (one `KSuper` per super-block).
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q4k(row: &[u8], u: &mut [KSuper]) {
    let m4 = _mm256_set1_epi8(0xF);
    let dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    for (b, s) in row.chunks_exact(144).zip(u.iter_mut()) {
        s.d = f16_le(&b[0..2]);
        s.cmul = -f16_le(&b[2..4]);
        let sm = unpack_q4k_scales(b[4..16].try_into().expect("12 bytes"));
        let smv = ld_u8x16(&sm);
        let sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(smv));
        for j in 0..4 {
            let q = ld_u8x32(&b[16 + 32 * j..]);
            st_u8x32(&mut s.q[64 * j..], _mm256_and_si256(q, m4));
            st_u8x32(
                &mut s.q[64 * j + 32..],
                _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
            );
        }
        for (c, sc_c) in s.sc.iter_mut().enumerate() {
            st_i16x16(sc_c, _mm256_shuffle_epi8(sc, bcast16_mask(c as i16)));
        }
        st_i16x16(
            &mut s.corr,
            _mm256_cvtepu8_epi16(_mm_shuffle_epi8(smv, dup_mins)),
        );
    }
}

/// Unpacks a Q6_K row into `u` (one `KSuper` per super-block).
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_q6k(row: &[u8], u: &mut [KSuper]) {
    let m4 = _mm256_set1_epi8(0xF);
    for (b, s) in row.chunks_exact(210).zip(u.iter_mut()) {
        s.d = f16_le(&b[208..210]);
        s.cmul = -32.0 * s.d;
        for n in 0..2 {
            let (ql0, ql1) = (ld_u8x32(&b[64 * n..]), ld_u8x32(&b[64 * n + 32..]));
            let qh = ld_u8x32(&b[128 + 32 * n..]);
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
            let sc8 = _mm_cvtepi8_epi16(ld_u8x8(&b[192 + 8 * n..]));
            let sc = _mm256_broadcastsi128_si256(sc8);
            for (m, &q) in q.iter().enumerate() {
                st_u8x32(&mut s.q[128 * n + 32 * m..], q);
                let mask = bcast16_mask2(2 * m as i16, 2 * m as i16 + 1);
                st_i16x16(&mut s.sc[4 * n + m], _mm256_shuffle_epi8(sc, mask));
            }
        }
        st_i16x16(&mut s.corr, _mm256_cvtepi8_epi16(ld_u8x16(&b[192..])));
    }
}

/// `k_group_dot` for the group's token count.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k_group_dispatch<const Q6: bool>(u: &[KSuper], g: &Q8KGroup, res: &mut [f32; GROUP_MAX]) {
    match g.nt {
        1 => k_group_dot::<1, Q6>(u, g, res),
        2 => k_group_dot::<2, Q6>(u, g, res),
        3 => k_group_dot::<3, Q6>(u, g, res),
        4 => k_group_dot::<4, Q6>(u, g, res),
        5 => k_group_dot::<5, Q6>(u, g, res),
        6 => k_group_dot::<6, Q6>(u, g, res),
        7 => k_group_dot::<7, Q6>(u, g, res),
        _ => k_group_dot::<8, Q6>(u, g, res),
    }
}

/// `res[i]` = the unpacked row `u` times token `i` of the group `g` (`NT == g.nt`).
///
/// Every float operation is the one `KRow` does for a single token (Q6_K: the correction
/// subtracted in integers, `-32 sum sc bsum`; Q4_K: `fmsub(s, d dx, m dmin dx)`), so a token
/// gives the same bits in a group as alone.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn k_group_dot<const NT: usize, const Q6: bool>(
    u: &[KSuper],
    g: &Q8KGroup,
    res: &mut [f32; GROUP_MAX],
) {
    let nsb = u.len();
    assert!(g.qs.len() >= nsb * QKK * NT && g.d.len() >= nsb * GROUP_MAX);
    assert!(g.bsums.len() >= nsb * NT * 16);
    let (xp, dp, bp) = (g.qs.as_ptr(), g.d.as_ptr(), g.bsums.as_ptr());
    let mut acc = [_mm256_setzero_ps(); NT];
    for (sb, s) in u.iter().enumerate() {
        let mut sumi = [_mm256_setzero_si256(); NT];
        // SAFETY: `sb < nsb`; the assertions above make the quants of runs `8 sb + c` of every
        // token `t < NT` (`((8 sb + c) NT + t) 32 ..+32`), the scales `8 sb + t` and the sums
        // `(sb NT + t) 16 ..+16` lie inside the group's slices. Loads are unaligned.
        unsafe {
            for c in 0..8 {
                let w = _mm256_loadu_si256(s.q.as_ptr().add(32 * c).cast());
                let sc = _mm256_loadu_si256(s.sc[c].as_ptr().cast());
                let x = xp.add((8 * sb + c) * NT * 32);
                for (t, sumi) in sumi.iter_mut().enumerate() {
                    let p = _mm256_maddubs_epi16(w, _mm256_loadu_si256(x.add(32 * t).cast()));
                    *sumi = _mm256_add_epi32(*sumi, _mm256_madd_epi16(p, sc));
                }
            }
            let corr = _mm256_loadu_si256(s.corr.as_ptr().cast());
            for t in 0..NT {
                let dx = *dp.add(GROUP_MAX * sb + t);
                let bs = _mm256_loadu_si256(bp.add((sb * NT + t) * 16).cast());
                if Q6 {
                    let c = _mm256_slli_epi32::<5>(_mm256_madd_epi16(corr, bs));
                    let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], c));
                    acc[t] = _mm256_fmadd_ps(v, _mm256_set1_ps(s.d * dx), acc[t]);
                } else {
                    let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, corr));
                    let m = _mm256_mul_ps(m, _mm256_set1_ps(s.cmul * dx));
                    let v = _mm256_cvtepi32_ps(sumi[t]);
                    // One add on the accumulator's chain per super-block, not two FMAs.
                    let v = _mm256_fmadd_ps(v, _mm256_set1_ps(s.d * dx), m);
                    acc[t] = _mm256_add_ps(acc[t], v);
                }
            }
        }
    }
    for t in 0..NT {
        res[t] = hsum_ps(acc[t]);
    }
}

/// One K-quant weight row against `NT` tokens from `t0` on, decoding each super-block in
/// registers (used for one token; more tokens go through `KSuper` and `k_group_dot`).
struct KRow<'a> {
    row: &'a [u8],
    a: &'a Q8KActs,
    t0: usize,
}

/// `_mm256_shuffle_epi8` mask that broadcasts i16 lane `k` (of each 128-bit half).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn bcast16_mask(k: i16) -> __m256i {
    _mm256_set1_epi16(((2 * k + 1) << 8) | (2 * k))
}

/// Mask that broadcasts i16 lane `lo` in the low 128-bit half and lane `hi` in the high one.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn bcast16_mask2(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(
        _mm_set1_epi16(((2 * hi + 1) << 8) | (2 * hi)),
        _mm_set1_epi16(((2 * lo + 1) << 8) | (2 * lo)),
    )
}

impl KRow<'_> {
    /// The activations of the tokens `t0..t0 + nt`: (quants, super-block scales, per-16 sums),
    /// each of the `nt` tokens one after the other.
    fn acts(&self, nt: usize) -> (&[i8], &[f32], &[i16]) {
        let (cols, t0) = (self.a.cols, self.t0);
        let nsb = cols / QKK;
        (
            &self.a.qs[t0 * cols..(t0 + nt) * cols],
            &self.a.d[t0 * nsb..(t0 + nt) * nsb],
            &self.a.bsums[t0 * cols / 16..(t0 + nt) * cols / 16],
        )
    }

    /// Q4_K: `res[i] = sum_sb d dx sum_s sc_s dot_s - dmin dx sum_s m_s bsum_s`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn q4k<const NT: usize>(&self, res: &mut [f32; NT_MAX]) {
        let cols = self.a.cols;
        let nsb = cols / QKK;
        let (xs, xd, bs) = self.acts(NT);
        assert!(self.row.len() >= nsb * 144);
        let (rp, xp, dp, bp) = (self.row.as_ptr(), xs.as_ptr(), xd.as_ptr(), bs.as_ptr());
        let m4 = _mm256_set1_epi8(0xF);
        let dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
        let mut acc = [_mm256_setzero_ps(); NT];
        for sb in 0..nsb {
            // SAFETY: `sb < nsb`: super-block `sb` of the row (144 bytes at `144 sb`), quants
            // `t cols + 256 sb ..+256`, scale `t nsb + sb` and sums `t cols / 16 + 16 sb ..+16`
            // of every token `t < NT` lie inside the slices checked above. Loads are unaligned.
            unsafe {
                let b = rp.add(144 * sb);
                let d = f16_at!(b);
                let dmin = f16_at!(b.add(2));
                let sm = unpack_q4k_scales(&*b.add(4).cast::<[u8; 12]>());
                let smv = _mm_loadu_si128(sm.as_ptr().cast());
                // Scales 0..8 as i16 in both halves; mins duplicated pairwise, m0 m0 m1 m1 ...
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
                        let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xl), scl);
                        let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xh), sch);
                        *sumi = _mm256_add_epi32(*sumi, _mm256_add_epi32(pl, ph));
                    }
                }
                for t in 0..NT {
                    let dx = *dp.add(t * nsb + sb);
                    let bsums = _mm256_loadu_si256(bp.add(t * cols / 16 + 16 * sb).cast());
                    let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins));
                    let m = _mm256_mul_ps(m, _mm256_set1_ps(dmin * dx));
                    let s = _mm256_cvtepi32_ps(sumi[t]);
                    // One add on the accumulator's chain per super-block, not two FMAs.
                    acc[t] = _mm256_add_ps(acc[t], _mm256_fmsub_ps(s, _mm256_set1_ps(d * dx), m));
                }
            }
        }
        for t in 0..NT {
            res[t] = hsum_ps(acc[t]);
        }
    }

    /// Q6_K: `res[i] = sum_sb d dx sum_k sc_k (dot_k(q, x) - 32 bsum_k)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn q6k<const NT: usize>(&self, res: &mut [f32; NT_MAX]) {
        let cols = self.a.cols;
        let nsb = cols / QKK;
        let (xs, xd, bs) = self.acts(NT);
        assert!(self.row.len() >= nsb * 210);
        let (rp, xp, dp, bp) = (self.row.as_ptr(), xs.as_ptr(), xd.as_ptr(), bs.as_ptr());
        let m4 = _mm256_set1_epi8(0xF);
        let mut acc = [_mm256_setzero_ps(); NT];
        for sb in 0..nsb {
            // SAFETY: `sb < nsb`: super-block `sb` of the row (210 bytes at `210 sb`), quants
            // `t cols + 256 sb ..+256`, scale `t nsb + sb` and sums `t cols / 16 + 16 sb ..+16`
            // of every token `t < NT` lie inside the slices checked above. Loads are unaligned.
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
                        // Elements 0..16 of this run use scale 2m, 16..32 scale 2m+1 (of this
                        // half).
                        let mask = bcast16_mask2(2 * m as i16, 2 * m as i16 + 1);
                        let scm = _mm256_shuffle_epi8(sc, mask);
                        for (t, sumi) in sumi.iter_mut().enumerate() {
                            let x = xp.add(t * cols + QKK * sb + 128 * n + 32 * m);
                            let x = _mm256_loadu_si256(x.cast());
                            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), scm);
                            *sumi = _mm256_add_epi32(*sumi, p);
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
            token_groups(tb0, tbn, super::quant::BATCH_INVARIANT_GROUP, |t0, nt| {
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
