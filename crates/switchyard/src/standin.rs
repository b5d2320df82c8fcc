//! The stand-in backend of `bench engine --standin-step-ms N`: it computes nothing and takes a
//! fixed device time per forward step, so that the benchmark shows how much of the ideal
//! throughput (`sequences / step time`) the engine's own work between steps (scheduling, batch
//! building, sampling, detokenizing, stop checks, streaming) leaves, on any machine, without a
//! GPU. Test and bench only: `serve` never builds it.
//!
//! It offers what the CUDA backend offers, so the engine takes the path it takes on a GPU: one
//! KV group (no [`Backend::kv_groups`]), the CUDA backend's KV bytes per block (sizing the cache
//! as on the GPU; nothing is allocated), the same batch checks, the device argmax
//! ([`Backend::forward_greedy`]) under the CUDA backend's condition (whole rows: not when the
//! tokenizer's vocabulary is shorter than the model's), no hidden states, and logits rows of the
//! model's whole vocabulary otherwise, written into a recycled buffer after the device time as
//! the CUDA read-back writes them.
//!
//! Its answers: the token of a row is a function of its position, taken from ordinary tokens of
//! the vocabulary (never a special token, never EOS), so every request runs its full length.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_core::{
    Backend, BackendCapabilities, BackendError, BlockId, ForwardBatch, GgmlType, KvCacheConfig,
    KvCacheInfo, Logits, ModelConfig,
};
use switchyard_runtime::tokenizer::Tokenizer;

/// How the stand-in waits out its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Wait {
    /// Busy-wait to the deadline: what the CUDA backend's stream synchronize does (the driver's
    /// default scheduling spins while a process has fewer contexts than CPUs), and exact, so the
    /// gap to the ideal is the engine's alone.
    Spin,
    /// `thread::sleep`: a waiting thread that gives its core away (a blocking-sync context);
    /// each step then overshoots by the OS's timer slack and wake-up latency.
    Sleep,
}

impl Wait {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Spin => "spin",
            Wait::Sleep => "sleep",
        }
    }
}

/// What the stand-in did, shared with the benchmark while the engine thread owns the backend.
#[derive(Debug, Default)]
pub(crate) struct StandInStats {
    /// Steps answered with ids ([`Backend::forward_greedy`]).
    pub greedy_steps: AtomicU64,
    /// Steps answered with logits rows ([`Backend::forward`]).
    pub logits_steps: AtomicU64,
    /// Nanoseconds spent inside forward calls (the device time plus any overshoot and read-back).
    pub busy_ns: AtomicU64,
}

impl StandInStats {
    /// (greedy steps, logits steps, nanoseconds inside forward calls) so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.greedy_steps.load(Ordering::Relaxed),
            self.logits_steps.load(Ordering::Relaxed),
            self.busy_ns.load(Ordering::Relaxed),
        )
    }
}

/// Logit of every entry but the chosen one, and of the chosen one.
const COLD: f32 = 0.0;
const HOT: f32 = 1.0;

/// Ordinary tokens the stand-in answers with: at most this many, spread over the vocabulary.
const MAX_TOKENS: usize = 1024;

/// The stand-in backend; see the module documentation.
pub(crate) struct StandIn {
    step: Duration,
    wait: Wait,
    /// The model's vocabulary (logits row length).
    vocab: usize,
    /// KV bytes of one token across all layers, as the CUDA backend stores them (f16 K and V).
    kv_token_bytes: usize,
    /// Ordinary token ids, chosen by position.
    tokens: Vec<u32>,
    /// Blocks of the KV cache, once initialized.
    kv: Option<KvCacheConfig>,
    /// Answer `forward_greedy` (a GPU backend does); `false` leaves every choice to the host.
    device_greedy: bool,
    /// The logits buffer handed back by the engine, reused by the next step.
    spare: Vec<f32>,
    stats: Arc<StandInStats>,
}

/// Ordinary tokens of `tok` below `vocab` (no special token, no EOS), at most [`MAX_TOKENS`],
/// spread evenly over the vocabulary.
pub(crate) fn ordinary_tokens(tok: &Tokenizer, vocab: usize) -> Vec<u32> {
    let limit = tok.vocab_size.min(vocab) as u32;
    let all: Vec<u32> = (0..limit)
        .filter(|&id| !tok.is_special(id) && !tok.eos_ids.contains(&id))
        .collect();
    let stride = all.len().div_ceil(MAX_TOKENS).max(1);
    all.into_iter().step_by(stride).collect()
}

impl StandIn {
    /// A stand-in for `config`'s model answering with `tokens` (see [`ordinary_tokens`]).
    pub fn new(
        config: &ModelConfig,
        tokens: Vec<u32>,
        step: Duration,
        wait: Wait,
    ) -> Result<Self, BackendError> {
        if tokens.is_empty() {
            return Err(BackendError::Unavailable {
                backend: "standin",
                reason: "the vocabulary has no ordinary token to answer with".into(),
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= config.vocab_size) {
            return Err(BackendError::Unavailable {
                backend: "standin",
                reason: format!("token {bad} is outside the vocabulary"),
            });
        }
        Ok(Self {
            step,
            wait,
            vocab: config.vocab_size,
            kv_token_bytes: 2 * config.n_layers * config.kv_dim() * 2,
            tokens,
            kv: None,
            device_greedy: true,
            spare: Vec::new(),
            stats: Arc::default(),
        })
    }

    /// Without the device argmax (every step returns logits rows), for tests.
    #[cfg(test)]
    pub fn without_device_greedy(mut self) -> Self {
        self.device_greedy = false;
        self
    }

    /// The counters the benchmark reads while the engine runs.
    pub fn stats(&self) -> Arc<StandInStats> {
        self.stats.clone()
    }

    /// The token the stand-in answers at `position`.
    pub fn token_at(&self, position: u32) -> u32 {
        self.tokens[position as usize % self.tokens.len()]
    }

    /// The CUDA backend's checks of a batch: consistent, and every block in the cache.
    fn validate(&self, b: &ForwardBatch) -> Result<(), BackendError> {
        let kv = self.kv.ok_or(BackendError::NoKvCache)?;
        b.validate(kv.block_size)
            .map_err(BackendError::InvalidBatch)?;
        for s in &b.seqs {
            if let Some(blk) = s.block_table.iter().find(|b| b.0 as usize >= kv.num_blocks) {
                return Err(BackendError::InvalidBatch(format!(
                    "block {} out of range",
                    blk.0
                )));
            }
        }
        Ok(())
    }

    /// The device's step: returns when `self.step` has passed since `t0`.
    fn run_step(&self, t0: Instant) {
        let deadline = t0 + self.step;
        match self.wait {
            Wait::Spin => {
                while Instant::now() < deadline {
                    std::hint::spin_loop();
                }
            }
            Wait::Sleep => {
                let left = deadline.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    std::thread::sleep(left);
                }
            }
        }
    }

    fn account(&self, t0: Instant, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.busy_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl Backend for StandIn {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            kind: "standin",
            device_name: format!(
                "stand-in, {:.3} ms per step ({})",
                self.step.as_secs_f64() * 1e3,
                self.wait.name()
            ),
            total_memory: None,
            free_memory: None,
            kv_dtypes: vec![GgmlType::F16],
            weight_dtypes: Vec::new(),
            shape_buckets: None,
        }
    }

    fn kv_bytes_per_block(&self, block_size: usize) -> usize {
        block_size * self.kv_token_bytes
    }

    fn init_kv_cache(&mut self, config: KvCacheConfig) -> Result<KvCacheInfo, BackendError> {
        if config.block_size == 0 || config.num_blocks == 0 {
            return Err(BackendError::InvalidBatch(
                "KV cache with zero blocks".into(),
            ));
        }
        self.kv = Some(config);
        Ok(KvCacheInfo {
            block_size: config.block_size,
            num_blocks: config.num_blocks,
            bytes_per_block: self.kv_bytes_per_block(config.block_size),
        })
    }

    fn forward(&mut self, b: &ForwardBatch) -> Result<Logits, BackendError> {
        let t0 = Instant::now();
        self.validate(b)?;
        self.run_step(t0);
        // The read-back: every entry of the rows written, into the recycled buffer.
        let mut data = std::mem::take(&mut self.spare);
        data.clear();
        data.resize(b.logits_indices.len() * self.vocab, COLD);
        for (row, &i) in data.chunks_exact_mut(self.vocab).zip(&b.logits_indices) {
            row[self.token_at(b.positions[i]) as usize] = HOT;
        }
        self.account(t0, &self.stats.logits_steps);
        Ok(Logits {
            vocab: self.vocab,
            data,
        })
    }

    fn recycle_logits(&mut self, logits: Logits) {
        self.spare = logits.data;
    }

    /// As the CUDA backend: ids when the rows are whole (`vocab_limit` covers the vocabulary).
    fn forward_greedy(
        &mut self,
        b: &ForwardBatch,
        vocab_limit: usize,
    ) -> Option<Result<Vec<u32>, BackendError>> {
        if !self.device_greedy || vocab_limit < self.vocab {
            return None;
        }
        let t0 = Instant::now();
        Some(self.validate(b).map(|()| {
            self.run_step(t0);
            let ids = b
                .logits_indices
                .iter()
                .map(|&i| self.token_at(b.positions[i]))
                .collect();
            self.account(t0, &self.stats.greedy_steps);
            ids
        }))
    }

    fn copy_blocks(&mut self, pairs: &[(BlockId, BlockId)]) -> Result<(), BackendError> {
        let kv = self.kv.ok_or(BackendError::NoKvCache)?;
        match pairs
            .iter()
            .find(|(s, d)| s.0 as usize >= kv.num_blocks || d.0 as usize >= kv.num_blocks)
        {
            Some((s, d)) => Err(BackendError::InvalidBatch(format!(
                "block copy {s:?} -> {d:?} out of range"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "standin_tests.rs"]
mod tests;
