//! AVX2 activation quantizers (bit-identical to `quantize_q8*_scalar`).

use std::arch::x86_64::*;

use super::{QK8, QKK};
use crate::kernels::x86::*;

// ---------------------------------------------------------------------------------------------
// Activation quantization (bit-identical to `quant::quantize_q8*_scalar`).

/// Quantizes 32 floats with the inverse scale `id`: the 32 quants in order, and the four i32
/// vectors of quants (elements 0..8, 8..16, 16..24, 24..32) for sums.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn quantize_32(v: &[__m256; 4], id: f32) -> (__m256i, [__m256i; 4]) {
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
        let (dd, id) = super::scales(hmax_abs(&v));
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
        let (dd, id) = super::scales(hmax_abs(&v));
        for g in 0..8 {
            let (q, i) = quantize_32(&[v[4 * g], v[4 * g + 1], v[4 * g + 2], v[4 * g + 3]], id);
            st_i8x32(&mut qb[32 * g..], q);
            bs[2 * g] = hsum_epi32(_mm256_add_epi32(i[0], i[1])) as i16;
            bs[2 * g + 1] = hsum_epi32(_mm256_add_epi32(i[2], i[3])) as i16;
        }
        *d = dd;
    }
}
