//! The continuous-batching scheduler: one code path for prefill and decode under a per-step
//! token budget, prefix-cache reuse when a request is admitted, and preemption by
//! recomputation when blocks run out.

use std::collections::{BTreeMap, BTreeSet};

use switchyard_core::{BlockId, RequestId};

use crate::block_pool::BlockPool;
use crate::error::{AddRequestError, ConfigError, InvariantViolation, UpdateError};
use crate::hash::{hash_block, BlockHash};
use crate::plan::{ScheduledSeq, StepCounters, StepPlan};
use crate::request::{FinishReason, FinishedRequest, Request, SampledToken};

/// Sizes and limits of a [`Scheduler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Token slots per KV block.
    pub block_size: usize,
    /// Blocks in the pool (the backend's KV cache size).
    pub num_blocks: usize,
    /// Token budget of one step (sum over all scheduled sequences).
    pub max_num_batched_tokens: usize,
    /// Most requests running at once (and so most sequences in one step).
    pub max_num_seqs: usize,
    /// Reuse full KV blocks across requests sharing a prefix.
    pub enable_prefix_caching: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            num_blocks: 1024,
            max_num_batched_tokens: 2048,
            max_num_seqs: 128,
            enable_prefix_caching: true,
        }
    }
}

impl SchedulerConfig {
    /// Checks every size is at least 1 and the block count fits a [`BlockId`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("block_size", self.block_size),
            ("num_blocks", self.num_blocks),
            ("max_num_batched_tokens", self.max_num_batched_tokens),
            ("max_num_seqs", self.max_num_seqs),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if u32::try_from(self.num_blocks).is_err() {
            return Err(ConfigError::TooManyBlocks {
                num_blocks: self.num_blocks,
            });
        }
        Ok(())
    }

    /// KV token slots in the whole pool: the longest sequence (prompt + `max_tokens` - 1) a
    /// request may have.
    pub fn capacity_tokens(&self) -> usize {
        self.num_blocks.saturating_mul(self.block_size)
    }
}

/// Running totals since the scheduler was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Tokens looked up in the prefix cache (the known tokens of every admitted request).
    pub prefix_cache_queries: u64,
    /// Of those, tokens found in the cache (reused instead of computed).
    pub prefix_cache_hits: u64,
    /// Times a running request was preempted.
    pub num_preemptions: u64,
}

/// Queue order: priority, then arrival, then id.
type Key = (i32, u64, RequestId);

#[derive(Debug)]
struct Seq {
    key: Key,
    /// Prompt followed by every generated token.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    /// Leading tokens whose KV is (or, once the current plan runs, will be) in `blocks`.
    num_computed: usize,
    /// Block table; exactly `ceil(num_computed / block_size)` blocks.
    blocks: Vec<BlockId>,
    /// Chained hashes of the leading full blocks of `tokens` (computed lazily).
    hashes: Vec<BlockHash>,
    /// Leading blocks of `blocks` already offered to the prefix cache; never written again.
    num_cached_blocks: usize,
    running: bool,
    /// Never reuse cached blocks for this sequence.
    skip_prefix_lookup: bool,
}

impl Seq {
    fn id(&self) -> RequestId {
        self.key.2
    }

    /// Extends `hashes` to cover every full block within the first `upto` tokens.
    fn extend_hashes(&mut self, block_size: usize, upto: usize) {
        while (self.hashes.len() + 1) * block_size <= upto {
            let i = self.hashes.len();
            let h = hash_block(
                self.hashes.last().copied(),
                &self.tokens[i * block_size..(i + 1) * block_size],
            );
            self.hashes.push(h);
        }
    }
}

/// How a waiting request would be admitted.
struct Admission {
    hits: Vec<BlockId>,
    /// Hits that are currently free (acquiring them takes them off the free queue).
    free_hits: usize,
    num_cached: usize,
    num_new: usize,
    new_blocks: usize,
}

/// Continuous-batching scheduler over a paged KV [`BlockPool`]; see the crate docs for the
/// protocol. Deterministic: the same calls always give the same plans.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    pool: BlockPool,
    seqs: BTreeMap<RequestId, Seq>,
    waiting: BTreeSet<Key>,
    /// Running requests in admission order.
    running: Vec<RequestId>,
    finished_since_plan: Vec<RequestId>,
    aborted_since_plan: Vec<RequestId>,
    stats: SchedulerStats,
}

impl Scheduler {
    /// An empty scheduler with all blocks free.
    pub fn new(config: SchedulerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            pool: BlockPool::new(config.num_blocks, config.block_size),
            config,
            seqs: BTreeMap::new(),
            waiting: BTreeSet::new(),
            running: Vec::new(),
            finished_since_plan: Vec::new(),
            aborted_since_plan: Vec::new(),
            stats: SchedulerStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The block pool (read-only: for metrics and tests).
    pub fn block_pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Queues a request. It is rejected, with nothing changed, if its id is in use, its prompt
    /// is empty, `max_tokens` is 0, or `prompt + max_tokens - 1` tokens exceed the whole pool
    /// (it could then never finish, even alone).
    pub fn add_request(&mut self, request: Request) -> Result<(), AddRequestError> {
        let Request {
            id,
            prompt,
            max_tokens,
            priority,
            arrival,
            skip_prefix_lookup,
        } = request;
        if self.seqs.contains_key(&id) {
            return Err(AddRequestError::DuplicateId { id });
        }
        if prompt.is_empty() {
            return Err(AddRequestError::EmptyPrompt { id });
        }
        if max_tokens == 0 {
            return Err(AddRequestError::ZeroMaxTokens { id });
        }
        let needed_tokens = prompt.len().saturating_add(max_tokens - 1);
        let capacity_tokens = self.config.capacity_tokens();
        if needed_tokens > capacity_tokens {
            return Err(AddRequestError::TooLong {
                id,
                prompt_len: prompt.len(),
                max_tokens,
                needed_tokens,
                capacity_tokens,
            });
        }
        let key = (priority, arrival, id);
        self.waiting.insert(key);
        self.seqs.insert(
            id,
            Seq {
                key,
                prompt_len: prompt.len(),
                tokens: prompt,
                max_tokens,
                num_computed: 0,
                blocks: Vec::new(),
                hashes: Vec::new(),
                num_cached_blocks: 0,
                running: false,
                skip_prefix_lookup,
            },
        );
        Ok(())
    }

    /// Removes a waiting or running request and frees its blocks at once. Returns whether it
    /// was known. An output later given for it to [`update`](Self::update) is ignored.
    pub fn abort(&mut self, id: RequestId) -> bool {
        let Some(seq) = self.seqs.remove(&id) else {
            return false;
        };
        if seq.running {
            self.pool.release(&seq.blocks);
            self.running.retain(|&r| r != id);
        } else {
            self.waiting.remove(&seq.key);
        }
        self.aborted_since_plan.push(id);
        true
    }

    /// Plans the next step.
    ///
    /// Running requests go first, in admission order, then waiting ones in (priority, arrival)
    /// order; each gets `min(tokens still to compute, budget left)` tokens. When a running
    /// request cannot get the blocks it needs, the lowest-priority, latest-arrived running
    /// request is preempted (possibly itself) and the allocation retried; no new request is
    /// admitted in a step that preempted. A waiting request is admitted only if its blocks are
    /// available, preempting running requests of strictly lower priority if need be; otherwise
    /// admission stops (strict queue order). A newly admitted request first reuses the longest
    /// cached prefix of full blocks (never all of its tokens: the last one is always computed).
    pub fn schedule(&mut self) -> StepPlan {
        let mut budget = self.config.max_num_batched_tokens;
        let mut out: Vec<ScheduledSeq> = Vec::new();
        let mut preempted: Vec<RequestId> = Vec::new();

        for id in self.running.clone() {
            if budget == 0 {
                break;
            }
            let Some(seq) = self.seqs.get(&id).filter(|s| s.running) else {
                continue;
            };
            let n = (seq.tokens.len() - seq.num_computed).min(budget);
            if n == 0 {
                continue; // Sampled in a plan whose update has not come yet.
            }
            let target = seq.num_computed + n;
            let scheduled = loop {
                if self.try_grow(id, target) {
                    break true;
                }
                let victim = self.lowest_priority_running().expect("`id` is running");
                budget += self.preempt(victim, &mut out);
                preempted.push(victim);
                if victim == id {
                    break false;
                }
            };
            if scheduled {
                budget -= n;
                let seq = self.seqs.get_mut(&id).expect("running");
                let context_before = seq.num_computed;
                seq.num_computed = target;
                out.push(ScheduledSeq {
                    id,
                    tokens: seq.tokens[context_before..target].to_vec(),
                    context_before,
                    block_table: seq.blocks.clone(),
                    samples: target == seq.tokens.len(),
                    num_cached_tokens: 0,
                });
            }
        }

        if preempted.is_empty() {
            self.admit_waiting(&mut budget, &mut out, &mut preempted);
        }

        StepPlan {
            counters: StepCounters {
                num_scheduled_tokens: out.iter().map(|s| s.tokens.len()).sum(),
                num_cached_tokens: out.iter().map(|s| s.num_cached_tokens).sum(),
                num_running: self.running.len(),
                num_waiting: self.waiting.len(),
                num_free_blocks: self.pool.num_free_blocks(),
            },
            seqs: out,
            preempted,
            finished: std::mem::take(&mut self.finished_since_plan),
            aborted: std::mem::take(&mut self.aborted_since_plan),
        }
    }

    fn admit_waiting(
        &mut self,
        budget: &mut usize,
        out: &mut Vec<ScheduledSeq>,
        preempted: &mut Vec<RequestId>,
    ) {
        while *budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(&key) = self.waiting.first() else {
                break;
            };
            let id = key.2;
            if preempted.contains(&id) {
                break; // Preempted in this very step: not back before the next one.
            }
            let admission = loop {
                let a = self.plan_admission(id, *budget);
                if a.new_blocks + a.free_hits <= self.pool.num_free_blocks() {
                    break Some(a);
                }
                match self.lowest_priority_running() {
                    Some(victim) if self.seqs[&victim].key.0 > key.0 => {
                        *budget += self.preempt(victim, out);
                        preempted.push(victim);
                    }
                    _ => break None,
                }
            };
            let Some(a) = admission else { break };

            self.pool.acquire(&a.hits);
            let new = self
                .pool
                .allocate(a.new_blocks)
                .expect("availability checked above");
            let seq = self.seqs.get_mut(&id).expect("waiting");
            seq.num_cached_blocks = a.hits.len();
            seq.blocks = a.hits;
            seq.blocks.extend(new);
            seq.num_computed = a.num_cached + a.num_new;
            seq.running = true;
            if self.config.enable_prefix_caching {
                self.stats.prefix_cache_queries += seq.tokens.len() as u64;
                self.stats.prefix_cache_hits += a.num_cached as u64;
            }
            *budget -= a.num_new;
            out.push(ScheduledSeq {
                id,
                tokens: seq.tokens[a.num_cached..seq.num_computed].to_vec(),
                context_before: a.num_cached,
                block_table: seq.blocks.clone(),
                samples: seq.num_computed == seq.tokens.len(),
                num_cached_tokens: a.num_cached,
            });
            self.waiting.remove(&key);
            self.running.push(id);
        }
    }

    /// Looks up the cached prefix of a waiting request and sizes its first chunk.
    fn plan_admission(&mut self, id: RequestId, budget: usize) -> Admission {
        let bs = self.config.block_size;
        let seq = self.seqs.get_mut(&id).expect("waiting");
        let len = seq.tokens.len();
        let hits = if self.config.enable_prefix_caching && !seq.skip_prefix_lookup {
            let max_blocks = (len - 1) / bs;
            seq.extend_hashes(bs, max_blocks * bs);
            self.pool
                .find_cached_prefix(&seq.tokens, &seq.hashes[..max_blocks])
        } else {
            Vec::new()
        };
        let num_cached = hits.len() * bs;
        let num_new = (len - num_cached).min(budget);
        Admission {
            free_hits: hits
                .iter()
                .filter(|&&b| self.pool.ref_count(b) == 0)
                .count(),
            new_blocks: (num_cached + num_new).div_ceil(bs) - hits.len(),
            hits,
            num_cached,
            num_new,
        }
    }

    /// Grows a running request's table to cover `target` tokens; `false` if the pool is short.
    fn try_grow(&mut self, id: RequestId, target: usize) -> bool {
        let seq = self.seqs.get_mut(&id).expect("running");
        let needed = target
            .div_ceil(self.config.block_size)
            .saturating_sub(seq.blocks.len());
        if needed == 0 {
            return true;
        }
        match self.pool.allocate(needed) {
            Some(new) => {
                seq.blocks.extend(new);
                true
            }
            None => false,
        }
    }

    fn lowest_priority_running(&self) -> Option<RequestId> {
        self.running
            .iter()
            .copied()
            .max_by_key(|id| self.seqs[id].key)
    }

    /// Frees a running request's blocks and queues it for recomputation (prompt and generated
    /// tokens alike). Removes it from `out` if it was planned already; returns the tokens that
    /// gives back to the budget.
    fn preempt(&mut self, id: RequestId, out: &mut Vec<ScheduledSeq>) -> usize {
        let returned = match out.iter().position(|s| s.id == id) {
            Some(i) => out.remove(i).tokens.len(),
            None => 0,
        };
        let seq = self.seqs.get_mut(&id).expect("running");
        self.pool.release(&seq.blocks);
        seq.blocks.clear();
        seq.num_computed = 0;
        seq.num_cached_blocks = 0;
        seq.running = false;
        self.waiting.insert(seq.key);
        self.running.retain(|&r| r != id);
        self.stats.num_preemptions += 1;
        returned
    }

    /// Takes the results of running `plan`: one sampled token for each live sequence of the
    /// plan that [`samples`](ScheduledSeq::samples) (outputs for aborted requests are ignored).
    /// Newly full blocks become findable in the prefix cache; a request finishes when its token
    /// says [`stop`](SampledToken::stop) or it has `max_tokens` tokens. Call once per plan, in
    /// order. On error nothing changes.
    pub fn update(
        &mut self,
        plan: &StepPlan,
        outputs: &[(RequestId, SampledToken)],
    ) -> Result<Vec<FinishedRequest>, UpdateError> {
        let live: Vec<&ScheduledSeq> = plan
            .seqs
            .iter()
            .filter(|s| {
                self.seqs.get(&s.id).is_some_and(|q| {
                    q.running && q.num_computed >= s.context_before + s.tokens.len()
                })
            })
            .collect();
        let mut wanted: BTreeMap<RequestId, bool> = live
            .iter()
            .filter(|s| s.samples)
            .map(|s| (s.id, false))
            .collect();
        for &(id, _) in outputs {
            match wanted.get_mut(&id) {
                Some(true) => return Err(UpdateError::DuplicateOutput { id }),
                Some(seen) => *seen = true,
                None if self.seqs.contains_key(&id) => {
                    return Err(UpdateError::UnexpectedOutput { id })
                }
                None => {}
            }
        }
        if let Some((&id, _)) = wanted.iter().find(|(_, seen)| !**seen) {
            return Err(UpdateError::MissingOutput { id });
        }

        if self.config.enable_prefix_caching {
            let computed: Vec<(RequestId, usize)> = live
                .iter()
                .map(|s| (s.id, s.context_before + s.tokens.len()))
                .collect();
            for (id, upto) in computed {
                self.cache_computed_blocks(id, upto);
            }
        }

        let mut finished = Vec::new();
        for &(id, sampled) in outputs {
            let Some(seq) = self.seqs.get_mut(&id) else {
                continue;
            };
            seq.tokens.push(sampled.token);
            let reason = if sampled.stop {
                Some(FinishReason::Stop)
            } else if seq.tokens.len() - seq.prompt_len >= seq.max_tokens {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(reason) = reason {
                finished.push(self.finish(id, reason));
            }
        }
        Ok(finished)
    }

    /// Offers the full blocks among the first `upto` computed tokens to the prefix cache.
    fn cache_computed_blocks(&mut self, id: RequestId, upto: usize) {
        let bs = self.config.block_size;
        let seq = self.seqs.get_mut(&id).expect("live");
        let full = upto.min(seq.num_computed) / bs;
        seq.extend_hashes(bs, full * bs);
        for i in seq.num_cached_blocks..full {
            let parent = i.checked_sub(1).map(|p| seq.hashes[p]);
            let tokens = &seq.tokens[i * bs..(i + 1) * bs];
            self.pool
                .cache_full_block(seq.blocks[i], parent, seq.hashes[i], tokens);
        }
        seq.num_cached_blocks = seq.num_cached_blocks.max(full);
    }

    fn finish(&mut self, id: RequestId, reason: FinishReason) -> FinishedRequest {
        let seq = self.seqs.remove(&id).expect("live");
        self.pool.release(&seq.blocks);
        self.running.retain(|&r| r != id);
        self.finished_since_plan.push(id);
        FinishedRequest {
            id,
            reason,
            output: seq.tokens[seq.prompt_len..].to_vec(),
        }
    }

    /// Requests admitted and not finished, preempted or aborted.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Requests queued (new or preempted).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether any request is waiting or running.
    pub fn has_unfinished(&self) -> bool {
        !self.seqs.is_empty()
    }

    /// Whether `id` is waiting or running.
    pub fn contains(&self, id: RequestId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// Tokens generated so far by an unfinished request.
    pub fn output_tokens(&self, id: RequestId) -> Option<&[u32]> {
        self.seqs.get(&id).map(|s| &s.tokens[s.prompt_len..])
    }

    /// Free blocks (including cached ones that may be evicted).
    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free_blocks()
    }

    /// Fraction of KV blocks owned by requests, `0.0..=1.0`.
    pub fn kv_usage(&self) -> f32 {
        self.pool.usage()
    }

    /// Running totals.
    pub fn stats(&self) -> SchedulerStats {
        self.stats
    }

    /// Prefix-cache hits, in tokens.
    pub fn prefix_cache_hits(&self) -> u64 {
        self.stats.prefix_cache_hits
    }

    /// Prefix-cache queries, in tokens.
    pub fn prefix_cache_queries(&self) -> u64 {
        self.stats.prefix_cache_queries
    }

    /// Preemptions so far.
    pub fn num_preemptions(&self) -> u64 {
        self.stats.num_preemptions
    }

    /// Checks every internal invariant (O(blocks + tokens); meant for tests and debug runs):
    /// the pool's own ones; waiting requests own no blocks; a running request's table covers
    /// exactly its computed tokens, holds no block twice, and has every block it may still
    /// write owned by it alone and uncached; each block's reference count equals the number of
    /// tables holding it; every shared block is cached and its cached tokens and hash are the
    /// ones the sequence expects at that index; running ≤ `max_num_seqs`.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.pool.check_invariants()?;
        let fail = |m: String| Err(InvariantViolation(m));
        let bs = self.config.block_size;
        let mut owners = vec![0u32; self.pool.num_blocks()];
        let mut num_running = 0;
        for (id, seq) in &self.seqs {
            if seq.id() != *id {
                return fail(format!("request {} stored under {}", seq.id().0, id.0));
            }
            if !seq.running {
                if !seq.blocks.is_empty()
                    || seq.num_computed != 0
                    || seq.num_cached_blocks != 0
                    || !self.waiting.contains(&seq.key)
                {
                    return fail(format!(
                        "waiting request {} holds state or is not queued",
                        id.0
                    ));
                }
                continue;
            }
            num_running += 1;
            if self.waiting.contains(&seq.key) || !self.running.contains(id) {
                return fail(format!("running request {} is queued wrongly", id.0));
            }
            if seq.num_computed > seq.tokens.len() || seq.num_computed == 0 {
                return fail(format!(
                    "request {}: {} computed of {}",
                    id.0,
                    seq.num_computed,
                    seq.tokens.len()
                ));
            }
            if seq.blocks.len() != seq.num_computed.div_ceil(bs) {
                return fail(format!(
                    "request {}: {} blocks for {} computed tokens",
                    id.0,
                    seq.blocks.len(),
                    seq.num_computed
                ));
            }
            if seq.num_cached_blocks * bs > seq.num_computed {
                return fail(format!(
                    "request {}: cached blocks beyond computed tokens",
                    id.0
                ));
            }
            for (i, &b) in seq.blocks.iter().enumerate() {
                owners[b.0 as usize] += 1;
                if seq.blocks[..i].contains(&b) {
                    return fail(format!("request {} holds block {} twice", id.0, b.0));
                }
                match self.pool.cached_hash(b) {
                    Some(h) => {
                        let expected = seq.hashes.get(i).copied();
                        if i >= seq.num_cached_blocks || expected != Some(h) {
                            return fail(format!(
                                "request {}: block {} at index {i} is cached with a foreign hash",
                                id.0, b.0
                            ));
                        }
                    }
                    None if i >= seq.num_cached_blocks && self.pool.ref_count(b) != 1 => {
                        return fail(format!(
                            "request {}: writable block {} is shared",
                            id.0, b.0
                        ));
                    }
                    None => {}
                }
            }
        }
        for (i, &n) in owners.iter().enumerate() {
            let b = BlockId(i as u32);
            if self.pool.ref_count(b) != n {
                return fail(format!(
                    "block {i}: ref_count {} but {n} tables hold it",
                    self.pool.ref_count(b)
                ));
            }
            if n > 1 && self.pool.cached_hash(b).is_none() {
                return fail(format!("block {i} is shared by {n} tables but not cached"));
            }
        }
        if num_running != self.running.len() || self.running.len() > self.config.max_num_seqs {
            return fail(format!(
                "{} running entries for {num_running} running requests",
                self.running.len()
            ));
        }
        if self.waiting.len() + num_running != self.seqs.len() {
            return fail("waiting queue holds unknown requests".into());
        }
        Ok(())
    }
}
