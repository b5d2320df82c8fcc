//! Embedding requests inside the engine: which of a step's tokens need their final hidden
//! state, and the pooling of those states into one vector.
//!
//! An embedding request is prefill-only work scheduled like any prompt (chunked, in the same
//! steps as generations) and kept out of the prefix cache (its prompt is always computed, so
//! every token's state is seen, and its blocks are freed when it finishes). When its last
//! chunk has run, the engine reports a placeholder token to the scheduler that ends it.

use std::ops::Range;

use crate::pooling::Pooling;

/// One embedding being pooled.
pub(super) struct Embedding {
    pooling: Pooling,
    /// Mean: the sum of the rows seen; last / cls: the row.
    acc: Vec<f32>,
    rows: usize,
}

impl Embedding {
    pub(super) fn new(pooling: Pooling) -> Self {
        Self {
            pooling,
            acc: Vec::new(),
            rows: 0,
        }
    }

    /// The tokens of a chunk (batch offsets `start..start + len`, the first at position
    /// `context_before`; `last`: the chunk ends the prompt) whose hidden states the pooling
    /// reads.
    pub(super) fn rows(
        &self,
        start: usize,
        len: usize,
        context_before: usize,
        last: bool,
    ) -> Range<usize> {
        match self.pooling {
            Pooling::Mean => start..start + len,
            Pooling::Last if last => start + len - 1..start + len,
            Pooling::Cls if context_before == 0 => start..start + 1,
            Pooling::Last | Pooling::Cls => start..start,
        }
    }

    /// Takes the hidden states (`hidden` floats each) that [`rows`](Self::rows) asked for. A
    /// chunk at position 0 starts over (a preempted request is recomputed from its start).
    pub(super) fn add(&mut self, context_before: usize, states: &[f32], hidden: usize) {
        if context_before == 0 {
            self.acc.clear();
            self.rows = 0;
        }
        for row in states.chunks_exact(hidden) {
            match self.pooling {
                Pooling::Mean if !self.acc.is_empty() => {
                    for (a, v) in self.acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
                _ => {
                    self.acc.clear();
                    self.acc.extend_from_slice(row);
                }
            }
            self.rows += 1;
        }
    }

    /// The pooled vector (not normalized).
    pub(super) fn finish(&mut self) -> Vec<f32> {
        let mut v = std::mem::take(&mut self.acc);
        if self.pooling == Pooling::Mean && self.rows > 1 {
            let inv = 1.0 / self.rows as f32;
            v.iter_mut().for_each(|x| *x *= inv);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_over_chunks_and_restarts() {
        let mut e = Embedding::new(Pooling::Mean);
        assert_eq!(e.rows(4, 3, 0, false), 4..7);
        e.add(0, &[1.0, 2.0, 3.0, 4.0], 2);
        e.add(2, &[5.0, 6.0], 2);
        assert_eq!(e.finish(), [3.0, 4.0]);
        // Preempted and recomputed: the second pass replaces the first.
        let mut e = Embedding::new(Pooling::Mean);
        e.add(0, &[9.0, 9.0], 2);
        e.add(0, &[1.0, 1.0, 3.0, 3.0], 2);
        assert_eq!(e.finish(), [2.0, 2.0]);

        let mut e = Embedding::new(Pooling::Last);
        assert_eq!(e.rows(4, 3, 0, false), 4..4);
        assert_eq!(e.rows(4, 3, 5, true), 6..7);
        e.add(5, &[7.0, 8.0], 2);
        assert_eq!(e.finish(), [7.0, 8.0]);

        let e = Embedding::new(Pooling::Cls);
        assert_eq!(e.rows(4, 3, 0, false), 4..5);
        assert_eq!(e.rows(4, 3, 3, true), 4..4);
    }
}
