//! The continuous-batching engine: one thread owns the [`Scheduler`], the backend, the
//! tokenizer and every request's sampling state; the HTTP server and the CLI reach it only
//! through an [`EngineHandle`] (messages over a channel).
//!
//! # One step
//! `schedule()` → [`StepPlan::to_forward_batch`](switchyard_scheduler::StepPlan::to_forward_batch)
//! (plus logits rows for prompt logprobs) → `Backend::forward` → for each sequence that samples:
//! its own [`Sampler`](crate::sampling::Sampler) (`process`, `sample`, `accept`; a per-request
//! seeded RNG, so results do not depend on what else is in the batch), stop checks (EOS, stop
//! token ids, stop strings across token boundaries, `min_tokens`), incremental detokenization
//! → `Scheduler::update` → outputs sent to the request streams. Between steps the engine
//! drains its command channel (submit, cancel, stats, shutdown); when idle it blocks on it.
//!
//! # Failures
//! A backend error fails the requests of that step (each stream gets an
//! [`EngineError::Backend`]) and the engine goes on; a panic while processing one request's
//! output fails only that request ([`EngineError::Internal`]).
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use switchyard_runtime::engine::{EngineConfig, EngineHandle, EngineRequest};
//! # fn backend_for(_: &switchyard_runtime::Model) -> Box<dyn switchyard_core::Backend> { unimplemented!() }
//! let model = switchyard_runtime::Model::load("gemma-3-270m", false).unwrap();
//! let backend = backend_for(&model); // e.g. Box::new(CpuBackend::load(..)?)
//! let tokenizer = Arc::new(model.tokenizer);
//! let engine =
//!     EngineHandle::start(backend, tokenizer.clone(), &model.config, EngineConfig::default())
//!         .unwrap();
//! let prompt = tokenizer.encode("The capital of France is", true).unwrap();
//! let stream = engine.submit(EngineRequest::new(prompt, 8)).unwrap();
//! let choices = stream.collect_blocking().unwrap();
//! println!("{}", choices[0].text);
//! ```

mod draft;
mod embed;
mod handle;
pub mod speculative;
pub mod stop;
mod types;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use switchyard_core::{Backend, BackendError, KvCacheConfig, KvGroupKind, ModelConfig};
use switchyard_scheduler::{ConfigError, Scheduler, SchedulerConfig};

pub use draft::{check_draft_vocabulary, DraftModel};
pub use handle::{validate_request, EngineHandle, RequestStream, StreamItem};
pub use speculative::{SpeculativeConfig, SpeculativeMethod};
pub use switchyard_core::{FinishReason, StopReason};
pub use types::{
    Completion, EngineError, EngineOutput, EngineRequest, EngineStats, SubmitError, TokenLogprob,
    Usage, MAX_LOGPROBS, MAX_N,
};

use crate::tokenizer::Tokenizer;

/// How much memory the KV cache gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvCacheSize {
    /// Exactly this many blocks.
    Blocks(usize),
    /// This many bytes.
    Bytes(u64),
    /// This fraction (`0..=1`) of the backend's free memory at start-up.
    FractionOfFree(f64),
    /// [`DEFAULT_KV_BYTES`], but at most half the backend's free memory, and no more than
    /// `max_num_seqs` sequences of `max_model_len` tokens need.
    Auto,
}

/// KV memory of [`KvCacheSize::Auto`] when the backend has room: 4 GiB.
pub const DEFAULT_KV_BYTES: u64 = 4 << 30;

/// Sizes and limits of the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV cache size.
    pub kv_cache: KvCacheSize,
    /// Token budget of one step (prefill chunks and decodes together).
    pub max_num_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Reuse KV blocks of shared prompt prefixes.
    pub enable_prefix_caching: bool,
    /// Longest sequence (prompt + max_tokens) served; `None`: the model's context length.
    pub max_model_len: Option<usize>,
    /// Split the KV cache into the backend's KV groups ([`Backend::kv_groups`]) so that
    /// sliding-window layers (Gemma 3) keep only their window's blocks. Off, or on a backend
    /// without groups: one group, every block holding every layer.
    pub sliding_window_kv: bool,
    /// Speculative decoding (n-gram or draft-model drafts verified in the decode step);
    /// `None`: off. A draft model is loaded by the caller and given to
    /// [`EngineHandle::start_with_draft`].
    pub speculative: Option<SpeculativeConfig>,
}

impl Default for EngineConfig {
    /// Block size 16, automatic KV size, 512 tokens per step (a CPU with few cores gains
    /// little from larger steps and keeps inter-token latency lower), 64 sequences, prefix
    /// caching and sliding-window KV savings on.
    fn default() -> Self {
        Self {
            block_size: 16,
            kv_cache: KvCacheSize::Auto,
            max_num_batched_tokens: 512,
            max_num_seqs: 64,
            enable_prefix_caching: true,
            max_model_len: None,
            sliding_window_kv: true,
            speculative: None,
        }
    }
}

/// What the engine runs with, decided at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineInfo {
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the pool.
    pub num_blocks: usize,
    /// Bytes of one KV block (the layers of one KV group).
    pub bytes_per_block: usize,
    /// KV cache groups: 1 unless sliding-window savings are on and the model has them.
    pub num_kv_groups: usize,
    /// Most blocks one sequence of `max_model_len` tokens holds at once (over all groups).
    pub blocks_per_seq: usize,
    /// Longest sequence served (prompt + max_tokens).
    pub max_model_len: usize,
    /// Rows of the logits (the model's vocabulary).
    pub vocab_size: usize,
    /// Token budget of one step.
    pub max_num_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Whether prefix caching is on.
    pub enable_prefix_caching: bool,
    /// Whether the backend computes embeddings ([`Backend::supports_hidden`]).
    pub embeddings: bool,
    /// Length of an embedding (the model's hidden size).
    pub hidden_size: usize,
    /// Speculative decoding, if on.
    pub speculative: Option<SpeculativeConfig>,
    /// Blocks of the draft model's KV cache (`draft_model` speculative decoding; 0 without).
    pub draft_num_blocks: usize,
    /// Bytes of one block of the draft model's KV cache (all its layers; 0 without).
    pub draft_bytes_per_block: usize,
}

impl EngineInfo {
    /// How many sequences of `max_model_len` tokens fit in the KV pool at once.
    pub fn max_concurrency(&self) -> f64 {
        self.num_blocks as f64 / self.blocks_per_seq.max(1) as f64
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A size in [`EngineConfig`] is unusable.
    #[error("engine config: {0}")]
    Config(String),
    /// The scheduler refused the configuration.
    #[error(transparent)]
    Scheduler(#[from] ConfigError),
    /// [`KvCacheSize::FractionOfFree`] on a backend that does not report free memory.
    #[error(
        "backend {backend} does not report its free memory; give the KV cache size in blocks \
         or bytes"
    )]
    NoMemoryInfo {
        /// Backend kind.
        backend: &'static str,
    },
    /// The KV budget is smaller than one block.
    #[error(
        "a KV cache of {bytes} bytes holds no block of {bytes_per_block} bytes; give it more memory"
    )]
    NoBlocks {
        /// Budget.
        bytes: u64,
        /// Size of one block.
        bytes_per_block: usize,
    },
    /// Allocating the KV cache failed.
    #[error("allocating the KV cache: {0}")]
    Backend(#[from] BackendError),
    /// The draft model does not fit the served one (`draft_model` speculative decoding).
    #[error("draft model {name}: {reason}")]
    Draft {
        /// The draft model, as named in the configuration.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The engine thread could not be spawned.
    #[error("spawning the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Number of KV blocks of `bpb` bytes for `config` on `backend`; one sequence of
/// `max_model_len` tokens holds at most `blocks_per_seq` of them.
fn size_kv(
    backend: &dyn Backend,
    config: &EngineConfig,
    bpb: usize,
    blocks_per_seq: usize,
) -> Result<usize, StartError> {
    let bpb = bpb.max(1);
    let caps = backend.capabilities();
    let bytes = match config.kv_cache {
        KvCacheSize::Blocks(n) => return Ok(n),
        KvCacheSize::Bytes(b) => b,
        KvCacheSize::FractionOfFree(f) => {
            if !(0.0..=1.0).contains(&f) {
                return Err(StartError::Config(format!(
                    "KV cache fraction {f} must be in [0, 1]"
                )));
            }
            let free = caps
                .free_memory
                .ok_or(StartError::NoMemoryInfo { backend: caps.kind })?;
            (free as f64 * f) as u64
        }
        KvCacheSize::Auto => {
            let half_free = caps.free_memory.map_or(u64::MAX, |f| f / 2);
            let useful = (config.max_num_seqs as u64)
                .saturating_mul(blocks_per_seq as u64)
                .saturating_mul(bpb as u64);
            DEFAULT_KV_BYTES.min(half_free).min(useful)
        }
    };
    let n = usize::try_from(bytes / bpb as u64).unwrap_or(usize::MAX);
    if n == 0 {
        return Err(StartError::NoBlocks {
            bytes,
            bytes_per_block: bpb,
        });
    }
    Ok(n)
}

impl EngineHandle {
    /// Sizes and allocates the KV cache on `backend`, then starts the engine thread, which
    /// owns the backend from then on. `model` gives the vocabulary size and context length.
    ///
    /// A backend with static shapes (`capabilities().shape_buckets`, e.g. Neuron) bounds the
    /// engine by its largest bucket (most sequences, most tokens): at most that many sequences
    /// and tokens per step, and no sequence longer than its token count (longer requests are
    /// refused at submission with [`SubmitError::ContextTooLong`]).
    ///
    /// A configuration with `"method": "draft_model"` needs [`start_with_draft`](Self::start_with_draft).
    pub fn start(
        backend: Box<dyn Backend>,
        tokenizer: Arc<Tokenizer>,
        model: &ModelConfig,
        config: EngineConfig,
    ) -> Result<EngineHandle, StartError> {
        Self::start_with_draft(backend, tokenizer, model, config, None)
    }

    /// [`start`](Self::start), with the draft model of `draft_model` speculative decoding
    /// (`config.speculative`'s method must be `draft_model` exactly when `draft` is given).
    /// The draft model must have the target's vocabulary ([`check_draft_vocabulary`]). Its KV
    /// cache is a pool of its own, one group of all its layers, in blocks of the same size,
    /// covering as many tokens as the target's pool holds with every layer's K/V (the target's
    /// block count over its KV group count); both pools are sized together out of
    /// `config.kv_cache`'s budget.
    pub fn start_with_draft(
        mut backend: Box<dyn Backend>,
        tokenizer: Arc<Tokenizer>,
        model: &ModelConfig,
        mut config: EngineConfig,
        draft: Option<DraftModel>,
    ) -> Result<EngineHandle, StartError> {
        let wants_draft = config
            .speculative
            .as_ref()
            .and_then(SpeculativeConfig::draft_model_name);
        match (wants_draft, &draft) {
            (Some(name), None) => {
                return Err(StartError::Draft {
                    name: name.to_string(),
                    reason: "speculative method draft_model, but no draft model was loaded \
                             (EngineHandle::start_with_draft takes it)"
                        .into(),
                })
            }
            (None, Some(d)) => {
                return Err(StartError::Draft {
                    name: d.name.clone(),
                    reason: "given, but the speculative method is not draft_model".into(),
                })
            }
            _ => {}
        }
        if let Some(d) = &draft {
            let bad = |reason: String| StartError::Draft {
                name: d.name.clone(),
                reason,
            };
            check_draft_vocabulary(&tokenizer, &d.tokenizer).map_err(|e| {
                bad(format!(
                    "its tokenizer differs from the served model's ({e}); a draft model must \
                     share the target's vocabulary"
                ))
            })?;
            if d.backend.capabilities().shape_buckets.is_some() {
                return Err(bad(
                    "its backend runs static shapes only, which the drafter does not build".into(),
                ));
            }
        }
        if config.block_size == 0 {
            return Err(StartError::Config("block_size must be at least 1".into()));
        }
        let mut max_model_len = config
            .max_model_len
            .unwrap_or(model.context_length)
            .min(model.context_length);
        if let Some(buckets) = backend.capabilities().shape_buckets {
            let max_seqs = buckets.iter().map(|b| b.0).max().unwrap_or(0);
            let max_tokens = buckets.iter().map(|b| b.1).max().unwrap_or(0);
            if max_seqs == 0 || max_tokens == 0 {
                return Err(StartError::Config(format!(
                    "the backend's shape buckets {buckets:?} hold no step"
                )));
            }
            config.max_num_seqs = config.max_num_seqs.min(max_seqs);
            config.max_num_batched_tokens = config.max_num_batched_tokens.min(max_tokens);
            max_model_len = max_model_len.min(max_tokens);
            tracing::info!(
                ?buckets,
                max_num_seqs = config.max_num_seqs,
                max_num_batched_tokens = config.max_num_batched_tokens,
                max_model_len,
                "static-shape backend: steps and sequences bounded by the largest bucket"
            );
        }
        if max_model_len < 2 {
            return Err(StartError::Config(format!(
                "max_model_len {max_model_len} leaves no room to generate"
            )));
        }
        // KV groups: a block holds one group's layers (all groups have as many), so it takes
        // that share of the all-layer block (every layer's K/V has the same size).
        let groups = if config.sliding_window_kv {
            backend.kv_groups().filter(|g| g.len() > 1)
        } else {
            None
        };
        let bpb_all = backend.kv_bytes_per_block(config.block_size).max(1);
        let bpb = match &groups {
            Some(g) => {
                let layers: usize = g.iter().map(|x| x.layers.len()).sum();
                (bpb_all * g[0].layers.len() / layers.max(1)).max(1)
            }
            None => bpb_all,
        };
        let mut sched_config = SchedulerConfig {
            block_size: config.block_size,
            num_blocks: 1,
            max_num_batched_tokens: config.max_num_batched_tokens,
            max_num_seqs: config.max_num_seqs,
            enable_prefix_caching: config.enable_prefix_caching,
            kv_groups: groups.as_ref().map_or(vec![KvGroupKind::Full], |g| {
                g.iter().map(|x| x.kind).collect()
            }),
        };
        let blocks_per_seq = sched_config.blocks_per_seq(max_model_len);
        // A draft model's pool has one block of all its layers per `num_groups` target
        // blocks, so its bytes per target block join the target's in the budget.
        let num_groups = sched_config.kv_groups.len();
        let draft_bpb = draft.as_ref().map_or(0, |d| {
            d.backend
                .kv_bytes_per_block(config.block_size)
                .div_ceil(num_groups)
        });
        let num_blocks = size_kv(backend.as_ref(), &config, bpb + draft_bpb, blocks_per_seq)?;
        sched_config.num_blocks = num_blocks;
        let scheduler = Scheduler::new(sched_config.clone())?;
        let kv_config = KvCacheConfig {
            block_size: config.block_size,
            num_blocks,
        };
        let kv = match &groups {
            Some(g) => backend.init_kv_cache_groups(kv_config, g)?,
            None => backend.init_kv_cache(kv_config)?,
        };
        let capacity = sched_config.capacity_tokens();
        let max_concurrency = num_blocks as f64 / blocks_per_seq.max(1) as f64;
        let kv_bytes = num_blocks as u64 * kv.bytes_per_block as u64;
        let layout = match &groups {
            Some(g) => {
                let sliding: Vec<String> = g
                    .iter()
                    .filter_map(|x| match x.kind {
                        KvGroupKind::Sliding { window } => Some(window.to_string()),
                        KvGroupKind::Full => None,
                    })
                    .collect();
                // What the same memory would serve with one block table of all layers.
                let plain_blocks = kv_bytes / bpb_all as u64;
                let plain = (plain_blocks * kv.block_size as u64) as f64 / max_model_len as f64;
                format!(
                    "{} KV groups of {} layers ({} full, {} sliding, windows {}); without \
                     sliding-window savings: {plain_blocks} blocks, {plain:.2} sequences",
                    g.len(),
                    g[0].layers.len(),
                    g.len() - sliding.len(),
                    sliding.len(),
                    sliding.join(","),
                )
            }
            None => "one KV group of all layers".to_string(),
        };
        tracing::info!(
            num_blocks = kv.num_blocks,
            block_size = kv.block_size,
            kv_mib = kv_bytes as f64 / (1 << 20) as f64,
            max_model_len,
            blocks_per_seq,
            "KV cache: {} blocks of {} tokens; a sequence of {max_model_len} tokens holds at most \
             {blocks_per_seq} blocks: at most {max_concurrency:.2} such sequences at once; \
             {layout}",
            kv.num_blocks,
            kv.block_size,
        );
        if capacity.saturating_add(1) < max_model_len {
            tracing::warn!(
                capacity,
                max_model_len,
                "the KV cache holds fewer tokens than max_model_len: serving at most {} tokens \
                 per sequence",
                capacity + 1
            );
        }
        let vocab_limit = tokenizer.vocab_size.min(model.vocab_size);
        let drafter = match draft {
            Some(d) => {
                let (drafter, dkv) = draft::Drafter::new(
                    d.backend,
                    kv.block_size,
                    num_blocks.div_ceil(num_groups),
                    config.max_num_batched_tokens,
                    vocab_limit
                        .min(d.config.vocab_size)
                        .min(d.tokenizer.vocab_size),
                    d.config.context_length,
                )?;
                let draft_bytes = dkv.num_blocks as u64 * dkv.bytes_per_block as u64;
                tracing::info!(
                    draft_model = %d.name,
                    num_blocks = dkv.num_blocks,
                    draft_kv_mib = draft_bytes as f64 / (1 << 20) as f64,
                    target_kv_mib = kv_bytes as f64 / (1 << 20) as f64,
                    "draft model KV cache: {} blocks of {} tokens (one group of all its layers), \
                     {:.1} MiB beside the target's {:.1} MiB, out of the same KV budget",
                    dkv.num_blocks,
                    dkv.block_size,
                    draft_bytes as f64 / (1 << 20) as f64,
                    kv_bytes as f64 / (1 << 20) as f64,
                );
                Some((drafter, dkv))
            }
            None => None,
        };
        let info = EngineInfo {
            block_size: kv.block_size,
            num_blocks: kv.num_blocks,
            bytes_per_block: kv.bytes_per_block,
            num_kv_groups: sched_config.kv_groups.len(),
            blocks_per_seq,
            // The last sampled token is never fed back, so it needs no KV slot.
            max_model_len: max_model_len.min(capacity.saturating_add(1)),
            vocab_size: model.vocab_size,
            max_num_batched_tokens: config.max_num_batched_tokens,
            max_num_seqs: config.max_num_seqs,
            enable_prefix_caching: config.enable_prefix_caching,
            embeddings: backend.supports_hidden(),
            hidden_size: model.hidden,
            speculative: config.speculative.clone(),
            draft_num_blocks: drafter.as_ref().map_or(0, |d| d.1.num_blocks),
            draft_bytes_per_block: drafter.as_ref().map_or(0, |d| d.1.bytes_per_block),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = worker::Worker::new(
            scheduler,
            backend,
            drafter.map(|d| d.0),
            tokenizer.clone(),
            info.clone(),
            rx,
        );
        let thread = std::thread::Builder::new()
            .name("switchyard-engine".into())
            .spawn(move || worker.run())?;
        Ok(EngineHandle::new(tx, tokenizer, info, thread))
    }
}
