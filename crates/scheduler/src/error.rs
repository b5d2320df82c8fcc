//! Typed errors of the scheduler: bad configuration, rejected requests, protocol misuse in
//! `update`, and internal invariant violations found by `check_invariants`.

use switchyard_core::SeqId;
use thiserror::Error;

/// A [`SchedulerConfig`](crate::SchedulerConfig) that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A size or limit was zero.
    #[error("scheduler config: {field} must be at least 1")]
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// No KV cache group.
    #[error("scheduler config: kv_groups must name at least one KV cache group")]
    NoKvGroups,
    /// More blocks than a [`BlockId`](switchyard_core::BlockId) can name.
    #[error("scheduler config: num_blocks {num_blocks} does not fit in a u32 block id")]
    TooManyBlocks {
        /// The configured block count.
        num_blocks: usize,
    },
}

/// Why [`Scheduler::add_request`](crate::Scheduler::add_request) refused a request. The
/// scheduler's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddRequestError {
    /// A request with this id is already waiting or running.
    #[error("request {} is already queued or running", .id.0)]
    DuplicateId {
        /// The id.
        id: SeqId,
    },
    /// The prompt has no tokens (there would be nothing to compute logits from).
    #[error("request {}: the prompt is empty", .id.0)]
    EmptyPrompt {
        /// The id.
        id: SeqId,
    },
    /// `max_tokens` was 0.
    #[error("request {}: max_tokens must be at least 1", .id.0)]
    ZeroMaxTokens {
        /// The id.
        id: SeqId,
    },
    /// Even alone, the request could outgrow the whole KV pool (so it could never finish).
    #[error(
        "request {}: prompt of {prompt_len} tokens with max_tokens {max_tokens} needs up to \
         {needed_tokens} KV slots but the pool holds {capacity_tokens}; shorten the prompt or \
         lower max_tokens",
        .id.0
    )]
    TooLong {
        /// The id.
        id: SeqId,
        /// Prompt length in tokens.
        prompt_len: usize,
        /// Requested `max_tokens`.
        max_tokens: usize,
        /// `prompt_len + max_tokens - 1`: the last sampled token is never fed back.
        needed_tokens: usize,
        /// [`SchedulerConfig::capacity_tokens`](crate::SchedulerConfig::capacity_tokens):
        /// `num_blocks * block_size` with one full KV group.
        capacity_tokens: usize,
    },
}

/// [`Scheduler::update`](crate::Scheduler::update) was given outputs that do not match the
/// plan. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpdateError {
    /// An output for a live request that did not sample in this plan.
    #[error("request {} did not sample in this step but an output was given for it", .id.0)]
    UnexpectedOutput {
        /// The id.
        id: SeqId,
    },
    /// A live request sampled in this plan but no output was given for it.
    #[error("request {} sampled in this step but no output was given for it", .id.0)]
    MissingOutput {
        /// The id.
        id: SeqId,
    },
    /// Two outputs for one request that ran no draft, more than its draft allows, or outputs
    /// before the last that are not its draft's tokens in order.
    #[error("request {} has more outputs in this step than its draft allows", .id.0)]
    DuplicateOutput {
        /// The id.
        id: SeqId,
    },
}

/// An internal inconsistency found by a `check_invariants` method (a scheduler bug).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("scheduler invariant violated: {0}")]
pub struct InvariantViolation(pub String);
