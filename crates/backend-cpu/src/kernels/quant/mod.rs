//! Quantization of the f32 activations into 8-bit blocks, once per matmul call.
//!
//! Both formats are symmetric: a block with largest magnitude `amax` gets the scale
//! `d = amax / 127` and the quants `q = round_ties_even(x * (127 / amax))` in `-127..=127` (so a
//! quant can be negated, which the AVX2 sign trick needs). The scales are kept as f32 (ggml
//! rounds the Q8_0 scale to f16; f32 is as fast here and a little more accurate). The scalar and
//! AVX2 quantizers produce bit-identical results, so every level computes the same integer sums.

use super::Isa;
use crate::team::SharedMut;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;

/// Elements of a Q8 block (the Q4_0 / Q5_0 / Q8_0 block size).
pub(crate) const QK8: usize = 32;
/// Elements of a Q8_K super-block (the Q4_K / Q6_K block size).
pub(crate) const QKK: usize = 256;

/// Activations of `n_tok` tokens in 32-element blocks.
pub(crate) struct Q8Acts {
    /// Elements per token.
    pub cols: usize,
    /// Quants, `n_tok * cols`.
    pub qs: Vec<i8>,
    /// Block scales, `n_tok * cols / 32`.
    pub d: Vec<f32>,
    /// `d * sum(quants of the block)` per block (for weights stored with an offset).
    pub s: Vec<f32>,
    /// The quants interleaved for the AVX2 and AVX-512 kernels (empty unless
    /// [`Q8Acts::interleave`] ran):
    /// per token, groups of 8 blocks (the last one padded with zero blocks) of 256 bytes, where
    /// byte `32 m + 4 k + i` of group `g` is quant `4 m + i` of block `8 g + k`. A 32-byte
    /// vector `m` of a group thus holds 4 quants of each of the 8 blocks, one block per i32 lane.
    pub qi: Vec<i8>,
    /// `-offset * sum(quants of the block)` per token and group of 8 (0 for padding), for weights
    /// stored with an offset (see [`Q8Acts::interleave`]).
    pub ni: Vec<i32>,
    /// The block scales per token and group of 8 (0 for padding).
    pub di: Vec<f32>,
    /// `s` (`d * sum`) per token and group of 8 (0 for padding), for the min terms of Q4_1 /
    /// Q5_1 weights.
    pub si: Vec<f32>,
    /// Whether the interleaved layout may use groups of 16 blocks (the AVX-512 kernels); the
    /// AVX2 kernels take groups of 8 only.
    pub wide: bool,
}

/// Splits `n_tok` tokens into consecutive groups `(t0, nt)` of at most `max` tokens, as equal as
/// possible (9 tokens with `max` 8 are 5 + 4, not 8 + 1).
pub(crate) fn token_groups(n_tok: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let groups = n_tok.div_ceil(max);
    (0..groups).scan(0, move |t0, g| {
        let nt = (n_tok - *t0).div_ceil(groups - g);
        let group = (*t0, nt);
        *t0 += nt;
        Some(group)
    })
}

/// Activations of `n_tok` tokens in 256-element super-blocks.
pub(crate) struct Q8KActs {
    /// Elements per token.
    pub cols: usize,
    /// Quants, `n_tok * cols`.
    pub qs: Vec<i8>,
    /// Super-block scales, `n_tok * cols / 256`.
    pub d: Vec<f32>,
    /// Sum of each run of 16 quants, `n_tok * cols / 16`.
    pub bsums: Vec<i16>,
    /// The quants interleaved for the SIMD kernels (empty until [`Q8KActs::interleave`]): in
    /// each super-block, byte `32 m + 4 j + b` is quant `32 j + 4 m + b`, so that i32 lane `j`
    /// of vector `m` holds 4 quants of the 32-element sub-block `j`.
    pub qi: Vec<i8>,
}

/// `(d, 1/d)` for a block whose largest magnitude is `amax`.
#[inline]
pub(crate) fn scales(amax: f32) -> (f32, f32) {
    if amax > 0.0 {
        (amax / 127.0, 127.0 / amax)
    } else {
        (0.0, 0.0)
    }
}

/// Quantizes one value with the inverse scale `id`.
#[inline]
pub(crate) fn quantize_one(v: f32, id: f32) -> i8 {
    // `|v * id| <= 127` up to rounding, and the cast saturates anyway.
    (v * id).round_ties_even() as i8
}

/// Whether quantizing is worth spreading over the rayon pool.
fn parallel_worth_it(n_tok: usize, cols: usize) -> bool {
    n_tok >= 4 && n_tok * cols >= 1 << 15 && rayon::current_num_threads() > 1
}

/// `f(t0, t1)` for consecutive runs of tokens covering `0..n_tok`, in parallel (on the pass's
/// team or on rayon, `crate::team`), about four runs per thread.
fn par_tokens(n_tok: usize, f: impl Fn(usize, usize) + Sync) {
    let per = n_tok.div_ceil(4 * rayon::current_num_threads()).max(1);
    crate::team::for_each_index(n_tok.div_ceil(per), |c| {
        f(c * per, ((c + 1) * per).min(n_tok))
    });
}

/// `one(x, qs, d, e)` over the `n_tok` rows of `x`, in runs of tokens in parallel
/// (`par_tokens`) when [`parallel_worth_it`], else in one call; token `t` owns the same share
/// (`1 / n_tok`) of each output: quants, scales and the type's third array.
fn quantize_rows<E: Send>(
    x: &[f32],
    cols: usize,
    n_tok: usize,
    (qs, d, e): (&mut [i8], &mut [f32], &mut [E]),
    one: impl Fn(&[f32], &mut [i8], &mut [f32], &mut [E]) + Sync,
) {
    if !parallel_worth_it(n_tok, cols) {
        one(x, qs, d, e);
        return;
    }
    let (nd, ne) = (d.len() / n_tok, e.len() / n_tok);
    let (qs, d, e) = (SharedMut::new(qs), SharedMut::new(d), SharedMut::new(e));
    par_tokens(n_tok, |t0, t1| {
        // SAFETY: the rows of tokens `t0..t1`, disjoint from every other run's.
        unsafe {
            one(
                &x[t0 * cols..t1 * cols],
                qs.chunk(t0 * cols, t1 * cols),
                d.chunk(t0 * nd, t1 * nd),
                e.chunk(t0 * ne, t1 * ne),
            )
        }
    });
}

impl Q8Acts {
    /// Quantizes `n_tok` rows of `cols` elements (`cols` a multiple of 32).
    pub(crate) fn quantize(isa: &Isa, x: &[f32], cols: usize, n_tok: usize) -> Self {
        assert_eq!(cols % QK8, 0);
        assert_eq!(x.len(), cols * n_tok);
        let nb = cols / QK8;
        let mut a = Q8Acts {
            cols,
            qs: vec![0; x.len()],
            d: vec![0.0; nb * n_tok],
            s: vec![0.0; nb * n_tok],
            qi: Vec::new(),
            ni: Vec::new(),
            di: Vec::new(),
            si: Vec::new(),
            wide: false,
        };
        let one =
            |x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]| isa.quantize_q8(x, qs, d, s);
        quantize_rows(x, cols, n_tok, (&mut a.qs, &mut a.d, &mut a.s), one);
        a
    }

    /// Quants of token `t`.
    #[inline]
    pub(crate) fn qs(&self, t: usize) -> &[i8] {
        &self.qs[t * self.cols..(t + 1) * self.cols]
    }

    /// Block scales of token `t`.
    #[inline]
    pub(crate) fn d(&self, t: usize) -> &[f32] {
        let nb = self.cols / QK8;
        &self.d[t * nb..(t + 1) * nb]
    }

    /// `d * sum(quants)` per block of token `t`.
    #[inline]
    pub(crate) fn s(&self, t: usize) -> &[f32] {
        let nb = self.cols / QK8;
        &self.s[t * nb..(t + 1) * nb]
    }

    /// The interleaved layout of a token: `(wide, groups)`, `wide` groups of 16 blocks, then
    /// `groups` groups of 8 blocks (the last one padded, or a half group).
    #[inline]
    pub(crate) fn layout(&self) -> (usize, usize) {
        let nb = self.cols / QK8;
        // Wide groups pay off for long rows (measured on Zen 5: 2048 columns 20 % faster,
        // 640 columns 20 % slower than groups of 8).
        let wide = if self.wide && nb >= 32 { nb / 16 } else { 0 };
        (wide, (nb - 16 * wide).div_ceil(8))
    }

    /// Blocks per token in the interleaved layout, padding included (`ni` / `di` entries; the
    /// quants take 32 bytes per block).
    #[inline]
    pub(crate) fn padded_blocks(&self) -> usize {
        let (wide, groups) = self.layout();
        16 * wide + 8 * groups
    }

    /// Fills the interleaved form `qi`, `ni`, `di`, `si` from `qs`, `d` and `s`, for weights whose quants
    /// are stored with `offset` added (`ni` holds `-offset * sum`).
    ///
    /// Per token: `wide` groups of 16 blocks (512 bytes; byte `64 m + 4 k + i` is quant
    /// `4 m + i` of block `k` of the group: 64-byte vector `m` holds 4 quants of each block, one
    /// block per i32 lane), then groups of 8 blocks (256 bytes, the same with 32-byte vectors),
    /// see [`Q8Acts::layout`]. A last group of at most 4 blocks is a half group: its vectors
    /// `m < 4` hold quants `4 m + i` of the blocks in lanes 0..4 and quants `4 (m + 4) + i` in
    /// lanes 4..8 (the kernels add the two halves), and only its first 128 bytes are used.
    pub(crate) fn interleave(&mut self, offset: i32, wide: bool) {
        self.wide = wide;
        let cols = self.cols;
        let nb = cols / QK8;
        let (wide, _) = self.layout();
        let pb = self.padded_blocks();
        let n_tok = self.qs.len() / cols.max(1);
        let mut qi = vec![0; n_tok * pb * 32];
        let mut ni = vec![0; n_tok * pb];
        let mut di = vec![0.0; n_tok * pb];
        let mut si = vec![0.0; n_tok * pb];
        // One token: its quants, scales and sums into its interleaved blocks.
        let one = |(qs, d, s): (&[i8], &[f32], &[f32]),
                   qi: &mut [i8],
                   (ni, di, si): (&mut [i32], &mut [f32], &mut [f32])| {
            for j in 0..nb {
                // (first block of the group in the padded layout, lanes, index in the group,
                // half group)
                let (g0, lanes, k, half) = if j < 16 * wide {
                    (16 * (j / 16), 16, j % 16, false)
                } else {
                    let jj = j - 16 * wide;
                    let g0 = 16 * wide + 8 * (jj / 8);
                    (g0, 8, jj % 8, nb - g0 <= 4)
                };
                let src = &qs[QK8 * j..QK8 * (j + 1)];
                let dst = &mut qi[32 * g0..32 * (g0 + lanes)];
                for (mm, q4) in src.chunks_exact(4).enumerate() {
                    let (m, kk) = if half {
                        (mm % 4, k + 4 * (mm / 4))
                    } else {
                        (mm, k)
                    };
                    let o = 4 * lanes * m + 4 * kk;
                    dst[o..o + 4].copy_from_slice(q4);
                }
                ni[g0 + k] = -offset * src.iter().map(|&q| q as i32).sum::<i32>();
                di[g0 + k] = d[j];
                si[g0 + k] = s[j];
            }
        };
        if parallel_worth_it(n_tok, cols) {
            let (qip, nip, dip, sip) = (
                SharedMut::new(&mut qi),
                SharedMut::new(&mut ni),
                SharedMut::new(&mut di),
                SharedMut::new(&mut si),
            );
            par_tokens(n_tok, |t0, t1| {
                for t in t0..t1 {
                    let r = t * pb..(t + 1) * pb;
                    // SAFETY: token `t`'s entries, disjoint from every other token's.
                    unsafe {
                        one(
                            (
                                &self.qs[t * cols..(t + 1) * cols],
                                &self.d[t * nb..(t + 1) * nb],
                                &self.s[t * nb..(t + 1) * nb],
                            ),
                            qip.chunk(32 * r.start, 32 * r.end),
                            (
                                nip.chunk(r.start, r.end),
                                dip.chunk(r.start, r.end),
                                sip.chunk(r.start, r.end),
                            ),
                        )
                    }
                }
            });
        } else {
            for t in 0..n_tok {
                let r = t * pb..(t + 1) * pb;
                one(
                    (
                        &self.qs[t * cols..(t + 1) * cols],
                        &self.d[t * nb..(t + 1) * nb],
                        &self.s[t * nb..(t + 1) * nb],
                    ),
                    &mut qi[32 * r.start..32 * r.end],
                    (&mut ni[r.clone()], &mut di[r.clone()], &mut si[r]),
                );
            }
        }
        (self.qi, self.ni, self.di, self.si) = (qi, ni, di, si);
    }
}

impl Q8KActs {
    /// Quantizes `n_tok` rows of `cols` elements (`cols` a multiple of 256).
    pub(crate) fn quantize(isa: &Isa, x: &[f32], cols: usize, n_tok: usize) -> Self {
        assert_eq!(cols % QKK, 0);
        assert_eq!(x.len(), cols * n_tok);
        let nb = cols / QKK;
        let mut a = Q8KActs {
            cols,
            qs: vec![0; x.len()],
            d: vec![0.0; nb * n_tok],
            bsums: vec![0; cols / 16 * n_tok],
            qi: Vec::new(),
        };
        let one = |x: &[f32], qs: &mut [i8], d: &mut [f32], bs: &mut [i16]| {
            isa.quantize_q8k(x, qs, d, bs)
        };
        quantize_rows(x, cols, n_tok, (&mut a.qs, &mut a.d, &mut a.bsums), one);
        a
    }

    /// Fills `qi`: each super-block's 8 x 8 matrix of 4-quant runs, transposed.
    pub(crate) fn interleave(&mut self) {
        let mut qi = vec![0; self.qs.len()];
        for (src, dst) in self.qs.chunks_exact(QKK).zip(qi.chunks_exact_mut(QKK)) {
            for j in 0..8 {
                for m in 0..8 {
                    let (s, d) = (32 * j + 4 * m, 32 * m + 4 * j);
                    dst[d..d + 4].copy_from_slice(&src[s..s + 4]);
                }
            }
        }
        self.qi = qi;
    }

    /// Quants of token `t`.
    #[inline]
    pub(crate) fn qs(&self, t: usize) -> &[i8] {
        &self.qs[t * self.cols..(t + 1) * self.cols]
    }

    /// Super-block scales of token `t`.
    #[inline]
    pub(crate) fn d(&self, t: usize) -> &[f32] {
        let nb = self.cols / QKK;
        &self.d[t * nb..(t + 1) * nb]
    }

    /// Per-16 quant sums of token `t`.
    #[inline]
    pub(crate) fn bsums(&self, t: usize) -> &[i16] {
        let n = self.cols / 16;
        &self.bsums[t * n..(t + 1) * n]
    }
}

/// Scalar Q8 quantization of whole 32-blocks: `x` -> quants `qs`, scales `d`, `d * sum` in `s`.
pub(crate) fn quantize_q8_scalar(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (((xb, qb), d), s) in x
        .chunks_exact(QK8)
        .zip(qs.chunks_exact_mut(QK8))
        .zip(d.iter_mut())
        .zip(s.iter_mut())
    {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (dd, id) = scales(amax);
        let mut sum = 0i32;
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = quantize_one(v, id);
            sum += *q as i32;
        }
        *d = dd;
        *s = dd * sum as f32;
    }
}

/// Scalar Q8_K quantization of whole 256-blocks: quants, scales and per-16 sums.
pub(crate) fn quantize_q8k_scalar(x: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
    for (((xb, qb), d), bs) in x
        .chunks_exact(QKK)
        .zip(qs.chunks_exact_mut(QKK))
        .zip(d.iter_mut())
        .zip(bsums.chunks_exact_mut(QKK / 16))
    {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (dd, id) = scales(amax);
        for (q, &v) in qb.iter_mut().zip(xb) {
            *q = quantize_one(v, id);
        }
        for (b, q16) in bs.iter_mut().zip(qb.chunks_exact(16)) {
            *b = q16.iter().map(|&q| q as i16).sum();
        }
        *d = dd;
    }
}
