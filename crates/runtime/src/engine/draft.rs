//! Speculative decoding with a draft model (vLLM's `draft_model` method): a smaller model with
//! the same vocabulary proposes its greedy continuation of each decoding sequence, and the
//! target verifies it in its decode step exactly as it verifies an n-gram draft.
//!
//! The [`Drafter`] owns the draft model's backend and its KV cache: a pool of its own (one KV
//! group of all layers, the target's block size), whose bytes the engine takes out of the KV
//! budget at start-up, with a plain free list. For each sequence it remembers the tokens whose
//! K/V its cache holds (`written`, in position order). Each step it catches every eligible
//! sequence up from the longest prefix `written` shares with the sequence's tokens (after a
//! rejection, what follows the first wrong draft token is computed again), in batches of at
//! most the engine's step budget, takes the greedy choice at each sequence's last token, and
//! then runs up to `k - 1` batched one-token steps for the rest of the draft. A sequence whose
//! blocks the pool cannot hold gets no draft that step; the drafter never fails a request (a
//! draft backend error only costs the step's drafts).

use std::collections::HashMap;

use switchyard_core::{
    Backend, BackendError, BlockId, ForwardBatch, KvCacheConfig, KvCacheInfo, ModelConfig, SeqId,
    SeqInBatch,
};

use crate::tokenizer::Tokenizer;

/// A loaded draft model, handed to
/// [`EngineHandle::start_with_draft`](super::EngineHandle::start_with_draft).
pub struct DraftModel {
    /// How the user named it (for messages).
    pub name: String,
    /// Its backend, loaded on the same kind of device as the target's.
    pub backend: Box<dyn Backend>,
    /// Its tokenizer: must have the target's vocabulary ([`check_draft_vocabulary`]).
    pub tokenizer: Tokenizer,
    /// Its configuration (vocabulary size; context length: no draft token is written past it).
    pub config: ModelConfig,
}

/// Checks that a draft model's tokenizer has the target's vocabulary: the same text for every
/// id both have, and the same BOS. The sizes may differ (a GGUF pads its token list to the
/// model's embedding rows, `[PAD151936]`…, so two sizes of one family can differ in padding);
/// ids only one of them has are never drafted. `Err` says what differs first.
pub fn check_draft_vocabulary(target: &Tokenizer, draft: &Tokenizer) -> Result<(), String> {
    let (a, b) = (target.vocab_size, draft.vocab_size);
    let shared = a.min(b) as u32;
    if let Some(id) = (0..shared).find(|&i| target.token_text(i) != draft.token_text(i)) {
        return Err(format!(
            "vocabularies of {a} and {b} tokens differ at id {id}: {:?} and {:?}",
            target.token_text(id).unwrap_or(""),
            draft.token_text(id).unwrap_or("")
        ));
    }
    if shared == 0 {
        return Err("an empty vocabulary".into());
    }
    if target.bos != draft.bos {
        return Err(format!("BOS ids {:?} and {:?}", target.bos, draft.bos));
    }
    Ok(())
}

/// What the draft cache holds for one sequence.
#[derive(Debug, Default)]
struct DraftSeq {
    /// Its blocks, in position order.
    blocks: Vec<BlockId>,
    /// The tokens whose K/V those blocks hold, from position 0.
    written: Vec<u32>,
}

/// Tokens to run for one sequence, from `context_before`, with the greedy choice wanted at
/// the last one.
struct Work {
    sid: SeqId,
    tokens: Vec<u32>,
    context_before: usize,
}

/// The draft model, its KV cache and what each sequence has in it.
pub(crate) struct Drafter {
    backend: Box<dyn Backend>,
    block_size: usize,
    num_blocks: usize,
    free: Vec<BlockId>,
    seqs: HashMap<SeqId, DraftSeq>,
    /// Most tokens of one draft forward call (the engine's step budget).
    max_batched: usize,
    /// Greedy choices are among the first this many ids (the target's vocabulary limit).
    vocab_limit: usize,
    context_length: usize,
}

/// Length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Drafter {
    /// Allocates the draft model's KV cache: `num_blocks` blocks of `block_size` tokens.
    pub(crate) fn new(
        mut backend: Box<dyn Backend>,
        block_size: usize,
        num_blocks: usize,
        max_batched: usize,
        vocab_limit: usize,
        context_length: usize,
    ) -> Result<(Self, KvCacheInfo), BackendError> {
        let kv = backend.init_kv_cache(KvCacheConfig {
            block_size,
            num_blocks,
        })?;
        // Popped from the end: low ids first.
        let free = (0..kv.num_blocks as u32).rev().map(BlockId).collect();
        Ok((
            Self {
                backend,
                block_size: kv.block_size,
                num_blocks: kv.num_blocks,
                free,
                seqs: HashMap::new(),
                max_batched: max_batched.max(1),
                vocab_limit,
                context_length,
            },
            kv,
        ))
    }

    /// Blocks held by sequences.
    pub(crate) fn blocks_held(&self) -> usize {
        self.num_blocks - self.free.len()
    }

    /// Forgets a sequence (finished, aborted or preempted): its blocks go back to the pool.
    pub(crate) fn release(&mut self, sid: SeqId) {
        if let Some(s) = self.seqs.remove(&sid) {
            self.free.extend(s.blocks.into_iter().rev());
        }
    }

    /// Drafts for each `(sequence, its tokens (prompt and output), most draft tokens)`: the
    /// draft model's greedy continuation, at most `k` tokens (fewer near its context length;
    /// none where the pool has no room or the draft backend fails), in the order given.
    pub(crate) fn propose(&mut self, seqs: &[(SeqId, &[u32], usize)]) -> Vec<Vec<u32>> {
        let mut drafts = vec![Vec::new(); seqs.len()];
        // (index into `seqs`, draft length, tokens already in the cache).
        let mut jobs: Vec<(usize, usize, usize)> = Vec::new();
        for (i, &(sid, tokens, k)) in seqs.iter().enumerate() {
            let len = tokens.len();
            // The last draft token written is at position len + k - 2.
            let k = k.min((self.context_length + 1).saturating_sub(len));
            if len == 0 || k == 0 {
                continue;
            }
            let st = self.seqs.entry(sid).or_default();
            let known = common_prefix(&st.written, tokens).min(len - 1);
            st.written.truncate(known);
            let missing = (len + k - 1)
                .div_ceil(self.block_size)
                .saturating_sub(st.blocks.len());
            if missing > self.free.len() {
                continue;
            }
            st.blocks
                .extend(self.free.drain(self.free.len() - missing..).rev());
            jobs.push((i, k, known));
        }
        if jobs.is_empty() {
            return drafts;
        }
        match self.draft(seqs, &jobs, &mut drafts) {
            Ok(()) => {
                for &(i, k, _) in &jobs {
                    let (sid, tokens, _) = seqs[i];
                    let st = self.seqs.get_mut(&sid).expect("drafted sequence");
                    let known = st.written.len();
                    st.written.extend_from_slice(&tokens[known..]);
                    st.written.extend_from_slice(&drafts[i][..k - 1]);
                }
            }
            Err(e) => {
                // `written` still names only what was in the cache before this call.
                tracing::warn!(error = %e, "draft model failed; no drafts this step");
                drafts.iter_mut().for_each(Vec::clear);
            }
        }
        drafts
    }

    /// Runs the catch-up and the draft steps of `jobs`, filling `drafts`.
    fn draft(
        &mut self,
        seqs: &[(SeqId, &[u32], usize)],
        jobs: &[(usize, usize, usize)],
        drafts: &mut [Vec<u32>],
    ) -> Result<(), BackendError> {
        let work: Vec<Work> = jobs
            .iter()
            .map(|&(i, _, known)| Work {
                sid: seqs[i].0,
                tokens: seqs[i].1[known..].to_vec(),
                context_before: known,
            })
            .collect();
        for (&(i, _, _), id) in jobs.iter().zip(self.run(&work)?) {
            drafts[i].push(id);
        }
        let most = jobs.iter().map(|j| j.1).max().unwrap_or(0);
        for step in 1..most {
            let live: Vec<usize> = jobs.iter().filter(|j| j.1 > step).map(|j| j.0).collect();
            let work: Vec<Work> = live
                .iter()
                .map(|&i| Work {
                    sid: seqs[i].0,
                    tokens: vec![drafts[i][step - 1]],
                    context_before: seqs[i].1.len() + step - 1,
                })
                .collect();
            for (&i, id) in live.iter().zip(self.run(&work)?) {
                drafts[i].push(id);
            }
        }
        Ok(())
    }

    /// Runs `work` (in batches of at most `max_batched` tokens, a long item split over
    /// several) and returns the greedy choice after each item's last token.
    fn run(&mut self, work: &[Work]) -> Result<Vec<u32>, BackendError> {
        let mut out = vec![0; work.len()];
        let mut done = vec![0usize; work.len()];
        let mut next = 0;
        while next < work.len() {
            let mut batch = ForwardBatch::default();
            let mut rows = Vec::new();
            let mut budget = self.max_batched;
            while next < work.len() && budget > 0 {
                let w = &work[next];
                let n = (w.tokens.len() - done[next]).min(budget);
                let start = batch.token_ids.len();
                let ctx = w.context_before + done[next];
                batch
                    .token_ids
                    .extend_from_slice(&w.tokens[done[next]..done[next] + n]);
                batch.positions.extend((ctx..ctx + n).map(|p| p as u32));
                let blocks = &self.seqs[&w.sid].blocks;
                batch.seqs.push(SeqInBatch {
                    start,
                    len: n,
                    context_before: ctx,
                    block_table: blocks[..(ctx + n).div_ceil(self.block_size)].to_vec(),
                    group_tables: Vec::new(),
                });
                done[next] += n;
                budget -= n;
                if done[next] < w.tokens.len() {
                    break;
                }
                batch.logits_indices.push(start + n - 1);
                rows.push(next);
                next += 1;
            }
            for (r, id) in rows.into_iter().zip(self.greedy(&batch)?) {
                out[r] = id;
            }
        }
        Ok(out)
    }

    /// The draft model's greedy choice at each logits row of `batch` (none for a batch
    /// without rows, which only fills the cache).
    fn greedy(&mut self, batch: &ForwardBatch) -> Result<Vec<u32>, BackendError> {
        let rows = batch.logits_indices.len();
        if rows > 0 {
            if let Some(ids) = self.backend.forward_greedy(batch, self.vocab_limit) {
                let ids = ids?;
                if ids.len() != rows || ids.iter().any(|&t| t as usize >= self.vocab_limit) {
                    return Err(BackendError::Device(format!(
                        "draft backend returned {} greedy tokens for {rows} rows, or one past \
                         the vocabulary",
                        ids.len()
                    )));
                }
                return Ok(ids);
            }
        }
        let logits = self.backend.forward(batch)?;
        if logits.rows() != rows {
            return Err(BackendError::Device(format!(
                "draft backend returned {} logits rows for {rows}",
                logits.rows()
            )));
        }
        let limit = self.vocab_limit.min(logits.vocab);
        let ids = logits
            .data
            .chunks_exact(logits.vocab.max(1))
            .map(|row| crate::sampling::argmax(&row[..limit]))
            .collect();
        self.backend.recycle_logits(logits);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests;
