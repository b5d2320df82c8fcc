//! Test driver: a fake executor that plays the backend against a simulated paged KV cache, and
//! checks every scheduler invariant after every `schedule` and `update`.
//!
//! The fake model sees only what the KV cache holds: each slot stores a token and a hash of the
//! whole context up to that position (what real KV depends on), and the next token is a hash of
//! the last position's context. A wrong block table, a stale or overwritten block, or a bad
//! prefix-cache hit therefore changes outputs, and is also caught directly by the read checks.

use std::collections::{BTreeMap, BTreeSet};

use switchyard_core::{FinishReason, SeqId, StopReason};
use switchyard_scheduler::{
    AddRequestError, FinishedRequest, Request, SampledToken, ScheduledSeq, Scheduler,
    SchedulerConfig, StepPlan,
};

/// The block table of KV group `g` of a scheduled sequence.
pub fn table_of(s: &ScheduledSeq, g: usize) -> &[switchyard_core::BlockId] {
    if g == 0 {
        &s.block_table
    } else {
        &s.group_tables[g - 1]
    }
}

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Context hash after appending `token` to a context hashed `prefix`.
pub fn mix(prefix: u64, token: u32) -> u64 {
    splitmix(prefix ^ splitmix(u64::from(token)))
}

/// A deterministic "model": the next token is a function of the whole context.
#[derive(Debug, Clone, Copy)]
pub struct FakeModel {
    /// Tokens are drawn from `0..vocab`.
    pub vocab: u32,
    /// Sampling this token stops the request.
    pub eos: Option<u32>,
}

impl FakeModel {
    fn next(&self, context_hash: u64) -> u32 {
        (splitmix(context_hash ^ 0x5151) % u64::from(self.vocab)) as u32
    }

    /// What an unconstrained, unbatched run outputs for `prompt`.
    pub fn reference(&self, prompt: &[u32], max_tokens: usize) -> (Vec<u32>, FinishReason) {
        let mut h = prompt.iter().fold(SEED, |h, &t| mix(h, t));
        let mut out = Vec::new();
        loop {
            let t = self.next(h);
            out.push(t);
            if self.eos == Some(t) {
                return (out, FinishReason::Stop(StopReason::Eos(t)));
            }
            if out.len() == max_tokens {
                return (out, FinishReason::Length);
            }
            h = mix(h, t);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// KV group that wrote the slot (a block of one group is never read through another's).
    group: usize,
    token: u32,
    context: u64,
}

struct Live {
    /// Prompt and every token sampled so far.
    truth: Vec<u32>,
    prompt_len: usize,
}

/// One step as the driver saw it.
pub struct StepRecord {
    /// The plan.
    pub plan: StepPlan,
    /// Requests finished by the update.
    pub finished: Vec<FinishedRequest>,
    /// Free blocks right after planning.
    pub free_after_plan: usize,
}

/// Aggregate counts, to prove a randomized run exercised what it claims to.
#[derive(Debug, Default, Clone, Copy)]
pub struct Coverage {
    pub accepted: usize,
    pub rejected: usize,
    pub aborted_running: usize,
    pub aborted_waiting: usize,
    pub finished_stop: usize,
    pub finished_length: usize,
    pub steps: usize,
    /// Scheduled sequences whose sliding-window table had given blocks back.
    pub window_releases: usize,
    /// Prefix-cache hits of a request with a sliding-window group past its window.
    pub window_hits: usize,
}

/// Runs a [`Scheduler`] against the fake executor, checking everything after every call.
pub struct Driver {
    pub sched: Scheduler,
    model: FakeModel,
    slots: Vec<Option<Slot>>,
    live: BTreeMap<SeqId, Live>,
    accepted: BTreeMap<SeqId, Request>,
    pub finished: BTreeMap<SeqId, FinishedRequest>,
    pub aborted: BTreeSet<SeqId>,
    pub coverage: Coverage,
}

impl Driver {
    pub fn new(config: SchedulerConfig, model: FakeModel) -> Self {
        let slots = vec![None; config.num_blocks * config.block_size];
        Self {
            sched: Scheduler::new(config).expect("valid config"),
            model,
            slots,
            live: BTreeMap::new(),
            accepted: BTreeMap::new(),
            finished: BTreeMap::new(),
            aborted: BTreeSet::new(),
            coverage: Coverage::default(),
        }
    }

    /// Adds a request with a fresh id; checks it is rejected exactly when it cannot fit.
    pub fn add(&mut self, request: Request) -> Result<(), AddRequestError> {
        let too_long =
            request.prompt.len() + request.max_tokens - 1 > self.sched.config().capacity_tokens();
        let result = self.sched.add_request(request.clone());
        match &result {
            Ok(()) => {
                assert!(!too_long, "accepted a request that cannot fit: {request:?}");
                self.coverage.accepted += 1;
                self.live.insert(
                    request.id,
                    Live {
                        truth: request.prompt.clone(),
                        prompt_len: request.prompt.len(),
                    },
                );
                self.accepted.insert(request.id, request);
            }
            Err(AddRequestError::TooLong { .. }) if too_long => self.coverage.rejected += 1,
            Err(e) => panic!("unexpected rejection: {e}"),
        }
        self.sched
            .check_invariants()
            .unwrap_or_else(|e| panic!("after add: {e}"));
        result
    }

    /// Requests added and not yet finished or aborted, in id order.
    pub fn live_ids(&self) -> Vec<SeqId> {
        self.live.keys().copied().collect()
    }

    /// Aborts `id`; checks the scheduler knew it exactly when it was unfinished.
    pub fn abort(&mut self, id: SeqId) {
        let running_before = self.sched.num_running();
        let known = self.sched.abort(id);
        assert_eq!(known, self.live.remove(&id).is_some(), "abort of {id:?}");
        if known {
            self.aborted.insert(id);
            if self.sched.num_running() < running_before {
                self.coverage.aborted_running += 1;
            } else {
                self.coverage.aborted_waiting += 1;
            }
        }
        self.sched
            .check_invariants()
            .unwrap_or_else(|e| panic!("after abort: {e}"));
    }

    /// One engine step: schedule, check the plan, execute it, update, check again.
    pub fn step(&mut self) -> StepRecord {
        let had_work = self.sched.has_unfinished();
        let plan = self.sched.schedule();
        self.sched
            .check_invariants()
            .unwrap_or_else(|e| panic!("after schedule: {e}\n{plan:#?}"));
        self.check_plan(&plan, had_work);
        for s in &plan.seqs {
            let nulls = (0..self.sched.config().kv_groups.len())
                .any(|g| table_of(s, g).iter().any(|b| b.is_null()));
            if nulls {
                self.coverage.window_releases += 1;
                if s.num_cached_tokens > 0 {
                    self.coverage.window_hits += 1;
                }
            }
        }
        let free_after_plan = self.sched.num_free_blocks();
        let outputs = self.execute(&plan);
        let finished = self
            .sched
            .update(&plan, &outputs)
            .expect("update accepts the executor's outputs");
        self.sched
            .check_invariants()
            .unwrap_or_else(|e| panic!("after update: {e}"));
        for (id, t) in &outputs {
            self.live.get_mut(id).expect("live").truth.push(t.token);
        }
        for f in &finished {
            let live = self.live.remove(&f.id).expect("finished request was live");
            assert_eq!(f.output, live.truth[live.prompt_len..], "{:?} output", f.id);
            let req = &self.accepted[&f.id];
            let (expected, reason) = self.model.reference(&req.prompt, req.max_tokens);
            assert_eq!(
                (&f.output, &f.reason),
                (&expected, &reason),
                "{:?} differs from an unbatched run",
                f.id
            );
            match f.reason {
                FinishReason::Stop(_) => self.coverage.finished_stop += 1,
                FinishReason::Length => self.coverage.finished_length += 1,
                FinishReason::Cancelled => panic!("{:?}: the scheduler reported Cancelled", f.id),
            }
            self.finished.insert(f.id, f.clone());
        }
        for (id, live) in &self.live {
            assert_eq!(
                self.sched.output_tokens(*id),
                Some(&live.truth[live.prompt_len..])
            );
        }
        self.coverage.steps += 1;
        StepRecord {
            plan,
            finished,
            free_after_plan,
        }
    }

    fn check_plan(&self, plan: &StepPlan, had_work: bool) {
        let cfg = self.sched.config();
        let bs = cfg.block_size;
        let groups = &cfg.kv_groups;
        let pool = self.sched.block_pool();
        assert!(
            plan.num_tokens() <= cfg.max_num_batched_tokens,
            "token budget exceeded: {plan:#?}"
        );
        assert!(
            plan.seqs.len() <= cfg.max_num_seqs,
            "sequence cap exceeded: {plan:#?}"
        );
        assert!(
            !had_work || !plan.is_empty(),
            "no progress although requests are pending"
        );
        assert_eq!(plan.counters.num_scheduled_tokens, plan.num_tokens());
        assert_eq!(plan.counters.num_free_blocks, self.sched.num_free_blocks());
        let ids: BTreeSet<SeqId> = plan.seqs.iter().map(|s| s.id).collect();
        assert_eq!(ids.len(), plan.seqs.len(), "a request scheduled twice");
        assert!(
            plan.preempted.iter().all(|p| !ids.contains(p)),
            "a preempted request is scheduled"
        );
        plan.to_forward_batch()
            .validate(bs)
            .expect("valid forward batch");
        for s in &plan.seqs {
            let truth = &self
                .live
                .get(&s.id)
                .expect("scheduled request is live")
                .truth;
            let end = s.context_before + s.tokens.len();
            assert!(!s.tokens.is_empty());
            assert_eq!(
                s.tokens,
                truth[s.context_before..end],
                "{:?} runs the wrong tokens",
                s.id
            );
            assert_eq!(s.samples, end == truth.len(), "{:?} samples flag", s.id);
            assert_eq!(s.group_tables.len() + 1, groups.len(), "{:?} tables", s.id);
            if s.num_cached_tokens > 0 {
                assert_eq!(s.context_before, s.num_cached_tokens);
                assert_eq!(s.num_cached_tokens % bs, 0, "only full blocks are reused");
            }
            for (g, &kind) in groups.iter().enumerate() {
                let table = table_of(s, g);
                assert_eq!(
                    table.len(),
                    end.div_ceil(bs),
                    "{:?} group {g} table size",
                    s.id
                );
                // Every block the step reads is there; a sliding group holds nothing older
                // (its blocks before the window went back to the pool when it was planned).
                let first = kind.first_read(s.context_before) / bs;
                for (i, b) in table.iter().enumerate() {
                    assert_eq!(
                        b.is_null(),
                        i < first,
                        "{:?} group {g} ({kind:?}) entry {i} of {table:?}, context {}",
                        s.id,
                        s.context_before
                    );
                }
                // Every block written in this step is owned by this sequence alone and not
                // cached.
                for p in s.context_before..end {
                    let b = table[p / bs];
                    assert_eq!(pool.ref_count(b), 1, "{:?} writes shared block {b:?}", s.id);
                    assert_eq!(
                        pool.cached_hash(b),
                        None,
                        "{:?} writes cached block {b:?}",
                        s.id
                    );
                }
            }
        }
        // Never more blocks in use than the pool has, and never a block freed that a table
        // holds.
        let mut held = BTreeSet::new();
        for s in &plan.seqs {
            for g in 0..groups.len() {
                held.extend(table_of(s, g).iter().copied().filter(|b| !b.is_null()));
            }
        }
        for b in held {
            assert!(
                pool.ref_count(b) > 0,
                "a scheduled table holds free block {b:?}"
            );
        }
    }

    /// Runs the plan: reads each sequence's context from the cache (before any write of this
    /// step) through each KV group's table (a sliding group only its window), writes the
    /// step's tokens in every group, samples where asked.
    fn execute(&mut self, plan: &StepPlan) -> Vec<(SeqId, SampledToken)> {
        let bs = self.sched.config().block_size;
        let groups = self.sched.config().kv_groups.clone();
        let slot_of = |table: &[switchyard_core::BlockId], p: usize| {
            assert!(!table[p / bs].is_null(), "access through a NULL entry");
            table[p / bs].0 as usize * bs + p % bs
        };
        let mut writes: BTreeMap<usize, Slot> = BTreeMap::new();
        let mut outputs = Vec::new();
        for s in &plan.seqs {
            let truth = &self.live[&s.id].truth;
            // Context hash after each position, as the truth has it.
            let contexts: Vec<u64> = truth
                .iter()
                .scan(SEED, |h, &t| {
                    *h = mix(*h, t);
                    Some(*h)
                })
                .collect();
            for (g, kind) in groups.iter().enumerate() {
                let table = table_of(s, g);
                for p in kind.first_read(s.context_before)..s.context_before {
                    let slot = self.slots[slot_of(table, p)].unwrap_or_else(|| {
                        panic!("{:?} group {g} reads unwritten position {p}", s.id)
                    });
                    assert_eq!(
                        slot.group, g,
                        "{:?} reads another group's block at {p}",
                        s.id
                    );
                    assert_eq!(
                        slot.token, truth[p],
                        "{:?} group {g} reads a wrong token at {p}",
                        s.id
                    );
                    assert_eq!(
                        slot.context, contexts[p],
                        "{:?} group {g} reads stale KV at {p}",
                        s.id
                    );
                }
            }
            let mut context = s
                .context_before
                .checked_sub(1)
                .map_or(SEED, |p| contexts[p]);
            for (k, &token) in s.tokens.iter().enumerate() {
                context = mix(context, token);
                for g in 0..groups.len() {
                    let slot = slot_of(table_of(s, g), s.context_before + k);
                    assert!(
                        writes
                            .insert(
                                slot,
                                Slot {
                                    group: g,
                                    token,
                                    context
                                }
                            )
                            .is_none(),
                        "two writes to slot {slot}"
                    );
                }
            }
            if s.samples {
                let token = self.model.next(context);
                let sampled = if self.model.eos == Some(token) {
                    SampledToken::stop(token, StopReason::Eos(token))
                } else {
                    SampledToken::token(token)
                };
                outputs.push((s.id, sampled));
            }
        }
        for (slot, value) in writes {
            self.slots[slot] = Some(value);
        }
        outputs
    }

    /// Steps until nothing is left, then checks nothing leaked and every request that was not
    /// aborted finished with the reference output.
    pub fn finish_all(&mut self, max_steps: usize) {
        let mut n = 0;
        while self.sched.has_unfinished() {
            self.step();
            n += 1;
            assert!(n <= max_steps, "no completion within {max_steps} steps");
        }
        assert!(self.live.is_empty());
        let pool = self.sched.block_pool();
        assert_eq!(pool.num_free_blocks(), pool.num_blocks(), "blocks leaked");
        assert_eq!(self.sched.kv_usage(), 0.0);
        for id in self.accepted.keys() {
            assert!(
                self.finished.contains_key(id) != self.aborted.contains(id),
                "{id:?} neither finished nor aborted"
            );
        }
    }
}
