//! Continuous-batching scheduler of Switchyard: decides, step by step, which tokens of which
//! requests run, and accounts for the paged KV-cache blocks they live in.
//!
//! Pure bookkeeping in the spirit of vLLM v1: no tensors, no I/O, no threads, no knowledge of
//! the backend; the same calls always give the same plans.
//!
//! # Protocol
//! The engine thread owns one [`Scheduler`] and loops:
//! 1. [`Scheduler::add_request`] / [`Scheduler::abort`] for what arrived from clients;
//! 2. [`Scheduler::schedule`] → [`StepPlan`]; [`StepPlan::to_forward_batch`] → backend forward;
//! 3. sample one token for each sequence whose [`ScheduledSeq::samples`] is set (the logits rows
//!    come in plan order) and decide EOS / stop strings;
//! 4. [`Scheduler::update`] with those tokens; it returns the requests that finished. The
//!    scheduler itself finishes a request at `max_tokens` ([`FinishReason::Length`]); the engine
//!    reports EOS and stop strings with [`SampledToken::stop`] and their [`StopReason`]
//!    ([`FinishReason::Stop`]).
//!
//! Prefill and decode are one code path: each running request, then each waiting one, gets
//! `min(tokens still to compute, budget left)` tokens, so long prompts are chunked and never
//! hold back running streams. New requests reuse cached full blocks of their prefix. When
//! blocks run out, the lowest-priority, latest-arrived running request is preempted: its blocks
//! are freed and it is later recomputed from its prompt and generated tokens, so its output is
//! the same as without preemption (sampling state, e.g. RNG, lives in the engine).
//!
//! [`FinishReason::Length`]: switchyard_core::FinishReason::Length
//! [`FinishReason::Stop`]: switchyard_core::FinishReason::Stop
//! [`StopReason`]: switchyard_core::StopReason
//!
//! # Example
//! ```
//! use switchyard_core::SeqId;
//! use switchyard_scheduler::{Request, SampledToken, Scheduler, SchedulerConfig};
//!
//! let config = SchedulerConfig { block_size: 4, num_blocks: 8, max_num_batched_tokens: 6, ..Default::default() };
//! let mut sched = Scheduler::new(config).unwrap();
//! sched.add_request(Request::new(SeqId(1), vec![10, 11, 12, 13, 14, 15, 16, 17], 2)).unwrap();
//!
//! let plan = sched.schedule(); // first chunk of the prompt: 6 tokens, nothing to sample
//! assert_eq!((plan.seqs[0].tokens.len(), plan.seqs[0].samples), (6, false));
//! sched.update(&plan, &[]).unwrap();
//!
//! let plan = sched.schedule(); // the rest of the prompt: sample
//! let batch = plan.to_forward_batch();
//! assert_eq!(batch.positions, [6, 7]);
//! assert_eq!(batch.logits_indices, [1]);
//! sched.update(&plan, &[(SeqId(1), SampledToken::token(99))]).unwrap();
//!
//! let plan = sched.schedule(); // decode the sampled token; max_tokens = 2 ends it
//! assert_eq!(plan.seqs[0].tokens, [99]);
//! let done = sched.update(&plan, &[(SeqId(1), SampledToken::token(5))]).unwrap();
//! assert_eq!(done[0].output, [99, 5]);
//! assert_eq!(sched.num_free_blocks(), 8);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod block_pool;
mod error;
mod hash;
mod plan;
mod request;
mod scheduler;

pub use block_pool::BlockPool;
pub use error::{AddRequestError, ConfigError, InvariantViolation, UpdateError};
pub use hash::{hash_block, hash_full_blocks, BlockHash};
pub use plan::{ScheduledSeq, StepCounters, StepPlan};
pub use request::{FinishedRequest, Request, SampledToken};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerStats};
