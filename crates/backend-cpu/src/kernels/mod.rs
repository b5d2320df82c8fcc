//! Matrix kernels over weights in their GGUF encoding.
//!
//! `matmul` computes `out[t][r] = sum_i W[r][i] * x[t][i]` for a weight matrix `W` with `rows`
//! rows of `cols` elements, stored row by row in its GGML encoding, and `n_tok` activation rows.
//!
//! The design follows ggml: for a quantized `W` the f32 activations are quantized once per call
//! into 8-bit blocks (32-element blocks with an f32 scale for Q4_0 / Q5_0 / Q8_0, 256-element
//! super-blocks with an f32 scale and per-16 sums for Q4_K / Q6_K), and every output is a sum of
//! exact integer block dot products times the two block scales. F16 / BF16 / F32 weights are
//! multiplied with the f32 activations directly.
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
//! Q5_0 / Q8_0 and Q4_K / Q6_K, whose SIMD kernels sum whole blocks or sub-blocks in integers, a
//! block per vector lane, over activations interleaved to match) or 4 (float weights) at a time
//! (once per 128 KiB of activations for long prompts, which keeps those in L2). Every token has
//! its own accumulators and the same float operations whatever the group size, so a token's
//! outputs are bit-identical alone and in any batch at a given SIMD level (batch invariance,
//! which the engine relies on).
//!
//! Calling from a thread of the pool (e.g. a forward pass run under `ThreadPool::install`)
//! saves waking the pool from outside on every call, which costs tens of microseconds.

use std::sync::OnceLock;

use switchyard_core::{Activation, GgmlType};

#[cfg(target_arch = "x86_64")]
#[macro_use]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
mod quant;
mod scalar;
#[cfg(test)]
mod tests;

use crate::hugebuf::HugeBuf;
use quant::{Q8Acts, Q8KActs, QK8, QKK};

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

/// A set of SIMD kernels. Ordered: within one architecture a higher level needs more CPU
/// features (the Arm levels sort below the x86-64 ones, so `level >= SimdLevel::Avx2` means an
/// x86-64 SIMD level); a level of another architecture is never supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Plain Rust, no explicit SIMD: the specification the other levels are tested against.
    Scalar,
    /// aarch64 NEON (every aarch64 CPU): 8-bit products by `smull` and pairwise adds.
    Neon,
    /// aarch64 NEON with the dot-product extension (`sdot`, ARMv8.2 dotprod): the same
    /// integers as [`SimdLevel::Neon`] (Q4_K / Q6_K the same bits; Q4_0 / Q5_0 / Q8_0 possibly
    /// different f32 rounding).
    NeonDot,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 + FMA + F16C + AVX-512 F/BW/VL/VNNI: for Q4_0 / Q5_0 / Q8_0 the AVX2
    /// kernels with VNNI integer dot products and, for long rows, groups of 16 blocks (possibly
    /// different rounding from [`SimdLevel::Avx2`]); the K-quants and float weights use the
    /// AVX2 kernels (the same bits).
    Avx512Vnni,
}

impl SimdLevel {
    /// Every level of every architecture, lowest first.
    pub const ALL: [SimdLevel; 5] = [
        SimdLevel::Scalar,
        SimdLevel::Neon,
        SimdLevel::NeonDot,
        SimdLevel::Avx2,
        SimdLevel::Avx512Vnni,
    ];

    /// Lower-case name, as `SWITCHYARD_SIMD` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Neon => "neon",
            SimdLevel::NeonDot => "neondot",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512Vnni => "avx512vnni",
        }
    }

    /// Parses a name as `SWITCHYARD_SIMD` spells it (case-insensitive).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        Self::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether the level belongs to the architecture this was compiled for.
    pub fn is_native(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            SimdLevel::Neon | SimdLevel::NeonDot => cfg!(target_arch = "aarch64"),
            SimdLevel::Avx2 | SimdLevel::Avx512Vnni => cfg!(target_arch = "x86_64"),
        }
    }

    /// Whether this CPU can run this level.
    pub fn is_supported(self) -> bool {
        self.is_native() && self <= detected_level()
    }

    /// The highest level this CPU supports that is at most `self` (a level of another
    /// architecture lowers to the best level below it here, at least scalar).
    pub fn lowered(self) -> SimdLevel {
        Self::ALL
            .into_iter()
            .rev()
            .find(|&l| l <= self && l.is_supported())
            .unwrap_or(SimdLevel::Scalar)
    }
}

impl std::fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The highest level this CPU supports (detected once).
pub fn detected_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                {
                    return SimdLevel::Avx512Vnni;
                }
                return SimdLevel::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                return SimdLevel::NeonDot;
            }
            return SimdLevel::Neon;
        }
        #[allow(unreachable_code)]
        SimdLevel::Scalar
    })
}

/// The level [`matmul`] and [`dot_f32`] use: [`detected_level`], lowered to `SWITCHYARD_SIMD`
/// when that names a lower level (read once; an unknown name is ignored with a warning).
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = detected_level();
        match std::env::var("SWITCHYARD_SIMD") {
            Ok(v) if !v.trim().is_empty() => match SimdLevel::parse(&v) {
                Some(l) if l.is_native() => l.lowered(),
                _ => {
                    let names: Vec<&str> = SimdLevel::ALL
                        .into_iter()
                        .filter(|l| l.is_native())
                        .map(SimdLevel::name)
                        .collect();
                    eprintln!(
                        "warning: SWITCHYARD_SIMD={v:?} is not one of {}; ignored",
                        names.join(", ")
                    );
                    best
                }
            },
            _ => best,
        }
    })
}

/// Every level this CPU supports, lowest first.
pub fn available_levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.is_supported())
        .collect()
}

/// The CPU features the kernels use that this CPU has, e.g. `["avx2", "fma", "f16c"]`.
pub fn detected_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            v.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            v.push("fma");
        }
        if std::arch::is_x86_feature_detected!("f16c") {
            v.push("f16c");
        }
        for (name, on) in [
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            ("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
        ] {
            if on {
                v.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push("neon");
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            v.push("dotprod");
        }
    }
    v
}

/// `sum_i a[i] * b[i]` in f32 with the SIMD level of [`simd_level`].
///
/// # Panics
/// If the lengths differ.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_with(simd_level(), a, b)
}

/// [`dot_f32`] at an explicit level (lowered to [`detected_level`] if the CPU lacks it).
pub fn dot_f32_with(level: SimdLevel, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: lengths differ");
    match level.lowered() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is above scalar and at most `detected_level()`, so AVX2, FMA and
        // F16C were detected at run time.
        l if l > SimdLevel::Scalar => unsafe { avx2::dot_f32(a, b) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 CPU.
        l if l > SimdLevel::Scalar => unsafe { neon::dot_f32(a, b) },
        _ => scalar::dot_f32(a, b),
    }
}

/// `sum_i q[i] * k[i]` with `k` in f16 (attention scores over the f16 KV cache), at
/// [`simd_level`].
///
/// # Panics
/// If the lengths differ.
pub fn dot_f16(q: &[f32], k: &[half::f16]) -> f32 {
    dot_f16_with(simd_level(), q, k)
}

/// [`dot_f16`] at an explicit level (lowered to [`detected_level`] if the CPU lacks it).
pub fn dot_f16_with(level: SimdLevel, q: &[f32], k: &[half::f16]) -> f32 {
    assert_eq!(q.len(), k.len(), "dot_f16: lengths differ");
    match level.lowered() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is above scalar and at most `detected_level()`, so AVX2, FMA and
        // F16C were detected at run time.
        l if l > SimdLevel::Scalar => unsafe { avx2::dot_f16(q, k) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 CPU.
        l if l > SimdLevel::Scalar => unsafe { neon::dot_f16(q, k) },
        _ => scalar::dot_f16(q, k),
    }
}

/// `y[i] += a * x[i]` with `x` in f16 (attention-weighted sum of the f16 values), at
/// [`simd_level`].
///
/// # Panics
/// If the lengths differ.
pub fn axpy_f16(y: &mut [f32], a: f32, x: &[half::f16]) {
    axpy_f16_with(simd_level(), y, a, x)
}

/// [`axpy_f16`] at an explicit level (lowered to [`detected_level`] if the CPU lacks it).
pub fn axpy_f16_with(level: SimdLevel, y: &mut [f32], a: f32, x: &[half::f16]) {
    assert_eq!(y.len(), x.len(), "axpy_f16: lengths differ");
    match level.lowered() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is above scalar and at most `detected_level()`, so AVX2, FMA and
        // F16C were detected at run time.
        l if l > SimdLevel::Scalar => unsafe { avx2::axpy_f16(y, a, x) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 CPU.
        l if l > SimdLevel::Scalar => unsafe { neon::axpy_f16(y, a, x) },
        _ => scalar::axpy_f16(y, a, x),
    }
}

/// Attention of one token's query heads that share one KV head (`q` and `out`: `g * hd` for
/// `g` heads) over the key and value rows at element offsets `rows` of `kc` / `vc`: for each
/// head `softmax_j(q . k_j)`-weighted sum of the `v_j`, at [`simd_level`]. The queries carry
/// their scale already. `scratch` is reused between calls. The SIMD levels take four heads at a
/// time (each K/V row loaded once for all four) with a polynomial `exp`; a token's result
/// depends only on its own queries and rows, never on the batch.
///
/// # Panics
/// If `q` and `out` differ in length or are not whole heads, or a row runs past `kc` or `vc`.
pub fn attend_f16(
    q: &[f32],
    hd: usize,
    kc: &[half::f16],
    vc: &[half::f16],
    rows: &[usize],
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    attend_f16_with(simd_level(), q, hd, kc, vc, rows, scratch, out)
}

/// [`attend_f16`] at an explicit level (lowered to [`detected_level`] if the CPU lacks it).
#[allow(clippy::too_many_arguments)]
pub fn attend_f16_with(
    level: SimdLevel,
    q: &[f32],
    hd: usize,
    kc: &[half::f16],
    vc: &[half::f16],
    rows: &[usize],
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    assert!(
        hd > 0 && q.len() == out.len() && out.len().is_multiple_of(hd),
        "attend_f16: {} queries, {} outputs, head size {hd}",
        q.len(),
        out.len()
    );
    let lim = kc.len().min(vc.len());
    assert!(
        rows.iter()
            .all(|&r| r.checked_add(hd).is_some_and(|e| e <= lim)),
        "attend_f16: a row is out of range"
    );
    if rows.is_empty() {
        out.fill(0.0);
        return;
    }
    if scratch.len() < 4 * rows.len() {
        scratch.resize(4 * rows.len(), 0.0);
    }
    match level.lowered() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is above scalar and at most `detected_level()`, so AVX2, FMA and
        // F16C were detected at run time; the lengths, `hd % 16` and the rows were checked.
        l if l > SimdLevel::Scalar && hd.is_multiple_of(16) => unsafe {
            avx2::attend_f16(q, hd, kc, vc, rows, scratch, out)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 CPU; the lengths and rows were checked.
        l if l > SimdLevel::Scalar => unsafe {
            neon::attend_f16(q, hd, kc, vc, rows, scratch, out)
        },
        _ => scalar::attend_f16(q, hd, kc, vc, rows, scratch, out),
    }
}

/// The gated activation of the feed-forward block: `g[i] = act(g[i]) * u[i]`, at
/// [`simd_level`]. The scalar level uses `ops::gelu_tanh` / `ops::silu`; the SIMD levels compute
/// the same functions as `x / (1 + exp(z))` with a polynomial `exp` (relative error ~1e-7), the
/// same operations for every element wherever it lies in the slice.
///
/// # Panics
/// If the lengths differ.
pub fn glu(act: Activation, g: &mut [f32], u: &[f32]) {
    glu_with(simd_level(), act, g, u)
}

/// [`glu`] at an explicit level (lowered to [`detected_level`] if the CPU lacks it).
pub fn glu_with(level: SimdLevel, act: Activation, g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "glu: lengths differ");
    match level.lowered() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is above scalar and at most `detected_level()`, so AVX2, FMA and
        // F16C were detected at run time.
        l if l > SimdLevel::Scalar => unsafe { avx2::glu(act == Activation::GeluTanh, g, u) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 CPU.
        l if l > SimdLevel::Scalar => unsafe { neon::glu(act == Activation::GeluTanh, g, u) },
        _ => {
            for (a, b) in g.iter_mut().zip(u) {
                let v = match act {
                    Activation::GeluTanh => crate::ops::gelu_tanh(*a),
                    Activation::Silu => crate::ops::silu(*a),
                };
                *a = v * b;
            }
        }
    }
}

/// `out[t * w.rows + r] = dot(W[r], x[t * w.cols ..])` for `t < n_tok`, at [`simd_level`].
///
/// # Panics
/// If `x.len() != n_tok * w.cols`, `out.len() != n_tok * w.rows`, `w.data` is shorter than
/// `w.rows * w.row_bytes()`, `w.cols` is not a multiple of the block size, or `w.dtype` is Q8_K.
pub fn matmul(w: &QMatrix<'_>, x: &[f32], n_tok: usize, out: &mut [f32]) {
    matmul_with(simd_level(), w, x, n_tok, out);
}

/// [`matmul`] at an explicit level (lowered to [`detected_level`] if the CPU lacks it).
pub fn matmul_with(level: SimdLevel, w: &QMatrix<'_>, x: &[f32], n_tok: usize, out: &mut [f32]) {
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
    let level = level.lowered();
    if n_tok == 0 || w.rows == 0 {
        return;
    }
    if w.cols == 0 {
        out.fill(0.0);
        return;
    }
    let acts = match w.dtype {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
            let mut a = Q8Acts::quantize(level, x, w.cols, n_tok);
            // The SIMD kernels take the interleaved form, with the weights' stored offset
            // (AVX-512 reads Q8_0 as `w + 128`; AVX2 uses it signed, with the sign trick).
            let offset = match w.dtype {
                GgmlType::Q8_0 if level == SimdLevel::Avx512Vnni => 128,
                GgmlType::Q8_0 => 0,
                GgmlType::Q4_0 => 8,
                _ => 16,
            };
            if level >= SimdLevel::Avx2 {
                a.interleave(offset, level == SimdLevel::Avx512Vnni);
            }
            Acts::Q8(a)
        }
        GgmlType::Q4_K | GgmlType::Q6_K => {
            let mut a = Q8KActs::quantize(level, x, w.cols, n_tok);
            if level >= SimdLevel::Avx2 {
                a.interleave();
            }
            Acts::Q8K(a)
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => Acts::F32(x),
        GgmlType::Q8_K => panic!("matmul: Q8_K weights are not supported"),
    };
    let dst = OutPtr {
        ptr: out.as_mut_ptr(),
        len: out.len(),
        rows: w.rows,
    };
    let run = |r0: usize, r1: usize| match level {
        SimdLevel::Scalar => scalar::rows(w, &acts, r0, r1, n_tok, &dst),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was lowered to `detected_level()`, so AVX2, FMA and F16C were
        // detected at run time. `dst` is written only at rows `r0..r1`, which no other chunk
        // touches (see `OutPtr`).
        SimdLevel::Avx2 => unsafe { avx2::rows(w, &acts, r0, r1, n_tok, &dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, with AVX-512 F/BW/VL/VNNI detected too.
        SimdLevel::Avx512Vnni => unsafe { avx512::rows(w, &acts, r0, r1, n_tok, &dst) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 CPU. `dst` is written only at rows `r0..r1`,
        // which no other chunk touches (see `OutPtr`).
        SimdLevel::Neon => unsafe { neon::rows(w, &acts, r0, r1, n_tok, &dst) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `level` was lowered to `detected_level()`, so the dot-product extension was
        // detected at run time. `dst` as above.
        SimdLevel::NeonDot => unsafe { neon::rows_dot(w, &acts, r0, r1, n_tok, &dst) },
        // Levels of another architecture: `lowered` never returns them.
        _ => scalar::rows(w, &acts, r0, r1, n_tok, &dst),
    };
    for_chunks(w.rows, w.row_bytes() * n_tok, run);
}

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
    rows: usize,
    cols: usize,
    /// `groups * blocks * 256` quants.
    q: HugeBuf<i8>,
    /// `groups * blocks * 8` scales (f16 bits, as in the file: 2 bytes per block and row, so a
    /// batch-1 pass, bound by memory bandwidth, reads 272 bytes per block and group, not 288).
    d: HugeBuf<u16>,
}

impl PackedQ8 {
    /// Repacks `w` if it is Q8_0 and the CPU has the AVX2 kernels; `None` otherwise.
    pub fn new(w: &QMatrix<'_>) -> Option<Self> {
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
        q.par_chunks_mut(nb * 256)
            .zip(d.par_chunks_mut(nb * 8))
            .enumerate()
            .for_each(|(g, (q, d))| {
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

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.q.len() + 2 * self.d.len()
    }
}

/// [`matmul`] for a [`PackedQ8`] matrix at the level of [`simd_level`] (AVX2 or AVX-512 VNNI;
/// see [`matmul_packed_with`]).
pub fn matmul_packed(w: &PackedQ8, x: &[f32], n_tok: usize, out: &mut [f32]) {
    matmul_packed_with(simd_level(), w, x, n_tok, out)
}

/// [`matmul`] for a [`PackedQ8`] matrix with the kernels of `level` (lowered to what the CPU
/// has; at least AVX2): the same integer block sums as [`matmul_with`], accumulated per row in
/// block order (so the f32 rounding differs from the unpacked kernels), and the same bits at
/// the AVX2 and AVX-512 VNNI levels. Batch invariant like [`matmul`].
pub fn matmul_packed_with(
    level: SimdLevel,
    w: &PackedQ8,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
) {
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
    let level = level.lowered();
    assert!(
        level >= SimdLevel::Avx2,
        "matmul_packed: AVX2 is not available"
    );
    if n_tok == 0 || w.rows == 0 {
        return;
    }
    let a = Q8Acts::quantize(SimdLevel::Avx2, x, w.cols, n_tok);
    // The AVX2 kernel's token groups (`avx2::PackedActs`).
    #[cfg(target_arch = "x86_64")]
    let pa = (level == SimdLevel::Avx2).then(|| avx2::PackedActs::new(&a, n_tok));
    // `-128 * sum(quants)` per token and block, for the VNNI kernel's unsigned weights.
    let corr: Vec<i32> = if level == SimdLevel::Avx512Vnni {
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
    let run = |g0: usize, g1: usize| match level {
        // SAFETY: the AVX-512 F/BW/VL/VNNI features (and AVX2, FMA, F16C) were detected
        // (`level` is at most `detected_level()`). `dst` is written only at the rows of groups
        // `g0..g1`, which no other chunk touches (see `OutPtr`).
        SimdLevel::Avx512Vnni => unsafe {
            avx512::rows_packed_q8(w, &a, &corr, g0, g1, n_tok, &dst)
        },
        // SAFETY: AVX2, FMA and F16C were detected (asserted above). `dst` as above.
        _ => unsafe { avx2::rows_packed_q8(w, pa.as_ref().unwrap(), g0, g1, n_tok, &dst) },
    };
    #[cfg(not(target_arch = "x86_64"))]
    let run = |_: usize, _: usize| {
        let _ = (&a, &corr, &dst);
        unreachable!("PackedQ8 exists only with AVX2")
    };
    for_chunks(groups, 8 * w.cols * n_tok.min(8), run);
}

/// For each of the `n_tok` rows of `x`, the index of the largest of the first `limit` outputs
/// of [`matmul_packed_with`] at the AVX2 level, chosen as the engine's host `argmax` chooses
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
    let a = Q8Acts::quantize(SimdLevel::Avx2, x, w.cols, n_tok);
    #[cfg(target_arch = "x86_64")]
    let a = avx2::PackedActs::new(&a, n_tok);
    let groups = limit.div_ceil(8);
    #[cfg(target_arch = "x86_64")]
    let run = |g0: usize, g1: usize| {
        // SAFETY: AVX2, FMA and F16C were detected (asserted above).
        unsafe { avx2::packed_argmax(w, &a, g0, g1, n_tok, limit) }
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

/// A Q4_K / Q6_K matrix whose super-blocks hold their quants transposed, made at load for the
/// SIMD kernels of [`matmul_transposed_k`]: quant `32 j + 4 m + b` (sub-block `j`) is stored
/// where the GGML layout keeps quant `32 m + 4 j + b`, scales and minimums unchanged. Decoding
/// such a super-block in element order then yields the 8 vectors whose i32 lane `j` holds 4
/// quants of sub-block `j`, which the kernel would otherwise build with an 8 x 8 transpose per
/// super-block and token group: at one token that transpose costs more than the products. The
/// bytes are a copy of the matrix (the same size as its file encoding).
pub struct TransposedK {
    dtype: GgmlType,
    rows: usize,
    cols: usize,
    data: HugeBuf<u8>,
}

/// The 256 quants of a Q4_K (unsigned 4-bit) or Q6_K (unsigned 6-bit) super-block, in element
/// order.
fn k_quants(dtype: GgmlType, b: &[u8]) -> [u8; QKK] {
    let mut q = [0u8; QKK];
    for (e, q) in q.iter_mut().enumerate() {
        *q = match dtype {
            GgmlType::Q4_K => {
                let (s, l) = (e / 32, e % 32);
                (b[16 + 32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF
            }
            _ => {
                let (n, m, l) = (e / 128, (e % 128) / 32, e % 32);
                let lo = (b[64 * n + 32 * (m % 2) + l] >> (4 * (m / 2))) & 0xF;
                let hi = (b[128 + 32 * n + l] >> (2 * m)) & 3;
                lo | (hi << 4)
            }
        };
    }
    q
}

/// Stores `q` as the quants of the Q4_K / Q6_K super-block `b` (inverse of [`k_quants`]).
fn set_k_quants(dtype: GgmlType, b: &mut [u8], q: &[u8; QKK]) {
    match dtype {
        GgmlType::Q4_K => b[16..144].fill(0),
        _ => b[..192].fill(0),
    }
    for (e, &q) in q.iter().enumerate() {
        match dtype {
            GgmlType::Q4_K => {
                let (s, l) = (e / 32, e % 32);
                b[16 + 32 * (s / 2) + l] |= (q & 0xF) << (4 * (s % 2));
            }
            _ => {
                let (n, m, l) = (e / 128, (e % 128) / 32, e % 32);
                b[64 * n + 32 * (m % 2) + l] |= (q & 0xF) << (4 * (m / 2));
                b[128 + 32 * n + l] |= ((q >> 4) & 3) << (2 * m);
            }
        }
    }
}

impl TransposedK {
    /// The transposed copy of `w` if it is Q4_K / Q6_K and the CPU has the AVX2 kernels;
    /// `None` otherwise.
    pub fn new(w: &QMatrix<'_>) -> Option<Self> {
        if !matches!(w.dtype, GgmlType::Q4_K | GgmlType::Q6_K)
            || detected_level() < SimdLevel::Avx2
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
/// VNNI; see [`matmul_transposed_k_with`]).
pub fn matmul_transposed_k(w: &TransposedK, x: &[f32], n_tok: usize, out: &mut [f32]) {
    matmul_transposed_k_with(simd_level(), w, x, n_tok, out)
}

/// [`matmul_with`] for a [`TransposedK`] matrix with the kernels of `level` (lowered to what
/// the CPU has; at least AVX2): the same operations as the kernel on the file layout without its
/// transposes, so the same bits as [`matmul_with`] on the original matrix. Batch invariant.
pub fn matmul_transposed_k_with(
    level: SimdLevel,
    w: &TransposedK,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
) {
    let view = QMatrix {
        dtype: w.dtype,
        rows: w.rows,
        cols: w.cols,
        data: &w.data,
    };
    matmul_transposed("matmul_transposed_k", level, &view, x, n_tok, out);
}

/// A Q4_0 / Q5_0 / Q8_0 matrix stored for the AVX2 kernel of [`matmul_transposed_q0`]: per row
/// and group of 8 blocks, the 8 block scales side by side and the group's quants already
/// decoded to the kernel's unsigned (Q4_0 / Q5_0) or signed (Q8_0) values and transposed to a
/// block per i32 lane (the last group of at most 4 blocks in the half-group form), packed back
/// to 4 or 5 bits where the type has them; a last partial group is padded with zero blocks.
/// The kernel then loads a group's vectors instead of decoding 8 blocks and transposing them
/// (about 3x fewer instructions per group), which is most of its work at one token. The same
/// size as the file encoding, up to the padding.
pub struct TransposedQ0 {
    dtype: GgmlType,
    rows: usize,
    cols: usize,
    data: HugeBuf<u8>,
}

/// The 32 quants of a Q4_0 / Q5_0 / Q8_0 block as the AVX2 kernel decodes them (unsigned 0..16
/// / 0..32, or the signed Q8_0 byte), and its raw f16 scale.
fn q0_quants(dtype: GgmlType, b: &[u8]) -> ([u8; QK8], u16) {
    let mut q = [0u8; QK8];
    for (i, q) in q.iter_mut().enumerate() {
        *q = match dtype {
            GgmlType::Q8_0 => b[2 + i],
            GgmlType::Q4_0 => (b[2 + i % 16] >> (4 * (i / 16))) & 0xF,
            _ => {
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                let lo = (b[6 + i % 16] >> (4 * (i / 16))) & 0xF;
                lo | ((((qh >> i) & 1) as u8) << 4)
            }
        };
    }
    (q, u16::from_le_bytes([b[0], b[1]]))
}

impl TransposedQ0 {
    /// The transposed copy of `w` if it is Q4_0 / Q5_0 / Q8_0 and the CPU has the AVX2 kernels;
    /// `None` otherwise.
    pub fn new(w: &QMatrix<'_>) -> Option<Self> {
        let k = match w.dtype {
            GgmlType::Q8_0 => 0,
            GgmlType::Q4_0 => 1,
            GgmlType::Q5_0 => 2,
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
                        let (q, d) = q0_quants(w.dtype, blk);
                        out[2 * kk..2 * kk + 2].copy_from_slice(&d.to_le_bytes());
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
                    let body = &mut out[16..];
                    if k == 0 {
                        for (m, v) in v.iter().enumerate() {
                            body[32 * m..32 * m + 32].copy_from_slice(v);
                        }
                    } else {
                        for m in 0..4 {
                            for i in 0..32 {
                                body[32 * m + i] = (v[m][i] & 0xF) | ((v[m + 4][i] & 0xF) << 4);
                            }
                        }
                        if k == 2 {
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
/// [`matmul_transposed_q0_with`]).
pub fn matmul_transposed_q0(w: &TransposedQ0, x: &[f32], n_tok: usize, out: &mut [f32]) {
    matmul_transposed_q0_with(simd_level(), w, x, n_tok, out)
}

/// [`matmul_with`] at the AVX2 level for a [`TransposedQ0`] matrix (`level`, lowered to what
/// the CPU has, must be at least AVX2; the AVX-512 VNNI level has its own layout, so this runs
/// the AVX2 kernel there too): the same operations as that kernel on the file layout without
/// its decoding and transposes, so the same bits as [`matmul_with`] at [`SimdLevel::Avx2`].
pub fn matmul_transposed_q0_with(
    level: SimdLevel,
    w: &TransposedQ0,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
) {
    let view = QMatrix {
        dtype: w.dtype,
        rows: w.rows,
        cols: w.cols,
        data: &w.data,
    };
    matmul_transposed("matmul_transposed_q0", level, &view, x, n_tok, out);
}

/// The AVX2 kernels on a transposed layout (`view.data` in the layout of [`TransposedK`] or
/// [`TransposedQ0`]), with the activations those kernels take.
fn matmul_transposed(
    name: &str,
    level: SimdLevel,
    view: &QMatrix<'_>,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
) {
    assert_eq!(x.len(), n_tok * view.cols, "{name}: x has the wrong length");
    assert_eq!(
        out.len(),
        n_tok * view.rows,
        "{name}: out has the wrong length"
    );
    let level = level.lowered();
    assert!(level >= SimdLevel::Avx2, "{name}: AVX2 is not available");
    if n_tok == 0 || view.rows == 0 {
        return;
    }
    let acts = match view.dtype {
        GgmlType::Q4_K | GgmlType::Q6_K => {
            let mut a = Q8KActs::quantize(level, x, view.cols, n_tok);
            a.interleave();
            Acts::Q8K(a)
        }
        dtype => {
            let mut a = Q8Acts::quantize(SimdLevel::Avx2, x, view.cols, n_tok);
            let offset = match dtype {
                GgmlType::Q8_0 => 0,
                GgmlType::Q4_0 => 8,
                _ => 16,
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
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2, FMA and F16C were detected (asserted above). `dst` is written only at rows
    // `r0..r1`, which no other chunk touches (see `OutPtr`).
    let run =
        |r0: usize, r1: usize| unsafe { avx2::rows_transposed(view, &acts, r0, r1, n_tok, &dst) };
    #[cfg(not(target_arch = "x86_64"))]
    let run = |_: usize, _: usize| {
        let _ = (&acts, &dst);
        unreachable!("the transposed layouts exist only with AVX2")
    };
    for_chunks(view.rows, view.row_bytes() * n_tok, run);
}

/// Runs `run(r0, r1)` over the chunks of [`chunk_count`] that split `rows`, on the rayon pool
/// when there is more than one.
fn for_chunks(rows: usize, cost_per_row: usize, run: impl Fn(usize, usize) + Sync) {
    map_chunks(rows, cost_per_row, run);
}

/// [`for_chunks`] collecting each chunk's result, in chunk (row) order.
fn map_chunks<R: Send>(
    rows: usize,
    cost_per_row: usize,
    run: impl Fn(usize, usize) -> R + Sync,
) -> Vec<R> {
    let n_chunks = chunk_count(rows, cost_per_row);
    if n_chunks <= 1 {
        vec![run(0, rows)]
    } else {
        // One slot per chunk (its result), on the pass's team or on rayon (`team`).
        let slots: Vec<std::sync::Mutex<Option<R>>> =
            (0..n_chunks).map(|_| std::sync::Mutex::new(None)).collect();
        crate::team::for_each_index(n_chunks, |c| {
            let r = run(c * rows / n_chunks, (c + 1) * rows / n_chunks);
            *slots[c].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        });
        slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every chunk ran")
            })
            .collect()
    }
}

/// How many chunks of rows to hand to rayon: about four per thread so that a slow thread does
/// not hold the others up, more for large work (a chunk covers at most ~512 KiB of weight bytes
/// times tokens: a prompt's matmuls split into many chunks, so that the thread finishing its
/// last chunk first waits a small part of the loop for the other; at most 64 per 1,024 rows),
/// never a chunk below 16 rows, and one (no rayon at all) for tiny matrices.
fn chunk_count(rows: usize, cost_per_row: usize) -> usize {
    const MIN_ROWS: usize = 16;
    const MIN_TOTAL: usize = 16 << 10;
    const MAX_CHUNK: usize = 512 << 10;
    let threads = rayon::current_num_threads();
    let total = rows.saturating_mul(cost_per_row);
    if threads <= 1 || total < MIN_TOTAL {
        return 1;
    }
    let want = (4 * threads).max(total / MAX_CHUNK);
    want.min(rows / MIN_ROWS).max(1)
}

/// The activations in the form a weight type's kernels take.
pub(crate) enum Acts<'a> {
    /// Unquantized, for F32 / F16 / BF16 weights.
    F32(&'a [f32]),
    /// 32-element 8-bit blocks, for Q4_0 / Q5_0 / Q8_0 weights.
    Q8(Q8Acts),
    /// 256-element 8-bit super-blocks, for Q4_K / Q6_K weights.
    Q8K(Q8KActs),
}

/// Where a chunk of rows writes its results: `out[t * rows + r]`.
///
/// Chunks run concurrently and each writes only the rows it was given, so the writes of
/// different chunks never overlap; the pointer is valid for `len` elements for the whole call of
/// `matmul_with`, which holds the `&mut` borrow.
pub(crate) struct OutPtr {
    ptr: *mut f32,
    len: usize,
    rows: usize,
}

// SAFETY: `OutPtr` is only a way to write disjoint elements of one `&mut [f32]` from several
// rayon workers; every writer has exclusive use of the rows it writes (see `write`).
unsafe impl Send for OutPtr {}
// SAFETY: as above: shared references are used only for writes to disjoint elements.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Stores `v` at `out[t * rows + r ..]` (bounds checked): one burst of writes for a run of
    /// rows, rather than a write per row into as many output rows as there are tokens (whose
    /// lines may all fall into the same cache set).
    ///
    /// # Safety
    /// No other thread may read or write rows `r..r + v.len()` concurrently: the caller must be
    /// the one chunk that owns them.
    #[inline]
    pub(crate) unsafe fn write_run(&self, t: usize, r: usize, v: &[f32]) {
        let i = t * self.rows + r;
        assert!(
            r + v.len() <= self.rows && i + v.len() <= self.len,
            "OutPtr::write_run out of bounds"
        );
        // SAFETY: `i + v.len() <= len`, so the elements are inside the output slice, which
        // outlives every chunk; the caller guarantees no concurrent access to these rows.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.ptr.add(i), v.len()) };
    }

    /// [`write_run`](Self::write_run) of exactly 8 values: a fixed-size copy the compiler
    /// inlines (the variable-length one is a `memcpy` call, 2% of a 16-sequence decode step
    /// when made for every 8 rows of the lm_head and token).
    ///
    /// # Safety
    /// As for `write_run`.
    #[inline]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) unsafe fn write8(&self, t: usize, r: usize, v: &[f32; 8]) {
        let i = t * self.rows + r;
        assert!(
            r + 8 <= self.rows && i + 8 <= self.len,
            "OutPtr::write8 out of bounds"
        );
        // SAFETY: `i + 8 <= len`, so the elements are inside the output slice, which outlives
        // every chunk; the caller guarantees no concurrent access to these rows.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.ptr.add(i), 8) };
    }

    /// Stores `v` at `out[t * rows + r]` (bounds checked).
    ///
    /// # Safety
    /// No other thread may read or write row `r` concurrently: the caller must be the one chunk
    /// that owns row `r`.
    #[inline]
    pub(crate) unsafe fn write(&self, t: usize, r: usize, v: f32) {
        let i = t * self.rows + r;
        assert!(r < self.rows && i < self.len, "OutPtr::write out of bounds");
        // SAFETY: `i < len`, so the element is inside the output slice, which outlives every
        // chunk; the caller guarantees no concurrent access to row `r`.
        unsafe { *self.ptr.add(i) = v };
    }
}

/// Converts a little-endian f16 at `b[0..2]` to f32.
#[inline]
pub(crate) fn f16_le(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
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
