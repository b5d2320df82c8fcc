//! The continuous-batching scheduler: one code path for prefill and decode under a per-step
//! token budget, prefix-cache reuse when a request is admitted, and preemption by
//! recomputation when blocks run out.
//!
//! # KV cache groups
//! Each sequence has one block table per KV cache group ([`SchedulerConfig::kv_groups`]), all
//! over the one shared [`BlockPool`] and all covering the same positions. A full group keeps
//! every block. A sliding-window group (window `w`) needs, for queries at positions `>= c`
//! (`c` = tokens already computed), only keys `>= c - w + 1`: when a step is planned, the
//! group's blocks entirely before that are given back to the pool (a cached one stays findable
//! with reference count 0) and their table entries become [`BlockId::NULL`], so tables stay
//! positional. A prefix-cache hit of `k` leading blocks needs blocks `0..k` in every full group
//! and, in every sliding group, the blocks covering the `w` positions before `k * block_size`.

use std::collections::{BTreeMap, BTreeSet};

use switchyard_core::{BlockId, FinishReason, KvGroupKind, SeqId};

use crate::block_pool::BlockPool;
use crate::error::{AddRequestError, ConfigError, InvariantViolation, UpdateError};
use crate::hash::{hash_block, BlockHash};
use crate::plan::{ScheduledSeq, StepCounters, StepPlan};
use crate::request::{FinishedRequest, Request, SampledToken};

mod invariants;

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
    /// The KV cache groups (see the module docs); every sequence has one block table per
    /// entry. Default: one full group (one table of blocks holding every layer).
    pub kv_groups: Vec<KvGroupKind>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            num_blocks: 1024,
            max_num_batched_tokens: 2048,
            max_num_seqs: 128,
            enable_prefix_caching: true,
            kv_groups: vec![KvGroupKind::Full],
        }
    }
}

impl SchedulerConfig {
    /// Checks every size and window is at least 1, there is a KV group, and the block count
    /// fits a [`BlockId`] (below [`BlockId::NULL`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kv_groups.is_empty() {
            return Err(ConfigError::NoKvGroups);
        }
        if self.kv_groups.contains(&KvGroupKind::Sliding { window: 0 }) {
            return Err(ConfigError::Zero {
                field: "kv_groups sliding window",
            });
        }
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
        if u32::try_from(self.num_blocks).map_or(true, |n| n == u32::MAX) {
            return Err(ConfigError::TooManyBlocks {
                num_blocks: self.num_blocks,
            });
        }
        Ok(())
    }

    /// Most blocks one sliding-window group of a sequence ever holds: those covering the
    /// window before a step plus the step's tokens (at most the token budget).
    fn window_blocks(&self, kind: KvGroupKind) -> Option<usize> {
        match kind {
            KvGroupKind::Full => None,
            KvGroupKind::Sliding { window } => Some(
                (window - 1)
                    .saturating_add(self.max_num_batched_tokens)
                    .div_ceil(self.block_size)
                    .saturating_add(1),
            ),
        }
    }

    /// Most blocks, summed over the KV groups, one sequence of `len` tokens holds at once:
    /// `ceil(len / block_size)` per full group; per sliding group the same, but at most
    /// `ceil((window - 1 + max_num_batched_tokens) / block_size) + 1`.
    pub fn blocks_per_seq(&self, len: usize) -> usize {
        let nb = len.div_ceil(self.block_size);
        self.kv_groups
            .iter()
            .map(|&g| self.window_blocks(g).map_or(nb, |w| nb.min(w)))
            .fold(0, usize::saturating_add)
    }

    /// The longest sequence (prompt + `max_tokens` - 1) a request may have: the most tokens
    /// whose [`blocks_per_seq`](Self::blocks_per_seq) fit in the pool (`usize::MAX` when only
    /// sliding groups make any length fit). With one full group: `num_blocks * block_size`.
    pub fn capacity_tokens(&self) -> usize {
        let f = |nb: usize| self.blocks_per_seq(nb.saturating_mul(self.block_size));
        let caps: Vec<Option<usize>> = self
            .kv_groups
            .iter()
            .map(|&g| self.window_blocks(g))
            .collect();
        if caps.iter().all(Option::is_some)
            && caps
                .iter()
                .flatten()
                .fold(0usize, |a, &b| a.saturating_add(b))
                <= self.num_blocks
        {
            return usize::MAX;
        }
        let max_cap = caps.iter().flatten().copied().max().unwrap_or(0);
        // f is non-decreasing, f(0) = 0 fits and f(hi) does not.
        let (mut lo, mut hi) = (
            0usize,
            self.num_blocks.saturating_add(max_cap).saturating_add(1),
        );
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if f(mid) <= self.num_blocks {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo.saturating_mul(self.block_size)
    }
}

/// First block of a table that queries at positions `>= computed` read in a group of `kind`.
fn first_needed_block(kind: KvGroupKind, computed: usize, block_size: usize) -> usize {
    kind.first_read(computed) / block_size
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
    /// Draft tokens run for verification ([`Scheduler::set_draft`]).
    pub num_draft_tokens: u64,
    /// Of those, tokens accepted.
    pub num_accepted_tokens: u64,
}

/// Queue order: priority, then arrival, then id.
type Key = (i32, u64, SeqId);

#[derive(Debug)]
struct Seq {
    key: Key,
    /// Prompt followed by every generated token.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    /// Leading tokens whose KV is (or, once the current plan runs, will be) in `blocks`.
    num_computed: usize,
    /// One block table per KV group, each exactly `ceil(num_computed / block_size)` entries;
    /// a sliding group's entries before its window are [`BlockId::NULL`].
    tables: Vec<Vec<BlockId>>,
    /// Per KV group: leading table entries that are [`BlockId::NULL`].
    num_skipped: Vec<usize>,
    /// Chained hashes of the leading full blocks of `tokens` (computed lazily).
    hashes: Vec<BlockHash>,
    /// Leading blocks of `blocks` already offered to the prefix cache; never written again.
    num_cached_blocks: usize,
    running: bool,
    /// Never reuse cached blocks for this sequence.
    skip_prefix_lookup: bool,
    /// Never offer this sequence's blocks to the prefix cache.
    no_cache: bool,
    /// Draft tokens proposed for the next decode step ([`Scheduler::set_draft`]).
    draft: Vec<u32>,
    /// Draft tokens at the end of the planned step (counted in `num_computed` until the
    /// step's update keeps the accepted ones).
    pending_draft: Vec<u32>,
}

impl Seq {
    fn id(&self) -> SeqId {
        self.key.2
    }

    /// Every block the sequence holds (no [`BlockId::NULL`]), by table index and then group,
    /// so releasing them (last to first) frees every group's tail before any prefix.
    fn held_blocks(&self) -> Vec<BlockId> {
        let len = self.tables.iter().map(Vec::len).max().unwrap_or(0);
        (0..len)
            .flat_map(|i| self.tables.iter().filter_map(move |t| t.get(i).copied()))
            .filter(|b| !b.is_null())
            .collect()
    }

    /// Drops every table (the blocks must have been released).
    fn clear_tables(&mut self) {
        self.tables.iter_mut().for_each(Vec::clear);
        self.num_skipped.iter_mut().for_each(|n| *n = 0);
    }

    /// The step's share for the plan: `tokens[context_before..num_computed]` and the tables.
    /// With a pending draft, its tokens follow the sequence's own.
    fn scheduled(&self, context_before: usize, num_cached_tokens: usize) -> ScheduledSeq {
        let known = self.num_computed - self.pending_draft.len();
        let mut tokens = self.tokens[context_before..known].to_vec();
        tokens.extend_from_slice(&self.pending_draft);
        ScheduledSeq {
            id: self.id(),
            tokens,
            context_before,
            block_table: self.tables[0].clone(),
            group_tables: self.tables[1..].to_vec(),
            samples: known == self.tokens.len(),
            num_cached_tokens,
            num_draft: self.pending_draft.len(),
        }
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
    /// Per KV group: the hit blocks, [`BlockId::NULL`] before a sliding group's window.
    tables: Vec<Vec<BlockId>>,
    /// Per KV group: leading NULL entries of `tables`.
    num_skipped: Vec<usize>,
    /// Every hit block (acquired on admission).
    hits: Vec<BlockId>,
    /// Hits that are currently free (acquiring them takes them off the free queue).
    free_hits: usize,
    num_cached: usize,
    num_new: usize,
    /// Blocks to allocate, over all groups.
    new_blocks: usize,
}

/// Continuous-batching scheduler over a paged KV [`BlockPool`]; see the crate docs for the
/// protocol. Deterministic: the same calls always give the same plans.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    pool: BlockPool,
    seqs: BTreeMap<SeqId, Seq>,
    waiting: BTreeSet<Key>,
    /// Running requests in admission order.
    running: Vec<SeqId>,
    finished_since_plan: Vec<SeqId>,
    aborted_since_plan: Vec<SeqId>,
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
    /// is empty, `max_tokens` is 0, or `prompt + max_tokens - 1` tokens exceed
    /// [`capacity_tokens`](SchedulerConfig::capacity_tokens) (it could then never finish, even
    /// alone).
    pub fn add_request(&mut self, request: Request) -> Result<(), AddRequestError> {
        let Request {
            id,
            prompt,
            max_tokens,
            priority,
            arrival,
            skip_prefix_lookup,
            no_cache,
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
                tables: vec![Vec::new(); self.config.kv_groups.len()],
                num_skipped: vec![0; self.config.kv_groups.len()],
                hashes: Vec::new(),
                num_cached_blocks: 0,
                running: false,
                skip_prefix_lookup: skip_prefix_lookup || no_cache,
                no_cache,
                draft: Vec::new(),
                pending_draft: Vec::new(),
            },
        );
        Ok(())
    }

    /// Removes a waiting or running request and frees its blocks at once. Returns whether it
    /// was known. An output later given for it to [`update`](Self::update) is ignored.
    pub fn abort(&mut self, id: SeqId) -> bool {
        let Some(seq) = self.seqs.remove(&id) else {
            return false;
        };
        if seq.running {
            self.pool.release(&seq.held_blocks());
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
    /// Before a running request grows, its sliding-window groups give back the blocks no
    /// query from now on reads.
    pub fn schedule(&mut self) -> StepPlan {
        let mut budget = self.config.max_num_batched_tokens;
        let mut out: Vec<ScheduledSeq> = Vec::new();
        let mut preempted: Vec<SeqId> = Vec::new();

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
            self.release_skipped(id);
            if let Some(k) = self.draft_room(id, n, budget) {
                // A decode with a draft: verified in this step if its blocks are free now
                // (a draft never preempts anything).
                if self.try_grow(id, target + k) {
                    budget -= n + k;
                    let seq = self.seqs.get_mut(&id).expect("running");
                    let context_before = seq.num_computed;
                    seq.pending_draft = std::mem::take(&mut seq.draft);
                    seq.pending_draft.truncate(k);
                    seq.num_computed = target + k;
                    self.stats.num_draft_tokens += k as u64;
                    out.push(seq.scheduled(context_before, 0));
                    continue;
                }
            }
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
                out.push(seq.scheduled(context_before, 0));
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
        preempted: &mut Vec<SeqId>,
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
            let mut new = self
                .pool
                .allocate(a.new_blocks)
                .expect("availability checked above")
                .into_iter();
            let bs = self.config.block_size;
            let seq = self.seqs.get_mut(&id).expect("waiting");
            seq.num_cached_blocks = a.num_cached / bs;
            seq.num_computed = a.num_cached + a.num_new;
            let nb = seq.num_computed.div_ceil(bs);
            seq.tables = a.tables;
            for t in &mut seq.tables {
                t.extend(new.by_ref().take(nb - t.len()));
            }
            debug_assert!(new.next().is_none());
            seq.num_skipped = a.num_skipped;
            seq.running = true;
            if self.config.enable_prefix_caching {
                self.stats.prefix_cache_queries += seq.tokens.len() as u64;
                self.stats.prefix_cache_hits += a.num_cached as u64;
            }
            *budget -= a.num_new;
            out.push(seq.scheduled(a.num_cached, a.num_cached));
            self.waiting.remove(&key);
            self.running.push(id);
        }
    }

    /// Looks up the cached prefix of a waiting request and sizes its first chunk.
    ///
    /// The hit is the longest `k` such that every full group has blocks `0..k` cached and
    /// every sliding group has the blocks its window needs for queries from `k * block_size`
    /// on: first the longest run over the full groups, then, from there down, the first `k`
    /// that every sliding group's cached blocks cover.
    fn plan_admission(&mut self, id: SeqId, budget: usize) -> Admission {
        let bs = self.config.block_size;
        let groups = &self.config.kv_groups;
        let seq = self.seqs.get_mut(&id).expect("waiting");
        let len = seq.tokens.len();
        // Per group: the cached block at each index from 0 (as far as looked up).
        let mut found: Vec<Vec<Option<BlockId>>> = vec![Vec::new(); groups.len()];
        let mut k = 0;
        if self.config.enable_prefix_caching && !seq.skip_prefix_lookup {
            let max_blocks = (len - 1) / bs;
            seq.extend_hashes(bs, max_blocks * bs);
            let hashes = &seq.hashes[..max_blocks];
            k = max_blocks;
            for (g, kind) in groups.iter().enumerate() {
                if *kind == KvGroupKind::Full {
                    let run = self.pool.find_cached_prefix(g, &seq.tokens, &hashes[..k]);
                    k = run.len();
                    found[g] = run.into_iter().map(Some).collect();
                }
            }
            // `run[g][i]`: cached blocks of sliding group `g` in a row ending at index i - 1.
            let mut runs: Vec<(KvGroupKind, Vec<usize>)> = Vec::new();
            for (g, &kind) in groups.iter().enumerate() {
                if kind == KvGroupKind::Full {
                    continue;
                }
                found[g] = (0..k)
                    .map(|i| self.pool.find_cached_block(g, i, &seq.tokens, hashes))
                    .collect();
                let mut run = vec![0usize; k + 1];
                for i in 0..k {
                    run[i + 1] = if found[g][i].is_some() { run[i] + 1 } else { 0 };
                }
                runs.push((kind, run));
            }
            while k > 0
                && !runs
                    .iter()
                    .all(|(kind, run)| run[k] >= k - first_needed_block(*kind, k * bs, bs))
            {
                k -= 1;
            }
        }
        let num_cached = k * bs;
        let num_new = (len - num_cached).min(budget);
        let nb = (num_cached + num_new).div_ceil(bs);
        let mut tables = Vec::with_capacity(groups.len());
        let mut num_skipped = Vec::with_capacity(groups.len());
        for (g, &kind) in groups.iter().enumerate() {
            let first = first_needed_block(kind, num_cached, bs).min(k);
            let mut t = vec![BlockId::NULL; first];
            t.extend(found[g][first..k].iter().map(|b| b.expect("a valid hit")));
            tables.push(t);
            num_skipped.push(first);
        }
        let hits: Vec<BlockId> = tables
            .iter()
            .flatten()
            .copied()
            .filter(|b| !b.is_null())
            .collect();
        Admission {
            free_hits: hits
                .iter()
                .filter(|&&b| self.pool.ref_count(b) == 0)
                .count(),
            new_blocks: groups.len() * (nb - k),
            tables,
            num_skipped,
            hits,
            num_cached,
            num_new,
        }
    }

    /// Gives back the blocks of a running request's sliding-window groups that no query at a
    /// position `>= num_computed` reads; their entries become [`BlockId::NULL`].
    fn release_skipped(&mut self, id: SeqId) {
        let bs = self.config.block_size;
        let seq = self.seqs.get_mut(&id).expect("running");
        for (g, &kind) in self.config.kv_groups.iter().enumerate() {
            let table = &mut seq.tables[g];
            let first = first_needed_block(kind, seq.num_computed, bs).min(table.len());
            for entry in &mut table[seq.num_skipped[g].min(first)..first] {
                if !entry.is_null() {
                    self.pool.release(&[*entry]);
                    *entry = BlockId::NULL;
                }
            }
            seq.num_skipped[g] = seq.num_skipped[g].max(first);
        }
    }

    /// Grows a running request's tables to cover `target` tokens; `false`, with nothing
    /// changed, if the pool is short.
    fn try_grow(&mut self, id: SeqId, target: usize) -> bool {
        let seq = self.seqs.get_mut(&id).expect("running");
        let nb = target.div_ceil(self.config.block_size);
        let needed: usize = seq.tables.iter().map(|t| nb.saturating_sub(t.len())).sum();
        if needed == 0 {
            return true;
        }
        match self.pool.allocate(needed) {
            Some(new) => {
                let mut new = new.into_iter();
                for t in &mut seq.tables {
                    let missing = nb.saturating_sub(t.len());
                    t.extend(new.by_ref().take(missing));
                }
                true
            }
            None => false,
        }
    }

    /// Proposes `draft` as the tokens following request `id`'s known ones: its next decode
    /// step (if it is one, in the next plan) runs them too, as many as the step's token budget,
    /// `max_tokens` and free blocks allow, and [`update`](Self::update) keeps the accepted
    /// ones. Replaces an earlier proposal; ignored for a request that is not running.
    pub fn set_draft(&mut self, id: SeqId, draft: Vec<u32>) {
        if let Some(seq) = self.seqs.get_mut(&id).filter(|s| s.running) {
            seq.draft = draft;
        }
    }

    /// Draft tokens the next step can take for running request `id` about to run `n` tokens
    /// with `budget` left: `None` unless it is a decode (`n == 1`) with a draft.
    fn draft_room(&mut self, id: SeqId, n: usize, budget: usize) -> Option<usize> {
        let seq = self.seqs.get_mut(&id)?;
        if seq.draft.is_empty() {
            return None;
        }
        if n != 1 {
            seq.draft.clear();
            return None;
        }
        // After the step, up to k + 1 tokens join the output: never more than `max_tokens`.
        let generated = seq.tokens.len() - seq.prompt_len;
        let k = seq
            .draft
            .len()
            .min(budget.saturating_sub(1))
            .min(seq.max_tokens.saturating_sub(generated + 1));
        if k == 0 {
            seq.draft.clear();
            return None;
        }
        Some(k)
    }

    fn lowest_priority_running(&self) -> Option<SeqId> {
        self.running
            .iter()
            .copied()
            .max_by_key(|id| self.seqs[id].key)
    }

    /// Frees a running request's blocks and queues it for recomputation (prompt and generated
    /// tokens alike). Removes it from `out` if it was planned already; returns the tokens that
    /// gives back to the budget.
    fn preempt(&mut self, id: SeqId, out: &mut Vec<ScheduledSeq>) -> usize {
        let returned = match out.iter().position(|s| s.id == id) {
            Some(i) => out.remove(i).tokens.len(),
            None => 0,
        };
        let seq = self.seqs.get_mut(&id).expect("running");
        self.pool.release(&seq.held_blocks());
        seq.clear_tables();
        seq.num_computed = 0;
        seq.num_cached_blocks = 0;
        seq.running = false;
        seq.draft.clear();
        seq.pending_draft.clear();
        self.waiting.insert(seq.key);
        self.running.retain(|&r| r != id);
        self.stats.num_preemptions += 1;
        returned
    }

    /// Takes the results of running `plan`: one sampled token for each live sequence of the
    /// plan that [`samples`](ScheduledSeq::samples) (outputs for aborted requests are ignored);
    /// for a sequence that ran `k` draft tokens, 1 to `k + 1` tokens in order: the accepted
    /// draft tokens (equal to the draft's first ones), then the token sampled after them. The
    /// KV of rejected draft tokens is dropped (their positions are computed again later).
    /// Newly full blocks become findable in the prefix cache; a request finishes when its token
    /// says [`stop`](SampledToken::stop) or it has `max_tokens` tokens. Call once per plan, in
    /// order. On error nothing changes.
    pub fn update(
        &mut self,
        plan: &StepPlan,
        outputs: &[(SeqId, SampledToken)],
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
        let mut wanted: BTreeMap<SeqId, bool> = live
            .iter()
            .filter(|s| s.samples)
            .map(|s| (s.id, false))
            .collect();
        let drafts: BTreeMap<SeqId, &[u32]> = live
            .iter()
            .filter(|s| s.num_draft > 0)
            .map(|s| (s.id, &s.tokens[s.tokens.len() - s.num_draft..]))
            .collect();
        let mut counts: BTreeMap<SeqId, usize> = BTreeMap::new();
        for &(id, _) in outputs {
            match wanted.get_mut(&id) {
                Some(seen) => {
                    // The i-th output of a drafted sequence: outputs before the last must be
                    // the draft's tokens, in order, none of them a stop.
                    let i = counts.entry(id).or_default();
                    if *i > 0 {
                        let draft = drafts.get(&id).copied().unwrap_or(&[]);
                        let prev = outputs.iter().filter(|(o, _)| *o == id).nth(*i - 1);
                        let fits = *i <= draft.len()
                            && prev
                                .is_some_and(|(_, p)| p.stop.is_none() && p.token == draft[*i - 1]);
                        if !fits {
                            return Err(UpdateError::DuplicateOutput { id });
                        }
                    }
                    *i += 1;
                    *seen = true;
                }
                None if self.seqs.contains_key(&id) => {
                    return Err(UpdateError::UnexpectedOutput { id })
                }
                None => {}
            }
        }
        if let Some((&id, _)) = wanted.iter().find(|(_, seen)| !**seen) {
            return Err(UpdateError::MissingOutput { id });
        }
        // Drafted sequences: keep the accepted draft tokens' KV, drop the rest.
        for (&id, draft) in &drafts {
            let accepted = counts.get(&id).copied().unwrap_or(1).saturating_sub(1);
            let bs = self.config.block_size;
            let seq = self.seqs.get_mut(&id).expect("live");
            seq.num_computed -= draft.len() - accepted;
            seq.pending_draft.clear();
            let nb = seq.num_computed.div_ceil(bs);
            let mut dropped = Vec::new();
            for t in &mut seq.tables {
                dropped.extend(t.drain(nb.min(t.len())..).filter(|b| !b.is_null()));
            }
            self.pool.release(&dropped);
            self.stats.num_accepted_tokens += accepted as u64;
        }

        let mut ending = Vec::new();
        for (id, sampled) in outputs {
            let id = *id;
            let Some(seq) = self.seqs.get_mut(&id) else {
                continue;
            };
            if ending.iter().any(|(e, _)| *e == id) {
                continue;
            }
            seq.tokens.push(sampled.token);
            let reason = if let Some(stop) = &sampled.stop {
                Some(FinishReason::Stop(stop.clone()))
            } else if seq.tokens.len() - seq.prompt_len >= seq.max_tokens {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(reason) = reason {
                ending.push((id, reason));
            }
        }

        // After the tokens are in: a drafted sequence's accepted draft tokens are computed.
        if self.config.enable_prefix_caching {
            let computed: Vec<(SeqId, usize)> = live
                .iter()
                .filter(|s| !self.seqs[&s.id].no_cache)
                .map(|s| (s.id, s.context_before + s.tokens.len()))
                .collect();
            for (id, upto) in computed {
                self.cache_computed_blocks(id, upto);
            }
        }

        let finished = ending
            .into_iter()
            .map(|(id, reason)| self.finish(id, reason))
            .collect();
        Ok(finished)
    }

    /// Offers the full blocks among the first `upto` computed tokens to the prefix cache of
    /// each KV group.
    fn cache_computed_blocks(&mut self, id: SeqId, upto: usize) {
        let bs = self.config.block_size;
        let seq = self.seqs.get_mut(&id).expect("live");
        let full = upto.min(seq.num_computed) / bs;
        seq.extend_hashes(bs, full * bs);
        for i in seq.num_cached_blocks..full {
            let parent = i.checked_sub(1).map(|p| seq.hashes[p]);
            let tokens = &seq.tokens[i * bs..(i + 1) * bs];
            for (g, table) in seq.tables.iter().enumerate() {
                if !table[i].is_null() {
                    self.pool
                        .cache_full_block(table[i], g, parent, seq.hashes[i], tokens);
                }
            }
        }
        seq.num_cached_blocks = seq.num_cached_blocks.max(full);
    }

    fn finish(&mut self, id: SeqId, reason: FinishReason) -> FinishedRequest {
        let seq = self.seqs.remove(&id).expect("live");
        self.pool.release(&seq.held_blocks());
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
    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// Tokens generated so far by an unfinished request.
    pub fn output_tokens(&self, id: SeqId) -> Option<&[u32]> {
        self.seqs.get(&id).map(|s| &s.tokens[s.prompt_len..])
    }

    /// A request's known tokens: its prompt, then every token generated so far.
    pub fn tokens(&self, id: SeqId) -> Option<&[u32]> {
        self.seqs.get(&id).map(|s| s.tokens.as_slice())
    }

    /// Whether `id` is running with every known token but the last computed: its next step is
    /// a decode, the only step that takes a draft ([`set_draft`](Self::set_draft)).
    pub fn is_decoding(&self, id: SeqId) -> bool {
        self.seqs
            .get(&id)
            .is_some_and(|s| s.running && s.num_computed + 1 == s.tokens.len())
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
}
