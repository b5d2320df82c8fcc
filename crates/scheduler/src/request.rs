//! Requests as the scheduler receives them, the token the engine reports back for each step,
//! and what the scheduler returns when a request finishes.

use switchyard_core::{FinishReason, SeqId, StopReason};

/// A generation request: a tokenized prompt and how many tokens to generate at most. To the
/// scheduler a request is one sequence (the engine adds one per choice of a client's request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Unique among unfinished requests.
    pub id: SeqId,
    /// Prompt token ids; must not be empty.
    pub prompt: Vec<u32>,
    /// Upper bound on generated tokens (at least 1); the scheduler finishes the request with
    /// [`FinishReason::Length`] when it is reached.
    pub max_tokens: usize,
    /// Lower is more important. Default 0.
    pub priority: i32,
    /// Arrival sequence number: FCFS order within a priority (ties broken by id).
    pub arrival: u64,
    /// Compute every prompt position even when a prefix is cached (for prompt logprobs,
    /// which need the logits of every position). Its blocks are still offered to the cache.
    pub skip_prefix_lookup: bool,
    /// Never offer this request's blocks to the prefix cache, and never look its prefix up
    /// (prefill-only work such as embeddings, whose KV nobody reads again): its blocks go
    /// back to the free queue when it finishes.
    pub no_cache: bool,
}

impl Request {
    /// A request with priority 0 and arrival 0 (so FCFS falls back to id order).
    pub fn new(id: SeqId, prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            id,
            prompt,
            max_tokens,
            priority: 0,
            arrival: 0,
            skip_prefix_lookup: false,
            no_cache: false,
        }
    }

    /// Sets the priority (lower is more important).
    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Computes the whole prompt, never reusing cached blocks (see `skip_prefix_lookup`).
    pub fn with_skip_prefix_lookup(mut self, skip: bool) -> Self {
        self.skip_prefix_lookup = skip;
        self
    }

    /// Keeps the request out of the prefix cache entirely (see `no_cache`).
    pub fn with_no_cache(mut self, no_cache: bool) -> Self {
        self.no_cache = no_cache;
        self
    }

    /// Sets the arrival sequence number.
    pub fn with_arrival(mut self, arrival: u64) -> Self {
        self.arrival = arrival;
        self
    }
}

/// The token the engine sampled for one sequence, reported through
/// [`Scheduler::update`](crate::Scheduler::update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledToken {
    /// The sampled token id (it becomes part of the sequence).
    pub token: u32,
    /// Why the engine ends the request after this token (EOS, a stop token or string), if it
    /// does. `max_tokens` is enforced by the scheduler itself, so it needs no reason here.
    pub stop: Option<StopReason>,
}

impl SampledToken {
    /// A token after which generation continues (unless `max_tokens` is reached).
    pub fn token(token: u32) -> Self {
        Self { token, stop: None }
    }

    /// A token that ends the request for `reason` (EOS or a stop condition).
    pub fn stop(token: u32, reason: StopReason) -> Self {
        Self {
            token,
            stop: Some(reason),
        }
    }
}

/// A request that finished in an [`update`](crate::Scheduler::update); its blocks are freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRequest {
    /// The request.
    pub id: SeqId,
    /// Why it finished: [`FinishReason::Stop`] with the reason of its last
    /// [`SampledToken::stop`], or [`FinishReason::Length`] (never `Cancelled`: an aborted
    /// request is not reported).
    pub reason: FinishReason,
    /// Every generated token, in order (including the final one).
    pub output: Vec<u32>,
}
