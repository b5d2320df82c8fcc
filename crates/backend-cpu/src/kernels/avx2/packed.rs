//! AVX2 kernels: The packed Q8_0 output projection (a row per lane) and its greedy argmax.

use super::*;

// --- Packed Q8_0 (a row per lane) -------------------------------------------------------------

/// Most tokens multiplied with each packed weight vector while it is in a register.
pub(crate) const PACKED_NT: usize = 8;

/// A chunk of a packed matmul: row groups `g0..g1` of `w` (8 rows each) for tokens
/// `0..n_tok`.
#[derive(Clone, Copy)]
pub(crate) struct PackedJob<'a> {
    /// The weights.
    pub w: &'a crate::kernels::PackedQ8,
    /// First row group of the chunk.
    pub g0: usize,
    /// One past its last group.
    pub g1: usize,
    /// Tokens.
    pub n_tok: usize,
}

/// One row group of a packed matrix as its dot products read it: the quants (256 bytes per
/// block), the 8 rows' f16 scales per block, and the quants of a group to prefetch.
pub(crate) struct Group<'a> {
    pub q: &'a [i8],
    pub d: &'a [u16],
    pub prefetch: Option<&'a [i8]>,
}

/// Row groups `g0..g1` of a [`PackedQ8`](crate::kernels::PackedQ8) matrix for all `n_tok`
/// tokens, each token's 8 results of a group stored in one run (see [`packed_groups`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rows_packed_q8(job: &PackedJob<'_>, a: &PackedActs, out: &OutPtr) {
    packed_groups(job, packed_acts_dot(job, a), |t, g, r, nr| {
        // SAFETY: this chunk owns the rows of groups `g0..g1` (see `OutPtr`).
        unsafe {
            if nr == 8 {
                out.write8(t, 8 * g, r);
            } else {
                out.write_run(t, 8 * g, &r[..nr]);
            }
        }
    });
}

/// Per token, the largest of the first `limit` outputs in row groups `g0..g1` of a
/// [`PackedQ8`](crate::kernels::PackedQ8) matrix and its row, chosen like the engine's host argmax
/// (the first row on ties; NaN never chosen; `(-inf, 0)` when nothing is above negative
/// infinity). Whole groups below `limit` go through a running best per lane (a strict greater
/// comparison keeps each lane's first row on ties; a lane holds its group's first row, the lane
/// adds its offset), merged at the end by value and then smallest row; the group that `limit`
/// or the end of the matrix cuts is compared one value at a time, and its rows follow every
/// whole group's.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn packed_argmax(job: &PackedJob<'_>, a: &PackedActs, limit: usize) -> Vec<(f32, u32)> {
    let n_tok = job.n_tok;
    let mut bv = vec![_mm256_set1_ps(f32::NEG_INFINITY); n_tok];
    let mut bi = vec![_mm256_setzero_si256(); n_tok];
    let mut tail = vec![(f32::NEG_INFINITY, 0u32); n_tok];
    packed_groups(job, packed_acts_dot(job, a), |t, g, r, nr| {
        if nr == 8 && 8 * g + 8 <= limit {
            // SAFETY: `r` is 8 floats; the load is unaligned.
            let v = unsafe { _mm256_loadu_ps(r.as_ptr()) };
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v, bv[t]);
            // `max(v, best)` is `best` when `v` is NaN or equal: the blend by `gt`, but a plain
            // store (a blend into memory compiles to a masked store, slow on AMD cores).
            bv[t] = _mm256_max_ps(v, bv[t]);
            let base = _mm256_set1_epi32((8 * g) as i32);
            bi[t] = _mm256_blendv_epi8(bi[t], base, _mm256_castps_si256(gt));
        } else {
            let b = &mut tail[t];
            for (i, &v) in r
                .iter()
                .enumerate()
                .take(nr.min(limit.saturating_sub(8 * g)))
            {
                if v > b.0 {
                    *b = (v, (8 * g + i) as u32);
                }
            }
        }
    });
    (0..n_tok)
        .map(|t| {
            let (mut v, mut idx) = ([0f32; 8], [0i32; 8]);
            // SAFETY: 8 floats / 8 i32; the stores are unaligned.
            unsafe {
                _mm256_storeu_ps(v.as_mut_ptr(), bv[t]);
                _mm256_storeu_si256(idx.as_mut_ptr().cast(), bi[t]);
            }
            let mut best = (f32::NEG_INFINITY, 0u32);
            for l in 0..8 {
                let row = (idx[l] + l as i32) as u32;
                if v[l] > best.0 || (v[l] == best.0 && v[l] > f32::NEG_INFINITY && row < best.1) {
                    best = (v[l], row);
                }
            }
            if tail[t].0 > best.0 {
                best = tail[t];
            }
            best
        })
        .collect()
}

/// Row groups `g0..g1` of a [`PackedQ8`](crate::kernels::PackedQ8) matrix for all `n_tok`
/// tokens: per group, the tokens up to `N` at a time: `dot(group, t, res)` computes
/// `res[i][..]` for tokens `t + i` and returns how many it did; `sink(t, g, results, nr)` gets
/// token `t`'s results for the group's rows `8 g..8 g + nr` (`results[..nr]`).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn packed_groups<const N: usize>(
    job: &PackedJob<'_>,
    mut dot: impl FnMut(&Group<'_>, usize, &mut [[f32; 8]; N]) -> usize,
    mut sink: impl FnMut(usize, usize, &[f32; 8], usize),
) {
    let PackedJob { w, g0, g1, n_tok } = *job;
    let nb = w.cols / QK8;
    let groups = w.rows.div_ceil(8);
    assert!(w.q.len() >= groups * nb * 256 && w.d.len() >= g1 * nb * 8 && g1 <= groups);
    for g in g0..g1 {
        let nr = (w.rows - 8 * g).min(8);
        // The quants of the group `ahead` groups on (in the matrix, not only in this chunk) are
        // prefetched during the first pass over this one: its first touch of a group would
        // otherwise wait on memory (`prefetch_bytes`). One token computes little per group, so
        // it fetches further ahead (AVX-512 VNNI, whole Gemma lm_head (262,144 x 640), 2
        // threads, 16 tokens: 17.1 -> 14.0 ms, `mmbench`, Intel Xeon with AMX).
        let ahead = if n_tok == 1 { 4 } else { 1 };
        let mut group = Group {
            q: &w.q[g * nb * 256..(g + 1) * nb * 256],
            d: &w.d[g * nb * 8..(g + 1) * nb * 8],
            prefetch: (g + ahead < groups)
                .then(|| &w.q[(g + ahead) * nb * 256..(g + ahead + 1) * nb * 256]),
        };
        let mut t = 0;
        while t < n_tok {
            let mut res = [[0f32; 8]; N];
            let nt = dot(&group, t, &mut res);
            group.prefetch = None;
            for (i, r) in res.iter().enumerate().take(nt) {
                sink(t + i, g, r, nr);
            }
            t += nt;
        }
    }
}

/// The `dot` of [`packed_groups`] with this level's kernel on `a`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn packed_acts_dot<'a>(
    job: &PackedJob<'_>,
    a: &'a PackedActs,
) -> impl FnMut(&Group<'_>, usize, &mut [[f32; 8]; PACKED_NT]) -> usize + 'a {
    let (nb, n_tok) = (job.w.cols / QK8, job.n_tok);
    assert!(a.nb == nb && a.x.len() >= n_tok.div_ceil(a.stride) * a.stride * 8 * nb);
    move |group, t, res| {
        macro_rules! go {
            ($($n:literal)*) => {
                match (n_tok - t).min(PACKED_NT) {
                    1 => packed_dot::<1>(group, a, t / a.stride, res),
                    $($n => packed_dot_call::<$n>(group, a, t / a.stride, res),)*
                    _ => unreachable!(),
                }
            };
        }
        go!(2 3 4 5 6 7 8)
    }
}

/// The activations as the packed kernel reads them ([`PackedActs::new`]).
pub(crate) struct PackedActs {
    /// Blocks per token.
    nb: usize,
    /// Tokens per group: `PACKED_NT`, or 1 for a single token (its quants as they are).
    stride: usize,
    /// Per group of `stride` tokens and run `j < 8 nb` of 4 quants of a token: the group's
    /// tokens' 4 quants side by side (an i32 each; 0 for tokens past the end).
    x: Vec<i32>,
    /// Per group of `stride` tokens and block: the tokens' block scales side by side.
    d: Vec<f32>,
}

impl PackedActs {
    /// Regroups `a` (`n_tok` tokens, quantized, not interleaved): a token's quants for a weight
    /// vector then lie at a fixed offset from one pointer per token group, not at its own row.
    pub(crate) fn new(a: &Q8Acts, n_tok: usize) -> Self {
        let nb = a.cols / QK8;
        let stride = if n_tok == 1 { 1 } else { PACKED_NT };
        let tg = n_tok.div_ceil(stride);
        let mut x = vec![0i32; tg * stride * 8 * nb];
        let mut d = vec![0f32; tg * stride * nb];
        for t in 0..n_tok {
            let (g, i) = (t / stride, t % stride);
            let q = &a.qs[t * a.cols..(t + 1) * a.cols];
            for (j, c) in q.chunks_exact(4).enumerate() {
                x[(g * 8 * nb + j) * stride + i] =
                    i32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]);
            }
            for b in 0..nb {
                d[(g * nb + b) * stride + i] = a.d[t * nb + b];
            }
        }
        PackedActs { nb, stride, x, d }
    }
}

/// [`packed_dot`] for several tokens, kept out of line: inlined into `packed_groups`, LLVM
/// hoisted the weights' absolute values out of its loop over token groups into an array on the
/// stack, written and read back per group (the layout this kernel dropped), and the 16-sequence
/// decode step was slower (`bench engine --concurrency 16`, 6 alternated pairs: TPOT mean 54.9
/// -> 50.9 ms out of line). One token stays inline: a call per row group costs more there.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline(never)]
pub(crate) fn packed_dot_call<const NT: usize>(
    group: &Group<'_>,
    a: &PackedActs,
    tg: usize,
    res: &mut [[f32; 8]; PACKED_NT],
) -> usize {
    packed_dot::<NT>(group, a, tg, res)
}

/// One packed row group (quants `q`, scales `d`) against the first `NT` tokens of token group
/// `tg` of `a`: `res[t][i]` for row `i` of the group. Per block and token: 8 vectors of the
/// token's 4 quants broadcast to every lane, signed like the weights (the sign trick) and
/// multiplied with the weights' absolute values (`maddubs`, then `madd` to i32: a pair can
/// reach 32,258), which gives every row's exact integer block sum in its own lane; then one
/// conversion and one FMA with the 8 rows' scales times the token's. The same operations for
/// every `NT`. A weight vector's absolute value is taken as it is loaded, once per `NT` tokens
/// (an array of them made once per group and read back was slower: `mmbench Q8_0`, whole
/// Gemma lm_head, 2 threads, 8 / 16 tokens: 16.0 / 25.6 -> 13.0 / 23.8 ms).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn packed_dot<const NT: usize>(
    group: &Group<'_>,
    a: &PackedActs,
    tg: usize,
    res: &mut [[f32; 8]; PACKED_NT],
) -> usize {
    let Group { q, d, prefetch } = *group;
    let nb = a.nb;
    assert!(q.len() >= nb * 256 && d.len() >= nb * 8);
    assert!(prefetch.is_none_or(|p| p.len() >= nb * 256));
    // Tokens per group in `a`: `PACKED_NT` (the layout's offsets below are constants then), or
    // 1 for a lone token (`NT == 1`).
    let st = if NT == 1 { a.stride } else { PACKED_NT };
    assert!(NT <= st && st == a.stride);
    let xg = &a.x[tg * st * 8 * nb..(tg + 1) * st * 8 * nb];
    let dg = &a.d[tg * st * nb..(tg + 1) * st * nb];
    let pfp = prefetch.map(|p| p.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); NT];
    let (qp, xp, dxp) = (q.as_ptr(), xg.as_ptr(), dg.as_ptr());
    let mut s = [_mm256_setzero_si256(); NT];
    // One loop over the row group's vectors, two at a time (vector `i` is vector `i % 8` of
    // block `i / 8`, and the token group's quants for it are at `st i`), not a nest of
    // blocks and vectors: a nest unrolled 8 times had its weight vectors hoisted and spilled.
    let mut i = 0;
    while i < 8 * nb {
        // SAFETY: vectors `i, i + 1 < 8 nb` of the group (256 bytes per block, asserted), the
        // token group's `st` quant
        // runs at `st j` and block scales at `st b` (`t < NT <= st`) lie inside `xg` / `dg`
        // (`8 nb` / `nb` runs of `st`). Loads are unaligned.
        unsafe {
            if let Some(p) = pfp {
                // Bytes `32 i..32 i + 64` of the group to prefetch (asserted above): a hint.
                _mm_prefetch::<_MM_HINT_T0>(p.add(32 * i));
            }
            for j in i..i + 2 {
                let wv = _mm256_loadu_si256(qp.add(32 * j).cast());
                let av = _mm256_sign_epi8(wv, wv);
                for (t, s) in s.iter_mut().enumerate() {
                    let xb = _mm256_set1_epi32(xp.add(st * j + t).read_unaligned());
                    let p = _mm256_maddubs_epi16(av, _mm256_sign_epi8(xb, wv));
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
                }
            }
            if i % 8 == 6 {
                let b = i / 8;
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().add(8 * b).cast()));
                for (t, acc) in acc.iter_mut().enumerate() {
                    let dd = _mm256_mul_ps(dw, _mm256_set1_ps(*dxp.add(st * b + t)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), dd, *acc);
                    s[t] = _mm256_setzero_si256();
                }
            }
        }
        i += 2;
    }
    for (r, acc) in res.iter_mut().zip(&acc) {
        // SAFETY: `r` is 8 floats; the store is unaligned.
        unsafe { _mm256_storeu_ps(r.as_mut_ptr(), *acc) };
    }
    NT
}
