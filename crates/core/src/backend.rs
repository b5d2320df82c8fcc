//! The trait every execution backend (CPU, CUDA, Neuron) implements.

use crate::{ForwardBatch, GgmlType, KvGroupSpec, Logits};

/// What a backend is and can do, given to the engine as data.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendCapabilities {
    /// Backend kind (`cpu`, `cuda`, `neuron`).
    pub kind: &'static str,
    /// Human-readable device name (CPU model, GPU name).
    pub device_name: String,
    /// Total device memory in bytes, if known.
    pub total_memory: Option<u64>,
    /// Free device memory in bytes, if known.
    pub free_memory: Option<u64>,
    /// Element types the KV cache can use.
    pub kv_dtypes: Vec<GgmlType>,
    /// Weight element types the backend executes directly.
    pub weight_dtypes: Vec<GgmlType>,
    /// Static shapes the backend must be given, as (max sequences, max tokens) buckets;
    /// `None` when any shape works.
    pub shape_buckets: Option<Vec<(usize, usize)>>,
}

/// How to size the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheConfig {
    /// Tokens per block.
    pub block_size: usize,
    /// Number of blocks.
    pub num_blocks: usize,
}

/// What the backend allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheInfo {
    /// Tokens per block.
    pub block_size: usize,
    /// Number of blocks.
    pub num_blocks: usize,
    /// Bytes of KV memory per block across all layers.
    pub bytes_per_block: usize,
}

/// Errors a backend reports.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend is not compiled in or its device/driver is missing.
    #[error("backend {backend} unavailable: {reason}")]
    Unavailable {
        /// Backend kind.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// A weight the model needs is absent.
    #[error("missing tensor {0}")]
    MissingTensor(String),
    /// A weight has a type or shape the backend cannot use.
    #[error("tensor {name}: {reason}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The batch is malformed.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The KV cache was used before `init_kv_cache`.
    #[error("KV cache not initialized")]
    NoKvCache,
    /// Allocation failed.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A device-level failure.
    #[error("device error: {0}")]
    Device(String),
}

/// An execution backend: owns the weights in its preferred layout and the paged KV cache, and
/// runs one packed batch of many sequences per call.
pub trait Backend: Send {
    /// What this backend is.
    fn capabilities(&self) -> BackendCapabilities;

    /// Bytes of KV cache one block of `block_size` tokens takes across all layers.
    fn kv_bytes_per_block(&self, block_size: usize) -> usize;

    /// (Re)allocates the KV cache; any previous contents are dropped. One block holds the K/V of
    /// every layer: one KV group, one block table per sequence.
    fn init_kv_cache(&mut self, config: KvCacheConfig) -> Result<KvCacheInfo, BackendError>;

    /// The KV cache groups this backend can run (see [`KvGroupSpec`]): every layer in exactly
    /// one group, all groups of the same number of layers, group 0 full whenever the model has
    /// a full-attention layer. `None` (the default): only the single group of
    /// [`init_kv_cache`](Self::init_kv_cache).
    fn kv_groups(&self) -> Option<Vec<KvGroupSpec>> {
        None
    }

    /// (Re)allocates the KV cache for `groups` (as given by [`kv_groups`](Self::kv_groups)):
    /// `config.num_blocks` blocks, each holding one group's layers, shared by all groups; the
    /// batches then carry one table per group ([`SeqInBatch::group_tables`](crate::SeqInBatch)).
    /// The default accepts only a single group and calls `init_kv_cache`.
    fn init_kv_cache_groups(
        &mut self,
        config: KvCacheConfig,
        groups: &[KvGroupSpec],
    ) -> Result<KvCacheInfo, BackendError> {
        if groups.len() > 1 {
            return Err(BackendError::Unavailable {
                backend: self.capabilities().kind,
                reason: format!("{} KV cache groups are not supported", groups.len()),
            });
        }
        self.init_kv_cache(config)
    }

    /// Runs all tokens of the batch, writing their K/V into the cache at the slots given by each
    /// sequence's block table, and returns logits for `batch.logits_indices`.
    fn forward(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError>;

    /// Runs the batch like [`forward`](Self::forward) but returns, for each logits row, the
    /// index of its largest value among the first `vocab_limit` (the first index on ties, as
    /// `argmax` on the host), chosen where the logits are: a greedy step then moves one id per
    /// row instead of a vocabulary of floats (16 MiB per step at 16 rows of Gemma's 262,144).
    /// `None` when the backend has no such path for this call (the default); the engine then
    /// calls `forward` and chooses on the host.
    fn forward_greedy(
        &mut self,
        batch: &ForwardBatch,
        vocab_limit: usize,
    ) -> Option<Result<Vec<u32>, BackendError>> {
        let _ = (batch, vocab_limit);
        None
    }

    /// Runs the batch like [`forward`](Self::forward) and also returns the final hidden state
    /// (after the output norm: what the output projection reads) of each token at
    /// `hidden_indices` (indices into `batch.token_ids`), row-major
    /// `[hidden_indices.len(), hidden size]`: the input of embedding pooling. `None` when the
    /// backend has no such path (the default; see [`supports_hidden`](Self::supports_hidden)).
    fn forward_hidden(
        &mut self,
        batch: &ForwardBatch,
        hidden_indices: &[usize],
    ) -> Option<Result<(Logits, Vec<f32>), BackendError>> {
        let _ = (batch, hidden_indices);
        None
    }

    /// Whether [`forward_hidden`](Self::forward_hidden) is implemented (the engine refuses
    /// embedding requests otherwise).
    fn supports_hidden(&self) -> bool {
        false
    }

    /// Hands back the logits of an earlier [`forward`](Self::forward) once they are used, so
    /// that a backend may reuse the allocation for the next step instead of zero-filling a new
    /// one (16 rows of Gemma's vocabulary are 16 MiB). The default drops them.
    fn recycle_logits(&mut self, logits: Logits) {
        drop(logits);
    }

    /// Token slots of padding added so far to fit static shapes (Neuron's compiled buckets);
    /// 0 for backends that run any shape.
    fn padding_tokens(&self) -> u64 {
        0
    }

    /// Copies the contents of KV blocks `src[i]` to `dst[i]` (copy-on-write for shared blocks).
    fn copy_blocks(
        &mut self,
        pairs: &[(crate::BlockId, crate::BlockId)],
    ) -> Result<(), BackendError>;
}
