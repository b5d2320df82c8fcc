//! AVX2 kernels: F32 / F16 / BF16 rows.

use super::*;

// --- F32 / F16 / BF16 -------------------------------------------------------------------------

pub(crate) const F32: u8 = 0;
pub(crate) const F16: u8 = 1;
pub(crate) const BF16: u8 = 2;

/// Eight weights starting at element `i` of a row of kind `K`, as f32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn ld_w8<const K: u8>(row: &[u8], i: usize) -> __m256 {
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
pub(crate) fn w1<const K: u8>(row: &[u8], i: usize) -> f32 {
    match K {
        F32 => f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]),
        F16 => f16_le(&row[2 * i..]),
        _ => half::bf16::from_le_bytes([row[2 * i], row[2 * i + 1]]).to_f32(),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows_float(job: &RowJob<'_, [f32]>) {
    let RowJob {
        w,
        a: x,
        r0,
        r1,
        n_tok,
        out,
    } = *job;
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
pub(crate) fn float_dot<const NT: usize, const K: u8>(
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
