//! The handlers: `completions.rs` (`/v1/completions`), `chat.rs` (`/v1/chat/completions`),
//! `embeddings.rs` (`/v1/embeddings`), `responses/` (OpenAI's `/v1/responses`), `messages/`
//! (Anthropic's `/v1/messages`; both convert their bodies to a chat body and run through
//! `chat.rs`),
//! `endpoints.rs` (models, health, metrics, tokenizer and other small routes); this module holds
//! what they share: parsing context, per-request bounds and admission, submission, latency
//! tracking, collecting a whole answer and streaming one as SSE.

mod chat;
mod completions;
mod embeddings;
mod endpoints;
mod messages;
mod responses;

pub use chat::{chat_completions, validate_chat_body};
pub use completions::{completions, validate_completion_body};
pub use embeddings::embeddings;
pub use endpoints::{
    detokenize, health, metrics, models, openapi, ready, tokenize, tokenizer_info, version,
};
pub use messages::{anthropic_error, count_tokens, messages};
pub use responses::{create_response, delete_response, get_response, ResponseStore};

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
use switchyard_core::{FinishReason, SamplingParams};
use switchyard_runtime::engine::{
    EngineError, EngineOutput, EngineRequest, StreamItem, TokenLogprob, MAX_LOGPROBS,
};
use switchyard_runtime::tokenizer::Tokenizer;

use crate::error::ApiError;
use crate::params::{self, type_error, Fields, StreamOpts};
use crate::template::ChatTemplate;
use crate::{json_response, AppState};

/// Longest a structured-output constraint may take to compile before the request is refused.
const COMPILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Compiles a request's output constraint on a blocking thread (grammars are cached by the
/// engine's [`Grammars`](switchyard_runtime::constraint::Grammars)): an invalid, unsupported,
/// empty or too-slow constraint is a 400 on `param`.
async fn compile_constraint(
    state: &Arc<AppState>,
    spec: switchyard_runtime::constraint::ConstraintSpec,
    param: &'static str,
) -> Result<switchyard_runtime::constraint::Constraint, ApiError> {
    let st = state.clone();
    let kind = spec.kind();
    let job = tokio::task::spawn_blocking(move || {
        let g = st
            .grammars
            .get_or_init(|| {
                switchyard_runtime::constraint::Grammars::new(st.engine.tokenizer())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        g.compile(&spec).map_err(|e| {
            ApiError::invalid(param, format!("cannot use this {kind} constraint: {e}"))
        })
    });
    match tokio::time::timeout(COMPILE_TIMEOUT, job).await {
        Ok(Ok(r)) => {
            if let Ok(c) = &r {
                tracing::debug!(
                    kind,
                    compile_ms = c.compile_time().as_secs_f64() * 1e3,
                    "constraint compiled"
                );
            }
            r
        }
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("constraint compilation failed: {e}"),
        )),
        Err(_) => Err(ApiError::invalid(
            param,
            format!(
                "the {kind} constraint took longer than {} s to compile; simplify it",
                COMPILE_TIMEOUT.as_secs()
            ),
        )),
    }
}

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
    /// Whether `priority` may be set (`--scheduling-policy priority`).
    pub priority_scheduling: bool,
}

impl<'a> ParseCtx<'a> {
    fn of(state: &'a AppState) -> Self {
        let info = state.engine.info();
        Self {
            tok: state.engine.tokenizer(),
            vocab: info.vocab_size,
            max_model_len: info.max_model_len,
            defaults: &state.config.sampling_defaults,
            priority_scheduling: state.config.priority_scheduling,
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
/// `max_tokens`), each a 400 naming its limit. Returns the sequence count.
fn check_request_bounds(state: &AppState, reqs: &[EngineRequest]) -> Result<usize, ApiError> {
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
    Ok(seqs)
}

/// Outputs of every prompt of one HTTP request, tagged with the prompt's index.
type Merged = BoxStream<'static, (usize, StreamItem)>;

/// Checks the per-request bounds, admits, and submits one engine request per prompt; dropping
/// the result cancels everything.
fn submit_all(
    state: &Arc<AppState>,
    reqs: Vec<EngineRequest>,
    prompt_field: &str,
) -> Result<Submitted, ApiError> {
    let n = check_request_bounds(state, &reqs)?;
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
    Ok(Submitted {
        merged: stream::select_all(streams).boxed(),
        admission,
    })
}

/// A submitted request: its merged engine streams and the admission they hold.
struct Submitted {
    merged: Merged,
    admission: Admission,
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

/// OpenAI's (and vLLM's) `finish_reason` for how a choice ended: `stop`, `length`, or `abort`
/// for a cancelled one (chat answers that end on their own after tool calls say `tool_calls`,
/// see `chat::finish_reason`). Also the `finished_reason` label of the request metrics.
fn openai_finish_reason(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop(_) => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "abort",
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
    embedding: Option<Vec<f32>>,
}

/// Runs `merged` to the end, collecting each (prompt, choice).
async fn collect(
    sub: Submitted,
    tracker: &mut Tracker,
) -> Result<BTreeMap<(usize, usize), ChoiceAcc>, ApiError> {
    let Submitted {
        mut merged,
        admission,
    } = sub;
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
        if out.embedding.is_some() {
            c.embedding = out.embedding;
        }
    }
    let reason = acc
        .values()
        .filter_map(|c| c.finish.as_ref())
        .map(openai_finish_reason)
        .next()
        .unwrap_or("stop");
    tracker.finish(reason);
    drop(admission);
    Ok(acc)
}

/// The envelope of every chunk of one streamed answer.
struct ChunkHead {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    include_usage: bool,
}

impl ChunkHead {
    /// A chunk carrying `choices` (`usage: null` on each when the client asked for usage).
    fn chunk(&self, choices: Value) -> Value {
        let mut c = json!({
            "id": self.id, "object": self.object, "created": self.created,
            "model": self.model, "choices": choices,
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }
}

/// Streams a submitted request as server-sent events: for each engine output, `choices` gives
/// the choice objects to send (each in a chunk of its own; none to send nothing yet); an engine
/// error becomes an error event; then the usage chunk (if asked for) and `[DONE]`. The body
/// owns the engine streams and the admission: a client that leaves cancels the request.
fn sse_response(
    head: ChunkHead,
    prompt_tokens: usize,
    sub: Submitted,
    mut tracker: Tracker,
    mut choices: impl FnMut(usize, &EngineOutput) -> Vec<Value> + Send + 'static,
) -> Response {
    let s = async_stream::stream! {
        let Submitted { mut merged, admission } = sub;
        let _admission = admission;
        let mut usage = StreamUsage::default();
        let mut reason = "stop";
        while let Some((p, item)) = merged.next().await {
            let out = match item {
                Ok(o) => o,
                Err(e) => {
                    tracker.finish("error");
                    yield Ok::<Event, Infallible>(
                        Event::default().data(engine_error(e).body().to_string()),
                    );
                    break;
                }
            };
            tracker.on_output(p, &out);
            usage.observe(p, &out);
            if let Some(f) = &out.finish {
                reason = openai_finish_reason(f);
            }
            for c in choices(p, &out) {
                yield Ok(Event::default().data(head.chunk(Value::Array(vec![c])).to_string()));
            }
        }
        tracker.finish(reason);
        if head.include_usage {
            let mut c = head.chunk(json!([]));
            c["usage"] = usage.json(prompt_tokens);
            yield Ok(Event::default().data(c.to_string()));
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

/// What [`event_sse`]'s callback sees, in order: the start, each engine output, then the end
/// or an engine error.
enum Step<'a> {
    /// Before any output (the prompt is submitted).
    Start,
    /// One engine output.
    Output(&'a EngineOutput),
    /// The engine failed; nothing follows.
    Failed(ApiError),
    /// The request ended.
    End,
}

/// Streams one submitted request as server-sent events of another API's shape (`/v1/responses`,
/// `/v1/messages`): `on` turns each [`Step`] into named events (`(event name, data)`). No
/// `[DONE]`. Like [`sse_response`], the body owns the engine stream and the admission.
fn event_sse(
    sub: Submitted,
    mut tracker: Tracker,
    mut on: impl FnMut(Step<'_>) -> Vec<(String, Value)> + Send + 'static,
) -> Response {
    let ev = |(name, data): (String, Value)| {
        Ok::<Event, Infallible>(Event::default().event(name).data(data.to_string()))
    };
    let s = async_stream::stream! {
        let Submitted { mut merged, admission } = sub;
        let _admission = admission;
        for e in on(Step::Start) {
            yield ev(e);
        }
        let mut reason = "stop";
        let mut failed = false;
        while let Some((p, item)) = merged.next().await {
            let out = match item {
                Ok(o) => o,
                Err(e) => {
                    tracker.finish("error");
                    for e in on(Step::Failed(engine_error(e))) {
                        yield ev(e);
                    }
                    failed = true;
                    break;
                }
            };
            tracker.on_output(p, &out);
            if let Some(f) = &out.finish {
                reason = openai_finish_reason(f);
            }
            for e in on(Step::Output(&out)) {
                yield ev(e);
            }
        }
        if !failed {
            tracker.finish(reason);
            for e in on(Step::End) {
                yield ev(e);
            }
        }
    };
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
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
