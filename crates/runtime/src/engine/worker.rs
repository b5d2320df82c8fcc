//! The engine thread: a synchronous loop that owns the scheduler, the backend and every
//! sequence's sampling, stop and detokenization state, and turns commands into steps.

use std::collections::HashMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use rayon::prelude::*;

use switchyard_core::{Backend, FinishReason, ForwardBatch, Logits, RequestId, SeqId, StopReason};
use switchyard_scheduler::{Request, SampledToken, Scheduler, StepPlan};
use tokio::sync::mpsc::UnboundedSender;

use super::draft::Drafter;
use super::handle::{Command, StreamItem, Submission};
use super::speculative::{ngram_draft, Acceptance, SpeculativeMethod};
use super::stop::{Matched, StopMatcher};
use super::types::{EngineError, EngineOutput, EngineRequest, EngineStats, TokenLogprob, Usage};
use super::EngineInfo;
use crate::sampling::{logprobs, Sampler};
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

mod output;
use output::process_seq;

/// Settings a request's choices share.
struct Spec {
    prompt: Vec<u32>,
    max_tokens: usize,
    min_tokens: usize,
    stop: Vec<String>,
    stop_token_ids: Vec<u32>,
    ignore_eos: bool,
    logprobs: Option<usize>,
}

/// Prompt logprobs being gathered for choice 0.
struct PromptLogprobs {
    top: usize,
    /// Next prompt position whose logits row is still wanted.
    next: usize,
    /// One entry per prompt token.
    values: Vec<Option<TokenLogprob>>,
}

/// One choice of a request: one scheduler sequence.
struct Seq {
    request: RequestId,
    index: usize,
    spec: Arc<Spec>,
    sampler: Sampler,
    decoder: IncrementalDecoder,
    stop: StopMatcher,
    generated: usize,
    admitted: bool,
    cached_tokens: usize,
    prompt_logprobs: Option<PromptLogprobs>,
    /// The output constraint's matcher, if the request has one.
    constraint: Option<crate::constraint::ConstraintState>,
    /// Speculative decoding may draft for this sequence.
    speculate: bool,
    /// How well its drafts are accepted (backs drafting off).
    acceptance: Acceptance,
    /// When the engine received the request.
    submitted: std::time::Instant,
    /// From `submitted` to the first step that scheduled this sequence.
    queue_time: Option<std::time::Duration>,
    /// An embedding request's pooling (it samples nothing).
    embed: Option<super::embed::Embedding>,
}

impl Seq {
    /// A last output with no tokens (finish `length`): an embedding's vector, or a sequence the
    /// scheduler ended on its own.
    fn ended(&self, embedding: Option<Vec<f32>>) -> EngineOutput {
        EngineOutput {
            index: self.index,
            token_ids: Vec::new(),
            text: String::new(),
            logprobs: None,
            prompt_logprobs: None,
            finish: Some(FinishReason::Length),
            usage: self.usage(),
            embedding,
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.spec.prompt.len(),
            cached_tokens: self.cached_tokens,
            completion_tokens: self.generated,
            queue_time: self.queue_time,
        }
    }
}

/// One client request: its stream and its unfinished sequences.
struct Group {
    tx: UnboundedSender<StreamItem>,
    /// Sequences in the scheduler.
    seqs: Vec<SeqId>,
    /// Choices 1.. held back until choice 0 has computed the prompt, so that they find its
    /// full blocks in the prefix cache instead of computing them again.
    deferred: Vec<(Request, Seq)>,
}

/// The logits rows of one planned sequence.
struct Rows {
    /// First row of this sequence in the logits.
    first: usize,
    /// Prompt positions whose next-token logprobs are computed in this step.
    prompt: Range<usize>,
    /// Whether the last rows are for sampling: one, plus one per draft token before it.
    samples: bool,
    /// Rows of the step's hidden states (embedding requests) that are this sequence's.
    hidden: Range<usize>,
    /// An embedding request whose prompt this step completes.
    embed_done: bool,
    /// Draft tokens verified in this step (speculative decoding), in order.
    draft: Vec<u32>,
}

/// What sampling one sequence produced: one token, or with a draft, the accepted draft tokens
/// and the token after them (one output holding them all).
struct Sampled {
    tokens: Vec<SampledToken>,
    output: EngineOutput,
}

impl Sampled {
    /// Appends a later token's result.
    fn join(&mut self, next: Sampled) {
        self.tokens.extend(next.tokens);
        let (a, b) = (&mut self.output, next.output);
        a.token_ids.extend(b.token_ids);
        a.text.push_str(&b.text);
        if let (Some(x), Some(y)) = (a.logprobs.as_mut(), b.logprobs) {
            x.extend(y);
        }
        if a.prompt_logprobs.is_none() {
            a.prompt_logprobs = b.prompt_logprobs;
        }
        a.finish = b.finish;
        a.usage = b.usage;
    }
}

#[derive(Default)]
struct Totals {
    prompt_tokens: u64,
    generation_tokens: u64,
    steps: u64,
    peak_running: usize,
    spec_drafts: u64,
    spec_draft_tokens: u64,
    spec_accepted_tokens: u64,
}

pub(crate) struct Worker {
    sched: Scheduler,
    backend: Box<dyn Backend>,
    /// The draft model (`draft_model` speculative decoding).
    drafter: Option<Drafter>,
    tok: Arc<Tokenizer>,
    info: EngineInfo,
    rx: Receiver<Command>,
    groups: HashMap<RequestId, Group>,
    seqs: HashMap<SeqId, Seq>,
    next_seq: u64,
    next_arrival: u64,
    totals: Totals,
    /// Whether greedy steps may ask the backend for its own argmax (`Backend::forward_greedy`);
    /// `SWITCHYARD_DEVICE_GREEDY=0` turns it off (to compare).
    device_greedy: bool,
}

impl Worker {
    pub(crate) fn new(
        sched: Scheduler,
        backend: Box<dyn Backend>,
        drafter: Option<Drafter>,
        tok: Arc<Tokenizer>,
        info: EngineInfo,
        rx: Receiver<Command>,
    ) -> Self {
        Self {
            sched,
            backend,
            drafter,
            tok,
            info,
            rx,
            groups: HashMap::new(),
            seqs: HashMap::new(),
            next_seq: 0,
            next_arrival: 0,
            totals: Totals::default(),
            device_greedy: std::env::var("SWITCHYARD_DEVICE_GREEDY").map_or(true, |v| v != "0"),
        }
    }

    /// Runs until shutdown or until every handle and stream is gone.
    pub(crate) fn run(mut self) {
        'outer: loop {
            if !self.sched.has_unfinished() {
                match self.rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            break 'outer;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    // Nobody can send any more; finish what runs (its streams are gone too).
                    Err(TryRecvError::Disconnected) => {
                        if !self.sched.has_unfinished() {
                            break 'outer;
                        }
                        break;
                    }
                }
            }
            if self.sched.has_unfinished() && !self.step() {
                // Nothing could be scheduled (should not happen): wait for a command rather
                // than spin.
                tracing::warn!("engine: unfinished requests but an empty plan");
                match self.rx.recv_timeout(Duration::from_millis(10)) {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        let ids: Vec<RequestId> = self.groups.keys().copied().collect();
        for id in ids {
            self.fail_group(id, EngineError::Stopped);
        }
    }

    /// Handles one command; `false` means shut down.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Submit(s) => self.submit(*s),
            Command::Cancel(id) => self.cancel(id),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn stats(&self) -> EngineStats {
        let s = self.sched.stats();
        EngineStats {
            num_running: self.sched.num_running(),
            num_waiting: self.sched.num_waiting(),
            num_requests: self.groups.len(),
            num_free_blocks: self.sched.num_free_blocks(),
            num_blocks: self.info.num_blocks,
            kv_usage: self.sched.kv_usage(),
            prefix_cache_queries: s.prefix_cache_queries,
            prefix_cache_hits: s.prefix_cache_hits,
            num_preemptions: s.num_preemptions,
            peak_running: self.totals.peak_running,
            prompt_tokens_total: self.totals.prompt_tokens,
            generation_tokens_total: self.totals.generation_tokens,
            num_steps: self.totals.steps,
            padding_tokens_total: self.backend.padding_tokens(),
            spec_num_drafts: self.totals.spec_drafts,
            spec_num_draft_tokens: self.totals.spec_draft_tokens,
            spec_num_accepted_tokens: self.totals.spec_accepted_tokens,
            spec_draft_blocks_held: self.drafter.as_ref().map_or(0, Drafter::blocks_held),
        }
    }

    fn submit(&mut self, sub: Submission) {
        let Submission { id, request, tx } = sub;
        let EngineRequest {
            prompt,
            max_tokens,
            min_tokens,
            sampling,
            stop,
            stop_token_ids,
            ignore_eos,
            n,
            logprobs,
            prompt_logprobs,
            skip_special_tokens,
            priority,
            constraint,
            embed,
            speculative,
        } = request;
        if self.groups.contains_key(&id) {
            let _ = tx.send(Err(EngineError::Rejected(format!(
                "request id {} is in use",
                id.0
            ))));
            return;
        }
        let base_seed = sampling.seed.unwrap_or_else(rand::random);
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        let spec = Arc::new(Spec {
            prompt,
            max_tokens,
            min_tokens,
            stop,
            stop_token_ids,
            ignore_eos,
            logprobs,
        });
        let mut group = Group {
            tx,
            seqs: Vec::new(),
            deferred: Vec::new(),
        };
        let mut first = None;
        for index in 0..n {
            let sid = SeqId(self.next_seq);
            self.next_seq += 1;
            let mut params = sampling.clone();
            params.seed = Some(base_seed.wrapping_add(index as u64));
            let seq = Seq {
                request: id,
                index,
                sampler: Sampler::new(params, &spec.prompt),
                decoder: IncrementalDecoder::new(skip_special_tokens),
                stop: StopMatcher::new(spec.stop.clone()),
                generated: 0,
                admitted: false,
                cached_tokens: 0,
                submitted: std::time::Instant::now(),
                queue_time: None,
                constraint: constraint.as_ref().map(|c| c.start()),
                embed: embed.map(super::embed::Embedding::new),
                speculate: speculative,
                acceptance: Acceptance::default(),
                prompt_logprobs: prompt_logprobs
                    .filter(|_| index == 0)
                    .map(|top| PromptLogprobs {
                        top,
                        next: 0,
                        values: vec![None; spec.prompt.len()],
                    }),
                spec: spec.clone(),
            };
            let req = Request::new(sid, spec.prompt.clone(), max_tokens)
                .with_priority(priority)
                .with_arrival(arrival)
                .with_skip_prefix_lookup(index == 0 && prompt_logprobs.is_some())
                .with_no_cache(embed.is_some());
            if index == 0 {
                first = Some((req, seq));
            } else {
                group.deferred.push((req, seq));
            }
        }
        self.groups.insert(id, group);
        if let Some((req, seq)) = first {
            self.add_seq(req, seq);
        }
    }

    /// Hands one sequence to the scheduler; a refusal fails its whole request.
    fn add_seq(&mut self, req: Request, seq: Seq) {
        let (sid, rid) = (req.id, seq.request);
        match self.sched.add_request(req) {
            Ok(()) => {
                self.seqs.insert(sid, seq);
                if let Some(g) = self.groups.get_mut(&rid) {
                    g.seqs.push(sid);
                }
            }
            Err(e) => self.fail_group(rid, EngineError::Rejected(e.to_string())),
        }
    }

    /// Admits the deferred choices of request `rid` (its choice 0 has its first token).
    fn release_deferred(&mut self, rid: RequestId) {
        let Some(g) = self.groups.get_mut(&rid) else {
            return;
        };
        for (req, seq) in std::mem::take(&mut g.deferred) {
            self.add_seq(req, seq);
        }
    }

    /// Removes a request: aborts its sequences (freeing their blocks now) and returns them
    /// with the choices that never started.
    fn remove_group(&mut self, rid: RequestId) -> Option<(Group, Vec<Seq>)> {
        let mut g = self.groups.remove(&rid)?;
        let mut seqs = Vec::new();
        for sid in std::mem::take(&mut g.seqs) {
            self.sched.abort(sid);
            self.release_draft(sid);
            seqs.extend(self.seqs.remove(&sid));
        }
        seqs.extend(std::mem::take(&mut g.deferred).into_iter().map(|(_, s)| s));
        Some((g, seqs))
    }

    /// Cancels a request: every unfinished choice gets a `Cancelled` output.
    fn cancel(&mut self, rid: RequestId) {
        let Some((g, mut seqs)) = self.remove_group(rid) else {
            return;
        };
        seqs.sort_by_key(|s| s.index);
        for s in seqs {
            let _ = g.tx.send(Ok(EngineOutput {
                index: s.index,
                token_ids: Vec::new(),
                text: String::new(),
                logprobs: None,
                prompt_logprobs: None,
                finish: Some(FinishReason::Cancelled),
                usage: s.usage(),
                embedding: None,
            }));
        }
    }

    /// Fails a request with `err` (one error item, then the stream ends).
    fn fail_group(&mut self, rid: RequestId, err: EngineError) {
        if let Some((g, _)) = self.remove_group(rid) {
            let _ = g.tx.send(Err(err));
        }
    }

    /// Runs one step; `false` if the plan was empty.
    fn step(&mut self) -> bool {
        self.propose_drafts();
        let plan = self.sched.schedule();
        if plan.is_empty() {
            return false;
        }
        self.totals.steps += 1;
        self.totals.peak_running = self.totals.peak_running.max(plan.counters.num_running);
        for s in &plan.seqs {
            if let Some(q) = self.seqs.get_mut(&s.id) {
                if !q.admitted {
                    q.admitted = true;
                    q.queue_time = Some(q.submitted.elapsed());
                    q.cached_tokens = s.num_cached_tokens;
                    self.totals.prompt_tokens += q.spec.prompt.len() as u64;
                }
            }
        }
        for &sid in &plan.preempted {
            // Recomputed later, probably after others finished: its draft blocks go back now.
            self.release_draft(sid);
        }
        if !plan.preempted.is_empty() {
            tracing::debug!(
                preempted = plan.preempted.len(),
                "engine: preempted sequences"
            );
        }
        let (batch, rows, hidden_idx) = self.build_batch(&plan);
        let vocab_limit = self.tok.vocab_size.min(self.info.vocab_size);
        let greedy = if hidden_idx.is_empty() && self.all_plain_greedy(&plan, &rows) {
            self.backend.forward_greedy(&batch, vocab_limit)
        } else {
            None
        };
        let mut hidden = Vec::new();
        let out = match greedy {
            Some(ids) => ids.and_then(|ids| {
                if ids.len() != batch.logits_indices.len() {
                    Err(switchyard_core::BackendError::Device(format!(
                        "backend returned {} greedy tokens for {} rows",
                        ids.len(),
                        batch.logits_indices.len()
                    )))
                } else if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab_limit) {
                    Err(switchyard_core::BackendError::Device(format!(
                        "backend chose token {bad}, outside the vocabulary of {vocab_limit}"
                    )))
                } else {
                    Ok(StepOut::Tokens(ids))
                }
            }),
            None => {
                let logits = if hidden_idx.is_empty() {
                    self.backend.forward(&batch)
                } else {
                    self.forward_hidden(&batch, &hidden_idx).map(|(l, h)| {
                        hidden = h;
                        l
                    })
                };
                logits.and_then(|l| {
                    if l.vocab != self.info.vocab_size || l.rows() != batch.logits_indices.len() {
                        Err(switchyard_core::BackendError::Device(format!(
                            "backend returned {} rows of {} logits for {} rows of {}",
                            l.rows(),
                            l.vocab,
                            batch.logits_indices.len(),
                            self.info.vocab_size
                        )))
                    } else {
                        Ok(StepOut::Logits(l))
                    }
                })
            }
        };
        let out = match out {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "engine: forward failed; failing the step's requests");
                let msg = e.to_string();
                for s in &plan.seqs {
                    if let Some(rid) = self.seqs.get(&s.id).map(|q| q.request) {
                        self.fail_group(rid, EngineError::Backend(msg.clone()));
                    }
                }
                // Every sequence of the plan is aborted: this only closes the plan.
                if let Err(e) = self.sched.update(&plan, &[]) {
                    tracing::error!(error = %e, "engine: scheduler update after a failed step");
                }
                return true;
            }
        };
        self.finish_step(&plan, &rows, out, &hidden);
        true
    }

    /// The backend's forward pass with the hidden states of `idx` (embedding requests),
    /// checked for size.
    fn forward_hidden(
        &mut self,
        batch: &ForwardBatch,
        idx: &[usize],
    ) -> Result<(Logits, Vec<f32>), switchyard_core::BackendError> {
        let want = idx.len() * self.info.hidden_size;
        match self.backend.forward_hidden(batch, idx) {
            None => Err(switchyard_core::BackendError::Unavailable {
                backend: self.backend.capabilities().kind,
                reason: "this backend does not compute hidden states (embeddings)".into(),
            }),
            Some(Ok((_, h))) if h.len() != want => Err(switchyard_core::BackendError::Device(
                format!("backend returned {} hidden floats for {want}", h.len()),
            )),
            Some(r) => r,
        }
    }

    /// Speculative decoding: a draft for each sequence whose next step is a decode (the
    /// scheduler runs it with the sequence's next token), unless more sequences run than the
    /// configuration's `disable_by_batch_size`: n-gram lookups, or the draft model's greedy
    /// continuations (one batch over all of them).
    fn propose_drafts(&mut self) {
        let Some(cfg) = self.info.speculative.as_ref() else {
            return;
        };
        if self.sched.num_running() > cfg.disable_by_batch_size {
            return;
        }
        let mut want: Vec<(SeqId, &[u32], usize)> = Vec::new();
        for (&sid, q) in &self.seqs {
            if !q.speculate || !q.admitted || q.generated == 0 || !self.sched.is_decoding(sid) {
                continue;
            }
            let Some(tokens) = self.sched.tokens(sid) else {
                continue;
            };
            // After the step, up to k + 1 tokens join the output: never past `max_tokens`.
            let room = q.spec.max_tokens.saturating_sub(q.generated + 1);
            let k = q.acceptance.draft_len(cfg.num_speculative_tokens).min(room);
            if k > 0 {
                want.push((sid, tokens, k));
            }
        }
        // In id order, so that the draft model's batches do not depend on hashing.
        want.sort_unstable_by_key(|w| w.0);
        let drafts = match (&cfg.method, self.drafter.as_mut()) {
            (
                SpeculativeMethod::Ngram {
                    prompt_lookup_min,
                    prompt_lookup_max,
                },
                _,
            ) => want
                .iter()
                .map(|&(_, t, k)| ngram_draft(t, *prompt_lookup_min, *prompt_lookup_max, k))
                .collect(),
            (SpeculativeMethod::DraftModel { .. }, Some(d)) => d.propose(&want),
            (SpeculativeMethod::DraftModel { .. }, None) => return,
        };
        let ids: Vec<SeqId> = want.iter().map(|w| w.0).collect();
        for (sid, draft) in ids.into_iter().zip(drafts) {
            if !draft.is_empty() {
                self.sched.set_draft(sid, draft);
            }
        }
    }

    /// Gives a sequence's draft-model KV blocks back (it ended, was aborted or preempted).
    fn release_draft(&mut self, sid: SeqId) {
        if let Some(d) = self.drafter.as_mut() {
            d.release(sid);
        }
    }

    /// Whether every row of the step is a plain greedy choice that the backend may make itself
    /// ([`Backend::forward_greedy`]): no prompt logprobs, and every sampling sequence greedy
    /// with no logit processing (bias, penalties), no logprobs and no EOS / stop-token masking
    /// left (`min_tokens` reached or nothing to mask).
    fn all_plain_greedy(&self, plan: &StepPlan, rows: &[Rows]) -> bool {
        self.device_greedy
            && plan.seqs.iter().zip(rows).all(|(s, r)| {
                if !r.prompt.is_empty() {
                    return false;
                }
                if !r.samples {
                    return true;
                }
                let Some(q) = self.seqs.get(&s.id) else {
                    return false;
                };
                let p = q.sampler.params();
                let masks = q.generated < q.spec.min_tokens
                    && (!q.spec.stop_token_ids.is_empty()
                        || (!q.spec.ignore_eos && !self.tok.eos_ids.is_empty()));
                p.is_greedy()
                    && p.logit_bias.is_empty()
                    && p.repetition_penalty == 1.0
                    && p.presence_penalty == 0.0
                    && p.frequency_penalty == 0.0
                    && q.spec.logprobs.is_none()
                    && q.prompt_logprobs.is_none()
                    && q.constraint.is_none()
                    && !masks
            })
    }

    /// The plan's batch, with extra logits rows for prompt logprobs; and the tokens whose
    /// hidden states embedding requests pool (no logits rows for those).
    fn build_batch(&self, plan: &StepPlan) -> (ForwardBatch, Vec<Rows>, Vec<usize>) {
        let mut batch = plan.to_forward_batch();
        batch.logits_indices.clear();
        let mut rows = Vec::with_capacity(plan.seqs.len());
        let mut hidden_idx = Vec::new();
        for (s, b) in plan.seqs.iter().zip(&batch.seqs) {
            let first = batch.logits_indices.len();
            if let Some(e) = self.seqs.get(&s.id).and_then(|q| q.embed.as_ref()) {
                let h0 = hidden_idx.len();
                hidden_idx.extend(e.rows(b.start, b.len, s.context_before, s.samples));
                rows.push(Rows {
                    first,
                    prompt: 0..0,
                    samples: false,
                    hidden: h0..hidden_idx.len(),
                    embed_done: s.samples,
                    draft: Vec::new(),
                });
                continue;
            }
            let end = s.context_before + s.tokens.len();
            let prompt = match self
                .seqs
                .get(&s.id)
                .and_then(|q| q.prompt_logprobs.as_ref().map(|p| (p, q.spec.prompt.len())))
            {
                Some((p, prompt_len)) => {
                    let lo = s.context_before.max(p.next);
                    lo..end.min(prompt_len - 1).max(lo)
                }
                None => 0..0,
            };
            batch
                .logits_indices
                .extend(prompt.clone().map(|pos| b.start + pos - s.context_before));
            if s.samples {
                let end = b.start + b.len;
                batch.logits_indices.extend(end - 1 - s.num_draft..end);
            }
            rows.push(Rows {
                first,
                prompt,
                samples: s.samples,
                hidden: 0..0,
                embed_done: false,
                draft: s.tokens[s.tokens.len() - s.num_draft..].to_vec(),
            });
        }
        (batch, rows, hidden_idx)
    }

    /// Samples, checks stops, detokenizes, updates the scheduler and sends the outputs;
    /// pools the embedding requests' `hidden` states and finishes those whose prompt is done.
    fn finish_step(&mut self, plan: &StepPlan, rows: &[Rows], out: StepOut, hidden: &[f32]) {
        let mut embedded = self.pool_embeddings(plan, rows, hidden);
        let (mut logits, tokens) = match out {
            StepOut::Logits(l) => (Some(l), None),
            StepOut::Tokens(t) => (None, Some(t)),
        };
        let mut all_rows: Vec<&mut [f32]> = match logits.as_mut() {
            Some(l) => l.data.chunks_exact_mut(l.vocab).collect(),
            None => Vec::new(),
        };
        let tok = &*self.tok;
        // Each sequence of the plan with its rows (consecutive, in plan order; see
        // `build_batch`), processed in parallel: a greedy choice scans the whole vocabulary
        // (262,144 logits for Gemma), and the sequences are independent.
        let mut by_id: HashMap<SeqId, &mut Seq> =
            self.seqs.iter_mut().map(|(&id, q)| (id, q)).collect();
        let mut rest: &mut [&mut [f32]] = &mut all_rows;
        let mut jobs = Vec::with_capacity(plan.seqs.len());
        let mut offset = 0;
        for (s, r) in plan.seqs.iter().zip(rows) {
            let sampling = if r.samples { 1 + r.draft.len() } else { 0 };
            let count = r.prompt.len() + sampling;
            assert_eq!(r.first, offset, "engine: logits rows out of plan order");
            let choice = match &tokens {
                Some(t) => Choice::Tokens(&t[offset + count - sampling..offset + count]),
                None => {
                    let (seq_rows, tail) = std::mem::take(&mut rest).split_at_mut(count);
                    rest = tail;
                    Choice::Rows(seq_rows)
                }
            };
            offset += count;
            if let Some(seq) = by_id.remove(&s.id) {
                jobs.push((s.id, seq, choice, r));
            }
        }
        let results: Vec<_> = jobs
            .into_par_iter()
            .map(|(id, seq, choice, r)| {
                let result = catch_unwind(AssertUnwindSafe(|| {
                    process_seq(seq, tok, r.prompt.clone(), &r.draft, choice)
                }))
                .map_err(|panic| {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into());
                    format!("request processing panicked: {msg}")
                })
                .and_then(|r| r);
                (id, seq.request, result)
            })
            .collect();
        drop(by_id);
        let mut sampled: Vec<(SeqId, Sampled)> = Vec::new();
        let num_embedded = embedded.len();
        sampled.append(&mut embedded);
        let mut failed: Vec<(RequestId, String)> = Vec::new();
        for (id, request, result) in results {
            match result {
                Ok(Some(x)) => sampled.push((id, x)),
                Ok(None) => {}
                Err(msg) => {
                    tracing::error!(request = request.0, %msg, "engine: request failed");
                    failed.push((request, msg));
                }
            }
        }
        drop(all_rows);
        if let Some(l) = logits {
            self.backend.recycle_logits(l);
        }
        for (rid, msg) in failed {
            self.fail_group(rid, EngineError::Internal(msg));
        }
        let tokens: Vec<(SeqId, SampledToken)> = sampled
            .iter()
            .filter(|(sid, _)| self.seqs.contains_key(sid))
            .flat_map(|(sid, x)| x.tokens.iter().map(move |t| (*sid, t.clone())))
            .collect();
        for (s, r) in plan.seqs.iter().zip(rows) {
            if r.draft.is_empty() {
                continue;
            }
            let Some((_, x)) = sampled.iter().find(|(sid, _)| *sid == s.id) else {
                continue;
            };
            let accepted = x.tokens.len() - 1;
            self.totals.spec_drafts += 1;
            self.totals.spec_draft_tokens += r.draft.len() as u64;
            self.totals.spec_accepted_tokens += accepted as u64;
            if let Some(q) = self.seqs.get_mut(&s.id) {
                q.acceptance.record(r.draft.len(), accepted);
            }
        }
        let finished = match self.sched.update(plan, &tokens) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "engine: scheduler update refused the step (a bug)");
                for s in &plan.seqs {
                    if let Some(rid) = self.seqs.get(&s.id).map(|q| q.request) {
                        self.fail_group(rid, EngineError::Internal(e.to_string()));
                    }
                }
                return;
            }
        };
        self.totals.generation_tokens += tokens.len().saturating_sub(num_embedded) as u64;
        let mut release = Vec::new();
        for (sid, x) in sampled {
            let Some(seq) = self.seqs.get(&sid) else {
                continue;
            };
            let rid = seq.request;
            if seq.index == 0 && seq.generated == x.tokens.len() {
                // Its first output: the prompt's blocks are computed and cached.
                release.push(rid);
            }
            let done = x.output.finish.is_some();
            if done {
                self.seqs.remove(&sid);
                self.release_draft(sid);
            }
            let Some(g) = self.groups.get_mut(&rid) else {
                continue;
            };
            if done {
                g.seqs.retain(|&q| q != sid);
            }
            if g.tx.send(Ok(x.output)).is_err() {
                // The client is gone: free its blocks now rather than at its cancel message.
                self.remove_group(rid);
                continue;
            }
            if g.seqs.is_empty() && g.deferred.is_empty() {
                self.groups.remove(&rid);
            }
        }
        for f in finished {
            // Every stop and length limit is decided above, so the scheduler finishing a
            // sequence that is still here is a bug; end the choice cleanly anyway.
            self.release_draft(f.id);
            if let Some(seq) = self.seqs.remove(&f.id) {
                tracing::error!(
                    seq = f.id.0,
                    "engine: scheduler finished a sequence on its own"
                );
                if let Some(g) = self.groups.get_mut(&seq.request) {
                    g.seqs.retain(|&q| q != f.id);
                    let _ = g.tx.send(Ok(seq.ended(None)));
                    if g.seqs.is_empty() && g.deferred.is_empty() {
                        self.groups.remove(&seq.request);
                    }
                }
            }
        }
        for rid in release {
            self.release_deferred(rid);
        }
    }
}

impl Worker {
    /// Adds this step's hidden states to each embedding request's pooling; for each one
    /// whose prompt is now computed, its output (the vector) and the placeholder token that
    /// ends it in the scheduler.
    fn pool_embeddings(
        &mut self,
        plan: &StepPlan,
        rows: &[Rows],
        hidden: &[f32],
    ) -> Vec<(SeqId, Sampled)> {
        let h = self.info.hidden_size;
        let mut done = Vec::new();
        for (s, r) in plan.seqs.iter().zip(rows) {
            if r.hidden.is_empty() && !r.embed_done {
                continue;
            }
            let Some(seq) = self.seqs.get_mut(&s.id) else {
                continue;
            };
            let Some(e) = seq.embed.as_mut() else {
                continue;
            };
            e.add(
                s.context_before,
                &hidden[r.hidden.start * h..r.hidden.end * h],
                h,
            );
            if r.embed_done {
                let v = e.finish();
                done.push((
                    s.id,
                    Sampled {
                        // Any id, never computed: `max_tokens` (1) ends the request here.
                        tokens: vec![SampledToken::token(0)],
                        output: seq.ended(Some(v)),
                    },
                ));
            }
        }
        done
    }
}

/// Fault injection for end-to-end tests of the server: when `SWITCHYARD_TEST_PANIC_ON_TOKEN`
/// holds a token id, processing a request that samples that id panics (a request can force it
/// with `logit_bias`). The panic must fail only that request (`EngineError::Internal`, a 500 at
/// the HTTP layer). Read once; unset in normal operation.
fn injected_panic_token() -> Option<u32> {
    static TOKEN: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        std::env::var("SWITCHYARD_TEST_PANIC_ON_TOKEN")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    })
}

/// What a step gives the engine: logits rows, or the backend's own greedy choice per row.
enum StepOut {
    Logits(Logits),
    Tokens(Vec<u32>),
}

/// One sequence's share of a step: its logits rows (prompt logprobs, then the sampling row if
/// it samples), or the token the backend chose (`None`: the sequence does not sample).
enum Choice<'a, 'b> {
    Rows(&'a mut [&'b mut [f32]]),
    /// The backend's greedy choice for each sampling row (empty: the sequence does not sample).
    Tokens(&'a [u32]),
}
