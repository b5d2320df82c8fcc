//! KV cache groups: how a model's layers share the paged KV cache.
//!
//! In the spirit of vLLM v1's hybrid KV cache manager: layers with the same kind of attention
//! (full, or a sliding window of one length) are split into groups of equal size, every block of
//! the shared pool holds the K/V of one group's layers for `block_size` positions, and each
//! sequence has one block table per group. A sliding-window group needs only the blocks that
//! cover the last `window` positions, so its older blocks go back to the pool; a full group
//! keeps every block. With one group of all layers this is the plain paged cache.

use crate::LayerAttention;

/// Attention kind of the layers of one KV cache group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvGroupKind {
    /// Full causal attention: every earlier position is read.
    Full,
    /// Sliding-window attention: a query at position `p` reads keys `p - window + 1 ..= p`.
    Sliding {
        /// Window length in tokens (at least 1).
        window: usize,
    },
}

impl KvGroupKind {
    /// The kind of a layer.
    pub fn of(layer: LayerAttention) -> Self {
        match layer {
            LayerAttention::Global => Self::Full,
            LayerAttention::Sliding { window } => Self::Sliding { window },
        }
    }

    /// First position a query at `pos` (or later) reads.
    pub fn first_read(self, pos: usize) -> usize {
        match self {
            Self::Full => 0,
            Self::Sliding { window } => (pos + 1).saturating_sub(window),
        }
    }
}

/// One KV cache group: its attention kind and its layers (indices into the model's layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvGroupSpec {
    /// Attention kind of every layer of the group.
    pub kind: KvGroupKind,
    /// Layer indices, ascending.
    pub layers: Vec<usize>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Splits `layers` into KV cache groups of equal size: the layers of each attention kind, in
/// order, in chunks of the greatest common divisor of the kinds' layer counts. Full groups come
/// first (so group 0 is a full group whenever the model has one), then sliding ones by window.
/// A model with one kind of attention gets one group of all layers. Gemma 3 270M (15 sliding
/// layers, window 512, and 3 global ones): 6 groups of 3 layers, 1 full and 5 sliding.
pub fn kv_groups_for(layers: &[LayerAttention]) -> Vec<KvGroupSpec> {
    let mut kinds: Vec<(KvGroupKind, Vec<usize>)> = Vec::new();
    for (i, &l) in layers.iter().enumerate() {
        let k = KvGroupKind::of(l);
        match kinds.iter_mut().find(|(kk, _)| *kk == k) {
            Some((_, v)) => v.push(i),
            None => kinds.push((k, vec![i])),
        }
    }
    kinds.sort_by_key(|(k, _)| match *k {
        KvGroupKind::Full => 0,
        KvGroupKind::Sliding { window } => window.max(1),
    });
    let size = kinds.iter().fold(0, |g, (_, v)| gcd(g, v.len()));
    kinds
        .into_iter()
        .flat_map(|(kind, v)| {
            v.chunks(size.max(1))
                .map(|c| KvGroupSpec {
                    kind,
                    layers: c.to_vec(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_270m_layout_gives_six_groups_of_three() {
        let layers: Vec<LayerAttention> = (0..18)
            .map(|i| {
                if (i + 1) % 6 == 0 {
                    LayerAttention::Global
                } else {
                    LayerAttention::Sliding { window: 512 }
                }
            })
            .collect();
        let g = kv_groups_for(&layers);
        assert_eq!(g.len(), 6);
        assert_eq!(g[0].kind, KvGroupKind::Full);
        assert_eq!(g[0].layers, [5, 11, 17]);
        assert!(g[1..]
            .iter()
            .all(|x| x.kind == KvGroupKind::Sliding { window: 512 } && x.layers.len() == 3));
        let mut all: Vec<usize> = g.iter().flat_map(|x| x.layers.clone()).collect();
        all.sort();
        assert_eq!(all, (0..18).collect::<Vec<_>>());
    }

    #[test]
    fn one_kind_is_one_group() {
        let g = kv_groups_for(&[LayerAttention::Global; 4]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].layers, [0, 1, 2, 3]);
        // Coprime counts: groups of one layer.
        let mut l = vec![LayerAttention::Global; 2];
        l.extend([LayerAttention::Sliding { window: 4 }; 3]);
        assert_eq!(kv_groups_for(&l).len(), 5);
    }

    #[test]
    fn first_read_follows_the_window() {
        let s = KvGroupKind::Sliding { window: 4 };
        assert_eq!(s.first_read(2), 0);
        assert_eq!(s.first_read(10), 7);
        assert_eq!(KvGroupKind::Full.first_read(10), 0);
    }
}
