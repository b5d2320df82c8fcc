//! Weight layouts made at load for the AVX2 kernels: K-quant super-blocks with their quants
//! transposed, and 32-element blocks decoded and transposed in groups of 8; their
//! matmuls.

use super::*;

/// A K-quant (Q2_K / Q3_K / Q4_K / Q5_K / Q6_K) or IQ4_XS matrix whose super-blocks hold their quants
/// transposed, made at load for the SIMD kernels of [`matmul_transposed_k`]: quant
/// `32 j + 4 m + b` (sub-block `j`) is stored where the GGML layout keeps quant
/// `32 m + 4 j + b` (all its bits, wherever the format keeps them), scales and minimums
/// unchanged. Decoding
/// such a super-block in element order then yields the 8 vectors whose i32 lane `j` holds 4
/// quants of sub-block `j`, which the kernel would otherwise build with an 8 x 8 transpose per
/// super-block and token group: at one token that transpose costs more than the products. The
/// bytes are a copy of the matrix (the same size as its file encoding).
pub struct TransposedK {
    pub(super) dtype: GgmlType,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) data: HugeBuf<u8>,
}

/// The 256 quants of a K-quant super-block in element order, unsigned as the kernels decode
/// them: Q4_K 4-bit, Q5_K 5-bit, Q6_K 6-bit (offset 32), Q3_K 3-bit (offset 4), Q2_K 2-bit,
/// IQ4_XS the 4-bit table indices.
pub(super) fn k_quants(dtype: GgmlType, b: &[u8]) -> [u8; QKK] {
    let mut q = [0u8; QKK];
    for (e, q) in q.iter_mut().enumerate() {
        let (s, l) = (e / 32, e % 32);
        *q = match dtype {
            GgmlType::Q4_K => (b[16 + 32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF,
            GgmlType::Q5_K => {
                let lo = (b[48 + 32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF;
                lo | (((b[16 + l] >> s) & 1) << 4)
            }
            GgmlType::Q3_K => {
                let (n, j) = (s / 4, s % 4);
                let lo = (b[32 + 32 * n + l] >> (2 * j)) & 3;
                lo | (((b[l] >> s) & 1) << 2)
            }
            GgmlType::Q2_K => (b[16 + 32 * (s / 4) + l] >> (2 * (s % 4))) & 3,
            GgmlType::IQ4_XS => (b[8 + 16 * s + l % 16] >> (4 * (l / 16))) & 0xF,
            _ => {
                let (n, m) = (e / 128, (e % 128) / 32);
                let lo = (b[64 * n + 32 * (m % 2) + l] >> (4 * (m / 2))) & 0xF;
                let hi = (b[128 + 32 * n + l] >> (2 * m)) & 3;
                lo | (hi << 4)
            }
        };
    }
    q
}

/// Stores `q` as the quants of the K-quant super-block `b` (inverse of [`k_quants`]).
pub(super) fn set_k_quants(dtype: GgmlType, b: &mut [u8], q: &[u8; QKK]) {
    match dtype {
        GgmlType::Q4_K => b[16..144].fill(0),
        GgmlType::Q5_K => b[16..176].fill(0),
        GgmlType::Q3_K => b[..96].fill(0),
        GgmlType::Q2_K => b[16..80].fill(0),
        GgmlType::IQ4_XS => b[8..136].fill(0),
        _ => b[..192].fill(0),
    }
    for (e, &q) in q.iter().enumerate() {
        let (s, l) = (e / 32, e % 32);
        match dtype {
            GgmlType::Q4_K => b[16 + 32 * (s / 2) + l] |= (q & 0xF) << (4 * (s % 2)),
            GgmlType::Q5_K => {
                b[48 + 32 * (s / 2) + l] |= (q & 0xF) << (4 * (s % 2));
                b[16 + l] |= ((q >> 4) & 1) << s;
            }
            GgmlType::Q3_K => {
                let (n, j) = (s / 4, s % 4);
                b[32 + 32 * n + l] |= (q & 3) << (2 * j);
                b[l] |= ((q >> 2) & 1) << s;
            }
            GgmlType::Q2_K => b[16 + 32 * (s / 4) + l] |= (q & 3) << (2 * (s % 4)),
            GgmlType::IQ4_XS => b[8 + 16 * s + l % 16] |= (q & 0xF) << (4 * (l / 16)),
            _ => {
                let (n, m) = (e / 128, (e % 128) / 32);
                b[64 * n + 32 * (m % 2) + l] |= (q & 0xF) << (4 * (m / 2));
                b[128 + 32 * n + l] |= ((q >> 4) & 3) << (2 * m);
            }
        }
    }
}

impl TransposedK {
    /// The transposed copy of `w` if it is a K-quant (Q2_K / Q3_K / Q4_K / Q5_K / Q6_K) or
    /// IQ4_XS and the CPU has the AVX2 kernels; `None` otherwise.
    pub fn new(w: &QMatrix<'_>) -> Option<Self> {
        if !matches!(
            w.dtype,
            GgmlType::Q2_K
                | GgmlType::Q3_K
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
                | GgmlType::IQ4_XS
        ) || detected_level() < SimdLevel::Avx2
            || w.cols == 0
        {
            return None;
        }
        assert!(
            w.cols.is_multiple_of(QKK) && w.data.len() >= w.rows * w.row_bytes(),
            "TransposedK: bad matrix"
        );
        let mut data = HugeBuf::<u8>::zeroed(w.rows * w.row_bytes());
        data.copy_from_slice(&w.data[..w.rows * w.row_bytes()]);
        use rayon::prelude::*;
        data.par_chunks_mut(w.dtype.block_bytes()).for_each(|b| {
            let q = k_quants(w.dtype, b);
            let mut t = [0u8; QKK];
            for j in 0..8 {
                for m in 0..8 {
                    let (s, d) = (32 * j + 4 * m, 32 * m + 4 * j);
                    t[d..d + 4].copy_from_slice(&q[s..s + 4]);
                }
            }
            set_k_quants(w.dtype, b, &t);
        });
        Some(Self {
            dtype: w.dtype,
            rows: w.rows,
            cols: w.cols,
            data,
        })
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// [`matmul`] for a [`TransposedK`] matrix at the level of [`simd_level`] (AVX2 or AVX-512
/// VNNI; see [`Isa::matmul_transposed_k`]).
pub fn matmul_transposed_k(w: &TransposedK, x: &[f32], n_tok: usize, out: &mut [f32]) {
    Isa::current().matmul_transposed_k(w, x, n_tok, out)
}

impl Isa {
    /// [`Isa::matmul`] for a [`TransposedK`] matrix with this level's kernels (at least AVX2):
    /// the same operations as the kernel on the file layout without its transposes, so the
    /// same bits as [`Isa::matmul`] on the original matrix. Batch invariant.
    pub fn matmul_transposed_k(&self, w: &TransposedK, x: &[f32], n_tok: usize, out: &mut [f32]) {
        let view = QMatrix {
            dtype: w.dtype,
            rows: w.rows,
            cols: w.cols,
            data: &w.data,
        };
        matmul_transposed("matmul_transposed_k", self, &view, (x, n_tok), out);
    }

    /// [`Isa::matmul`] at the AVX2 level for a [`TransposedQ0`] matrix (this level must be at
    /// least AVX2): the same operations as that kernel on the file layout without its decoding
    /// and transposes, so the same bits as [`Isa::matmul`] at [`SimdLevel::Avx2`]. The AVX-512
    /// VNNI level runs its own kernel for Q4_0 / Q5_0 / Q8_0 (`vpdpbusd`, the same integers and
    /// float operations, so the same bits) and the AVX2 one for the other types.
    pub fn matmul_transposed_q0(&self, w: &TransposedQ0, x: &[f32], n_tok: usize, out: &mut [f32]) {
        let view = QMatrix {
            dtype: w.dtype,
            rows: w.rows,
            cols: w.cols,
            data: &w.data,
        };
        matmul_transposed("matmul_transposed_q0", self, &view, (x, n_tok), out);
    }
}

/// A Q4_0 / Q5_0 / Q8_0 / Q4_1 / Q5_1 / IQ4_NL matrix stored for the AVX2 kernel of
/// [`matmul_transposed_q0`]: per row and group of 8 blocks, the 8 block scales side by side
/// (Q4_1 / Q5_1: then the 8 mins) and the group's quants already decoded to the kernel's
/// unsigned (Q4_0 / Q5_0 / Q4_1 / Q5_1), signed (Q8_0) or index (IQ4_NL) values and transposed
/// to a block per i32 lane (the last group of at most 4 blocks in the half-group form), packed
/// back to 4 or 5 bits where the type has them; a last partial group is padded with zero
/// blocks.
/// The kernel then loads a group's vectors instead of decoding 8 blocks and transposing them
/// (about 3x fewer instructions per group), which is most of its work at one token. The same
/// size as the file encoding, up to the padding.
pub struct TransposedQ0 {
    pub(super) dtype: GgmlType,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) data: HugeBuf<u8>,
}

/// The 32 quants of a 32-element block as the AVX2 kernel decodes them before any table
/// lookup (unsigned 0..16 / 0..32, the signed Q8_0 byte, or the IQ4_NL index), its raw f16
/// scale and its raw f16 min (Q4_1 / Q5_1; 0 for the others).
pub(super) fn q0_quants(dtype: GgmlType, b: &[u8]) -> ([u8; QK8], u16, u16) {
    let has_min = matches!(dtype, GgmlType::Q4_1 | GgmlType::Q5_1);
    let h = if has_min { 4 } else { 2 };
    let mut q = [0u8; QK8];
    for (i, q) in q.iter_mut().enumerate() {
        *q = match dtype {
            GgmlType::Q8_0 => b[2 + i],
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::IQ4_NL => {
                (b[h + i % 16] >> (4 * (i / 16))) & 0xF
            }
            _ => {
                let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
                let lo = (b[h + 4 + i % 16] >> (4 * (i / 16))) & 0xF;
                lo | ((((qh >> i) & 1) as u8) << 4)
            }
        };
    }
    let m = if has_min {
        u16::from_le_bytes([b[2], b[3]])
    } else {
        0
    };
    (q, u16::from_le_bytes([b[0], b[1]]), m)
}

impl TransposedQ0 {
    /// The transposed copy of `w` if it is Q4_0 / Q5_0 / Q8_0 / Q4_1 / Q5_1 / IQ4_NL and the
    /// CPU has the AVX2 kernels; `None` otherwise.
    pub fn new(w: &QMatrix<'_>) -> Option<Self> {
        // (8-bit, fifth bits, mins)
        let (q8, five, mins) = match w.dtype {
            GgmlType::Q8_0 => (true, false, false),
            GgmlType::Q4_0 | GgmlType::IQ4_NL => (false, false, false),
            GgmlType::Q5_0 => (false, true, false),
            GgmlType::Q4_1 => (false, false, true),
            GgmlType::Q5_1 => (false, true, true),
            _ => return None,
        };
        if detected_level() < SimdLevel::Avx2 || w.cols == 0 {
            return None;
        }
        assert!(
            w.cols.is_multiple_of(QK8) && w.data.len() >= w.rows * w.row_bytes(),
            "TransposedQ0: bad matrix"
        );
        let nb = w.cols / QK8;
        let ng = nb.div_ceil(8);
        let gb = 8 * w.dtype.block_bytes();
        let mut data = HugeBuf::<u8>::zeroed(w.rows * ng * gb);
        use rayon::prelude::*;
        data.par_chunks_mut(ng * gb)
            .enumerate()
            .for_each(|(r, out)| {
                let row = w.row(r);
                for (g, out) in out.chunks_exact_mut(gb).enumerate() {
                    let nbg = (nb - 8 * g).min(8);
                    // The kernel's 8 vectors of 32 bytes after its transposes.
                    let mut v = [[0u8; 32]; 8];
                    for kk in 0..nbg {
                        let blk = &row[(8 * g + kk) * w.dtype.block_bytes()..];
                        let (q, d, m) = q0_quants(w.dtype, blk);
                        out[2 * kk..2 * kk + 2].copy_from_slice(&d.to_le_bytes());
                        if mins {
                            out[16 + 2 * kk..18 + 2 * kk].copy_from_slice(&m.to_le_bytes());
                        }
                        for i in 0..QK8 {
                            let (m, lane) = if nbg <= 4 {
                                // Half group: lanes 0..4 quants 4m.., lanes 4..8 quants 16 + 4m..
                                ((i % 16) / 4, kk + 4 * (i / 16))
                            } else {
                                (i / 4, kk)
                            };
                            v[m][4 * lane + i % 4] = q[i];
                        }
                    }
                    let body = &mut out[if mins { 32 } else { 16 }..];
                    if q8 {
                        for (m, v) in v.iter().enumerate() {
                            body[32 * m..32 * m + 32].copy_from_slice(v);
                        }
                    } else {
                        for m in 0..4 {
                            for i in 0..32 {
                                body[32 * m + i] = (v[m][i] & 0xF) | ((v[m + 4][i] & 0xF) << 4);
                            }
                        }
                        if five {
                            // Byte `i` holds bit 4 of byte `i` of vector `m` as its bit `m`.
                            for i in 0..32 {
                                body[128 + i] = (0..8).fold(0u8, |a, m| a | ((v[m][i] >> 4) << m));
                            }
                        }
                    }
                }
            });
        Some(Self {
            dtype: w.dtype,
            rows: w.rows,
            cols: w.cols,
            data,
        })
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// [`matmul`] for a [`TransposedQ0`] matrix with the AVX2 kernel (see
/// [`Isa::matmul_transposed_q0`]).
pub fn matmul_transposed_q0(w: &TransposedQ0, x: &[f32], n_tok: usize, out: &mut [f32]) {
    Isa::current().matmul_transposed_q0(w, x, n_tok, out)
}

/// The AVX2 kernels on a transposed layout (`view.data` in the layout of [`TransposedK`] or
/// [`TransposedQ0`]), with the activations those kernels take.
pub(super) fn matmul_transposed(
    name: &str,
    isa: &Isa,
    view: &QMatrix<'_>,
    (x, n_tok): (&[f32], usize),
    out: &mut [f32],
) {
    assert_eq!(x.len(), n_tok * view.cols, "{name}: x has the wrong length");
    assert_eq!(
        out.len(),
        n_tok * view.rows,
        "{name}: out has the wrong length"
    );
    assert!(isa.has_transposed(), "{name}: AVX2 is not available");
    if n_tok == 0 || view.rows == 0 {
        return;
    }
    let acts = match Form::of(view.dtype) {
        Some(Form::Q8K) => {
            let mut a = Q8KActs::quantize(isa, x, view.cols, n_tok);
            a.interleave();
            Acts::Q8K(a)
        }
        _ => {
            let mut a = Q8Acts::quantize(Isa::get(SimdLevel::Avx2), x, view.cols, n_tok);
            // Q4_0 / Q5_0 are stored unsigned; the AVX-512 VNNI kernel reads Q8_0 as
            // `w + 128` (`avx512::rows_transposed`).
            let offset = match view.dtype {
                GgmlType::Q4_0 => 8,
                GgmlType::Q5_0 => 16,
                GgmlType::Q8_0 if isa.vnni() => 128,
                _ => 0,
            };
            a.interleave(offset, false);
            Acts::Q8(a)
        }
    };
    let dst = OutPtr {
        ptr: out.as_mut_ptr(),
        len: out.len(),
        rows: view.rows,
    };
    let run = |r0: usize, r1: usize| {
        let job = RowJob {
            w: view,
            a: &acts,
            r0,
            r1,
            n_tok,
            out: &dst,
        };
        // SAFETY: `dst` is written only at rows `r0..r1`, which no other chunk touches (see
        // `OutPtr`); the activations are in the form the transposed kernels take (above).
        unsafe { isa.rows_transposed(&job) }
    };
    for_chunks(view.rows, view.row_bytes() * n_tok, run);
}
