//! Per-step helpers of the forward pass: the loops over a step's tokens, row views that those
//! loops write through, and the activation buffers kept from one step to the next.

use crate::team;

/// The activation buffers of a step (`hidden_in_pool`), kept between steps: allocated anew,
/// buffers this large are fresh pages from the kernel each step, and the page faults and the
/// kernel's zeroing of them were 6.6% of a 512-token prompt (Qwen2.5-Coder 0.5B, `perf`).
/// Each buffer is zeroed to its step's length before use, as a new one would be.
#[derive(Default)]
pub(crate) struct StepScratch {
    pub(crate) h: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) attn: Vec<f32>,
    pub(crate) o: Vec<f32>,
    pub(crate) g: Vec<f32>,
    pub(crate) u: Vec<f32>,
}

/// `buf` emptied and refilled with `len` zeros (keeping its allocation).
pub(crate) fn zeroed(mut buf: Vec<f32>, len: usize) -> Vec<f32> {
    buf.clear();
    buf.resize(len, 0.0);
    buf
}

/// Steps with at least this many tokens (prompts) run the per-token work between matmuls
/// (norms, RoPE, residual adds) in parallel on the team; a decode step's few tokens take less
/// than a loop's start.
pub(crate) const PAR_TOKENS: usize = 32;

/// `f(t)` once for every token `t < n`: in chunks of tokens on the team from `PAR_TOKENS`
/// tokens on, else in order on this thread.
pub(crate) fn each_token(n: usize, f: impl Fn(usize) + Sync) {
    if n < PAR_TOKENS {
        (0..n).for_each(f);
        return;
    }
    let per = n.div_ceil(4 * rayon::current_num_threads()).max(1);
    team::for_each_index(n.div_ceil(per), |ch| {
        (ch * per..((ch + 1) * per).min(n)).for_each(&f)
    });
}

/// A row-major buffer of one row per token, whose rows the loops of `each_token` take one
/// token each.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    p: team::SharedMut<f32>,
    width: usize,
    _buf: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> Rows<'a> {
    pub(crate) fn new(buf: &'a mut [f32], width: usize) -> Self {
        Rows {
            p: team::SharedMut::new(buf),
            width,
            _buf: std::marker::PhantomData,
        }
    }

    /// Row `t`.
    ///
    /// # Safety
    /// While the result lives, no other call may ask for row `t` (`each_token` gives each
    /// token to one call).
    #[expect(
        clippy::mut_from_ref,
        reason = "disjoint rows handed out to concurrent writers; the caller keeps them apart (# Safety)"
    )]
    pub(crate) unsafe fn row(&self, t: usize) -> &mut [f32] {
        // SAFETY: rows are disjoint and in bounds (`chunk` asserts), exclusive by the
        // caller's contract; the buffer is borrowed mutably for `'a`.
        unsafe { self.p.chunk(t * self.width, (t + 1) * self.width) }
    }
}
