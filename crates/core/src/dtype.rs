//! GGML tensor element types, their block layouts, and the plain scalar dequantization of each.
//!
//! The scalar code here is the specification every SIMD or GPU kernel is tested against.

use half::{bf16, f16};

/// A GGML tensor element type (the numeric values are GGUF's type ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[expect(
    non_camel_case_types,
    reason = "GGML's own type names: Q4_0, Q4_K, ..."
)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half float.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit, blocks of 32 with an f16 scale.
    Q4_0,
    /// 4-bit, blocks of 32 with an f16 scale and an f16 min (unsigned quants, `d q + m`).
    Q4_1,
    /// 5-bit, blocks of 32 with an f16 scale.
    Q5_0,
    /// 5-bit, blocks of 32 with an f16 scale and an f16 min (unsigned quants, `d q + m`).
    Q5_1,
    /// 8-bit, blocks of 32 with an f16 scale.
    Q8_0,
    /// 2-bit k-quant, super-blocks of 256 with sixteen 4-bit scales and mins.
    Q2_K,
    /// 3-bit k-quant, super-blocks of 256 with sixteen 6-bit scales.
    Q3_K,
    /// 4-bit k-quant, super-blocks of 256.
    Q4_K,
    /// 5-bit k-quant, super-blocks of 256 (Q4_K's scales and mins, plus a high bit per quant).
    Q5_K,
    /// 6-bit k-quant, super-blocks of 256.
    Q6_K,
    /// 8-bit k-quant (used for activations), super-blocks of 256.
    Q8_K,
    /// 4-bit non-linear, blocks of 32 with an f16 scale: each quant indexes [`IQ4NL_VALUES`].
    IQ4_NL,
    /// 4-bit non-linear, super-blocks of 256 with eight 6-bit scales (IQ4_NL's table).
    IQ4_XS,
}

impl GgmlType {
    /// Maps a GGUF type id to a type we support; `None` for any other id.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2_K,
            11 => Self::Q3_K,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            15 => Self::Q8_K,
            20 => Self::IQ4_NL,
            23 => Self::IQ4_XS,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::Q8_K => 15,
            Self::IQ4_NL => 20,
            Self::IQ4_XS => 23,
            Self::BF16 => 30,
        }
    }

    /// Human name of a GGUF type id, including the ones we do not support (for error messages).
    pub fn name_of_id(id: u32) -> &'static str {
        match id {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            6 => "Q5_0",
            7 => "Q5_1",
            8 => "Q8_0",
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            12 => "Q4_K",
            13 => "Q5_K",
            14 => "Q6_K",
            15 => "Q8_K",
            16 => "IQ2_XXS",
            17 => "IQ2_XS",
            18 => "IQ3_XXS",
            19 => "IQ1_S",
            20 => "IQ4_NL",
            21 => "IQ3_S",
            22 => "IQ2_S",
            23 => "IQ4_XS",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            29 => "IQ1_M",
            30 => "BF16",
            34 => "TQ1_0",
            35 => "TQ2_0",
            39 => "MXFP4",
            40 => "NVFP4",
            41 => "Q1_0",
            42 => "Q2_0",
            _ => "unknown",
        }
    }

    /// Number of elements in one block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::IQ4_NL => 32,
            Self::Q2_K
            | Self::Q3_K
            | Self::Q4_K
            | Self::Q5_K
            | Self::Q6_K
            | Self::Q8_K
            | Self::IQ4_XS => 256,
        }
    }

    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2_K => 16 + 64 + 2 + 2,
            Self::Q3_K => 32 + 64 + 12 + 2,
            Self::Q4_K => 144,
            Self::Q5_K => 2 + 2 + 12 + 32 + 128,
            Self::Q6_K => 210,
            Self::Q8_K => 4 + 256 + 32,
            Self::IQ4_NL => 2 + 16,
            Self::IQ4_XS => 2 + 2 + 4 + 128,
        }
    }

    /// Bytes taken by `n` elements (`n` must be a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }

    /// Display name, as GGUF tools print it.
    pub fn name(self) -> &'static str {
        Self::name_of_id(self.id())
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `data` (whole blocks of `ty`) into `out`; `out.len()` elements are produced.
///
/// # Panics
/// If `data` is shorter than `ty.bytes_for(out.len())` or `out.len()` is not a multiple of the
/// block size.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) {
    let bs = ty.block_size();
    let bb = ty.block_bytes();
    assert_eq!(
        out.len() % bs,
        0,
        "dequantize: length not a multiple of the block size"
    );
    assert!(
        data.len() >= ty.bytes_for(out.len()),
        "dequantize: not enough data"
    );
    for (blk, y) in data.chunks_exact(bb).zip(out.chunks_exact_mut(bs)) {
        dequantize_block(ty, blk, y);
    }
}

/// The scale and min of sub-block `j` of a Q4_K (or Q5_K) super-block.
pub fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The sixteen scales of a Q3_K super-block (its 12 `scales` bytes), offset removed
/// (`-32..=31`): scale `k` has its low 4 bits in nibble `k / 8` of byte `k % 8` and its high 2
/// bits at bit `2 (k / 4)` of byte `8 + k % 4`.
pub fn q3k_scales(s: &[u8]) -> [i8; 16] {
    std::array::from_fn(|k| {
        let lo = (s[k % 8] >> (4 * (k / 8))) & 0xF;
        let hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        (lo | (hi << 4)) as i8 - 32
    })
}

/// The 16 values of the IQ4_NL / IQ4_XS quants (ggml's `kvalues_iq4nl`).
pub const IQ4NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The eight sub-block scales of an IQ4_XS super-block `b`, offset removed (`-32..=31`):
/// scale `j` has its low 4 bits in nibble `j % 2` of `scales_l[j / 2]` (byte `4 + j / 2`) and
/// its high 2 bits at bit `2 j` of the little-endian u16 `scales_h` (bytes 2..4).
pub fn iq4xs_scales(b: &[u8]) -> [i8; 8] {
    let h = u16::from_le_bytes([b[2], b[3]]);
    std::array::from_fn(|j| {
        let lo = (b[4 + j / 2] >> (4 * (j % 2))) & 0xF;
        let hi = ((h >> (2 * j)) & 3) as u8;
        (lo | (hi << 4)) as i8 - 32
    })
}

fn dequantize_block(ty: GgmlType, b: &[u8], y: &mut [f32]) {
    match ty {
        GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => y[0] = f16_at(b, 0),
        GgmlType::BF16 => y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q4_0 => {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                y[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
                y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            // Element `j` (j < 16): low nibble of `qs[j]`; element `j + 16`: its high nibble.
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qs = &b[4..20];
            for j in 0..16 {
                y[j] = d * (qs[j] & 0xF) as f32 + m;
                y[j + 16] = d * (qs[j] >> 4) as f32 + m;
            }
        }
        GgmlType::Q5_1 => {
            // As Q4_1, with bit `e` of `qh` as bit 4 of element `e`.
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let qs = &b[8..24];
            for j in 0..16 {
                let h0 = (((qh >> j) & 1) << 4) as u8;
                let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
                y[j] = d * ((qs[j] & 0xF) | h0) as f32 + m;
                y[j + 16] = d * ((qs[j] >> 4) | h1) as f32 + m;
            }
        }
        GgmlType::IQ4_NL => {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            for j in 0..16 {
                y[j] = d * IQ4NL_VALUES[(qs[j] & 0xF) as usize] as f32;
                y[j + 16] = d * IQ4NL_VALUES[(qs[j] >> 4) as usize] as f32;
            }
        }
        GgmlType::IQ4_XS => {
            // Sub-block `s`: element `l < 16` in the low nibble of `qs[16 s + l]`, element
            // `l + 16` in its high nibble; scale `d (ls - 32)`.
            let d = f16_at(b, 0);
            let sc = iq4xs_scales(b);
            let qs = &b[8..136];
            for s in 0..8 {
                let dl = d * sc[s] as f32;
                for l in 0..16 {
                    let q = qs[16 * s + l];
                    y[32 * s + l] = dl * IQ4NL_VALUES[(q & 0xF) as usize] as f32;
                    y[32 * s + l + 16] = dl * IQ4NL_VALUES[(q >> 4) as usize] as f32;
                }
            }
        }
        GgmlType::Q5_0 => {
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..22];
            for j in 0..16 {
                let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                y[j] = (((qs[j] & 0xF) | xh0) as i32 - 16) as f32 * d;
                y[j + 16] = (((qs[j] >> 4) | xh1) as i32 - 16) as f32 * d;
            }
        }
        GgmlType::Q8_0 => {
            let d = f16_at(b, 0);
            for j in 0..32 {
                y[j] = b[2 + j] as i8 as f32 * d;
            }
        }
        GgmlType::Q4_K => {
            let d = f16_at(b, 0);
            let dmin = f16_at(b, 2);
            let scales = &b[4..16];
            let mut q = &b[16..144];
            let mut is = 0;
            for j in (0..256).step_by(64) {
                let (sc, m) = get_scale_min_k4(is, scales);
                let (d1, m1) = (d * sc as f32, dmin * m as f32);
                let (sc, m) = get_scale_min_k4(is + 1, scales);
                let (d2, m2) = (d * sc as f32, dmin * m as f32);
                for l in 0..32 {
                    y[j + l] = d1 * (q[l] & 0xF) as f32 - m1;
                    y[j + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
                }
                q = &q[32..];
                is += 2;
            }
        }
        GgmlType::Q2_K => {
            // Element `128 n + 32 j + l` (l < 32): bits `2 j..` of `qs[32 n + l]`; run `e / 16`
            // has the scale (low nibble) and min (high nibble) of `scales[e / 16]`.
            let (scales, qs) = (&b[0..16], &b[16..80]);
            let d = f16_at(b, 80);
            let dmin = f16_at(b, 82);
            for (e, y) in y.iter_mut().enumerate().take(256) {
                let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
                let q = (qs[32 * n + l] >> (2 * j)) & 3;
                let sc = scales[e / 16];
                let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
                *y = dl * q as f32 - ml;
            }
        }
        GgmlType::Q3_K => {
            // Element `128 n + 32 j + l` (l < 32): low 2 bits at bit `2 j` of `qs[32 n + l]`,
            // the high bit at bit `4 n + j` of `hmask[l]` (clear: subtract 4), scale `e / 16`.
            let (hmask, qs) = (&b[0..32], &b[32..96]);
            let sc = q3k_scales(&b[96..108]);
            let d = f16_at(b, 108);
            for (e, y) in y.iter_mut().enumerate().take(256) {
                let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
                let lo = ((qs[32 * n + l] >> (2 * j)) & 3) as i32;
                let hi = ((hmask[l] >> (4 * n + j)) & 1) as i32;
                let dl = d * sc[e / 16] as f32;
                *y = dl * (lo - 4 * (1 - hi)) as f32;
            }
        }
        GgmlType::Q5_K => {
            // Sub-block `s` (32 elements `l`): low 4 bits in nibble `s % 2` of
            // `qs[32 (s / 2) + l]`, the high bit at bit `s` of `qh[l]`.
            let d = f16_at(b, 0);
            let dmin = f16_at(b, 2);
            let scales = &b[4..16];
            let (qh, qs) = (&b[16..48], &b[48..176]);
            for s in 0..8 {
                let (sc, m) = get_scale_min_k4(s, scales);
                let (d1, m1) = (d * sc as f32, dmin * m as f32);
                for l in 0..32 {
                    let lo = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF;
                    let hi = (qh[l] >> s) & 1;
                    y[32 * s + l] = d1 * (lo | (hi << 4)) as f32 - m1;
                }
            }
        }
        GgmlType::Q6_K => {
            let ql_all = &b[0..128];
            let qh_all = &b[128..192];
            let sc_all = &b[192..208];
            let d = f16_at(b, 208);
            for n in 0..2 {
                let ql = &ql_all[n * 64..];
                let qh = &qh_all[n * 32..];
                let sc = &sc_all[n * 8..];
                let y = &mut y[n * 128..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
        GgmlType::Q8_K => {
            let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            for j in 0..256 {
                y[j] = b[4 + j] as i8 as f32 * d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block_roundtrip() {
        let mut blk = vec![0u8; 34];
        blk[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for j in 0..32 {
            blk[2 + j] = (j as i8 - 16) as u8;
        }
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q8_0, &blk, &mut y);
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, (j as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn q4_0_nibbles() {
        let mut blk = vec![0u8; 18];
        blk[0..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        blk[2] = 0xF3; // low nibble 3 -> element 0, high nibble 15 -> element 16
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q4_0, &blk, &mut y);
        assert_eq!(y[0], (3.0 - 8.0) * 2.0);
        assert_eq!(y[16], (15.0 - 8.0) * 2.0);
        assert_eq!(y[1], -16.0);
    }

    #[test]
    fn q5_0_high_bits() {
        let mut blk = vec![0u8; 22];
        blk[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        blk[2..6].copy_from_slice(&(1u32 | (1 << 16)).to_le_bytes()); // high bit of element 0 and 16
        blk[6] = 0x21;
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q5_0, &blk, &mut y);
        assert_eq!(y[0], (0x11 - 16) as f32);
        assert_eq!(y[16], (0x12 - 16) as f32);
        assert_eq!(y[1], -16.0);
    }

    /// Every quantized type's dequantization against gguf-py's (llama.cpp's Python reference),
    /// bit for bit, on random blocks with finite scales and on all-ones / all-zero blocks: the
    /// golden file `tests/data/dequant_golden.bin`, made by `scripts/gen-dequant-golden.sh`.
    #[test]
    fn dequantize_matches_gguf_py() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/dequant_golden.bin"
        );
        let data = std::fs::read(path).unwrap_or_else(|e| {
            panic!("{path}: {e} (the golden file is committed; scripts/gen-dequant-golden.sh makes it)")
        });
        let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) as usize;
        let mut seen = Vec::new();
        let mut o = 0;
        while o < data.len() {
            let (id, n, bb, bs) = (u32_at(o), u32_at(o + 4), u32_at(o + 8), u32_at(o + 12));
            o += 16;
            let ty = GgmlType::from_id(id as u32).unwrap_or_else(|| panic!("type id {id}"));
            assert_eq!((ty.block_bytes(), ty.block_size()), (bb, bs), "{ty}");
            let blocks = &data[o..o + n * bb];
            o += n * bb;
            let want: Vec<f32> = data[o..o + 4 * n * bs]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            o += 4 * n * bs;
            let mut got = vec![f32::NAN; n * bs];
            dequantize(ty, blocks, &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{ty} block {} element {}: {g} vs gguf-py {w}",
                    i / bs,
                    i % bs
                );
            }
            seen.push(ty);
        }
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::IQ4_NL,
            GgmlType::IQ4_XS,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q5_K,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            assert!(seen.contains(&ty), "{ty} missing from the golden file");
        }
    }

    #[test]
    fn q3k_scales_match_ggml_unpacking() {
        // ggml's dequantize_row_q3_K unpacking (u32 masks), written out independently.
        let s: [u8; 12] = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0xe4, 0x1b, 0x72, 0x8d,
        ];
        let w = |i: usize| u32::from_le_bytes(s[4 * i..4 * i + 4].try_into().unwrap());
        let (a0, a1, tmp) = (w(0), w(1), w(2));
        let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
        let aux = [
            (a0 & k2) | ((tmp & k1) << 4),
            (a1 & k2) | (((tmp >> 2) & k1) << 4),
            ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
            ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
        ];
        let want: Vec<i8> = aux
            .iter()
            .flat_map(|a| a.to_le_bytes())
            .map(|b| b as i8 - 32)
            .collect();
        assert_eq!(q3k_scales(&s).to_vec(), want);
    }

    #[test]
    fn ids_roundtrip() {
        for t in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::Q8_K,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::IQ4_NL,
            GgmlType::IQ4_XS,
        ] {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(9), None);
        assert_eq!(GgmlType::from_id(16), None);
        assert_eq!(GgmlType::name_of_id(7), "Q5_1");
        assert_eq!(GgmlType::name_of_id(23), "IQ4_XS");
        assert_eq!(GgmlType::name_of_id(13), "Q5_K");
        assert_eq!(GgmlType::name_of_id(11), "Q3_K");
    }
}
