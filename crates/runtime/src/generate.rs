//! Single-sequence generation over any backend (the simple path used by `switchyard generate`
//! and the correctness tests; the continuous-batching engine drives the same `Backend` API).

use std::time::{Duration, Instant};

use switchyard_core::{
    Backend, BackendError, BlockId, ForwardBatch, KvCacheConfig, SamplingParams, SeqInBatch,
};

use crate::sampling::Sampler;
use crate::tokenizer::{IncrementalDecoder, Tokenizer, TokenizerError};

/// Tokens per KV block.
pub const BLOCK_SIZE: usize = 16;
/// Longest prefill chunk per forward call.
pub const PREFILL_CHUNK: usize = 512;

/// Errors during generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Backend failure.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Tokenizer failure.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence token.
    Eos,
    /// `max_tokens` reached.
    Length,
}

/// Timing and counts of one generation.
#[derive(Debug, Clone)]
pub struct GenerateStats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Time of the prefill (including the first sampled token).
    pub prefill: Duration,
    /// Time of all later decode steps.
    pub decode: Duration,
    /// Why it stopped.
    pub finish: Finish,
}

/// Runs one sequence: prefill in chunks, then decode token by token.
pub struct Session<'a> {
    backend: &'a mut dyn Backend,
    ctx: usize,
    blocks: Vec<BlockId>,
}

impl<'a> Session<'a> {
    /// Allocates a KV cache for `max_context` tokens on `backend`.
    pub fn new(backend: &'a mut dyn Backend, max_context: usize) -> Result<Self, BackendError> {
        let n = max_context.div_ceil(BLOCK_SIZE).max(1);
        backend.init_kv_cache(KvCacheConfig {
            block_size: BLOCK_SIZE,
            num_blocks: n,
        })?;
        Ok(Self {
            backend,
            ctx: 0,
            blocks: (0..n as u32).map(BlockId).collect(),
        })
    }

    /// Tokens in the cache.
    pub fn context_len(&self) -> usize {
        self.ctx
    }

    /// Appends `tokens`, returning logits for the rows `want(i)` selects (i indexes `tokens`),
    /// delivered through `on_logits(i, row)`.
    pub fn feed(
        &mut self,
        tokens: &[u32],
        mut want: impl FnMut(usize) -> bool,
        mut on_logits: impl FnMut(usize, &[f32]),
    ) -> Result<(), GenerateError> {
        if self.ctx + tokens.len() > self.blocks.len() * BLOCK_SIZE {
            return Err(GenerateError::Invalid(format!(
                "context of {} tokens exceeds the {} allocated",
                self.ctx + tokens.len(),
                self.blocks.len() * BLOCK_SIZE
            )));
        }
        for (ci, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let base = ci * PREFILL_CHUNK;
            let idx: Vec<usize> = (0..chunk.len()).filter(|&i| want(base + i)).collect();
            let batch = ForwardBatch {
                token_ids: chunk.to_vec(),
                positions: (self.ctx..self.ctx + chunk.len())
                    .map(|p| p as u32)
                    .collect(),
                seqs: vec![SeqInBatch {
                    start: 0,
                    len: chunk.len(),
                    context_before: self.ctx,
                    block_table: self.blocks[..(self.ctx + chunk.len()).div_ceil(BLOCK_SIZE)]
                        .to_vec(),
                    group_tables: Vec::new(),
                }],
                logits_indices: idx.clone(),
            };
            let logits = self.backend.forward(&batch)?;
            self.ctx += chunk.len();
            for (r, &i) in idx.iter().enumerate() {
                on_logits(base + i, logits.row(r));
            }
        }
        Ok(())
    }
}

/// Generates up to `max_tokens` after `prompt`, calling `on_text` with each text delta.
pub fn generate(
    backend: &mut dyn Backend,
    tok: &Tokenizer,
    prompt: &[u32],
    max_tokens: usize,
    params: SamplingParams,
    mut on_token: impl FnMut(u32, &str),
) -> Result<GenerateStats, GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::Invalid("empty prompt".into()));
    }
    let mut sess = Session::new(backend, prompt.len() + max_tokens)?;
    let mut sampler = Sampler::new(params, prompt);
    let mut dec = IncrementalDecoder::new(true);
    let t0 = Instant::now();
    let mut last: Option<Vec<f32>> = None;
    let n = prompt.len();
    sess.feed(prompt, |i| i + 1 == n, |_, row| last = Some(row.to_vec()))?;
    let mut prefill = t0.elapsed();
    let t1 = Instant::now();
    let mut produced = 0;
    let mut finish = Finish::Length;
    while produced < max_tokens {
        let mut logits = last.take().expect("logits of the last position");
        sampler.process(&mut logits);
        let id = sampler.sample(&logits);
        sampler.accept(id);
        produced += 1;
        if produced == 1 {
            prefill = t0.elapsed();
        }
        if tok.eos_ids.contains(&id) {
            finish = Finish::Eos;
            break;
        }
        let text = dec.push(tok, id)?;
        on_token(id, &text);
        if produced == max_tokens {
            break;
        }
        sess.feed(&[id], |_| true, |_, row| last = Some(row.to_vec()))?;
    }
    let tail = dec.flush(tok)?;
    if !tail.is_empty() {
        on_token(u32::MAX, &tail);
    }
    let decode = t1.elapsed().saturating_sub(prefill.saturating_sub(t1 - t0));
    Ok(GenerateStats {
        prompt_tokens: n,
        completion_tokens: produced,
        prefill,
        decode,
        finish,
    })
}
