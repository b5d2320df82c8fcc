//! One chunk of a matmul as the rows kernels take it ([`RowJob`]), and which activation form
//! (and so which kernel family) each weight type takes ([`Form`]): the type lists live here
//! once, for every level.

use switchyard_core::GgmlType;

use super::quant::{Q8Acts, Q8KActs};
use super::{Acts, OutPtr, QMatrix};

/// The activation form (and kernel family) of a weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// 32-element Q8 blocks: Q4_0 / Q5_0 / Q8_0 / Q4_1 / Q5_1 / IQ4_NL.
    Q8,
    /// 256-element Q8_K super-blocks: Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / IQ4_XS.
    Q8K,
    /// Unquantized f32: F32 / F16 / BF16.
    F32,
}

impl Form {
    /// The form `ty`'s kernels take; `None` for Q8_K (an activation format, never weights).
    pub(crate) fn of(ty: GgmlType) -> Option<Form> {
        match ty {
            GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q5_0
            | GgmlType::Q4_1
            | GgmlType::Q5_1
            | GgmlType::IQ4_NL => Some(Form::Q8),
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_XS => Some(Form::Q8K),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => Some(Form::F32),
            GgmlType::Q8_K => None,
        }
    }
}

/// One chunk of a matmul: rows `r0..r1` of `w` times the activations `a` of tokens
/// `0..n_tok`, written through `out` (which this chunk owns at those rows, see [`OutPtr`]). `A`
/// is the activations' form: [`Acts`] at the entry points, then the one a kernel takes.
pub(crate) struct RowJob<'a, A: ?Sized = Acts<'a>> {
    /// The weights.
    pub w: &'a QMatrix<'a>,
    /// The activations.
    pub a: &'a A,
    /// First output row of the chunk.
    pub r0: usize,
    /// One past its last row.
    pub r1: usize,
    /// Tokens.
    pub n_tok: usize,
    /// Where the results go.
    pub out: &'a OutPtr,
}

impl<A: ?Sized> Clone for RowJob<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: ?Sized> Copy for RowJob<'_, A> {}

impl<'a, A: ?Sized> RowJob<'a, A> {
    /// The same chunk with the activations in the form `b`.
    #[inline(always)]
    pub(crate) fn with<B: ?Sized>(&self, b: &'a B) -> RowJob<'a, B> {
        RowJob {
            w: self.w,
            a: b,
            r0: self.r0,
            r1: self.r1,
            n_tok: self.n_tok,
            out: self.out,
        }
    }
}

/// A [`RowJob`] split by kernel family, its activations in that family's form.
pub(crate) enum Family<'a> {
    /// A 32-element block type with Q8 activations.
    Q8(RowJob<'a, Q8Acts>),
    /// A super-block type with Q8_K activations.
    Q8K(RowJob<'a, Q8KActs>),
    /// A float type with f32 activations.
    F32(RowJob<'a, [f32]>),
}

impl<'a> RowJob<'a> {
    /// The job as its weight type's family.
    ///
    /// # Panics
    /// If the activations are not in the form [`Form::of`] the weight type.
    #[inline(always)]
    pub(crate) fn family(&self) -> Family<'a> {
        match (Form::of(self.w.dtype), self.a) {
            (Some(Form::Q8), Acts::Q8(a)) => Family::Q8(self.with(a)),
            (Some(Form::Q8K), Acts::Q8K(a)) => Family::Q8K(self.with(a)),
            (Some(Form::F32), Acts::F32(x)) => Family::F32(self.with(*x)),
            _ => unreachable!("no kernel for {} with these activations", self.w.dtype),
        }
    }
}
