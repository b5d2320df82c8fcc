//! The routed expert MLP of mixture-of-experts models (Qwen3-MoE), as llama.cpp's
//! `build_moe_ffn` with softmax gating: router logits `W_r x`, softmax over all experts, the
//! top `k` (ties to the lower index), their weights renormalised to sum to 1 when the model
//! says so; the output is `sum_j w_j down_j(silu(gate_j(x)) * up_j(x))`.
//!
//! A step's tokens are grouped per expert, so each expert used by the step runs one batched
//! matmul per projection over its tokens; the experts run in parallel, one task each. The
//! matmul kernels give every token the same result whatever other tokens share its call, and
//! each token sums its experts' outputs in its own rank order, so a token's output does not
//! depend on the batch (batch invariance).

use switchyard_core::{BackendError, ModelConfig, MoeConfig, WeightSource};

use crate::kernels::glu;
use crate::model::{get, matrix, Mat};
use crate::team;

/// One expert's projections.
struct Expert {
    gate: Mat,
    up: Mat,
    down: Mat,
}

/// The expert MLP of one layer.
pub(crate) struct Moe {
    cfg: MoeConfig,
    hidden: usize,
    act: switchyard_core::Activation,
    router: Mat,
    experts: Vec<Expert>,
}

impl Moe {
    /// Loads layer `layer`'s router (`ffn_gate_inp`, `[hidden, n_expert]`) and experts
    /// (`ffn_{gate,up}_exps` `[hidden, expert_ffn, n_expert]`, `ffn_down_exps`
    /// `[expert_ffn, hidden, n_expert]`).
    pub(crate) fn load(
        c: &ModelConfig,
        m: &MoeConfig,
        w: &dyn WeightSource,
        layer: usize,
    ) -> Result<Self, BackendError> {
        let n = |s: &str| format!("blk.{layer}.{s}");
        let router = Mat::new(matrix(w, &n("ffn_gate_inp.weight"), c.hidden, m.n_expert)?);
        let stacked = |s: &str, cols: usize, rows: usize| {
            let name = n(s);
            let t = get(w, &name)?;
            if t.shape != [cols, rows, m.n_expert] {
                return Err(BackendError::BadTensor {
                    name: name.clone(),
                    reason: format!(
                        "expected shape [{cols}, {rows}, {}], found {:?}",
                        m.n_expert, t.shape
                    ),
                });
            }
            Ok((0..m.n_expert)
                .map(|e| Mat::new(t.rows(e * rows, (e + 1) * rows, format!("{name}[{e}]"))))
                .collect::<Vec<_>>())
        };
        let gates = stacked("ffn_gate_exps.weight", c.hidden, m.expert_ffn)?;
        let ups = stacked("ffn_up_exps.weight", c.hidden, m.expert_ffn)?;
        let downs = stacked("ffn_down_exps.weight", m.expert_ffn, c.hidden)?;
        let experts = gates
            .into_iter()
            .zip(ups)
            .zip(downs)
            .map(|((gate, up), down)| Expert { gate, up, down })
            .collect();
        Ok(Moe {
            cfg: *m,
            hidden: c.hidden,
            act: c.activation,
            router,
            experts,
        })
    }

    /// The experts' weighted sum for `n` tokens `x` (`n * hidden`) into `out` (`n * hidden`).
    /// `y` is scratch space (the experts' outputs, `n * n_expert_used * hidden`), kept by the
    /// caller between steps: a fresh one that large (33.5 MB at 512 tokens of Qwen3-30B-A3B)
    /// would come from `mmap` and fault its pages in on every layer.
    pub(crate) fn forward(&self, x: &[f32], n: usize, out: &mut [f32], y: &mut Vec<f32>) {
        let (h, ne, k, ff) = (
            self.hidden,
            self.cfg.n_expert,
            self.cfg.n_expert_used,
            self.cfg.expert_ffn,
        );
        let mut logits = vec![0f32; n * ne];
        self.router.matmul(x, n, &mut logits);
        // Per token: its experts in rank order and their weights.
        let mut chosen = vec![(0usize, 0f32); n * k];
        for (t, row) in logits.chunks_exact(ne).enumerate() {
            let sel = &mut chosen[t * k..(t + 1) * k];
            route(row, self.cfg.norm_topk_prob, sel);
        }
        // The (token, rank) slots sorted by expert, in token order within an expert: expert
        // `e` has the positions `start[e]..start[e + 1]`, slot `s` position `pos[s]`.
        let mut start = vec![0usize; ne + 1];
        for &(e, _) in &chosen {
            start[e + 1] += 1;
        }
        for e in 0..ne {
            start[e + 1] += start[e];
        }
        let mut pos = vec![0usize; n * k];
        let mut order = vec![0usize; n * k];
        let mut fill = start.clone();
        for (slot, &(e, _)) in chosen.iter().enumerate() {
            pos[slot] = fill[e];
            order[fill[e]] = slot;
            fill[e] += 1;
        }
        // The experts in use, most tokens first (ties to the lower index), one task each on
        // the pass's threads: each runs its three matmuls serially (`team::in_chunk`), so a
        // step costs one parallel loop rather than three per expert, and the longest tasks
        // go first. Expert outputs land at their slots' positions in `y`.
        let mut used: Vec<usize> = (0..ne).filter(|&e| start[e + 1] > start[e]).collect();
        used.sort_by_key(|&e| (std::cmp::Reverse(start[e + 1] - start[e]), e));
        // Every position is written by its expert's down projection before it is read.
        y.resize(n * k * h, 0.0);
        let yp = team::SharedMut::new(&mut y[..n * k * h]);
        team::for_each_index(used.len(), |i| {
            let e = used[i];
            let (p0, p1) = (start[e], start[e + 1]);
            let m = p1 - p0;
            let mut xs = Vec::with_capacity(m * h);
            for &s in &order[p0..p1] {
                let t = s / k;
                xs.extend_from_slice(&x[t * h..(t + 1) * h]);
            }
            let mut g = vec![0f32; m * ff];
            let mut u = vec![0f32; m * ff];
            let ex = &self.experts[e];
            ex.gate.matmul(&xs, m, &mut g);
            ex.up.matmul(&xs, m, &mut u);
            glu(self.act, &mut g, &u);
            // SAFETY: expert `e` alone writes positions `p0..p1` of `y` (the experts' ranges
            // are disjoint), and `y` is not otherwise used during the loop.
            let ye = unsafe { yp.chunk(p0 * h, p1 * h) };
            ex.down.matmul(&g, m, ye);
        });
        // Each token's weighted sum of its experts' outputs, in rank order.
        team::for_each_chunk_mut(&mut out[..n * h], 16 * h, |c, run| {
            for (i, o) in run.chunks_exact_mut(h).enumerate() {
                let t = 16 * c + i;
                o.fill(0.0);
                for j in 0..k {
                    let s = t * k + j;
                    let wgt = chosen[s].1;
                    let ys = &y[pos[s] * h..(pos[s] + 1) * h];
                    for (a, b) in o.iter_mut().zip(ys) {
                        *a += wgt * b;
                    }
                }
            }
        });
    }
}

/// The top `sel.len()` experts of one token's router logits with their softmax weights,
/// highest first (ties to the lower index), renormalised to sum to 1 if `norm`.
fn route(logits: &[f32], norm: bool, sel: &mut [(usize, f32)]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let probs: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = probs.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    for (s, &e) in sel.iter_mut().zip(&order) {
        *s = (e, probs[e] / sum);
    }
    if norm {
        let total: f32 = sel.iter().map(|s| s.1).sum();
        for s in sel.iter_mut() {
            s.1 /= total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn route_takes_the_top_k_in_order_and_renormalises() {
        let logits = [0.0, 2.0, 1.0, 2.0];
        let mut sel = [(0, 0.0); 2];
        route(&logits, false, &mut sel);
        let z: f32 = logits.iter().map(|l| (l - 2.0f32).exp()).sum();
        assert_eq!(
            (sel[0].0, sel[1].0),
            (1, 3),
            "ties go to the lower index first"
        );
        assert!((sel[0].1 - 1.0 / z).abs() < 1e-6);
        route(&logits, true, &mut sel);
        assert!((sel[0].1 - 0.5).abs() < 1e-6 && (sel[1].1 - 0.5).abs() < 1e-6);
    }
}
