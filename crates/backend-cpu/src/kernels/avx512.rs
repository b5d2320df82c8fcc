//! AVX-512 VNNI kernels (AVX2 + FMA + F16C + AVX-512 F/BW/VL/VNNI).
//!
//! Q4_0 / Q5_0 / Q8_0 (`rows_q0`): the activations come interleaved (`Q8Acts::interleave`), so
//! that lane `k` of a vector holds 4 quants of block `k` of a group of 8 (256-bit vectors) or 16
//! blocks (512-bit vectors, rows of 32+ blocks). A group of weight blocks is decoded to unsigned
//! quants (Q8_0 as `w + 128`) and transposed the same way once per group of up to 16 tokens;
//! then per token `vpdpbusd` over the group's vectors, starting from `-offset * sum(x quants)`,
//! gives each block's exact signed integer dot product in its own lane, and one FMA per group
//! applies the block scales (`d_w * d_x`, a lane per block). Per token that is 8 `vpdpbusd`
//! and a few float operations per 8 or 16 blocks, against ~8 instructions per block in `avx2`.
//! The results differ from the AVX2 level in rounding (exact block sums first), within the
//! tolerances of the tests.
//!
//! The same matrices in the transposed layout made at load (`TransposedQ0`, the model's layer
//! matrices; `rows_transposed`) skip the decoding and transposes and use groups of 8 only:
//! the AVX2 kernel's integers and float operations, so the AVX2 level's bits. That is most of a
//! one-token step (Qwen2.5-Coder 0.5B decode, TPOT 32 -> 22 ms on an Intel Xeon with AMX).
//!
//! The K-quants (Q2_K / Q3_K / Q4_K / Q5_K / Q6_K) and IQ4_XS use the AVX2 kernel
//! (`avx2::rows_k`: transposed super-blocks, sub-block sums in i16), so both levels give the
//! same bits for them; so do Q4_1 / Q5_1 / IQ4_NL (`avx2::rows_q0`, activations interleaved in
//! groups of 8 for them). (An earlier VNNI version scaled each
//! run of 32 with `vpdpwssd`: two multiply instructions per 32 weights and token, against
//! about 1.1 / 1.5 in the transposed AVX2 kernel.)
//!
//! Every level computes a token's float operations in the same sequence whatever the group
//! size, so its results are independent of the batch (batch invariance). Results are written
//! per tile of rows, one run per token. Everything else (quantization, float weights,
//! attention) uses the AVX2 code.
//!
//! Every function here is `#[target_feature(enable = "...avx512vnni")]`; the crate calls
//! `rows` only after `detected_level()` found those features at run time.

use std::arch::x86_64::*;

use switchyard_core::GgmlType;

// (`q0_decode!` names the kinds and helpers it may expand to.)
use super::avx2::{
    bytes_from_bits, hsum_ps, iq4nl_table, packed_groups, q0_block_bytes, q0_five, q0_header,
    row_tiles, tq0_group_bytes, tq0_header, transpose4x2, transpose8, Group, PackedJob, IQ4_NL,
    Q4_0, Q4_1, Q5_0, Q8_0,
};
use super::quant::{Q8Acts, QK8};
use super::{Family, OutPtr, RowJob};
/// Most tokens multiplied with one decoded group of 8 weight blocks (Q4_0 / Q5_0 / Q8_0): a
/// token takes one register across the row.
const Q0_NT_MAX: usize = 16;

/// Computes rows `r0..r1` of the output for all `n_tok` tokens (see `scalar::rows`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) fn rows(job: &RowJob<'_>) {
    match (job.w.dtype, job.family()) {
        (GgmlType::Q8_0, Family::Q8(j)) => rows_q0::<Q8_0>(&j),
        (GgmlType::Q4_0, Family::Q8(j)) => rows_q0::<Q4_0>(&j),
        (GgmlType::Q5_0, Family::Q8(j)) => rows_q0::<Q5_0>(&j),
        _ => super::avx2::rows(job),
    }
}

/// Rows `r0..r1` for weights of kind `K`, groups of up to 16 tokens, with the activations in
/// their interleaved form (`Q8Acts::interleave`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn rows_q0<const K: u8>(job: &RowJob<'_, Q8Acts>) {
    let a = job.a;
    let wide = a.layout().0 > 0;
    let rb = job.w.row_bytes();
    row_tiles::<_, Q0_NT_MAX>(job, (rb, Q0_NT_MAX, false), |row, t0, nt, res| {
        if wide {
            by_nt!(nt, q0_dot_wide::<_, K>(row, a, t0, res))
        } else {
            by_nt!(nt, q0_dot::<_, K, false>(row, a, t0, res))
        }
    });
}

/// Rows `r0..r1` of a matrix in a transposed layout ([`super::TransposedQ0`],
/// [`super::TransposedK`]). Q4_0 / Q5_0 / Q8_0 take the activations interleaved in groups of 8
/// blocks (no wide groups; Q8_0 with offset 128) and run `q0_dot` without its decoding and
/// transposes, so the same integers and float operations as on the file layout in groups of 8,
/// which are the AVX2 kernel's: the same bits as the AVX2 level. Tiles, token groups and the
/// prefetch of rows ahead are those of `avx2::rows_q0_k`. The other types run the AVX2 kernels.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) fn rows_transposed(job: &RowJob<'_>) {
    match (job.w.dtype, job.family()) {
        (GgmlType::Q8_0, Family::Q8(j)) => rows_pre::<Q8_0>(&j),
        (GgmlType::Q4_0, Family::Q8(j)) => rows_pre::<Q4_0>(&j),
        (GgmlType::Q5_0, Family::Q8(j)) => rows_pre::<Q5_0>(&j),
        _ => super::avx2::rows_transposed(job),
    }
}

/// [`rows_transposed`] for Q4_0 / Q5_0 / Q8_0 (kind `K`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn rows_pre<const K: u8>(job: &RowJob<'_, Q8Acts>) {
    let (w, a) = (job.w, job.a);
    assert!(
        !a.qi.is_empty() && a.layout().0 == 0,
        "rows_transposed: activations not interleaved in groups of 8"
    );
    let rb = (w.cols / QK8).div_ceil(8) * tq0_group_bytes(K);
    // 32 vector registers at this level: 16 tokens' accumulators fit beside a group's weights.
    row_tiles::<_, Q0_NT_MAX>(job, (rb, Q0_NT_MAX, true), |row, t0, nt, res| {
        by_nt!(nt, q0_dot::<_, K, true>(row, a, t0, res))
    });
}

/// `q0_dot` for rows with wide groups of 16 blocks (`Q8Acts::layout`): the same on 512-bit
/// vectors (two transposed 8-block halves per vector), then the groups of 8.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn q0_dot_wide<const NT: usize, const K: u8>(
    row: &[u8],
    a: &Q8Acts,
    t0: usize,
    res: &mut [f32; Q0_NT_MAX],
) {
    let nb = a.cols / QK8;
    let (wide, groups) = a.layout();
    let pb = a.padded_blocks();
    let bb = q0_block_bytes(K);
    assert!(row.len() >= nb * bb);
    assert!(a.qi.len() >= (t0 + NT) * pb * 32);
    assert!(a.ni.len() >= (t0 + NT) * pb && a.di.len() >= (t0 + NT) * pb);
    let rp = row.as_ptr();
    // SAFETY: in bounds by the assertions above (offsets of token `t0`).
    let (xp, np, dp) = unsafe {
        (
            a.qi.as_ptr().add(t0 * pb * 32),
            a.ni.as_ptr().add(t0 * pb),
            a.di.as_ptr().add(t0 * pb),
        )
    };
    // Block `j` of the row as unsigned quants, and its scale's f16 bits. Use inside `unsafe`
    // with `j < nb`.
    macro_rules! block {
        ($j:expr) => {{
            let b = rp.add($j * bb);
            let q = match K {
                Q8_0 => {
                    _mm256_xor_si256(_mm256_loadu_si256(b.add(2).cast()), _mm256_set1_epi8(-128))
                }
                _ => q0_decode!(K, b),
            };
            (q, b.cast::<u16>().read_unaligned())
        }};
    }
    let mut accw = [_mm512_setzero_ps(); NT];
    let mut acc = [_mm256_setzero_ps(); NT];
    for gw in 0..wide {
        // SAFETY: blocks `j < nb` lie inside the row (`bb` bytes each); for every token
        // `t < NT` the `pb` interleaved blocks from `(t0 + t) pb` lie inside `qi` (32 bytes
        // each), `ni` and `di` (assertions above), and a wide group's 16 blocks are among them.
        // Loads are unaligned.
        unsafe {
            let mut lo = [_mm256_setzero_si256(); 8];
            let mut hi = [_mm256_setzero_si256(); 8];
            let mut dw = [0u16; 16];
            for k in 0..8 {
                (lo[k], dw[k]) = block!(16 * gw + k);
                (hi[k], dw[k + 8]) = block!(16 * gw + 8 + k);
            }
            transpose8(&mut lo);
            transpose8(&mut hi);
            let z: [__m512i; 8] = std::array::from_fn(|m| {
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo[m]), hi[m])
            });
            let dwv = _mm512_cvtph_ps(_mm256_loadu_si256(dw.as_ptr().cast()));
            for (t, acc) in accw.iter_mut().enumerate() {
                let o = t * pb + 16 * gw;
                let x = xp.add(32 * o);
                // Two dependency chains of integer sums (exact, so any split gives the same).
                let mut s = _mm512_loadu_si512(np.add(o).cast());
                let mut s1 = _mm512_setzero_si512();
                for m in (0..8).step_by(2) {
                    let x0 = _mm512_loadu_si512(x.add(64 * m).cast());
                    let x1 = _mm512_loadu_si512(x.add(64 * m + 64).cast());
                    s = _mm512_dpbusd_epi32(s, z[m], x0);
                    s1 = _mm512_dpbusd_epi32(s1, z[m + 1], x1);
                }
                s = _mm512_add_epi32(s, s1);
                let dd = _mm512_mul_ps(dwv, _mm512_loadu_ps(dp.add(o)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dd, *acc);
            }
        }
    }
    for g in 0..groups {
        let j0 = 16 * wide + 8 * g;
        let nbg = (nb - j0).min(8);
        let mut v = [_mm256_setzero_si256(); 8];
        let mut dw = [0u16; 8];
        // SAFETY: as above, for blocks `j0 + k < nb` and the group's 8 interleaved blocks.
        unsafe {
            for k in 0..nbg {
                (v[k], dw[k]) = block!(j0 + k);
            }
            let dwv = _mm256_cvtph_ps(_mm_loadu_si128(dw.as_ptr().cast()));
            if nbg <= 4 {
                // A half group (see `Q8Acts::interleave`): a 4 x 4 transpose in each half.
                let h = transpose4x2(&v);
                for (t, acc) in acc.iter_mut().enumerate() {
                    let o = t * pb + j0;
                    let x = xp.add(32 * o);
                    let mut s = _mm256_loadu_si256(np.add(o).cast());
                    for (m, &hm) in h.iter().enumerate() {
                        let xm = _mm256_loadu_si256(x.add(32 * m).cast());
                        s = _mm256_dpbusd_epi32(s, hm, xm);
                    }
                    s = _mm256_add_epi32(s, _mm256_permute2x128_si256::<0x01>(s, s));
                    let dd = _mm256_mul_ps(dwv, _mm256_loadu_ps(dp.add(o)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
                }
                continue;
            }
            transpose8(&mut v);
            for (t, acc) in acc.iter_mut().enumerate() {
                let o = t * pb + j0;
                let x = xp.add(32 * o);
                let mut s = _mm256_loadu_si256(np.add(o).cast());
                let mut s1 = _mm256_setzero_si256();
                for m in (0..8).step_by(2) {
                    let x0 = _mm256_loadu_si256(x.add(32 * m).cast());
                    let x1 = _mm256_loadu_si256(x.add(32 * m + 32).cast());
                    s = _mm256_dpbusd_epi32(s, v[m], x0);
                    s1 = _mm256_dpbusd_epi32(s1, v[m + 1], x1);
                }
                s = _mm256_add_epi32(s, s1);
                let dd = _mm256_mul_ps(dwv, _mm256_loadu_ps(dp.add(o)));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
            }
        }
    }
    for t in 0..NT {
        let w = accw[t];
        let lo = _mm512_castps512_ps256(w);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(w)));
        res[t] = hsum_ps(_mm256_add_ps(_mm256_add_ps(lo, hi), acc[t]));
    }
}

/// One row of kind `K` (no wide groups) against the `NT` tokens `t0..t0 + NT`: `res[t]`.
///
/// Per group of 8 weight blocks: the blocks are decoded to unsigned quants (Q8_0 as `w + 128`,
/// Q4_0 / Q5_0 as stored, 0..16 / 0..32) and transposed like the interleaved activations, so
/// that `vpdpbusd` over the 8 vectors sums each block into its own i32 lane, starting from
/// `-offset * sum(x quants)`: the exact signed block dot products of the 8 blocks in one vector.
/// Per token and group that is one conversion and one FMA with the 8 products of block scales
/// (a lane per block); then the horizontal sum. The same operations for every `NT`, so a token
/// gives the same bits in any group.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn q0_dot<const NT: usize, const K: u8, const PRE: bool>(
    row: &[u8],
    a: &Q8Acts,
    t0: usize,
    res: &mut [f32; Q0_NT_MAX],
) {
    let nb = a.cols / QK8;
    let ng = a.padded_blocks() / 8;
    debug_assert_eq!(a.layout().0, 0);
    let bb = q0_block_bytes(K);
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
        let mut v = [_mm256_setzero_si256(); 8];
        let mut dw = [0u16; 8];
        // SAFETY: blocks `8 g + k < nb` lie inside the row (`bb` bytes each); for every token
        // `t < NT` the group `(t0 + t) ng + g` lies inside `qi`, `ni` and `di` (assertions
        // above). Loads are unaligned.
        unsafe {
            let dwv = if PRE {
                // The group's 8 scales, then its vectors decoded and transposed already
                // (`TransposedQ0`; Q8_0 signed there, made `w + 128` here).
                let p = rp.add(g * tq0_group_bytes(K));
                v = q0_decode_t!(K, p.add(tq0_header(K)));
                if K == Q8_0 {
                    for v in v.iter_mut() {
                        *v = _mm256_xor_si256(*v, _mm256_set1_epi8(-128));
                    }
                }
                _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
            } else {
                for k in 0..nbg {
                    let b = rp.add((8 * g + k) * bb);
                    dw[k] = b.cast::<u16>().read_unaligned();
                    v[k] = match K {
                        Q8_0 => _mm256_xor_si256(
                            _mm256_loadu_si256(b.add(2).cast()),
                            _mm256_set1_epi8(-128),
                        ),
                        _ => q0_decode!(K, b),
                    };
                }
                _mm256_cvtph_ps(_mm_loadu_si128(dw.as_ptr().cast()))
            };
            if nbg <= 4 {
                // A half group (see `Q8Acts::interleave`): a 4 x 4 transpose in each half (the
                // transposed layout stores that form).
                let h = if PRE {
                    [v[0], v[1], v[2], v[3]]
                } else {
                    transpose4x2(&v)
                };
                for (t, acc) in acc.iter_mut().enumerate() {
                    let o = (t * ng + g) * 8;
                    let x = xp.add(32 * o);
                    let mut s = _mm256_loadu_si256(np.add(o).cast());
                    for (m, &hm) in h.iter().enumerate() {
                        let xm = _mm256_loadu_si256(x.add(32 * m).cast());
                        s = _mm256_dpbusd_epi32(s, hm, xm);
                    }
                    s = _mm256_add_epi32(s, _mm256_permute2x128_si256::<0x01>(s, s));
                    let dd = _mm256_mul_ps(dwv, _mm256_loadu_ps(dp.add(o)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
                }
                continue;
            }
            if !PRE {
                transpose8(&mut v);
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let o = (t * ng + g) * 8;
                let x = xp.add(32 * o);
                let mut s = _mm256_loadu_si256(np.add(o).cast());
                // Two dependency chains of integer sums (exact, so any split gives the same).
                let mut s1 = _mm256_setzero_si256();
                for m in (0..8).step_by(2) {
                    let x0 = _mm256_loadu_si256(x.add(32 * m).cast());
                    let x1 = _mm256_loadu_si256(x.add(32 * m + 32).cast());
                    s = _mm256_dpbusd_epi32(s, v[m], x0);
                    s1 = _mm256_dpbusd_epi32(s1, v[m + 1], x1);
                }
                s = _mm256_add_epi32(s, s1);
                let dd = _mm256_mul_ps(dwv, _mm256_loadu_ps(dp.add(o)));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
            }
        }
    }
    for t in 0..NT {
        res[t] = hsum_ps(acc[t]);
    }
}

// --- Packed Q8_0 (`PackedQ8`) ---------------------------------------------------------------

/// Most tokens per pass over a packed row group: a token takes one accumulator register.
const PACKED_NT: usize = 16;

/// Row groups `g0..g1` of a [`super::PackedQ8`] matrix for all `n_tok` tokens (see
/// `avx2::rows_packed_q8`), with `vpdpbusd`: the weights biased to unsigned (`w + 128`, one XOR
/// per vector and row group, shared by the pass's tokens) times a token's 4 quants broadcast to
/// every lane, starting from `corr[t nb + b] = -128 * sum(x quants of block b)`, give every
/// row's exact integer block sum in its own lane with one instruction per vector and token.
/// The same integers as the AVX2 kernel, accumulated in the same order: bit-identical results.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) fn rows_packed_q8(job: &PackedJob<'_>, (a, corr): (&Q8Acts, &[i32]), out: &OutPtr) {
    let (nb, n_tok) = (job.w.cols / QK8, job.n_tok);
    assert!(a.qs.len() >= n_tok * job.w.cols && a.d.len() >= n_tok * nb);
    assert!(corr.len() >= n_tok * nb);
    let dot = |group: &Group<'_>, t: usize, res: &mut [[f32; 8]; PACKED_NT]| {
        by_nt!(
            (n_tok - t).min(PACKED_NT),
            packed_dot::<_>(group, (a, corr), t, res)
        )
    };
    packed_groups(job, dot, |t, g, r, nr| {
        // SAFETY: this chunk owns the rows of groups `g0..g1` (see `OutPtr`).
        unsafe { out.write_run(t, 8 * g, &r[..nr]) };
    });
}

/// One packed row group (quants `q`, scales `d`) against the `NT` tokens from `t0` on:
/// `res[t][i]` for row `i` of the group. Per block: the 8 weight vectors biased to unsigned
/// once, then per token 8 `vpdpbusd` with the token's 4 quants broadcast, one conversion and
/// one FMA with the 8 rows' scales times the token's. The same operations for every `NT`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
fn packed_dot<const NT: usize>(
    group: &Group<'_>,
    (a, corr): (&Q8Acts, &[i32]),
    t0: usize,
    res: &mut [[f32; 8]; PACKED_NT],
) -> usize {
    let Group { q, d, prefetch } = *group;
    let cols = a.cols;
    let nb = cols / QK8;
    assert!(q.len() >= nb * 256 && d.len() >= nb * 8);
    assert!(prefetch.is_none_or(|p| p.len() >= nb * 256));
    let pfp = prefetch.map(|p| p.as_ptr());
    assert!(a.qs.len() >= (t0 + NT) * cols && a.d.len() >= (t0 + NT) * nb);
    assert!(corr.len() >= (t0 + NT) * nb);
    let bias = _mm256_set1_epi8(-128);
    let mut acc = [_mm256_setzero_ps(); NT];
    let (qp, xp, dxp, cp) = (q.as_ptr(), a.qs.as_ptr(), a.d.as_ptr(), corr.as_ptr());
    for b in 0..nb {
        // SAFETY: block `b < nb` of the group (256 bytes and 8 scales, asserted), and for every
        // token `t0 + t < t0 + NT` its 32 quants of block `b`, its block scale and correction
        // lie inside the slices checked above. Loads are unaligned.
        unsafe {
            if let Some(p) = pfp {
                // Block `b` of the group to prefetch (`nb * 256` bytes, asserted): a hint.
                for l in 0..4 {
                    _mm_prefetch::<_MM_HINT_T0>(p.add(256 * b + 64 * l));
                }
            }
            let wv: [__m256i; 8] = std::array::from_fn(|j| {
                _mm256_xor_si256(_mm256_loadu_si256(qp.add(256 * b + 32 * j).cast()), bias)
            });
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(8 * b).cast()));
            for (t, acc) in acc.iter_mut().enumerate() {
                let tb = (t0 + t) * nb + b;
                let x4 = xp.add((t0 + t) * cols + 32 * b).cast::<i32>();
                // Few tokens: four dependency chains of `vpdpbusd` (5 cycles each) per token,
                // else one; the integer sums are exact, so the split changes no bits.
                let s = if NT <= 2 {
                    let mut c = [
                        _mm256_set1_epi32(*cp.add(tb)),
                        _mm256_setzero_si256(),
                        _mm256_setzero_si256(),
                        _mm256_setzero_si256(),
                    ];
                    for (j, &wj) in wv.iter().enumerate() {
                        let xj = _mm256_set1_epi32(x4.add(j).read_unaligned());
                        c[j % 4] = _mm256_dpbusd_epi32(c[j % 4], wj, xj);
                    }
                    _mm256_add_epi32(_mm256_add_epi32(c[0], c[1]), _mm256_add_epi32(c[2], c[3]))
                } else {
                    let mut s = _mm256_set1_epi32(*cp.add(tb));
                    for (j, &wj) in wv.iter().enumerate() {
                        let xj = _mm256_set1_epi32(x4.add(j).read_unaligned());
                        s = _mm256_dpbusd_epi32(s, wj, xj);
                    }
                    s
                };
                let dd = _mm256_mul_ps(dw, _mm256_set1_ps(*dxp.add(tb)));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
            }
        }
    }
    for (r, acc) in res.iter_mut().zip(&acc) {
        // SAFETY: `r` is 8 floats; the store is unaligned.
        unsafe { _mm256_storeu_ps(r.as_mut_ptr(), *acc) };
    }
    NT
}
