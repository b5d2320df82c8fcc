//! Element-wise and row-wise operations of the transformer forward pass (f32).

/// In-place RMSNorm of each `w.len()`-wide row of `x`, scaled by `w`.
pub fn rmsnorm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        rmsnorm(row, w, eps);
    }
}

/// In-place RMSNorm of one row.
pub fn rmsnorm(row: &mut [f32], w: &[f32], eps: f32) {
    let inv = rms_inv(row, eps);
    for (v, g) in row.iter_mut().zip(w) {
        *v = *v * inv * g;
    }
}

/// RMSNorm of `src` written to `dst` (same length), scaled by `w`.
pub fn rmsnorm_into(src: &[f32], dst: &mut [f32], w: &[f32], eps: f32) {
    let inv = rms_inv(src, eps);
    for ((d, v), g) in dst.iter_mut().zip(src).zip(w) {
        *d = *v * inv * g;
    }
}

/// `1 / sqrt(mean(row^2) + eps)`.
fn rms_inv(row: &[f32], eps: f32) -> f32 {
    let ss = sum_sq(row) / row.len() as f32;
    1.0 / (ss + eps).sqrt()
}

/// Sum of squares in 8 partial sums (lane `j` takes elements `j`, `j + 8`, ...) added in a
/// fixed order: the same bits on every machine and SIMD level, and 8 independent chains that
/// the compiler keeps in vector registers, where one running sum would wait on each addition's
/// latency (a 640-wide row: ~2,000 cycles).
pub fn sum_sq(row: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            acc[j] += c[j] * c[j];
        }
    }
    for (a, v) in acc.iter_mut().zip(it.remainder()) {
        *a += v * v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// GELU with the tanh approximation.
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + (C * (x + 0.044715 * x * x * x)).tanh())
}

/// SiLU.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Appends `(sin, cos)` of `pos * inv_freq[i]` for every `i`, times `mscale`, to `cs` (what
/// [`rope_with`] takes), `inv_freq` from `ModelConfig::inv_freq`: computed once per token and
/// step, then used by every head of every layer. `mscale` is RoPE scaling's attention factor
/// (`RopeScaling::attn_factor`, YaRN / LongRoPE; 1 otherwise), as llama.cpp's `rope_yarn` and
/// transformers' `attention_scaling` put it on cos and sin.
pub fn rope_angles(pos: u32, inv_freq: &[f32], mscale: f32, cs: &mut Vec<(f32, f32)>) {
    if mscale == 1.0 {
        cs.extend(inv_freq.iter().map(|f| (pos as f32 * f).sin_cos()));
    } else {
        cs.extend(inv_freq.iter().map(|f| {
            let (s, c) = (pos as f32 * f).sin_cos();
            (s * mscale, c * mscale)
        }));
    }
}

/// Rotary embedding of one head in place, with the angles of its position from [`rope_angles`].
/// `neox`: pairs (i, i + d/2); otherwise (2i, 2i+1).
pub fn rope_with(head: &mut [f32], cs: &[(f32, f32)], neox: bool) {
    let half = head.len() / 2;
    for (i, &(s, c)) in cs.iter().enumerate().take(half) {
        let (a, b) = if neox {
            (i, i + half)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * c - x1 * s;
        head[b] = x0 * s + x1 * c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_unit_rows() {
        let mut x = vec![3.0, 4.0];
        rmsnorm(&mut x, &[1.0, 2.0], 0.0);
        let r = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / r).abs() < 1e-6 && (x[1] - 8.0 / r).abs() < 1e-6);
    }

    #[test]
    fn sum_sq_matches_a_plain_sum() {
        for n in [0usize, 1, 7, 8, 9, 17, 640] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let plain: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            let got = sum_sq(&x) as f64;
            assert!(
                (got - plain).abs() <= 1e-5 * plain.max(1.0),
                "n = {n}: {got} vs {plain}"
            );
        }
        let mut a = vec![1.0, -2.0, 3.0];
        let mut b = vec![0.0; 3];
        rmsnorm_into(&a, &mut b, &[1.0, 0.5, 2.0], 1e-6);
        rmsnorm(&mut a, &[1.0, 0.5, 2.0], 1e-6);
        assert_eq!(a, b);
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_zero() {
        let f: Vec<f32> = (0..4)
            .map(|i| 10_000f32.powf(-(2 * i) as f32 / 8.0))
            .collect();
        let orig: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let rope = |h: &mut [f32], pos: u32| {
            let mut cs = Vec::new();
            rope_angles(pos, &f, 1.0, &mut cs);
            rope_with(h, &cs, true);
        };
        let mut h = orig.clone();
        rope(&mut h, 0);
        assert_eq!(h, orig);
        rope(&mut h, 17);
        let n0: f32 = orig.iter().map(|v| v * v).sum();
        let n1: f32 = h.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3);
        assert_ne!(h, orig);
    }

    #[test]
    fn activations() {
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert_eq!(gelu_tanh(0.0), 0.0);
    }
}
