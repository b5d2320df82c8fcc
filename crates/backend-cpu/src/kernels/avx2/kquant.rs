//! AVX2 kernels: K-quant rows (Q2_K / Q3_K / Q4_K / Q5_K / Q6_K, and IQ4_XS with the same
//! super-blocks; file and transposed layouts).

use super::*;
use switchyard_core::dtype::iq4xs_scales;

// --- Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / IQ4_XS -------------------------------------------------

/// Most tokens multiplied with one decoded, transposed K-quant super-block.
pub(crate) const K_NT_MAX: usize = 16;

/// Activation bytes of a token group above which `rows_k` splits the rows into column chunks
/// of `CHUNK_SB` super-blocks (8 tokens of an 8,192-column down projection are 64 KiB: twice
/// L1, so every row re-read them from L2; mmbench Q5_K 2048 x 8192 at 64 tokens, one thread,
/// CPU time on a loaded Zen 3: 420-455 -> 390-417 us per token).
const K_CHUNK_BYTES: usize = 16 << 10;
/// Super-blocks per column chunk: 8 tokens' chunk is 8 KiB.
const CHUNK_SB: usize = 4;
/// Rows whose accumulators are kept (in memory) across the column chunks.
const SUB: usize = 16;

/// Rows `r0..r1` of a K-quant matrix, with the activations interleaved
/// (`Q8KActs::interleave`): per tile of `TILE` rows and group of up to `K_NT_MAX` tokens, each
/// super-block of a row is decoded to its 8 sub-blocks of 32 unsigned quants and transposed
/// once, so that per token `maddubs` over its 8 vectors gives the 8 sub-block dot products in
/// the 8 i32 lanes, summed in i16 (Q4_K: 8 vectors, at most 8 * 2 * 15 * 127 = 30,480; Q5_K:
/// twice 4 vectors, at most 4 * 2 * 31 * 127 = 31,496; Q6_K: 2 vectors, at most 32,004; Q3_K /
/// Q2_K: 4 vectors, at most 7,112) before `madd` with the sub-block scales widens them. That is
/// about 1.25 (Q4_K) / 1.4 (Q5_K, Q3_K, Q2_K) / 1.6 (Q6_K) multiply instructions per 32 weights
/// and token, against 2 when each run of 32 is scaled on its own. Each token's results of a tile
/// are written in one run.
///
/// When a token group's activations exceed `K_CHUNK_BYTES`, the rows of a tile go `SUB` at a
/// time through column chunks of `CHUNK_SB` super-blocks, their per-token vector accumulators
/// kept in memory between chunks: each accumulator sees the same operations in the same order
/// as without chunks (a store and a load change no bits), so the results are the same whatever
/// the group size or chunking.
/// `PRE`: the super-blocks are stored transposed already (`TransposedK`), so the transposes are
/// skipped; the rest is the same, and so are the results.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows_k<const PRE: bool>(job: &RowJob<'_, Q8KActs>) {
    let (w, a, r1) = (job.w, job.a, job.r1);
    assert!(!a.qi.is_empty(), "rows_k: activations not interleaved");
    let kind = w.dtype;
    let nsb = w.cols / QKK;
    let bb = kind.block_bytes();
    let mut accs = [[_mm256_setzero_ps(); K_NT_MAX]; SUB];
    // 8 tokens per pass for rows of more than 4 super-blocks, as in `rows_q0_k` (mmbench Q4_K
    // 640 x 2048 at 16 tokens: 20.0 -> 18.5 us per token).
    let nt_max = if w.cols > 4 * QKK { 8 } else { K_NT_MAX };
    tiles::<_, K_NT_MAX>(job, nt_max, |rows, tb0, t0, nt, tile| {
        let (r, re) = (rows.start, rows.end);
        let chunk = if nt * w.cols > K_CHUNK_BYTES {
            CHUNK_SB
        } else {
            nsb
        };
        let mut s0 = r;
        while s0 < re {
            let s1 = (s0 + SUB).min(re);
            for acc in &mut accs[..s1 - s0] {
                acc[..nt].fill(_mm256_setzero_ps());
            }
            let mut sb0 = 0;
            while sb0 < nsb {
                let sb1 = (sb0 + chunk).min(nsb);
                for rr in s0..s1 {
                    let row = w.row(rr);
                    if t0 == tb0 {
                        // The piece of a row read two rows later: in this chunk, else the next
                        // chunk of the sub-tile's rows, else the first chunk of the next
                        // sub-tile.
                        let ahead = rr + ROW_PREFETCH_AHEAD;
                        let next = if ahead < s1 {
                            Some((ahead, sb0, sb1))
                        } else if sb1 < nsb {
                            let pr = s0 + ahead - s1;
                            (pr < s1).then_some((pr, sb1, (sb1 + chunk).min(nsb)))
                        } else {
                            (ahead < r1).then_some((ahead, 0, chunk.min(nsb)))
                        };
                        if let Some((pr, p0, p1)) = next {
                            prefetch_bytes(&w.row(pr)[bb * p0..bb * p1]);
                        }
                    }
                    let acc = &mut accs[rr - s0];
                    let sbs = sb0..sb1;
                    match kind {
                        GgmlType::Q4_K => {
                            by_nt!(nt, q4k_dot::<_, PRE, false>(row, a, t0, sbs, acc))
                        }
                        GgmlType::Q5_K => by_nt!(nt, q4k_dot::<_, PRE, true>(row, a, t0, sbs, acc)),
                        GgmlType::Q6_K => by_nt!(nt, q6k_dot::<_, PRE, 6>(row, a, t0, sbs, acc)),
                        GgmlType::Q3_K => by_nt!(nt, q6k_dot::<_, PRE, 3>(row, a, t0, sbs, acc)),
                        GgmlType::Q2_K => by_nt!(nt, q6k_dot::<_, PRE, 2>(row, a, t0, sbs, acc)),
                        GgmlType::IQ4_XS => by_nt!(nt, iq4xs_dot::<_, PRE>(row, a, t0, sbs, acc)),
                        _ => unreachable!("no K-quant kernel for {kind}"),
                    }
                }
                sb0 = sb1;
            }
            for rr in s0..s1 {
                for (tl, acc) in tile.iter_mut().zip(&accs[rr - s0]).take(nt) {
                    tl[rr - r] = hsum_ps(*acc);
                }
            }
            s0 = s1;
        }
    });
}

/// The slices of the tokens `t0..t0 + NT` of `a` that a K-quant row of `nsb` super-blocks
/// reads, as pointers: (interleaved quants, scales, per-16 sums), each token after the other.
#[inline]
pub(crate) fn k_ptrs<const NT: usize>(
    a: &Q8KActs,
    t0: usize,
) -> (*const i8, *const f32, *const i16) {
    let cols = a.cols;
    let nsb = cols / QKK;
    (
        a.qi[t0 * cols..(t0 + NT) * cols].as_ptr(),
        a.d[t0 * nsb..(t0 + NT) * nsb].as_ptr(),
        a.bsums[t0 * cols / 16..(t0 + NT) * cols / 16].as_ptr(),
    )
}

/// One Q4_K (`Q5`: Q5_K) row against the `NT` tokens from `t0` on, over the super-blocks `sbs`: adds to the
/// accumulator `io[t]` (8 lanes, summed at the end) the lanes of `res[t]`, with
/// `res = sum_sb d dx sum_j sc_j dot_j - dmin dx sum_j m_j bsum_j` over the sub-blocks `j`.
/// The same operations for every `NT`, so a token gives the same bits in any group.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn q4k_dot<const NT: usize, const PRE: bool, const Q5: bool>(
    row: &[u8],
    a: &Q8KActs,
    t0: usize,
    sbs: std::ops::Range<usize>,
    io: &mut [__m256; K_NT_MAX],
) {
    let cols = a.cols;
    let nsb = cols / QKK;
    assert!(sbs.end <= nsb);
    let bb = if Q5 { 176 } else { 144 };
    assert!(row.len() >= nsb * bb);
    let (xp, dp, bp) = k_ptrs::<NT>(a, t0);
    let rp = row.as_ptr();
    let m4 = _mm256_set1_epi8(0xF);
    let dup_mins = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    let mut acc: [__m256; NT] = std::array::from_fn(|t| io[t]);
    for sb in sbs {
        // SAFETY: `sb < nsb`: super-block `sb` of the row (`bb` bytes at `bb sb`, asserted) and,
        // for every token `t < NT`, its quants `t cols + 256 sb ..+256`, scale `t nsb + sb` and
        // sums `t cols / 16 + 16 sb ..+16`, inside the slices `k_ptrs` took. Loads are unaligned.
        unsafe {
            let b = rp.add(bb * sb);
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
            if Q5 {
                // Sub-block s: the nibbles of `qs`, bit s of `qh` as bit 4 (taken from bits 0 and
                // 1 of `qh` shifted right by 2 per pair; every shift stays inside its byte).
                let mut qh = _mm256_loadu_si256(b.add(16).cast());
                let one = _mm256_set1_epi8(1);
                let two = _mm256_set1_epi8(2);
                for j in 0..4 {
                    let q = _mm256_loadu_si256(b.add(48 + 32 * j).cast());
                    let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, one));
                    let h1 = _mm256_slli_epi16::<3>(_mm256_and_si256(qh, two));
                    v[2 * j] = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
                    v[2 * j + 1] =
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q), m4), h1);
                    qh = _mm256_srli_epi16::<2>(qh);
                }
            } else {
                for j in 0..4 {
                    let q = _mm256_loadu_si256(b.add(16 + 32 * j).cast());
                    v[2 * j] = _mm256_and_si256(q, m4);
                    v[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                }
            }
            if !PRE {
                transpose8(&mut v);
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let x = xp.add(t * cols + QKK * sb);
                let s = if Q5 {
                    // Two i16 sums of 4 vectors each (8 would overflow with 5-bit quants).
                    let mut p = [_mm256_setzero_si256(); 2];
                    for (m, v) in v.iter().enumerate() {
                        let xm = _mm256_loadu_si256(x.add(32 * m).cast());
                        p[m / 4] = _mm256_add_epi16(p[m / 4], _mm256_maddubs_epi16(*v, xm));
                    }
                    _mm256_add_epi32(_mm256_madd_epi16(p[0], sc), _mm256_madd_epi16(p[1], sc))
                } else {
                    let mut p = _mm256_setzero_si256();
                    for (m, v) in v.iter().enumerate() {
                        let xm = _mm256_loadu_si256(x.add(32 * m).cast());
                        p = _mm256_add_epi16(p, _mm256_maddubs_epi16(*v, xm));
                    }
                    _mm256_madd_epi16(p, sc)
                };
                let s = _mm256_cvtepi32_ps(s);
                let dx = *dp.add(t * nsb + sb);
                let bsums = _mm256_loadu_si256(bp.add(t * cols / 16 + 16 * sb).cast());
                let mn = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins));
                let mn = _mm256_mul_ps(mn, _mm256_set1_ps(dmin * dx));
                // One add on the accumulator's chain per super-block, not two FMAs (in the
                // accumulators' registers this keeps the 8 decoded vectors in registers too).
                *acc = _mm256_add_ps(*acc, _mm256_fmsub_ps(s, _mm256_set1_ps(d * dx), mn));
            }
        }
    }
    io[..NT].copy_from_slice(&acc);
}

/// One row of a K-quant with 16 scales per super-block, `K` = 6 (Q6_K), 3 (Q3_K) or 2 (Q2_K),
/// against the `NT` tokens from `t0` on, over the super-blocks `sbs`: adds to the
/// accumulator `io[t]` (8 lanes, summed at the end) the lanes of `res[t]`, with
/// `res = sum_sb d dx sum_k sc_k (dot_k(q, x) - o bsum_k)` over the runs `k` of 16, for the
/// unsigned quants `q` and their offset `o` (Q6_K: 32, Q3_K: 4), and for Q2_K (no offset, but
/// a min per run) `res = sum_sb dx (d sum_k sc_k dot_k(q, x) - dmin sum_k m_k bsum_k)`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn q6k_dot<const NT: usize, const PRE: bool, const K: u8>(
    row: &[u8],
    a: &Q8KActs,
    t0: usize,
    sbs: std::ops::Range<usize>,
    io: &mut [__m256; K_NT_MAX],
) {
    let cols = a.cols;
    let nsb = cols / QKK;
    assert!(sbs.end <= nsb);
    let bb = match K {
        2 => 84,
        3 => 110,
        _ => 210,
    };
    assert!(row.len() >= nsb * bb);
    let (xp, dp, bp) = k_ptrs::<NT>(a, t0);
    let rp = row.as_ptr();
    let three = _mm256_set1_epi8(3);
    let mut acc: [__m256; NT] = std::array::from_fn(|t| io[t]);
    for sb in sbs {
        // SAFETY: `sb < nsb`: super-block `sb` of the row (`bb` bytes at `bb sb`, asserted) and,
        // for every token `t < NT`, its quants `t cols + 256 sb ..+256`, scale `t nsb + sb` and
        // sums `t cols / 16 + 16 sb ..+16`, inside the slices `k_ptrs` took. Loads are unaligned.
        unsafe {
            let b = rp.add(bb * sb);
            let mut v = [_mm256_setzero_si256(); 8];
            // Q2_K / Q3_K: sub-block 4 n + j has its low 2 bits at bits 2 j.. of the 32 bytes
            // `qs[32 n ..]` (at `lo_at`).
            let low2 = |v: &mut [__m256i; 8], lo_at: *const u8| {
                for n in 0..2 {
                    let q = _mm256_loadu_si256(lo_at.add(32 * n).cast());
                    let lo = [
                        q,
                        _mm256_srli_epi16::<2>(q),
                        _mm256_srli_epi16::<4>(q),
                        _mm256_srli_epi16::<6>(q),
                    ];
                    for j in 0..4 {
                        v[4 * n + j] = _mm256_and_si256(lo[j], three);
                    }
                }
            };
            // (d, dmin, the 16 scales as i8, the 16 mins as i8)
            let (d, dmin, sc8, mn8) = match K {
                2 => {
                    low2(&mut v, b.add(16));
                    let s = _mm_loadu_si128(b.cast());
                    let m4 = _mm_set1_epi8(0xF);
                    let mins = _mm_and_si128(_mm_srli_epi16::<4>(s), m4);
                    (
                        f16_at!(b.add(80)),
                        f16_at!(b.add(82)),
                        _mm_and_si128(s, m4),
                        mins,
                    )
                }
                3 => {
                    // Bit 4 n + j of `hmask[l]` as bit 2 (every shift keeps the bits it uses
                    // inside their byte).
                    low2(&mut v, b.add(32));
                    let hm = _mm256_loadu_si256(b.cast());
                    let h = [
                        _mm256_slli_epi16::<2>(hm),
                        _mm256_slli_epi16::<1>(hm),
                        hm,
                        _mm256_srli_epi16::<1>(hm),
                        _mm256_srli_epi16::<2>(hm),
                        _mm256_srli_epi16::<3>(hm),
                        _mm256_srli_epi16::<4>(hm),
                        _mm256_srli_epi16::<5>(hm),
                    ];
                    let four = _mm256_set1_epi8(4);
                    for (v, h) in v.iter_mut().zip(h) {
                        *v = _mm256_or_si256(*v, _mm256_and_si256(h, four));
                    }
                    let sc = unpack_q3k_scales(&*b.add(96).cast::<[u8; 12]>());
                    let sc = _mm_sub_epi8(_mm_loadu_si128(sc.as_ptr().cast()), _mm_set1_epi8(32));
                    (f16_at!(b.add(108)), 0.0, sc, _mm_setzero_si128())
                }
                _ => {
                    for n in 0..2 {
                        let ql0 = _mm256_loadu_si256(b.add(64 * n).cast());
                        let ql1 = _mm256_loadu_si256(b.add(64 * n + 32).cast());
                        let qh = _mm256_loadu_si256(b.add(128 + 32 * n).cast());
                        let q = q6k_quants(ql0, ql1, qh);
                        v[4 * n..4 * n + 4].copy_from_slice(&q);
                    }
                    let sc = _mm_loadu_si128(b.add(192).cast());
                    (f16_at!(b.add(208)), 0.0, sc, _mm_setzero_si128())
                }
            };
            // The 16 scales as i16; lane j: scale 2j (elements 0..16 of sub-block j) or 2j + 1
            // (elements 16..32) in both halves.
            let sc = _mm256_cvtepi8_epi16(sc8);
            let sc_lo = _mm256_blend_epi16::<0xAA>(sc, _mm256_slli_epi32::<16>(sc));
            let sc_hi = _mm256_blend_epi16::<0xAA>(_mm256_srli_epi32::<16>(sc), sc);
            let mins = _mm256_cvtepi8_epi16(mn8);
            if !PRE {
                transpose8(&mut v);
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let x = xp.add(t * cols + QKK * sb);
                // Vectors 0..4 hold elements 0..16 of each sub-block, 4..8 elements 16..32.
                let s = if K == 6 {
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
                    s
                } else {
                    // 2- / 3-bit quants: the 4 vectors of a half summed in i16 (at most 7,112).
                    let mut p = [_mm256_setzero_si256(); 2];
                    for (m, v) in v.iter().enumerate() {
                        let xm = _mm256_loadu_si256(x.add(32 * m).cast());
                        p[m / 4] = _mm256_add_epi16(p[m / 4], _mm256_maddubs_epi16(*v, xm));
                    }
                    _mm256_add_epi32(
                        _mm256_madd_epi16(p[0], sc_lo),
                        _mm256_madd_epi16(p[1], sc_hi),
                    )
                };
                let bsums = _mm256_loadu_si256(bp.add(t * cols / 16 + 16 * sb).cast());
                let dx = *dp.add(t * nsb + sb);
                if K == 2 {
                    let mn = _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins));
                    let mn = _mm256_mul_ps(mn, _mm256_set1_ps(dmin * dx));
                    let s = _mm256_cvtepi32_ps(s);
                    *acc = _mm256_add_ps(*acc, _mm256_fmsub_ps(s, _mm256_set1_ps(d * dx), mn));
                } else {
                    let corr = _mm256_madd_epi16(sc, bsums);
                    let corr = if K == 3 {
                        _mm256_slli_epi32::<2>(corr)
                    } else {
                        _mm256_slli_epi32::<5>(corr)
                    };
                    let s = _mm256_sub_epi32(s, corr);
                    let dd = _mm256_set1_ps(d * dx);
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
                }
            }
        }
    }
    io[..NT].copy_from_slice(&acc);
}

/// One IQ4_XS row against the `NT` tokens from `t0` on, over the super-blocks `sbs`: adds to the
/// accumulator `io[t]` (8 lanes, summed at the end) the lanes of `res[t]`, with
/// `res = sum_sb d dx sum_j sc_j dot_j(v, x)` over the 8 sub-blocks `j` of 32, for the table
/// values `v = IQ4NL_VALUES[q]` of the 4-bit indices (one `_mm256_shuffle_epi8` per vector).
/// The values are signed, so each vector is multiplied with the sign trick of Q8_0
/// (`maddubs(|v|, sign(x, v))`, pairs at most 2 * 127 * 127 = 32,258) and widened at once by
/// `madd` with the sub-block scales: 2 multiply instructions per 32 weights and token.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn iq4xs_dot<const NT: usize, const PRE: bool>(
    row: &[u8],
    a: &Q8KActs,
    t0: usize,
    sbs: std::ops::Range<usize>,
    io: &mut [__m256; K_NT_MAX],
) {
    let cols = a.cols;
    let nsb = cols / QKK;
    assert!(sbs.end <= nsb);
    assert!(row.len() >= nsb * 136);
    let (xp, dp, _) = k_ptrs::<NT>(a, t0);
    let rp = row.as_ptr();
    let m4 = _mm256_set1_epi8(0xF);
    let tbl = iq4nl_table();
    let mut acc: [__m256; NT] = std::array::from_fn(|t| io[t]);
    for sb in sbs {
        // The 8 scales as i16, each twice: lane j of `madd` takes the two pair sums of
        // sub-block j.
        let sc = iq4xs_scales(&row[136 * sb..136 * sb + 8]);
        let sc16: [i16; 16] = std::array::from_fn(|i| i16::from(sc[i / 2]));
        // SAFETY: `sb < nsb`: super-block `sb` of the row (136 bytes at `136 sb`, asserted)
        // and, for every token `t < NT`, its quants `t cols + 256 sb ..+256` and scale
        // `t nsb + sb`, inside the slices `k_ptrs` took; `sc16` is 32 bytes. Loads are
        // unaligned.
        unsafe {
            let b = rp.add(136 * sb);
            let d = f16_at!(b);
            let scv = _mm256_loadu_si256(sc16.as_ptr().cast());
            // Sub-block 2 j + h: the 16 bytes `qs[16 (2 j + h) ..]`, low nibbles then high.
            let mut v = [_mm256_setzero_si256(); 8];
            for j in 0..4 {
                let q = _mm256_loadu_si256(b.add(8 + 32 * j).cast());
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                let s0 = _mm256_permute2x128_si256::<0x20>(lo, hi);
                let s1 = _mm256_permute2x128_si256::<0x31>(lo, hi);
                v[2 * j] = _mm256_shuffle_epi8(tbl, s0);
                v[2 * j + 1] = _mm256_shuffle_epi8(tbl, s1);
            }
            if !PRE {
                transpose8(&mut v);
            }
            let av = v.map(|x| _mm256_sign_epi8(x, x));
            for (t, acc) in acc.iter_mut().enumerate() {
                let x = xp.add(t * cols + QKK * sb);
                let mut s = _mm256_setzero_si256();
                for (m, (v, av)) in v.iter().zip(&av).enumerate() {
                    let xm = _mm256_loadu_si256(x.add(32 * m).cast());
                    let p = _mm256_maddubs_epi16(*av, _mm256_sign_epi8(xm, *v));
                    s = _mm256_add_epi32(s, _mm256_madd_epi16(p, scv));
                }
                let dd = _mm256_set1_ps(d * *dp.add(t * nsb + sb));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
            }
        }
    }
    io[..NT].copy_from_slice(&acc);
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
