//! The packed batch a backend executes in one forward call, and its output.

use crate::BlockId;

/// One sequence's part of a [`ForwardBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqInBatch {
    /// Offset of this sequence's first token in the flattened `token_ids`.
    pub start: usize,
    /// Number of tokens of this sequence in the step (1 for a decode, more for a prefill chunk).
    pub len: usize,
    /// Number of tokens already in the KV cache before this step (the position of the first
    /// token of this step). After the step the cache holds `context_before + len` tokens.
    pub context_before: usize,
    /// The KV blocks of the sequence, in order: block `i` holds positions
    /// `i*block_size .. (i+1)*block_size`. Covers at least `context_before + len` positions.
    pub block_table: Vec<BlockId>,
    /// Block tables of KV cache groups 1.. (see [`KvGroupSpec`](crate::KvGroupSpec));
    /// `block_table` is group 0's. Empty with a single group (every backend that does not
    /// implement [`Backend::kv_groups`](crate::Backend::kv_groups)). Each covers the same
    /// positions as `block_table`; a sliding-window group's table holds [`BlockId::NULL`] for
    /// blocks that left its window.
    pub group_tables: Vec<Vec<BlockId>>,
}

impl SeqInBatch {
    /// The block table of KV cache group `group` (0 is `block_table`).
    ///
    /// # Panics
    /// If the sequence has no table for `group`.
    pub fn table(&self, group: usize) -> &[BlockId] {
        match group {
            0 => &self.block_table,
            g => &self.group_tables[g - 1],
        }
    }
}

/// All tokens of all sequences scheduled in one step, flattened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardBatch {
    /// Token ids of every sequence, concatenated.
    pub token_ids: Vec<u32>,
    /// Absolute position of each token within its sequence.
    pub positions: Vec<u32>,
    /// The sequences, in the order of their tokens.
    pub seqs: Vec<SeqInBatch>,
    /// Indices into `token_ids` whose logits are wanted, in output order.
    pub logits_indices: Vec<usize>,
}

impl ForwardBatch {
    /// Total tokens in the batch.
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Checks the internal consistency of the batch against a block size.
    pub fn validate(&self, block_size: usize) -> Result<(), String> {
        if self.positions.len() != self.token_ids.len() {
            return Err("positions and token_ids differ in length".into());
        }
        let mut next = 0;
        for (i, s) in self.seqs.iter().enumerate() {
            if s.start != next {
                return Err(format!(
                    "sequence {i} starts at {} instead of {next}",
                    s.start
                ));
            }
            if s.len == 0 {
                return Err(format!("sequence {i} has no tokens"));
            }
            next += s.len;
            let needed = (s.context_before + s.len).div_ceil(block_size);
            for (g, t) in std::iter::once(&s.block_table)
                .chain(&s.group_tables)
                .enumerate()
            {
                if t.len() < needed {
                    return Err(format!(
                        "sequence {i} needs {needed} blocks in KV group {g}, has {}",
                        t.len()
                    ));
                }
            }
            for (k, p) in self.positions[s.start..s.start + s.len].iter().enumerate() {
                if *p as usize != s.context_before + k {
                    return Err(format!("sequence {i} token {k} has position {p}"));
                }
            }
        }
        if next != self.token_ids.len() {
            return Err("sequences do not cover all tokens".into());
        }
        if let Some(&bad) = self.logits_indices.iter().find(|&&i| i >= next) {
            return Err(format!("logits index {bad} out of range"));
        }
        Ok(())
    }
}

/// Logits for the rows asked for by `logits_indices`, row-major `[rows, vocab]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Vocabulary size (row length).
    pub vocab: usize,
    /// Row-major data.
    pub data: Vec<f32>,
}

impl Logits {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.vocab).unwrap_or(0)
    }
}
