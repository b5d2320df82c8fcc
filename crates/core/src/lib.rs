//! Shared vocabulary of Switchyard: ids, model configuration, tensor element types and their
//! reference (scalar) dequantization, sampling parameters, and the [`Backend`] trait that every
//! accelerator backend implements.
//!
//! This crate is deliberately tiny: it depends on nothing heavier than `thiserror` and `half`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
pub mod batch;
pub mod config;
pub mod dtype;
pub mod finish;
pub mod host;
pub mod kv;
pub mod sampling;
pub mod weights;

pub use backend::{Backend, BackendCapabilities, BackendError, KvCacheConfig, KvCacheInfo};
pub use batch::{ForwardBatch, Logits, SeqInBatch};
pub use config::{
    Activation, Architecture, Dims, LayerAttention, LongRope, ModelConfig, MoeConfig, RopeScaling,
    YarnRamp, MAX_LAYERS,
};
pub use dtype::GgmlType;
pub use finish::{FinishReason, StopReason};
pub use kv::{kv_groups_for, KvGroupKind, KvGroupSpec};
pub use sampling::SamplingParams;
pub use weights::{Tensor, WeightBytes, WeightSource};

/// Identifier of one client request for its whole life (all its `n` choices; an engine
/// handle's id for cancelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifier of one sequence: one choice of a request as the scheduler plans it and the
/// engine thread samples it (a request of `n` choices has `n` sequences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// Index of one block of the paged KV cache owned by a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

impl BlockId {
    /// Placeholder in the block table of a sliding-window KV group for a block that has left
    /// the window and was given back to the pool: never read or written.
    pub const NULL: BlockId = BlockId(u32::MAX);

    /// Whether this is [`BlockId::NULL`].
    pub fn is_null(self) -> bool {
        self == Self::NULL
    }
}
