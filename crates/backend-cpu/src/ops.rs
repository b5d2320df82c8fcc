//! Element-wise and row-wise operations of the transformer forward pass (f32).

/// In-place RMSNorm of each `w.len()`-wide row of `x`, scaled by `w`.
pub fn rmsnorm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        rmsnorm(row, w, eps);
    }
}

/// In-place RMSNorm of one row.
pub fn rmsnorm(row: &mut [f32], w: &[f32], eps: f32) {
    let ss: f32 = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for (v, g) in row.iter_mut().zip(w) {
        *v = *v * inv * g;
    }
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

/// Appends `(sin, cos)` of `pos * inv_freq[i]` for every `i` to `cs` (what [`rope_with`] takes),
/// `inv_freq[i] = base^(-2i/d)`: computed once per token and step, then used by every head of
/// every layer.
pub fn rope_angles(pos: u32, inv_freq: &[f32], cs: &mut Vec<(f32, f32)>) {
    cs.extend(inv_freq.iter().map(|f| (pos as f32 * f).sin_cos()));
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

/// `base^(-2i/d)` for `i < d/2`.
pub fn inv_freq(base: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / (base as f64).powf(2.0 * i as f64 / head_dim as f64) as f32)
        .collect()
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
    fn rope_preserves_norm_and_is_identity_at_zero() {
        let f = inv_freq(10000.0, 8);
        let orig: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let rope = |h: &mut [f32], pos: u32| {
            let mut cs = Vec::new();
            rope_angles(pos, &f, &mut cs);
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
