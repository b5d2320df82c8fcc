//! The handlers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::{json, Map, Value};
use switchyard_core::SamplingParams;
use switchyard_runtime::engine::{
    EngineError, EngineOutput, EngineRequest, FinishReason, StreamItem, TokenLogprob, MAX_LOGPROBS,
};
use switchyard_runtime::tokenizer::Tokenizer;

use crate::error::ApiError;
use crate::params::{self, type_error, Fields, StreamOpts};
use crate::template::{ChatTemplate, Message};
use crate::{json_response, AppState};

/// The request id (`X-Request-Id`), set by the middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

type AppResult = Result<Response, ApiError>;

/// What parsing a generation request needs from the model and the server.
#[derive(Clone, Copy)]
pub struct ParseCtx<'a> {
    /// The tokenizer (prompts, templates).
    pub tok: &'a Tokenizer,
    /// Vocabulary size (bounds token ids).
    pub vocab: usize,
    /// Longest sequence (chat's default `max_tokens` is the room left).
    pub max_model_len: usize,
    /// The sampling a request starts from (the model's generation defaults or OpenAI's).
    pub defaults: &'a SamplingParams,
}

impl<'a> ParseCtx<'a> {
    fn of(state: &'a AppState) -> Self {
        let info = state.engine.info();
        Self {
            tok: state.engine.tokenizer(),
            vocab: info.vocab_size,
            max_model_len: info.max_model_len,
            defaults: &state.config.sampling_defaults,
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The body, or 413 / 400.
fn body(state: &AppState, b: Result<Bytes, BytesRejection>) -> Result<Fields, ApiError> {
    let b = b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.config.max_body_bytes)
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })?;
    Fields::parse(&b)
}

fn check_draining(state: &AppState) -> Result<(), ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable(
            "the server is shutting down and accepts no new requests",
        ));
    }
    Ok(())
}

/// Checks the `model` field against the served names (absent: the served model).
fn check_model(state: &AppState, f: &mut Fields) -> Result<(), ApiError> {
    check_model_names(&state.config.served_model_names, f)
}

fn check_model_names(served: &[String], f: &mut Fields) -> Result<(), ApiError> {
    if let Some(m) = f.string("model")? {
        if !served.contains(&m) {
            return Err(ApiError::model_not_found(&m));
        }
    }
    Ok(())
}

// --- Admission and the engine streams ---------------------------------------------------------

/// Holds `n` sequences of the admission count until dropped, and the request's prompt tokens
/// of the queued-token count until each prompt's first output (its prefill is done) or the end.
struct Admission {
    state: Arc<AppState>,
    n: usize,
    tokens: Arc<QueuedTokens>,
}

/// Prompt tokens of one request still counted as queued.
struct QueuedTokens {
    state: Arc<AppState>,
    left: std::sync::atomic::AtomicUsize,
}

impl QueuedTokens {
    /// Stops counting up to `t` of them.
    fn release(&self, t: usize) {
        let taken = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some(l - t.min(l)))
            .map_or(0, |l| t.min(l));
        self.state.queued_tokens.fetch_sub(taken, Ordering::SeqCst);
    }
}

impl Drop for QueuedTokens {
    fn drop(&mut self) {
        self.release(usize::MAX);
    }
}

impl Admission {
    /// Admits `n` sequences with `tokens` prompt tokens, or 429. A request larger than a whole
    /// allowance is admitted when nothing else counts against it, so it is never refused forever.
    fn acquire(state: &Arc<AppState>, n: usize, tokens: usize) -> Result<Self, ApiError> {
        let cap = state.engine.info().max_num_seqs + state.config.max_queued_requests;
        let cap_tokens = state.config.max_queued_tokens;
        let _g = state
            .admission_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let cur = state.in_flight.load(Ordering::SeqCst);
        if cur > 0 && cur + n > cap {
            state.metrics.observe_overload();
            return Err(ApiError::overloaded(format!(
                "the server is at its admission limit ({cur} sequences in flight, limit \
                 {cap}: max_num_seqs + max_queued_requests); retry later"
            )));
        }
        let cur_tokens = state.queued_tokens.load(Ordering::SeqCst);
        if cur_tokens > 0 && cur_tokens + tokens > cap_tokens {
            state.metrics.observe_overload();
            return Err(ApiError::overloaded(format!(
                "the server is at its admission limit for prompt tokens ({cur_tokens} tokens of \
                 prompts waiting for their prefill, this request adds {tokens}, limit \
                 {cap_tokens}: --max-queued-tokens); retry later"
            )));
        }
        state.in_flight.fetch_add(n, Ordering::SeqCst);
        state.queued_tokens.fetch_add(tokens, Ordering::SeqCst);
        Ok(Self {
            state: state.clone(),
            n,
            tokens: Arc::new(QueuedTokens {
                state: state.clone(),
                left: tokens.into(),
            }),
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(self.n, Ordering::SeqCst);
    }
}

/// The per-request bounds: sequences (`n` x prompts) and tokens (each prompt once plus `n` x
/// `max_tokens`), each a 400 naming its limit.
fn check_request_bounds(state: &AppState, reqs: &[EngineRequest]) -> Result<(), ApiError> {
    let seqs: usize = reqs.iter().map(|r| r.n).sum();
    let max_seqs = state.config.max_seqs_per_request;
    if seqs > max_seqs {
        return Err(ApiError::invalid(
            "n",
            format!(
                "this request asks for {seqs} sequences ({} prompt(s) x n), more than the \
                 server's limit of {max_seqs} per request (--max-seqs-per-request)",
                reqs.len()
            ),
        ));
    }
    let tokens: usize = reqs
        .iter()
        .map(|r| r.prompt.len() + r.n.saturating_mul(r.max_tokens))
        .fold(0usize, usize::saturating_add);
    let max_tokens = state.config.max_tokens_per_request;
    if tokens > max_tokens {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "this request may take {tokens} tokens (prompt tokens plus n x max_tokens), more \
                 than the server's limit of {max_tokens} per request (--max-tokens-per-request); \
                 lower max_tokens or n"
            ),
        ));
    }
    Ok(())
}

/// Outputs of every prompt of one HTTP request, tagged with the prompt's index.
type Merged = BoxStream<'static, (usize, StreamItem)>;

/// Submits one engine request per prompt; the returned stream owns the engine streams (and
/// the admission), so dropping it cancels everything.
fn submit_all(
    state: &Arc<AppState>,
    reqs: Vec<EngineRequest>,
    prompt_field: &str,
) -> Result<(Merged, Admission), ApiError> {
    check_request_bounds(state, &reqs)?;
    let n: usize = reqs.iter().map(|r| r.n).sum();
    let tokens: usize = reqs.iter().map(|r| r.prompt.len()).sum();
    let admission = Admission::acquire(state, n, tokens)?;
    let mut streams = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.into_iter().enumerate() {
        let queued = admission.tokens.clone();
        let mut prompt_tokens = Some(r.prompt.len());
        let s = state
            .engine
            .submit(r)
            .map_err(|e| ApiError::from_submit(e, prompt_field))?;
        streams.push(
            s.map(move |item| {
                // The first output of a prompt comes after its prefill: no longer queued.
                if let Some(t) = prompt_tokens.take() {
                    queued.release(t);
                }
                (i, item)
            })
            .boxed(),
        );
    }
    Ok((stream::select_all(streams).boxed(), admission))
}

/// Per-request latency bookkeeping for the metrics.
struct Tracker {
    state: Arc<AppState>,
    t0: Instant,
    first: bool,
    last_token: BTreeMap<(usize, usize), Instant>,
    finished: bool,
    queue_observed: bool,
}

impl Tracker {
    fn new(state: &Arc<AppState>, t0: Instant) -> Self {
        Self {
            state: state.clone(),
            t0,
            first: false,
            last_token: BTreeMap::new(),
            finished: false,
            queue_observed: false,
        }
    }

    fn on_output(&mut self, prompt: usize, out: &EngineOutput) {
        if let (false, Some(q)) = (self.queue_observed, out.usage.queue_time) {
            self.queue_observed = true;
            self.state.metrics.observe_queue(q.as_secs_f64());
        }
        if out.token_ids.is_empty() {
            return;
        }
        let now = Instant::now();
        if !self.first {
            self.first = true;
            self.state
                .metrics
                .observe_ttft((now - self.t0).as_secs_f64());
        }
        if let Some(prev) = self.last_token.insert((prompt, out.index), now) {
            self.state.metrics.observe_itl((now - prev).as_secs_f64());
        }
    }

    fn finish(&mut self, reason: &'static str) {
        if !self.finished {
            self.finished = true;
            self.state
                .metrics
                .observe_finished(reason, self.t0.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Dropped before the end: the client went away.
        self.finish("abort");
    }
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Stopped => ApiError::unavailable(e.to_string()),
        EngineError::Rejected(m) => ApiError::bad_request(m),
        _ => ApiError::internal(e.to_string()),
    }
}

/// One choice being assembled.
#[derive(Default)]
struct ChoiceAcc {
    text: String,
    token_ids: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
    finish: Option<FinishReason>,
    completion_tokens: usize,
    prompt_tokens: usize,
    cached_tokens: usize,
}

/// Runs `merged` to the end, collecting each (prompt, choice).
async fn collect(
    mut merged: Merged,
    tracker: &mut Tracker,
) -> Result<BTreeMap<(usize, usize), ChoiceAcc>, ApiError> {
    let mut acc: BTreeMap<(usize, usize), ChoiceAcc> = BTreeMap::new();
    while let Some((p, item)) = merged.next().await {
        let out = match item {
            Ok(o) => o,
            Err(e) => {
                tracker.finish("error");
                return Err(engine_error(e));
            }
        };
        tracker.on_output(p, &out);
        let c = acc.entry((p, out.index)).or_default();
        c.text.push_str(&out.text);
        c.token_ids.extend_from_slice(&out.token_ids);
        if let Some(lp) = out.logprobs {
            c.logprobs.extend(lp);
        }
        if out.prompt_logprobs.is_some() {
            c.prompt_logprobs = out.prompt_logprobs;
        }
        c.completion_tokens = out.usage.completion_tokens;
        c.prompt_tokens = out.usage.prompt_tokens;
        c.cached_tokens = out.usage.cached_tokens;
        if out.finish.is_some() {
            c.finish = out.finish;
        }
    }
    let reason = acc
        .values()
        .filter_map(|c| c.finish.as_ref())
        .map(FinishReason::as_openai)
        .next()
        .unwrap_or("stop");
    tracker.finish(reason);
    Ok(acc)
}

/// Token counts of a streamed request, from the latest `usage` of each (prompt, choice).
#[derive(Default)]
struct StreamUsage {
    completion: BTreeMap<(usize, usize), usize>,
    cached: BTreeMap<usize, usize>,
}

impl StreamUsage {
    fn observe(&mut self, prompt: usize, out: &EngineOutput) {
        self.completion
            .insert((prompt, out.index), out.usage.completion_tokens);
        if out.index == 0 {
            self.cached.insert(prompt, out.usage.cached_tokens);
        }
    }

    fn json(&self, prompt_tokens: usize) -> Value {
        usage_json(
            prompt_tokens,
            self.completion.values().sum(),
            self.cached.values().sum(),
        )
    }
}

/// Usage over all choices: each prompt counts once.
fn usage_json(prompt_tokens: usize, completion_tokens: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

fn token_str(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

// --- /v1/completions ---------------------------------------------------------------------------

/// A parsed completions request.
struct CompletionJob {
    reqs: Vec<EngineRequest>,
    prompt_texts: Vec<String>,
    echo: bool,
    /// `max_tokens: 0` with `echo`: only the prompt (and its logprobs) is returned.
    echo_only: bool,
    logprobs: Option<usize>,
    n: usize,
    stream: StreamOpts,
}

fn parse_prompts(v: Value, tok: &Tokenizer, vocab: usize) -> Result<Vec<Vec<u32>>, ApiError> {
    let encode = |s: &str| {
        tok.encode(s, true)
            .map_err(|e| ApiError::invalid("prompt", format!("cannot tokenize the prompt: {e}")))
    };
    let bad = |v: &Value| {
        type_error(
            "prompt",
            "a string, an array of strings, an array of token ids or an array of arrays of token ids",
            v,
        )
    };
    match &v {
        Value::String(s) => Ok(vec![encode(s)?]),
        Value::Array(a) if a.is_empty() => Err(ApiError::invalid("prompt", "the prompt is empty")),
        Value::Array(a) => match &a[0] {
            Value::String(_) => a
                .iter()
                .map(|x| x.as_str().ok_or_else(|| bad(&v)).and_then(encode))
                .collect(),
            Value::Number(_) => Ok(vec![params::token_ids(&v, "prompt", vocab)?]),
            Value::Array(_) => a
                .iter()
                .map(|x| params::token_ids(x, "prompt", vocab))
                .collect(),
            _ => Err(bad(&v)),
        },
        _ => Err(bad(&v)),
    }
}

fn parse_completion(state: &AppState, f: Fields) -> Result<CompletionJob, ApiError> {
    parse_completion_with(f, &state.config.served_model_names, ParseCtx::of(state))
}

fn parse_completion_with(
    mut f: Fields,
    served: &[String],
    ctx: ParseCtx<'_>,
) -> Result<CompletionJob, ApiError> {
    let (tok, vocab) = (ctx.tok, ctx.vocab);
    check_model_names(served, &mut f)?;
    let prompt = f
        .take("prompt")
        .ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required"))?;
    let prompts = parse_prompts(prompt, tok, vocab)?;
    if prompts.iter().any(Vec::is_empty) {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    let max_tokens = f.int("max_tokens", 0, i64::from(u32::MAX))?.unwrap_or(16) as usize;
    let echo = f.bool("echo")?.unwrap_or(false);
    let logprobs = params::completion_logprobs(&mut f)?;
    let stream = params::stream_opts(&mut f)?;
    let mut base = EngineRequest::default();
    params::sampling(&mut f, &mut base, vocab, ctx.defaults)?;
    if let Some(b) = f.int("best_of", 1, i64::from(u32::MAX))? {
        if b as usize != base.n {
            return Err(ApiError::unsupported(
                "best_of",
                &format!(" unless it equals n ({}), got {b}", base.n),
            ));
        }
    }
    if let Some(s) = f.take("suffix") {
        if s.as_str().is_some_and(|s| !s.is_empty()) || !s.is_string() {
            return Err(ApiError::unsupported("suffix", " (no fill-in-the-middle)"));
        }
    }
    f.finish()?;
    if max_tokens == 0 && !echo {
        return Err(ApiError::invalid(
            "max_tokens",
            "`max_tokens` must be at least 1 (0 is only allowed with `echo`)",
        ));
    }
    let echo_only = max_tokens == 0;
    if echo_only && stream.stream {
        return Err(ApiError::invalid(
            "stream",
            "`max_tokens: 0` with `echo` is not supported when streaming",
        ));
    }
    let mut reqs = Vec::with_capacity(prompts.len());
    let mut prompt_texts = Vec::with_capacity(prompts.len());
    for p in prompts {
        if echo {
            prompt_texts.push(tok.decode(&p, base.skip_special_tokens).unwrap_or_default());
        }
        let mut r = base.clone();
        r.prompt = p;
        r.max_tokens = max_tokens.max(1);
        if echo_only {
            // Generate one token to get the prompt's logits; it is not returned.
            r.ignore_eos = true;
            r.min_tokens = 0;
            r.stop.clear();
            r.stop_token_ids.clear();
            r.n = 1;
        }
        r.logprobs = logprobs;
        if echo && logprobs.is_some() {
            r.prompt_logprobs = logprobs;
        }
        reqs.push(r);
    }
    Ok(CompletionJob {
        n: if echo_only { 1 } else { base.n },
        reqs,
        prompt_texts,
        echo,
        echo_only,
        logprobs,
        stream,
    })
}

/// OpenAI completions `logprobs` object for `entries` (token, logprob, top) starting at text
/// offset `offset`.
fn completion_logprobs_json(
    tok: &Tokenizer,
    entries: &[Option<&TokenLogprob>],
    ids: &[u32],
    mut offset: usize,
) -> Value {
    let mut tokens = Vec::new();
    let mut lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for (e, &id) in entries.iter().zip(ids) {
        let s = token_str(tok, id);
        offsets.push(offset);
        offset += s.chars().count();
        tokens.push(Value::String(s));
        match e {
            Some(e) => {
                lps.push(json!(e.logprob));
                let mut m = Map::new();
                for &(t, lp) in &e.top {
                    m.insert(token_str(tok, t), json!(lp));
                }
                tops.push(Value::Object(m));
            }
            None => {
                lps.push(Value::Null);
                tops.push(Value::Null);
            }
        }
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> AppResult {
    let t0 = Instant::now();
    check_draining(&state)?;
    let job = parse_completion(&state, body(&state, b)?)?;
    let prompt_lens: Vec<usize> = job.reqs.iter().map(|r| r.prompt.len()).collect();
    let prompt_ids: Vec<Vec<u32>> = job.reqs.iter().map(|r| r.prompt.clone()).collect();
    let (merged, admission) = submit_all(&state, job.reqs, "prompt")?;
    let id = format!("cmpl-{:032x}", rand::random::<u128>());
    let created = unix_now();
    let model = state.model_name().to_string();
    let tok = state.engine.tokenizer().clone();
    let mut tracker = Tracker::new(&state, t0);
    if job.stream.stream {
        let n = job.n;
        let (echo, logprobs, include_usage) = (job.echo, job.logprobs, job.stream.include_usage);
        let prompt_texts = job.prompt_texts;
        let s = async_stream::stream! {
            let _admission = admission;
            let mut merged = merged;
            let mut echoed = std::collections::BTreeSet::new();
            let mut offsets: BTreeMap<usize, usize> = BTreeMap::new();
            let mut usage = StreamUsage::default();
            let mut reason = "stop";
            while let Some((p, item)) = merged.next().await {
                let out = match item {
                    Ok(o) => o,
                    Err(e) => {
                        tracker.finish("error");
                        yield Ok::<Event, Infallible>(Event::default().data(engine_error(e).body().to_string()));
                        break;
                    }
                };
                tracker.on_output(p, &out);
                let index = p * n + out.index;
                let mut text = String::new();
                let mut lp_entries: Vec<Option<&TokenLogprob>> = Vec::new();
                let mut lp_ids: Vec<u32> = Vec::new();
                if echo && echoed.insert(index) {
                    text.push_str(&prompt_texts[p]);
                    if let Some(pl) = &out.prompt_logprobs {
                        lp_entries.extend(pl.iter().map(Option::as_ref));
                        lp_ids.extend(&prompt_ids[p]);
                    }
                }
                text.push_str(&out.text);
                if let Some(lp) = &out.logprobs {
                    lp_entries.extend(lp.iter().map(Some));
                    lp_ids.extend(&out.token_ids);
                }
                usage.observe(p, &out);
                if let Some(f) = &out.finish {
                    reason = f.as_openai();
                }
                if text.is_empty() && out.finish.is_none() && lp_entries.is_empty() {
                    continue;
                }
                let off = offsets.entry(index).or_insert(0);
                let lp_json = if logprobs.is_some() {
                    completion_logprobs_json(&tok, &lp_entries, &lp_ids, *off)
                } else {
                    Value::Null
                };
                *off += text.chars().count();
                let mut chunk = json!({
                    "id": id, "object": "text_completion", "created": created, "model": model,
                    "choices": [{
                        "index": index, "text": text, "logprobs": lp_json,
                        "finish_reason": out.finish.as_ref().map(FinishReason::as_openai),
                    }],
                });
                if include_usage {
                    chunk["usage"] = Value::Null;
                }
                yield Ok(Event::default().data(chunk.to_string()));
            }
            tracker.finish(reason);
            if include_usage {
                let chunk = json!({
                    "id": id, "object": "text_completion", "created": created, "model": model,
                    "choices": [],
                    "usage": usage.json(prompt_lens.iter().sum()),
                });
                yield Ok(Event::default().data(chunk.to_string()));
            }
            yield Ok(Event::default().data("[DONE]"));
        };
        return Ok(Sse::new(s).keep_alive(KeepAlive::default()).into_response());
    }
    let acc = collect(merged, &mut tracker).await?;
    drop(admission);
    let mut choices = Vec::new();
    let (mut completion_tokens, mut cached) = (0, 0);
    for ((p, i), c) in &acc {
        let index = p * job.n + i;
        let mut text = String::new();
        let mut entries: Vec<Option<&TokenLogprob>> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        if job.echo {
            text.push_str(&job.prompt_texts[*p]);
            if let Some(pl) = &c.prompt_logprobs {
                entries.extend(pl.iter().map(Option::as_ref));
                ids.extend(&prompt_ids[*p]);
            }
        }
        if *i == 0 {
            cached += c.cached_tokens;
        }
        if !job.echo_only {
            text.push_str(&c.text);
            entries.extend(c.logprobs.iter().map(Some));
            ids.extend(&c.token_ids[..c.logprobs.len().min(c.token_ids.len())]);
            completion_tokens += c.completion_tokens;
        }
        let finish = if job.echo_only {
            "length"
        } else {
            c.finish.as_ref().map_or("stop", FinishReason::as_openai)
        };
        choices.push(json!({
            "index": index,
            "text": text,
            "logprobs": if job.logprobs.is_some() {
                completion_logprobs_json(&tok, &entries, &ids, 0)
            } else {
                Value::Null
            },
            "finish_reason": finish,
        }));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage_json(prompt_lens.iter().sum(), completion_tokens, cached),
        }),
    ))
}

// --- Validation without an engine (fuzz targets) -----------------------------------------------

/// A `POST /v1/completions` body as the handler reads it: the engine requests it becomes (one
/// per prompt), or the error the handler answers. `served` are the accepted `model` names,
/// `vocab` bounds token ids. Needs no engine.
pub fn validate_completion_body(
    body: &[u8],
    served: &[String],
    ctx: ParseCtx<'_>,
) -> Result<Vec<EngineRequest>, ApiError> {
    Ok(parse_completion_with(Fields::parse(body)?, served, ctx)?.reqs)
}

/// A `POST /v1/chat/completions` body as the handler reads it: the engine request (template
/// rendered, prompt tokenized), or the error the handler answers. Needs no engine.
pub fn validate_chat_body(
    body: &[u8],
    served: &[String],
    template: &ChatTemplate,
    ctx: ParseCtx<'_>,
) -> Result<EngineRequest, ApiError> {
    let mut f = Fields::parse(body)?;
    check_model_names(served, &mut f)?;
    Ok(parse_chat(f, template, ctx)?.request)
}

// --- /v1/chat/completions ----------------------------------------------------------------------

fn parse_messages(v: Value) -> Result<Vec<Message>, ApiError> {
    let Value::Array(a) = v else {
        return Err(type_error("messages", "an array of messages", &v));
    };
    if a.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let mut out = Vec::with_capacity(a.len());
    for (i, m) in a.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(mut m) = m else {
            return Err(type_error(&at, "an object", &m));
        };
        let role = match m.remove("role") {
            Some(Value::String(r)) => r,
            Some(v) => return Err(type_error(&format!("{at}.role"), "a string", &v)),
            None => {
                return Err(ApiError::invalid(
                    format!("{at}.role"),
                    "`role` is required",
                ))
            }
        };
        let role = match role.as_str() {
            "system" | "user" | "assistant" => role,
            "developer" => "system".to_string(),
            "tool" | "function" => {
                return Err(ApiError::unsupported(
                    &format!("{at}.role"),
                    &format!(" (role `{role}`: no tool calling)"),
                ))
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("{at}.role"),
                    format!("unknown role `{role}` (expected system, user or assistant)"),
                ))
            }
        };
        let content = match m.remove("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s,
            Some(Value::Array(parts)) => {
                let mut texts = Vec::new();
                for (j, p) in parts.into_iter().enumerate() {
                    let pat = format!("{at}.content[{j}]");
                    let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
                    if ty != "text" {
                        return Err(ApiError::unsupported(
                            &pat,
                            &format!(" (content part type `{ty}`: text only)"),
                        ));
                    }
                    match p.get("text") {
                        Some(Value::String(t)) => texts.push(t.clone()),
                        _ => {
                            return Err(ApiError::invalid(pat, "a text part needs a string `text`"))
                        }
                    }
                }
                texts.join("\n")
            }
            Some(v) => {
                return Err(type_error(
                    &format!("{at}.content"),
                    "a string or an array of content parts",
                    &v,
                ))
            }
        };
        m.remove("name");
        if let Some(k) = m.keys().next() {
            return Err(ApiError::unsupported(&format!("{at}.{k}"), ""));
        }
        out.push(Message { role, content });
    }
    Ok(out)
}

/// A parsed chat request: the engine request (prompt rendered and tokenized) and the
/// response options.
struct ChatJob {
    request: EngineRequest,
    logprobs: bool,
    stream: StreamOpts,
}

/// Reads a chat body after `model` (checked by the caller): messages, options, sampling; renders
/// the template and tokenizes.
fn parse_chat(
    mut f: Fields,
    template: &ChatTemplate,
    ctx: ParseCtx<'_>,
) -> Result<ChatJob, ApiError> {
    let (tok, vocab, max_model_len) = (ctx.tok, ctx.vocab, ctx.max_model_len);
    let messages = parse_messages(
        f.take("messages")
            .ok_or_else(|| ApiError::invalid("messages", "`messages` is required"))?,
    )?;
    let max_tokens = f.int("max_tokens", 1, i64::from(u32::MAX))?;
    let max_completion = f.int("max_completion_tokens", 1, i64::from(u32::MAX))?;
    let logprobs = f.bool("logprobs")?.unwrap_or(false);
    let top = f.int("top_logprobs", 0, MAX_LOGPROBS as i64)?;
    if top.is_some() && !logprobs {
        return Err(ApiError::invalid(
            "top_logprobs",
            "`top_logprobs` requires `logprobs: true`",
        ));
    }
    if let Some(rf) = f.take("response_format") {
        if rf.get("type").and_then(Value::as_str) != Some("text") {
            return Err(ApiError::unsupported(
                "response_format",
                " (only {\"type\": \"text\"})",
            ));
        }
    }
    if let Some(tc) = f.take("tool_choice") {
        if tc.as_str() != Some("none") {
            return Err(ApiError::unsupported("tool_choice", " (no tool calling)"));
        }
    }
    let add_generation_prompt = f.bool("add_generation_prompt")?.unwrap_or(true);
    let stream = params::stream_opts(&mut f)?;
    let mut r = EngineRequest::default();
    params::sampling(&mut f, &mut r, vocab, ctx.defaults)?;
    f.finish()?;
    let text = template
        .render(&messages, add_generation_prompt)
        .map_err(|e| ApiError::invalid("messages", format!("chat template: {e}")))?;
    r.prompt = tok
        .encode(&text, false)
        .map_err(|e| ApiError::invalid("messages", format!("cannot tokenize: {e}")))?;
    let room = max_model_len.saturating_sub(r.prompt.len()).max(1);
    r.max_tokens = max_completion.or(max_tokens).map_or(room, |m| m as usize);
    r.logprobs = logprobs.then(|| top.unwrap_or(0) as usize);
    Ok(ChatJob {
        request: r,
        logprobs,
        stream,
    })
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> AppResult {
    let t0 = Instant::now();
    check_draining(&state)?;
    let mut f = body(&state, b)?;
    check_model(&state, &mut f)?;
    let Some(template) = &state.chat_template else {
        let why = state
            .chat_template_error
            .as_deref()
            .map(|e| format!(" (its template does not compile: {e})"))
            .unwrap_or_default();
        return Err(ApiError::invalid(
            "messages",
            format!(
                "model `{}` has no chat template{why}; use /v1/completions",
                state.model_name()
            ),
        ));
    };
    let tok = state.engine.tokenizer().clone();
    let ChatJob {
        request: r,
        logprobs,
        stream,
    } = parse_chat(f, template, ParseCtx::of(&state))?;
    let n = r.n;
    let prompt_len = r.prompt.len();
    let (mut merged, admission) = submit_all(&state, vec![r], "messages")?;
    let id = format!("chatcmpl-{:032x}", rand::random::<u128>());
    let created = unix_now();
    let model = state.model_name().to_string();
    let mut tracker = Tracker::new(&state, t0);
    if stream.stream {
        let include_usage = stream.include_usage;
        let s = async_stream::stream! {
            let _admission = admission;
            let base = |choices: Value| {
                let mut c = json!({
                    "id": id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": choices,
                });
                if include_usage {
                    c["usage"] = Value::Null;
                }
                c
            };
            // Each choice's `role` goes with its first generated output (as OpenAI and vLLM
            // send it), not at once: a chunk before the prefill ends would read as a token.
            let mut role_sent = vec![false; n];
            let mut usage = StreamUsage::default();
            let mut reason = "stop";
            while let Some((p, item)) = merged.next().await {
                let out = match item {
                    Ok(o) => o,
                    Err(e) => {
                        tracker.finish("error");
                        yield Ok::<Event, Infallible>(Event::default().data(engine_error(e).body().to_string()));
                        break;
                    }
                };
                tracker.on_output(p, &out);
                usage.observe(p, &out);
                let lp = if logprobs {
                    json!({"content": chat_logprobs(&tok, out.logprobs.as_deref().unwrap_or(&[]))})
                } else {
                    Value::Null
                };
                let has_lp = logprobs && out.logprobs.as_ref().is_some_and(|l| !l.is_empty());
                let first = !std::mem::replace(&mut role_sent[out.index], true);
                if !out.text.is_empty() || has_lp || (first && out.finish.is_some()) {
                    let delta = if first {
                        json!({"role": "assistant", "content": out.text})
                    } else {
                        json!({"content": out.text})
                    };
                    let c = base(json!([{"index": out.index, "delta": delta,
                        "logprobs": lp, "finish_reason": null}]));
                    yield Ok::<Event, Infallible>(Event::default().data(c.to_string()));
                } else if first {
                    // Nothing to show yet (e.g. half of a UTF-8 character): the role waits.
                    role_sent[out.index] = false;
                }
                if let Some(f) = &out.finish {
                    reason = f.as_openai();
                    let c = base(json!([{"index": out.index, "delta": {}, "logprobs": null,
                        "finish_reason": f.as_openai()}]));
                    yield Ok(Event::default().data(c.to_string()));
                }
            }
            tracker.finish(reason);
            if include_usage {
                let c = json!({
                    "id": id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [],
                    "usage": usage.json(prompt_len),
                });
                yield Ok(Event::default().data(c.to_string()));
            }
            yield Ok(Event::default().data("[DONE]"));
        };
        return Ok(Sse::new(s).keep_alive(KeepAlive::default()).into_response());
    }
    let acc = collect(merged, &mut tracker).await?;
    drop(admission);
    let mut choices = Vec::new();
    let (mut completion_tokens, mut cached) = (0, 0);
    for ((_, i), c) in &acc {
        completion_tokens += c.completion_tokens;
        if *i == 0 {
            cached = c.cached_tokens;
        }
        choices.push(json!({
            "index": i,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": if logprobs { json!({"content": chat_logprobs(&tok, &c.logprobs)}) } else { Value::Null },
            "finish_reason": c.finish.as_ref().map_or("stop", FinishReason::as_openai),
        }));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage_json(prompt_len, completion_tokens, cached),
        }),
    ))
}

fn chat_logprobs(tok: &Tokenizer, lps: &[TokenLogprob]) -> Value {
    let entry = |id: u32, lp: f32| {
        let s = token_str(tok, id);
        json!({"token": s, "logprob": lp, "bytes": s.as_bytes()})
    };
    Value::Array(
        lps.iter()
            .map(|l| {
                let mut e = entry(l.token, l.logprob);
                e["top_logprobs"] =
                    Value::Array(l.top.iter().map(|&(t, lp)| entry(t, lp)).collect());
                e
            })
            .collect(),
    )
}

// --- Small endpoints ---------------------------------------------------------------------------

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    let created = unix_now();
    let data: Vec<Value> = state
        .config
        .served_model_names
        .iter()
        .map(|n| {
            json!({
                "id": n, "object": "model", "created": created, "owned_by": "switchyard",
                "max_model_len": state.engine.info().max_model_len,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// `GET /health`: the process is alive.
pub async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// `GET /ready`: model loaded, engine answering, not draining.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return ApiError::unavailable("draining: the server is shutting down").into_response();
    }
    let silence = state.engine_silence();
    if silence > state.config.watchdog_timeout {
        return ApiError::unavailable(format!(
            "the engine loop has not answered for {:.1} s",
            silence.as_secs_f64()
        ))
        .into_response();
    }
    json_response(StatusCode::OK, &json!({"status": "ready"}))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.stats().await;
    let mut r = state.metrics.render(stats.as_ref()).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /version`.
pub async fn version(State(state): State<Arc<AppState>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "backend": state.config.backend,
            "model": state.model_name(),
        }),
    )
}

/// `GET /openapi.json`: the static document with this model's limits filled in (token ids below
/// the vocabulary size).
pub async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    json_response(
        StatusCode::OK,
        &crate::openapi::for_model(state.engine.info().vocab_size),
    )
}

/// `POST /tokenize`: `{"prompt": "..."}` or `{"messages": [...]}`, optional
/// `add_special_tokens` (default true) / `add_generation_prompt` (chat, default true).
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> AppResult {
    let mut f = body(&state, b)?;
    check_model(&state, &mut f)?;
    let tok = state.engine.tokenizer().clone();
    let add_special = f.bool("add_special_tokens")?;
    let add_gen = f.bool("add_generation_prompt")?.unwrap_or(true);
    let prompt = f.string("prompt")?;
    let messages = f.take("messages");
    f.finish()?;
    let tokens = match (prompt, messages) {
        (Some(p), None) => tok
            .encode(&p, add_special.unwrap_or(true))
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?,
        (None, Some(m)) => {
            let Some(t) = &state.chat_template else {
                return Err(ApiError::invalid(
                    "messages",
                    "this model has no chat template",
                ));
            };
            let text = t
                .render(&parse_messages(m)?, add_gen)
                .map_err(|e| ApiError::invalid("messages", format!("chat template: {e}")))?;
            tok.encode(&text, add_special.unwrap_or(false))
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `prompt` and `messages`",
            ))
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "count": tokens.len(),
            "max_model_len": state.engine.info().max_model_len,
            "tokens": tokens,
        }),
    ))
}

/// `POST /detokenize`: `{"tokens": [ids]}` → `{"prompt": text}`.
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> AppResult {
    let mut f = body(&state, b)?;
    check_model(&state, &mut f)?;
    let vocab = state.engine.info().vocab_size;
    let ids = f
        .take("tokens")
        .ok_or_else(|| ApiError::invalid("tokens", "`tokens` is required"))?;
    let ids = params::token_ids(&ids, "tokens", vocab)?;
    f.finish()?;
    let text = state
        .engine
        .tokenizer()
        .decode(&ids, false)
        .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
    Ok(json_response(StatusCode::OK, &json!({"prompt": text})))
}
