//! x86-64 AVX2 loads, stores and reductions shared by the AVX2 kernels and the AVX2 activation
//! quantizers (a leaf: it imports no other kernel module).

use std::arch::x86_64::*;

// ---------------------------------------------------------------------------------------------
// Loads, stores, reductions.

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn ld_u8x16(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: `b` has at least 16 bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn ld_f32x8(b: &[f32]) -> __m256 {
    assert!(b.len() >= 8);
    // SAFETY: `b` has at least 8 floats; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(b.as_ptr()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn st_i8x32(b: &mut [i8], v: __m256i) {
    assert!(b.len() >= 32);
    // SAFETY: `b` has at least 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn st_f32x8(b: &mut [f32], v: __m256) {
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
pub(crate) fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Largest magnitude of the lanes of `v`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn hmax_abs(v: &[__m256]) -> f32 {
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
