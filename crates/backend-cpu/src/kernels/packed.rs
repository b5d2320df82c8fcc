//! The Q8_0 output projection repacked at load (rows in groups of 8, a row per vector lane) and
//! its matmul and in-kernel greedy argmax.

use super::*;

/// A Q8_0 matrix repacked at load for the AVX2 and AVX-512 VNNI kernels of [`matmul_packed`]:
/// rows in groups of 8 (the last padded with zero rows), and per group and block of 32 columns, 8 vectors of 32
/// bytes where vector `v` holds quants `4 v .. 4 v + 4` of each of the 8 rows (row `i` of the
/// group in i32 lane `i`), then the 8 rows' block scales (f16 bits).
///
/// With a row per vector lane, a token's 4 quants are broadcast to all lanes and every lane
/// sums its own row: a block costs one conversion and one FMA for 8 rows, and a token's 8
/// results are stored as they are, with no transposes of weights and no horizontal sums. This
/// is for the largest matrix of all, the output projection (Gemma's is 262,144 x 640, half of
/// the multiply-adds of a decoding step); it costs a copy of the matrix in memory.
pub struct PackedQ8 {
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// `groups * blocks * 256` quants.
    pub(super) q: HugeBuf<i8>,
    /// `groups * blocks * 8` scales (f16 bits, as in the file: 2 bytes per block and row, so a
    /// batch-1 pass, bound by memory bandwidth, reads 272 bytes per block and group, not 288).
    pub(super) d: HugeBuf<u16>,
}

impl PackedQ8 {
    /// Repacks `w` if it is Q8_0 and the CPU has the AVX2 kernels; `None` otherwise.
    pub fn new(w: &QMatrix<'_>) -> Option<Self> {
        Self::new_releasing(w, |_| {})
    }

    /// [`PackedQ8::new`], handing `done` each slab of `w.data` once it is packed (to drop the
    /// source's pages from memory as the copy grows, so that the two are never both resident
    /// whole: Gemma's is 170 MiB).
    pub fn new_releasing(w: &QMatrix<'_>, done: impl Fn(&[u8])) -> Option<Self> {
        if w.dtype != GgmlType::Q8_0 || detected_level() < SimdLevel::Avx2 || w.cols == 0 {
            return None;
        }
        assert!(
            w.cols.is_multiple_of(QK8) && w.data.len() >= w.rows * w.row_bytes(),
            "PackedQ8: bad matrix"
        );
        let nb = w.cols / QK8;
        let groups = w.rows.div_ceil(8);
        let mut q = HugeBuf::<i8>::zeroed(groups * nb * 256);
        let mut d = HugeBuf::<u16>::zeroed(groups * nb * 8);
        use rayon::prelude::*;
        // Slabs of `SLAB` groups, each packed in parallel and then handed to `done`.
        const SLAB: usize = 1024;
        let row_bytes = w.row_bytes();
        for (s, (qs, ds)) in q
            .chunks_mut(SLAB * nb * 256)
            .zip(d.chunks_mut(SLAB * nb * 8))
            .enumerate()
        {
            let g0 = s * SLAB;
            qs.par_chunks_mut(nb * 256)
                .zip(ds.par_chunks_mut(nb * 8))
                .enumerate()
                .for_each(|(k, (q, d))| {
                    let g = g0 + k;
                    for i in 0..8.min(w.rows - 8 * g) {
                        let row = w.row(8 * g + i);
                        for (b, blk) in row.chunks_exact(w.dtype.block_bytes()).enumerate() {
                            d[8 * b + i] = u16::from_le_bytes([blk[0], blk[1]]);
                            for (j, &v) in blk[2..].iter().enumerate() {
                                q[256 * b + 32 * (j / 4) + 4 * i + j % 4] = v as i8;
                            }
                        }
                    }
                });
            let r0 = 8 * g0;
            let r1 = (8 * (g0 + SLAB)).min(w.rows);
            done(&w.data[r0 * row_bytes..r1 * row_bytes]);
        }
        Some(Self {
            rows: w.rows,
            cols: w.cols,
            q,
            d,
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

    /// Row `r` as f32: the values `switchyard_core::dtype::dequantize` gives for the same row
    /// of the file's matrix, bit for bit (`quant * scale`, the scale's f16 widened). For the
    /// embedding lookup of a tied embedding, so that the file's table is never read again
    /// after load (its pages then leave our resident memory; see `CpuBackend::load`).
    ///
    /// # Panics
    /// If `r` is not a row or `out` is not a row long.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(
            r < self.rows && out.len() == self.cols,
            "PackedQ8::dequantize_row: bad row or length"
        );
        let nb = self.cols / QK8;
        let (g, i) = (r / 8, r % 8);
        let q = &self.q[g * nb * 256..(g + 1) * nb * 256];
        let d = &self.d[g * nb * 8..(g + 1) * nb * 8];
        for (b, o) in out.chunks_exact_mut(QK8).enumerate() {
            let scale = half::f16::from_bits(d[8 * b + i]).to_f32();
            for (j, v) in o.iter_mut().enumerate() {
                *v = f32::from(q[256 * b + 32 * (j / 4) + 4 * i + j % 4]) * scale;
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.q.len() + 2 * self.d.len()
    }
}

/// Fewest tokens for which the AVX-512 VNNI level runs its own packed kernel
/// ([`Isa::packed_vnni`]).
const PACKED_VNNI_MIN: usize = 8;

/// [`matmul`] for a [`PackedQ8`] matrix at the level of [`simd_level`] (AVX2 or AVX-512 VNNI;
/// see [`Isa::matmul_packed`]).
pub fn matmul_packed(w: &PackedQ8, x: &[f32], n_tok: usize, out: &mut [f32]) {
    Isa::current().matmul_packed(w, x, n_tok, out)
}

impl Isa {
    /// Whether [`Isa::matmul_packed`] runs the VNNI kernel for `n_tok` tokens: at the AVX-512
    /// VNNI level from `PACKED_VNNI_MIN` tokens on. Below that the AVX2 kernel is faster there
    /// (bound by memory, it keeps more loads in flight; whole Gemma lm_head, 2 threads, Intel
    /// Xeon with AMX, ms per call AVX2 / VNNI: 1 token 6.2 / 7.0, 4 tokens 7.8 / 8.5, 8 tokens
    /// 12.6 / 9.2, 16 tokens 24.9 / 14.0), and both give the same bits.
    pub fn packed_vnni(&self, n_tok: usize) -> bool {
        self.vnni() && n_tok >= PACKED_VNNI_MIN
    }

    /// [`matmul`] for a [`PackedQ8`] matrix with this level's kernels (at least AVX2): the same
    /// integer block sums as [`Isa::matmul`], accumulated per row in block order (so the f32
    /// rounding differs from the unpacked kernels), and the same bits at the AVX2 and AVX-512
    /// VNNI levels (the latter runs the AVX2 kernel for fewer than `PACKED_VNNI_MIN` tokens,
    /// [`Isa::packed_vnni`]). Batch invariant like [`matmul`].
    pub fn matmul_packed(&self, w: &PackedQ8, x: &[f32], n_tok: usize, out: &mut [f32]) {
        assert_eq!(
            x.len(),
            n_tok * w.cols,
            "matmul_packed: x has the wrong length"
        );
        assert_eq!(
            out.len(),
            n_tok * w.rows,
            "matmul_packed: out has the wrong length"
        );
        let level = self.level();
        assert!(
            level >= SimdLevel::Avx2,
            "matmul_packed: AVX2 is not available"
        );
        if n_tok == 0 || w.rows == 0 {
            return;
        }
        let a = Q8Acts::quantize(Isa::get(SimdLevel::Avx2), x, w.cols, n_tok);
        let vnni = self.packed_vnni(n_tok);
        // The AVX2 kernel's token groups (`avx2::PackedActs`).
        #[cfg(target_arch = "x86_64")]
        let pa = (!vnni).then(|| avx2::PackedActs::new(&a, n_tok));
        // `-128 * sum(quants)` per token and block, for the VNNI kernel's unsigned weights.
        let corr: Vec<i32> = if vnni {
            a.qs.chunks_exact(QK8)
                .map(|b| -128 * b.iter().map(|&v| i32::from(v)).sum::<i32>())
                .collect()
        } else {
            Vec::new()
        };
        let dst = OutPtr {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            rows: w.rows,
        };
        let groups = w.rows.div_ceil(8);
        #[cfg(target_arch = "x86_64")]
        let run = |g0: usize, g1: usize| {
            let job = avx2::PackedJob { w, g0, g1, n_tok };
            if vnni {
                // SAFETY: `vnni` holds only in the AVX-512 VNNI table, whose features (and
                // AVX2, FMA, F16C) were detected (`Isa`'s invariant). `dst` is written only at
                // the rows of groups `g0..g1`, which no other chunk touches (see `OutPtr`).
                unsafe { avx512::rows_packed_q8(&job, (&a, &corr), &dst) }
            } else {
                // SAFETY: AVX2, FMA and F16C were detected (asserted above). `dst` as above.
                unsafe { avx2::rows_packed_q8(&job, pa.as_ref().unwrap(), &dst) }
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let run = |_: usize, _: usize| {
            let _ = (&a, &corr, &dst);
            unreachable!("PackedQ8 exists only with AVX2")
        };
        for_chunks(groups, 8 * w.cols * n_tok.min(8), run);
    }
}

/// For each of the `n_tok` rows of `x`, the index of the largest of the first `limit` outputs
/// of [`Isa::matmul_packed`] at the AVX2 level, chosen as the engine's host `argmax` chooses
/// from those logits (the first index on ties, NaN never chosen, 0 when no value is above
/// negative infinity), without writing the `n_tok * rows` logits out: each chunk of row groups
/// keeps a running best per token, and the chunks' bests are merged in row order. The values
/// compared are the AVX2 packed kernel's, bit for bit.
///
/// # Panics
/// If the CPU lacks AVX2 or `x` has the wrong length.
pub fn matmul_packed_argmax(w: &PackedQ8, x: &[f32], n_tok: usize, limit: usize) -> Vec<u32> {
    assert_eq!(
        x.len(),
        n_tok * w.cols,
        "matmul_packed_argmax: x has the wrong length"
    );
    assert!(
        detected_level() >= SimdLevel::Avx2,
        "matmul_packed_argmax: AVX2 is not available"
    );
    let limit = limit.min(w.rows);
    if n_tok == 0 || limit == 0 {
        return vec![0; n_tok];
    }
    let a = Q8Acts::quantize(Isa::get(SimdLevel::Avx2), x, w.cols, n_tok);
    #[cfg(target_arch = "x86_64")]
    let a = avx2::PackedActs::new(&a, n_tok);
    let groups = limit.div_ceil(8);
    #[cfg(target_arch = "x86_64")]
    let run = |g0: usize, g1: usize| {
        let job = avx2::PackedJob { w, g0, g1, n_tok };
        // SAFETY: AVX2, FMA and F16C were detected (asserted above).
        unsafe { avx2::packed_argmax(&job, &a, limit) }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let run = |_: usize, _: usize| -> Vec<(f32, u32)> {
        let _ = &a;
        unreachable!("PackedQ8 exists only with AVX2")
    };
    let chunks = map_chunks(groups, 8 * w.cols * n_tok.min(8), run);
    let mut best = vec![(f32::NEG_INFINITY, 0u32); n_tok];
    for c in chunks {
        for (b, v) in best.iter_mut().zip(c) {
            if v.0 > b.0 {
                *b = v;
            }
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}
