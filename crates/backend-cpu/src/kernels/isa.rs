//! One table of kernels per SIMD level ([`Isa`]), chosen once: every call into a level's SIMD
//! code goes through it, and it is the one place that knows which function each level uses.
//!
//! Adding a kernel (say a weight type's rows) means one function per level plus its scalar
//! reference, and a row in each table below; no `match` on the level anywhere else.

use std::sync::OnceLock;

use half::f16;
use switchyard_core::Activation;

#[cfg(target_arch = "aarch64")]
use super::neon;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use super::{quant, scalar, simd_level, Acts, Attend, Form, QMatrix, RowJob, SimdLevel};

/// The rows kernel of a level: one chunk of a matmul's output rows for all its tokens.
pub(crate) type RowsFn = unsafe fn(&RowJob<'_>);

/// Quantizes one row into Q8 blocks: quants, scales, sums.
pub(crate) type QuantizeQ8Fn = unsafe fn(&[f32], &mut [i8], &mut [f32], &mut [f32]);
/// Quantizes one row into Q8_K super-blocks: quants, scales, per-16 sums.
pub(crate) type QuantizeQ8KFn = unsafe fn(&[f32], &mut [i8], &mut [f32], &mut [i16]);

/// Which of the load-time weight layouts a level's kernels take (each costs a copy of the
/// tensors it applies to; the model decides at load, `model.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layouts {
    /// The Q8_0 output projection repacked as [`super::PackedQ8`].
    pub packed_output: bool,
    /// Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / IQ4_XS matrices as [`super::TransposedK`].
    pub transposed_k: bool,
    /// Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / IQ4_NL layer matrices as [`super::TransposedQ0`].
    pub transposed_q0: bool,
    /// A greedy step's argmax taken inside the packed output kernel.
    pub greedy_argmax: bool,
}

/// The kernels of one SIMD level.
///
/// # Invariant
/// An `Isa` exists only as one of the static tables below, and [`Isa::get`] hands out the
/// table of a level this CPU supports (the level asked for, lowered to `detected_level()`). So
/// every function in the table it returns may run on this CPU: that is the whole SAFETY
/// argument for the CPU features of every call through it. (What else a kernel needs, such as
/// the output rows a chunk owns, the calling method states.)
pub struct Isa {
    level: SimdLevel,
    dot_f32: unsafe fn(&[f32], &[f32]) -> f32,
    dot_f16: unsafe fn(&[f32], &[f16]) -> f32,
    axpy_f16: unsafe fn(&mut [f32], f32, &[f16]),
    attend_f16: unsafe fn(&Attend<'_>, &mut [f32], &mut [f32]),
    /// `attend_f16` takes head sizes that are multiples of this; others run the scalar one.
    attend_hd_multiple: usize,
    glu: unsafe fn(Activation, &mut [f32], &[f32]),
    rows: RowsFn,
    /// The rows kernel of the transposed layouts, where the level has them.
    rows_transposed: Option<RowsFn>,
    quantize_q8: QuantizeQ8Fn,
    quantize_q8k: QuantizeQ8KFn,
    /// The rows kernel takes the activations interleaved (`Q8Acts::interleave`,
    /// `Q8KActs::interleave`).
    interleaved_acts: bool,
    /// AVX-512 VNNI: Q8_0 quants read as `w + 128`, blocks in groups of 16.
    vnni: bool,
    /// The load-time layouts this level uses.
    pub layouts: Layouts,
}

const NO_LAYOUTS: Layouts = Layouts {
    packed_output: false,
    transposed_k: false,
    transposed_q0: false,
    greedy_argmax: false,
};

static SCALAR: Isa = Isa {
    level: SimdLevel::Scalar,
    dot_f32: scalar::dot_f32,
    dot_f16: scalar::dot_f16,
    axpy_f16: scalar::axpy_f16,
    attend_f16: scalar::attend_f16,
    attend_hd_multiple: 1,
    glu: scalar::glu,
    rows: scalar::rows,
    rows_transposed: None,
    quantize_q8: quant::quantize_q8_scalar,
    quantize_q8k: quant::quantize_q8k_scalar,
    interleaved_acts: false,
    vnni: false,
    layouts: NO_LAYOUTS,
};

#[cfg(target_arch = "x86_64")]
static AVX2: Isa = Isa {
    layouts: Layouts {
        packed_output: true,
        transposed_k: true,
        transposed_q0: true,
        greedy_argmax: true,
    },
    ..AVX2_BASE
};

/// AVX-512 VNNI: the AVX2 kernels but for the Q4_0 / Q5_0 / Q8_0 rows in both layouts and the
/// packed output for 8 tokens or more (`packed.rs`); below that the packed output, and the
/// greedy argmax inside it, are the AVX2 kernels (the same bits).
#[cfg(target_arch = "x86_64")]
static AVX512_VNNI: Isa = Isa {
    level: SimdLevel::Avx512Vnni,
    rows: avx512::rows,
    rows_transposed: Some(avx512::rows_transposed),
    vnni: true,
    layouts: Layouts {
        packed_output: true,
        transposed_k: true,
        transposed_q0: true,
        greedy_argmax: true,
    },
    ..AVX2_BASE
};

/// The AVX2 kernels, for the tables of both x86-64 SIMD levels.
#[cfg(target_arch = "x86_64")]
const AVX2_BASE: Isa = Isa {
    level: SimdLevel::Avx2,
    dot_f32: avx2::dot_f32,
    dot_f16: avx2::dot_f16,
    axpy_f16: avx2::axpy_f16,
    attend_f16: avx2::attend_f16,
    attend_hd_multiple: 16,
    glu: avx2::glu,
    rows: avx2::rows,
    rows_transposed: Some(avx2::rows_transposed),
    quantize_q8: quant::avx2::quantize_q8,
    quantize_q8k: quant::avx2::quantize_q8k,
    interleaved_acts: true,
    vnni: false,
    layouts: NO_LAYOUTS,
};

#[cfg(target_arch = "aarch64")]
static NEON: Isa = NEON_BASE;

#[cfg(target_arch = "aarch64")]
static NEON_DOT: Isa = Isa {
    level: SimdLevel::NeonDot,
    rows: neon::rows_dot,
    ..NEON_BASE
};

/// The NEON kernels, for the tables of both aarch64 SIMD levels.
#[cfg(target_arch = "aarch64")]
const NEON_BASE: Isa = Isa {
    level: SimdLevel::Neon,
    dot_f32: neon::dot_f32,
    dot_f16: neon::dot_f16,
    axpy_f16: neon::axpy_f16,
    attend_f16: neon::attend_f16,
    attend_hd_multiple: 1,
    glu: neon::glu,
    rows: neon::rows,
    rows_transposed: None,
    quantize_q8: quant::quantize_q8_scalar,
    quantize_q8k: quant::quantize_q8k_scalar,
    interleaved_acts: false,
    vnni: false,
    layouts: NO_LAYOUTS,
};

impl Isa {
    /// The table of `level`, lowered to what this CPU supports (see the type's invariant).
    pub fn get(level: SimdLevel) -> &'static Isa {
        match level.lowered() {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => &AVX2,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512Vnni => &AVX512_VNNI,
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => &NEON,
            #[cfg(target_arch = "aarch64")]
            SimdLevel::NeonDot => &NEON_DOT,
            // Scalar, and levels of another architecture (`lowered` never returns those).
            _ => &SCALAR,
        }
    }

    /// The table of [`simd_level`] (the detected level, or lower with `SWITCHYARD_SIMD`).
    pub fn current() -> &'static Isa {
        static CURRENT: OnceLock<&'static Isa> = OnceLock::new();
        CURRENT.get_or_init(|| Isa::get(simd_level()))
    }

    /// The level of this table.
    pub fn level(&self) -> SimdLevel {
        self.level
    }

    /// Whether this is the AVX-512 VNNI table (its Q4_0 / Q5_0 / Q8_0 kernels take their own
    /// activation form).
    pub fn vnni(&self) -> bool {
        self.vnni
    }

    /// `sum_i a[i] * b[i]` in f32.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn dot_f32(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot_f32: lengths differ");
        // SAFETY: a table of a supported level (the type's invariant); lengths checked.
        unsafe { (self.dot_f32)(a, b) }
    }

    /// `sum_i q[i] * k[i]` with `k` in f16.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn dot_f16(&self, q: &[f32], k: &[f16]) -> f32 {
        assert_eq!(q.len(), k.len(), "dot_f16: lengths differ");
        // SAFETY: a table of a supported level (the type's invariant); lengths checked.
        unsafe { (self.dot_f16)(q, k) }
    }

    /// `y[i] += a * x[i]` with `x` in f16.
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn axpy_f16(&self, y: &mut [f32], a: f32, x: &[f16]) {
        assert_eq!(y.len(), x.len(), "axpy_f16: lengths differ");
        // SAFETY: a table of a supported level (the type's invariant); lengths checked.
        unsafe { (self.axpy_f16)(y, a, x) }
    }

    /// The gated activation `g[i] = act(g[i]) * u[i]` (see [`super::glu`]).
    ///
    /// # Panics
    /// If the lengths differ.
    pub fn glu(&self, act: Activation, g: &mut [f32], u: &[f32]) {
        assert_eq!(g.len(), u.len(), "glu: lengths differ");
        // SAFETY: a table of a supported level (the type's invariant); lengths checked.
        unsafe { (self.glu)(act, g, u) }
    }

    /// Attention of one token's query heads over `a`'s rows (see [`super::attend_f16`]);
    /// `scratch` grows as needed and is reused between calls.
    ///
    /// # Panics
    /// If `q` and `out` differ in length or are not whole heads, or a row runs past `kc` or
    /// `vc`.
    pub fn attend_f16(&self, a: &Attend<'_>, scratch: &mut Vec<f32>, out: &mut [f32]) {
        let hd = a.hd;
        assert!(
            hd > 0 && a.q.len() == out.len() && out.len().is_multiple_of(hd),
            "attend_f16: {} queries, {} outputs, head size {hd}",
            a.q.len(),
            out.len()
        );
        let lim = a.kc.len().min(a.vc.len());
        assert!(
            a.rows
                .iter()
                .all(|&r| r.checked_add(hd).is_some_and(|e| e <= lim)),
            "attend_f16: a row is out of range"
        );
        if a.rows.is_empty() {
            out.fill(0.0);
            return;
        }
        if scratch.len() < 4 * a.rows.len() {
            scratch.resize(4 * a.rows.len(), 0.0);
        }
        let f = if hd.is_multiple_of(self.attend_hd_multiple) {
            self.attend_f16
        } else {
            SCALAR.attend_f16
        };
        // SAFETY: a table of a supported level (the type's invariant), or the scalar one; the
        // lengths, the head size and the rows were checked above.
        unsafe { f(a, scratch, out) }
    }

    /// Rows `job.r0..job.r1` of a matmul's output for all `job.n_tok` tokens.
    ///
    /// # Safety
    /// `job.out` must be written only at rows `r0..r1` by this call, rows no other chunk
    /// touches (see [`super::OutPtr`]); `job.a` must be in the form this level's kernel takes
    /// ([`Isa::quantize_acts`]).
    pub(crate) unsafe fn rows(&self, job: &RowJob<'_>) {
        // SAFETY: a table of a supported level (the type's invariant); the caller owns the
        // rows and gave the activations in this level's form.
        unsafe { (self.rows)(job) }
    }

    /// [`Isa::rows`] for a matrix in a transposed layout ([`super::TransposedK`],
    /// [`super::TransposedQ0`]).
    ///
    /// # Safety
    /// As [`Isa::rows`], with the activations in the form `matmul_transposed` makes.
    ///
    /// # Panics
    /// If this level has no kernels for the transposed layouts ([`Isa::has_transposed`]).
    pub(crate) unsafe fn rows_transposed(&self, job: &RowJob<'_>) {
        let f = self
            .rows_transposed
            .expect("the transposed layouts need AVX2");
        // SAFETY: a table of a supported level (the type's invariant); the caller owns the
        // rows and gave the activations in this layout's form.
        unsafe { f(job) }
    }

    /// Whether this level has kernels for the transposed layouts.
    pub fn has_transposed(&self) -> bool {
        self.rows_transposed.is_some()
    }

    /// Quantizes one row of activations into Q8 blocks (32 quants, scale, sum per block).
    pub(crate) fn quantize_q8(&self, x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
        // SAFETY: a table of a supported level (the type's invariant); the quantizers check
        // their slices' lengths.
        unsafe { (self.quantize_q8)(x, qs, d, s) }
    }

    /// Quantizes one row of activations into Q8_K super-blocks (256 quants, scale, per-16 sums).
    pub(crate) fn quantize_q8k(&self, x: &[f32], qs: &mut [i8], d: &mut [f32], bs: &mut [i16]) {
        // SAFETY: a table of a supported level (the type's invariant); the quantizers check
        // their slices' lengths.
        unsafe { (self.quantize_q8k)(x, qs, d, bs) }
    }

    /// `x` (`n_tok` rows of `w.cols`) in the form this level's rows kernel takes for `w`'s
    /// type.
    ///
    /// # Panics
    /// If `w.dtype` is Q8_K (an activation format).
    pub(crate) fn quantize_acts<'a>(
        &self,
        w: &QMatrix<'_>,
        x: &'a [f32],
        n_tok: usize,
    ) -> Acts<'a> {
        use switchyard_core::GgmlType;
        match Form::of(w.dtype) {
            Some(Form::Q8) => {
                let mut a = quant::Q8Acts::quantize(self, x, w.cols, n_tok);
                if self.interleaved_acts {
                    // The SIMD kernels take the interleaved form, with the weights' stored
                    // offset (AVX-512 reads Q8_0 as `w + 128`; AVX2 uses it signed, with the
                    // sign trick). The AVX-512 VNNI kernels (wide groups) are those of Q4_0 /
                    // Q5_0 / Q8_0; that level runs the AVX2 kernels of the others.
                    let (offset, own) = match w.dtype {
                        GgmlType::Q8_0 if self.vnni => (128, true),
                        GgmlType::Q8_0 => (0, true),
                        GgmlType::Q4_0 => (8, true),
                        GgmlType::Q5_0 => (16, true),
                        _ => (0, false),
                    };
                    a.interleave(offset, self.vnni && own);
                }
                Acts::Q8(a)
            }
            Some(Form::Q8K) => {
                let mut a = quant::Q8KActs::quantize(self, x, w.cols, n_tok);
                if self.interleaved_acts {
                    a.interleave();
                }
                Acts::Q8K(a)
            }
            Some(Form::F32) => Acts::F32(x),
            None => panic!("matmul: {} weights are not supported", w.dtype),
        }
    }
}
