//! Matrix kernels over weights in their GGUF encoding.
//!
//! `matmul` computes `out[t][r] = sum_i W[r][i] * x[t][i]` for a weight matrix `W` with `rows`
//! rows of `cols` elements, stored row by row in its GGML encoding, and `n_tok` activation rows.
//!
//! The design follows ggml: for a quantized `W` the f32 activations are quantized once per call
//! into 8-bit blocks (32-element blocks with an f32 scale and sum for Q4_0 / Q5_0 / Q8_0 / Q4_1 /
//! Q5_1 / IQ4_NL, 256-element super-blocks with an f32 scale and per-16 sums for the K-quants
//! Q2_K / Q3_K / Q4_K / Q5_K / Q6_K and IQ4_XS), and every output is a sum of exact integer
//! block dot products times the two block scales (Q4_1 / Q5_1: plus each block's min times the
//! activations' block sum).
//! F16 / BF16 / F32 weights are multiplied with the f32 activations directly.
//!
//! Each kernel exists as a plain scalar version ([`SimdLevel::Scalar`], the specification), an
//! AVX2 + FMA + F16C version ([`SimdLevel::Avx2`]) and, for the quantized matmuls, an AVX-512
//! VNNI version ([`SimdLevel::Avx512Vnni`]), chosen at run time; on aarch64 NEON versions with
//! and without the dot-product extension ([`SimdLevel::Neon`], [`SimdLevel::NeonDot`]). The
//! environment variable
//! `SWITCHYARD_SIMD=scalar|avx2|avx512vnni` (aarch64: `scalar|neon|neondot`), read once, lowers
//! the level [`matmul`] uses; [`matmul_with`] takes the level explicitly (tests call every
//! level).
//!
//! Output rows are split into coarse chunks run on the current rayon pool; inside a chunk every
//! weight row is read from memory once and multiplied with a group of up to 16 tokens (Q4_0 /
//! Q5_0 / Q8_0 and the K-quants, whose SIMD kernels sum whole blocks or sub-blocks in integers, a
//! block per vector lane, over activations interleaved to match) or 4 (float weights) at a time
//! (once per 128 KiB of activations for long prompts, which keeps those in L2). Every token has
//! its own accumulators and the same float operations whatever the group size, so a token's
//! outputs are bit-identical alone and in any batch at a given SIMD level (batch invariance,
//! which the engine relies on).
//!
//! Calling from a thread of the pool (e.g. a forward pass run under `ThreadPool::install`)
//! saves waking the pool from outside on every call, which costs tens of microseconds.

use switchyard_core::{Activation, GgmlType};

#[cfg(target_arch = "x86_64")]
#[macro_use]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod chunks;
mod isa;
mod job;
mod level;
#[cfg(target_arch = "aarch64")]
mod neon;
mod outptr;
mod packed;
mod quant;
mod scalar;
#[cfg(test)]
mod tests;
mod transposed;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::hugebuf::HugeBuf;
use chunks::{for_chunks, map_chunks};
pub use isa::{Isa, Layouts};
pub(crate) use job::{Family, Form, RowJob};
pub use level::{available_levels, detected_features, detected_level, simd_level, SimdLevel};
pub(crate) use outptr::OutPtr;
pub use packed::{matmul_packed, matmul_packed_argmax, PackedQ8};
use quant::{Q8Acts, Q8KActs, QK8, QKK};
pub use transposed::{matmul_transposed_k, matmul_transposed_q0, TransposedK, TransposedQ0};

/// A weight matrix in its file encoding.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    /// Element type.
    pub dtype: GgmlType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Elements per row (input features).
    pub cols: usize,
    /// `rows * dtype.bytes_for(cols)` bytes.
    pub data: &'a [u8],
}

impl QMatrix<'_> {
    /// Bytes of one encoded row.
    pub fn row_bytes(&self) -> usize {
        self.dtype.bytes_for(self.cols)
    }

    /// Encoded row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// `sum_i a[i] * b[i]` in f32 at [`simd_level`] (other levels: [`Isa::dot_f32`]).
///
/// # Panics
/// If the lengths differ.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    Isa::current().dot_f32(a, b)
}

/// `sum_i q[i] * k[i]` with `k` in f16 (attention scores over the f16 KV cache), at
/// [`simd_level`].
///
/// # Panics
/// If the lengths differ.
pub fn dot_f16(q: &[f32], k: &[half::f16]) -> f32 {
    Isa::current().dot_f16(q, k)
}

/// `y[i] += a * x[i]` with `x` in f16 (attention-weighted sum of the f16 values), at
/// [`simd_level`].
///
/// # Panics
/// If the lengths differ.
pub fn axpy_f16(y: &mut [f32], a: f32, x: &[half::f16]) {
    Isa::current().axpy_f16(y, a, x)
}

/// One token's attention for the query heads that share one KV head: what
/// [`attend_f16`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Attend<'a> {
    /// The queries, `g * hd` for `g` heads, already scaled.
    pub q: &'a [f32],
    /// Head size.
    pub hd: usize,
    /// The key cache, rows at element offsets `rows`.
    pub kc: &'a [half::f16],
    /// The value cache, rows at element offsets `rows`.
    pub vc: &'a [half::f16],
    /// Element offsets of the key and value rows the token attends to.
    pub rows: &'a [usize],
    /// Soft-capping of the scores, `cap * tanh(s / cap)` (Gemma 2), if any.
    pub softcap: Option<f32>,
}

impl Attend<'_> {
    /// A score `q . k` after the soft-capping, if any.
    #[inline]
    pub(crate) fn capped(&self, s: f32) -> f32 {
        match self.softcap {
            Some(c) => c * (s / c).tanh(),
            None => s,
        }
    }
}

/// Attention of one token's query heads that share one KV head (`a.q` and `out`: `g * hd` for
/// `g` heads) over the key and value rows `a.rows`: for each head `softmax_j(q . k_j)`-weighted
/// sum of the `v_j`, at [`simd_level`]. `scratch` is reused between calls. The SIMD levels take
/// four heads at a time (each K/V row loaded once for all four) with a polynomial `exp`; a
/// token's result depends only on its own queries and rows, never on the batch.
///
/// # Panics
/// If `q` and `out` differ in length or are not whole heads, or a row runs past `kc` or `vc`.
pub fn attend_f16(a: &Attend<'_>, scratch: &mut Vec<f32>, out: &mut [f32]) {
    Isa::current().attend_f16(a, scratch, out)
}

/// The gated activation of the feed-forward block: `g[i] = act(g[i]) * u[i]`, at
/// [`simd_level`]. The scalar level uses `ops::gelu_tanh` / `ops::silu`; the SIMD levels compute
/// the same functions as `x / (1 + exp(z))` with a polynomial `exp` (relative error ~1e-7), the
/// same operations for every element wherever it lies in the slice.
///
/// # Panics
/// If the lengths differ.
pub fn glu(act: Activation, g: &mut [f32], u: &[f32]) {
    Isa::current().glu(act, g, u)
}

/// `out[t * w.rows + r] = dot(W[r], x[t * w.cols ..])` for `t < n_tok`, at [`simd_level`]
/// (other levels: [`Isa::matmul`]).
///
/// # Panics
/// If `x.len() != n_tok * w.cols`, `out.len() != n_tok * w.rows`, `w.data` is shorter than
/// `w.rows * w.row_bytes()`, `w.cols` is not a multiple of the block size, or `w.dtype` is Q8_K.
pub fn matmul(w: &QMatrix<'_>, x: &[f32], n_tok: usize, out: &mut [f32]) {
    Isa::current().matmul(w, x, n_tok, out);
}

impl Isa {
    /// [`matmul`] with this level's kernels.
    ///
    /// # Panics
    /// As [`matmul`].
    pub fn matmul(&self, w: &QMatrix<'_>, x: &[f32], n_tok: usize, out: &mut [f32]) {
        assert_eq!(x.len(), n_tok * w.cols, "matmul: x has the wrong length");
        assert_eq!(
            out.len(),
            n_tok * w.rows,
            "matmul: out has the wrong length"
        );
        assert_eq!(
            w.cols % w.dtype.block_size(),
            0,
            "matmul: cols not a multiple of the block size"
        );
        assert!(
            w.data.len() >= w.rows * w.row_bytes(),
            "matmul: not enough weight data"
        );
        if n_tok == 0 || w.rows == 0 {
            return;
        }
        if w.cols == 0 {
            out.fill(0.0);
            return;
        }
        let acts = self.quantize_acts(w, x, n_tok);
        let dst = OutPtr {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            rows: w.rows,
        };
        // SAFETY: `dst` is written only at rows `r0..r1`, which no other chunk touches (see
        // `OutPtr`); `acts` is in this level's form (`quantize_acts`).
        let run = |r0: usize, r1: usize| unsafe {
            self.rows(&RowJob {
                w,
                a: &acts,
                r0,
                r1,
                n_tok,
                out: &dst,
            })
        };
        for_chunks(w.rows, w.row_bytes() * n_tok, run);
    }
}

/// The activations in the form a weight type's kernels take.
pub(crate) enum Acts<'a> {
    /// Unquantized, for F32 / F16 / BF16 weights.
    F32(&'a [f32]),
    /// 32-element 8-bit blocks, for Q4_0 / Q5_0 / Q8_0 / Q4_1 / Q5_1 / IQ4_NL weights.
    Q8(Q8Acts),
    /// 256-element 8-bit super-blocks, for Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / IQ4_XS weights.
    Q8K(Q8KActs),
}

/// Converts a little-endian f16 at `b[0..2]` to f32.
#[inline]
pub(crate) fn f16_le(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Unpacks the 12 packed bytes of Q3_K scales into their 16 unsigned 6-bit values (the scales
/// plus 32: `switchyard_core::dtype::q3k_scales` minus the offset), as ggml does.
#[inline]
pub(crate) fn unpack_q3k_scales(s: &[u8; 12]) -> [u8; 16] {
    const K1: u32 = 0x0303_0303;
    const K2: u32 = 0x0f0f_0f0f;
    let u0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let u1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let u2 = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let w = [
        (u0 & K2) | ((u2 & K1) << 4),
        (u1 & K2) | (((u2 >> 2) & K1) << 4),
        ((u0 >> 4) & K2) | (((u2 >> 4) & K1) << 4),
        ((u1 >> 4) & K2) | (((u2 >> 6) & K1) << 4),
    ];
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(w) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Unpacks the 12 packed bytes of Q4_K scales and mins into 16 bytes: bytes 0..8 are the eight
/// 6-bit scales, bytes 8..16 the eight 6-bit mins (same values as
/// `switchyard_core::dtype::get_scale_min_k4`).
#[inline]
pub(crate) fn unpack_q4k_scales(s: &[u8; 12]) -> [u8; 16] {
    const K1: u32 = 0x3f3f_3f3f;
    const K2: u32 = 0x0f0f_0f0f;
    const K3: u32 = 0x0303_0303;
    let u0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let u1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let u2 = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let sc_lo = u0 & K1;
    let sc_hi = (u2 & K2) | (((u0 >> 6) & K3) << 4);
    let m_lo = u1 & K1;
    let m_hi = ((u2 >> 4) & K2) | (((u1 >> 6) & K3) << 4);
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&sc_lo.to_le_bytes());
    out[4..8].copy_from_slice(&sc_hi.to_le_bytes());
    out[8..12].copy_from_slice(&m_lo.to_le_bytes());
    out[12..16].copy_from_slice(&m_hi.to_le_bytes());
    out
}
