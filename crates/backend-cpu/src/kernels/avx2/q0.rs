//! AVX2 kernels: rows of the 32-element block types Q8_0 / Q4_0 / Q5_0 / Q4_1 / Q5_1 / IQ4_NL
//! (file and transposed layouts) and their decoding macros.

use super::*;

// --- Q8_0 / Q4_0 / Q5_0 / Q4_1 / Q5_1 / IQ4_NL ------------------------------------------------

/// Q8_0 weights (kind parameter of the kernels below).
pub(crate) const Q8_0: u8 = 0;
/// Q4_0 weights.
pub(crate) const Q4_0: u8 = 1;
/// Q5_0 weights.
pub(crate) const Q5_0: u8 = 2;
/// Q4_1 weights (Q4_0's quants, unsigned, plus a per-block min).
pub(crate) const Q4_1: u8 = 3;
/// Q5_1 weights (Q5_0's quants, unsigned, plus a per-block min).
pub(crate) const Q5_1: u8 = 4;
/// IQ4_NL weights (Q4_0's nibbles as indices into `IQ4NL_VALUES`).
pub(crate) const IQ4_NL: u8 = 5;

/// The kind of a 32-element block type.
pub(crate) fn q0_kind(ty: GgmlType) -> u8 {
    match ty {
        GgmlType::Q8_0 => Q8_0,
        GgmlType::Q4_0 => Q4_0,
        GgmlType::Q5_0 => Q5_0,
        GgmlType::Q4_1 => Q4_1,
        GgmlType::Q5_1 => Q5_1,
        GgmlType::IQ4_NL => IQ4_NL,
        _ => unreachable!("{ty} is not a 32-element block type"),
    }
}

/// Bytes of a block of kind `k`.
pub(crate) const fn q0_block_bytes(k: u8) -> usize {
    match k {
        Q8_0 => 34,
        Q4_0 | IQ4_NL => 18,
        Q5_0 => 22,
        Q4_1 => 20,
        _ => 24,
    }
}

/// Bytes before the quants of a block of kind `k`: the f16 scale, and the f16 min of Q4_1 /
/// Q5_1.
pub(crate) const fn q0_header(k: u8) -> usize {
    if q0_has_min(k) {
        4
    } else {
        2
    }
}

/// Whether kind `k` has a per-block min (`d q + m`).
pub(crate) const fn q0_has_min(k: u8) -> bool {
    k == Q4_1 || k == Q5_1
}

/// Whether kind `k` decodes to signed quants (Q8_0, IQ4_NL), multiplied with the sign trick.
pub(crate) const fn q0_signed(k: u8) -> bool {
    k == Q8_0 || k == IQ4_NL
}

/// Whether kind `k` has a fifth bit per quant (Q5_0, Q5_1).
pub(crate) const fn q0_five(k: u8) -> bool {
    k == Q5_0 || k == Q5_1
}

/// `IQ4NL_VALUES` in both 128-bit halves, for `_mm256_shuffle_epi8` lookups of 4-bit indices.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn iq4nl_table() -> __m256i {
    let v = switchyard_core::dtype::IQ4NL_VALUES;
    // SAFETY: 16 bytes read from a 16-byte array; unaligned load.
    let h = unsafe { _mm_loadu_si128(v.as_ptr().cast()) };
    _mm256_set_m128i(h, h)
}

/// The f16 at `p`, as f32 (F16C). Use inside `unsafe` with `p` valid for 2 bytes.
macro_rules! f16_at {
    ($p:expr) => {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            $p.cast::<u16>().read_unaligned() as i32,
        )))
    };
}

/// The 32 quants of the block of kind `$k` at `$p`, in element order: signed for Q8_0 and
/// IQ4_NL (its table values), unsigned (0..16 or 0..32) for Q4_0 / Q5_0 / Q4_1 / Q5_1. Use
/// inside `unsafe` with `$p` valid for a block.
macro_rules! q0_decode {
    ($k:expr, $p:expr) => {{
        let p: *const u8 = $p.add(q0_header($k));
        match $k {
            Q8_0 => _mm256_loadu_si256(p.cast()),
            Q4_0 | Q4_1 | IQ4_NL => {
                let v = _mm_loadu_si128(p.cast());
                let m4 = _mm_set1_epi8(0xF);
                let q = _mm256_set_m128i(
                    _mm_and_si128(_mm_srli_epi16::<4>(v), m4),
                    _mm_and_si128(v, m4),
                );
                if $k == IQ4_NL {
                    _mm256_shuffle_epi8(iq4nl_table(), q)
                } else {
                    q
                }
            }
            _ => {
                let qh = p.cast::<u32>().read_unaligned();
                let v = _mm_loadu_si128(p.add(4).cast());
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

/// Rows `r0..r1` of a matrix of a 32-element block type, in the file layout or (`PRE`) in the
/// transposed layout of `TransposedQ0` (`w.data` then holds `ceil(blocks / 8)` groups of
/// `tq0_group_bytes` per row).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows_q0<const PRE: bool>(job: &RowJob<'_, Q8Acts>) {
    match q0_kind(job.w.dtype) {
        Q8_0 => rows_q0_k::<Q8_0, PRE>(job),
        Q4_0 => rows_q0_k::<Q4_0, PRE>(job),
        Q5_0 => rows_q0_k::<Q5_0, PRE>(job),
        Q4_1 => rows_q0_k::<Q4_1, PRE>(job),
        Q5_1 => rows_q0_k::<Q5_1, PRE>(job),
        _ => rows_q0_k::<IQ4_NL, PRE>(job),
    }
}

/// Bytes of one group of 8 blocks of kind `k` in the transposed layout (`TransposedQ0`): the 8
/// f16 scales (Q4_1 / Q5_1: then the 8 f16 mins), then the group's 8 transposed vectors (Q8_0:
/// as they are; the others: vector `m` in the low nibbles of 32 bytes and vector `m + 4` in the
/// high ones, IQ4_NL as its 4-bit indices; Q5_0 / Q5_1 then 32 bytes, bit `m` of byte `i`
/// holding bit 4 of byte `i` of vector `m`, so each vector's fifth bits are one shift and one
/// mask away). The same size as 8 blocks.
pub(crate) const fn tq0_group_bytes(k: u8) -> usize {
    8 * q0_block_bytes(k)
}

/// Bytes before the vectors of a transposed group of kind `k`: 8 scales (and 8 mins).
pub(crate) const fn tq0_header(k: u8) -> usize {
    8 * q0_header(k)
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
            if $k == IQ4_NL {
                let tbl = iq4nl_table();
                for v in v.iter_mut() {
                    *v = _mm256_shuffle_epi8(tbl, *v);
                }
            }
            if q0_five($k) {
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

/// Most tokens multiplied with one decoded, transposed group of 8 weight blocks: a token takes
/// one accumulator across the row.
pub(crate) const Q0_NT_MAX: usize = 16;

/// Rows `r0..r1` for weights of kind `K`, with the activations in their interleaved form
/// (`Q8Acts::interleave`, groups of 8 blocks): per tile of `TILE` rows and group of up to
/// `Q0_NT_MAX` tokens, each row's groups of weight blocks are decoded and transposed once and
/// multiplied with every token of the group (`q0_dot`); each token's results of a tile are
/// written in one run (`row_tiles`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows_q0_k<const K: u8, const PRE: bool>(job: &RowJob<'_, Q8Acts>) {
    let (w, a) = (job.w, job.a);
    assert!(
        !a.qi.is_empty() && a.layout().0 == 0,
        "rows_q0: activations not interleaved"
    );
    let rb = if PRE {
        (w.cols / QK8).div_ceil(8) * tq0_group_bytes(K)
    } else {
        w.row_bytes()
    };
    // Tokens per pass over a row: 16 for short rows; 8 for rows of more than 4 groups, where
    // 16 accumulators (more than the 16 vector registers leave room for) spill on every group
    // (mmbench Q5_0 640 x 2048 at 16 tokens: 21.0 -> 17.0 us per token).
    let nt_max = if w.cols > 4 * 8 * QK8 { 8 } else { Q0_NT_MAX };
    row_tiles::<_, Q0_NT_MAX>(job, (rb, nt_max, true), |row, t0, nt, res| {
        by_nt!(nt, q0_dot::<_, K, PRE>(row, a, t0, res))
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
/// activation vectors at `x`, a block per i32 lane, added to `s`. Kind `K`: Q8_0 / IQ4_NL
/// signed (the sign trick, `av` = `|v|`, one `madd` per vector since a pair can reach 32,512),
/// Q4_0 / Q4_1 / Q5_0 / Q5_1 unsigned (pairs reach 2 * 15 * 127 / 2 * 31 * 127, so the i16
/// sums of 8 / 4 vectors are exact before one `madd`). Use inside `unsafe` with `x` valid for
/// `32 * M` bytes.
macro_rules! q0_lanes {
    ($k:expr, $m:expr, $v:expr, $av:expr, $x:expr, $s:expr) => {{
        let ones = _mm256_set1_epi16(1);
        let mut s = $s;
        if q0_signed($k) {
            for m in 0..$m {
                let xm = _mm256_loadu_si256($x.add(32 * m).cast());
                let p = _mm256_maddubs_epi16($av[m], _mm256_sign_epi8(xm, $v[m]));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
            }
        } else {
            let per = if q0_five($k) { 4 } else { 8 };
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
/// Per group of 8 weight blocks: the blocks are decoded (Q8_0 / IQ4_NL signed, the others
/// unsigned as stored) and transposed like the interleaved activations, so that the `maddubs` /
/// `madd` sums over the 8 vectors give each block's exact integer dot product in its own i32
/// lane, starting from `-offset * sum(x quants)`. Per token and group that is one conversion
/// and one FMA with the 8 products of block scales (a lane per block), and for Q4_1 / Q5_1 one
/// more FMA of the 8 block mins with the activations' `d * sum(x quants)` (`Q8Acts::si`); then
/// the horizontal sum. The same operations for every `NT`, so a token gives the same bits in
/// any group.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn q0_dot<const NT: usize, const K: u8, const PRE: bool>(
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
    assert!(!q0_has_min(K) || a.si.len() >= (t0 + NT) * ng * 8);
    let rp = row.as_ptr();
    // SAFETY: in bounds by the assertions above (offsets of token `t0`; `si` is read only for
    // kinds with mins).
    let (xp, np, dp, sp) = unsafe {
        (
            a.qi.as_ptr().add(t0 * ng * 256),
            a.ni.as_ptr().add(t0 * ng * 8),
            a.di.as_ptr().add(t0 * ng * 8),
            a.si.as_ptr().wrapping_add(t0 * ng * 8),
        )
    };
    let mut acc = [_mm256_setzero_ps(); NT];
    for g in 0..ng {
        let nbg = (nb - 8 * g).min(8);
        // SAFETY: blocks `8 g + k < nb` lie inside the row (`bb` bytes each), or with `PRE`
        // group `g` (`tq0_group_bytes` each); for every token `t < NT` the group
        // `(t0 + t) ng + g` lies inside `qi`, `ni`, `di` and (kinds with mins) `si`
        // (assertions above): 256 bytes of quants (128 for a half group) and 8 entries. Loads
        // are unaligned.
        unsafe {
            let (mut v, dwv, mwv) = if PRE {
                let p = rp.add(g * tq0_group_bytes(K));
                let dwv = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
                let mwv = if q0_has_min(K) {
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast()))
                } else {
                    _mm256_setzero_ps()
                };
                (q0_decode_t!(K, p.add(tq0_header(K))), dwv, mwv)
            } else {
                let mut v = [_mm256_setzero_si256(); 8];
                let (mut dw, mut mw) = ([0u16; 8], [0u16; 8]);
                for k in 0..nbg {
                    let b = rp.add((8 * g + k) * bb);
                    dw[k] = b.cast::<u16>().read_unaligned();
                    if q0_has_min(K) {
                        mw[k] = b.add(2).cast::<u16>().read_unaligned();
                    }
                    v[k] = q0_decode!(K, b);
                }
                (
                    v,
                    _mm256_cvtph_ps(_mm_loadu_si128(dw.as_ptr().cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(mw.as_ptr().cast())),
                )
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
                    if q0_has_min(K) {
                        // Lanes 4..8: no block (min 0, sum 0).
                        *acc = _mm256_fmadd_ps(mwv, _mm256_loadu_ps(sp.add(o)), *acc);
                    }
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
                if q0_has_min(K) {
                    *acc = _mm256_fmadd_ps(mwv, _mm256_loadu_ps(sp.add(o)), *acc);
                }
            }
        }
    }
    for t in 0..NT {
        res[t] = hsum_ps(acc[t]);
    }
}
