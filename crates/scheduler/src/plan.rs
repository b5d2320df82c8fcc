//! The scheduler's output for one step: plain data the engine turns into a
//! [`ForwardBatch`] without asking the scheduler anything.

use switchyard_core::{BlockId, ForwardBatch, SeqId, SeqInBatch};

/// One sequence's share of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSeq {
    /// The sequence.
    pub id: SeqId,
    /// Token ids to run this step, at positions `context_before..context_before + len`.
    /// A decode is one token; a prefill chunk (or a recompute after preemption) is more.
    pub tokens: Vec<u32>,
    /// Tokens already in the KV cache before this step (computed earlier or found in the
    /// prefix cache).
    pub context_before: usize,
    /// The whole block table of KV group 0 after this step's allocation; covers exactly
    /// `context_before + tokens.len()` positions.
    pub block_table: Vec<BlockId>,
    /// The tables of KV groups 1.. (empty with one group), covering the same positions; a
    /// sliding group's entries before its window are [`BlockId::NULL`].
    pub group_tables: Vec<Vec<BlockId>>,
    /// This step reaches the end of the known tokens: the engine must sample one token for this
    /// sequence and report it to [`update`](crate::Scheduler::update).
    pub samples: bool,
    /// Prompt tokens found in the prefix cache when the request was admitted in this step
    /// (0 for a request that was already running).
    pub num_cached_tokens: usize,
    /// Draft tokens at the end of `tokens` (speculative decoding): the step verifies them, and
    /// the engine samples from each of the last `num_draft + 1` positions in turn, reporting the
    /// accepted draft tokens and the token after them.
    pub num_draft: usize,
}

/// Counters describing a step, taken when it was planned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCounters {
    /// Tokens in the plan (≤ `max_num_batched_tokens`).
    pub num_scheduled_tokens: usize,
    /// Prefix-cache tokens reused by requests admitted in this step.
    pub num_cached_tokens: usize,
    /// Requests running after planning.
    pub num_running: usize,
    /// Requests waiting after planning.
    pub num_waiting: usize,
    /// Free blocks after planning.
    pub num_free_blocks: usize,
}

/// Everything the engine needs for one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// Scheduled sequences: those already running (in admission order), then newly admitted
    /// ones (in queue order). Output rows for [`samples`](ScheduledSeq::samples) sequences come
    /// in this order.
    pub seqs: Vec<ScheduledSeq>,
    /// Requests preempted while planning this step: their blocks are freed and they wait to be
    /// recomputed. Drop any per-sequence state kept for them.
    pub preempted: Vec<SeqId>,
    /// Requests that finished in the `update` calls since the previous plan.
    pub finished: Vec<SeqId>,
    /// Requests aborted since the previous plan.
    pub aborted: Vec<SeqId>,
    /// Counters.
    pub counters: StepCounters,
}

impl StepPlan {
    /// No sequence runs in this step.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Total tokens in the step.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }

    /// The requests that sample in this step, in output-row order.
    pub fn sampling_ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.iter().filter(|s| s.samples).map(|s| s.id)
    }

    /// The packed batch for the backend: tokens flattened in plan order, positions
    /// `context_before..`, and one logits row (the sequence's last token) for each sequence that
    /// samples, plus one per draft token before it.
    ///
    /// # Panics
    /// If a position does not fit in a `u32`.
    pub fn to_forward_batch(&self) -> ForwardBatch {
        let n = self.num_tokens();
        let mut batch = ForwardBatch {
            token_ids: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
            seqs: Vec::with_capacity(self.seqs.len()),
            logits_indices: Vec::new(),
        };
        for s in &self.seqs {
            let start = batch.token_ids.len();
            batch.token_ids.extend_from_slice(&s.tokens);
            batch.positions.extend(
                (s.context_before..s.context_before + s.tokens.len())
                    .map(|p| u32::try_from(p).expect("position fits in u32")),
            );
            batch.seqs.push(SeqInBatch {
                start,
                len: s.tokens.len(),
                context_before: s.context_before,
                block_table: s.block_table.clone(),
                group_tables: s.group_tables.clone(),
            });
            if s.samples {
                let end = start + s.tokens.len();
                batch.logits_indices.extend(end - 1 - s.num_draft..end);
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_batch_packs_positions_and_logit_rows() {
        let plan = StepPlan {
            seqs: vec![
                ScheduledSeq {
                    id: SeqId(1),
                    tokens: vec![9],
                    context_before: 5,
                    block_table: vec![BlockId(0), BlockId(1)],
                    group_tables: Vec::new(),
                    samples: true,
                    num_cached_tokens: 0,
                    num_draft: 0,
                },
                ScheduledSeq {
                    id: SeqId(2),
                    tokens: vec![1, 2, 3],
                    context_before: 0,
                    block_table: vec![BlockId(2)],
                    group_tables: Vec::new(),
                    samples: false,
                    num_cached_tokens: 0,
                    num_draft: 0,
                },
                ScheduledSeq {
                    id: SeqId(3),
                    tokens: vec![4, 5],
                    context_before: 4,
                    block_table: vec![BlockId(3), BlockId(4)],
                    group_tables: Vec::new(),
                    samples: true,
                    num_cached_tokens: 4,
                    num_draft: 0,
                },
            ],
            ..StepPlan::default()
        };
        let b = plan.to_forward_batch();
        assert_eq!(b.token_ids, [9, 1, 2, 3, 4, 5]);
        assert_eq!(b.positions, [5, 0, 1, 2, 4, 5]);
        assert_eq!(b.logits_indices, [0, 5]);
        assert_eq!(b.seqs[2].start, 4);
        b.validate(4).unwrap();
        assert_eq!(
            plan.sampling_ids().collect::<Vec<_>>(),
            [SeqId(1), SeqId(3)]
        );
    }
}
