//! Switchyard's OpenAI-compatible HTTP server.
//!
//! Routes: `POST /v1/completions`, `POST /v1/chat/completions`, `POST /v1/embeddings`,
//! `POST /v1/responses` (with `GET` / `DELETE /v1/responses/{id}`), Anthropic's
//! `POST /v1/messages` and `POST /v1/messages/count_tokens`, `GET /v1/models`,
//! `GET /health`, `GET /ready`, `GET /metrics`, `POST /tokenize`, `POST /detokenize`,
//! `GET /tokenizer_info`, `GET /version`, `GET /openapi.json`, and the web UI (`GET /`,
//! `/dashboard`, `/ui/*`, [`webui`]) unless turned off. Everything reaches the model through an
//! [`EngineHandle`]; this crate owns protocol, validation, admission, streaming and metrics.
//!
//! # Invariants
//! - Every request field is consumed by name ([`params::Fields`]); anything left over is a 400
//!   naming it. Errors have OpenAI's shape ([`ApiError`]), Anthropic's on `/v1/messages*`.
//! - A request's engine streams live inside the response (future or SSE body): when the client
//!   goes away the body is dropped, the streams are dropped, and the engine cancels the request
//!   and frees its blocks before its next step.
//! - With an API key, every route but `/health` and `/ready` needs it (`/metrics` too, unless
//!   `public_metrics`), as `Authorization: Bearer KEY` or Anthropic's `x-api-key: KEY`.
//! - Admission counts sequences (`n` per prompt) of unfinished requests and prompt tokens not yet
//!   prefilled; above `max_num_seqs + max_queued_requests` sequences or `max_queued_tokens`
//!   tokens new requests get 429 with `Retry-After`. One request is bounded by
//!   `max_seqs_per_request` and `max_tokens_per_request` (400 naming the limit).
//! - Logs carry request ids, sizes, timings and statuses, never prompt or output text, unless
//!   `log_request_text` is set.

pub mod api;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod structured;
pub mod template;
pub mod tools;
pub mod webui;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use switchyard_core::SamplingParams;
use switchyard_runtime::engine::{EngineHandle, EngineStats};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;
use metrics::Metrics;
use template::ChatTemplate;

/// Server settings (the `serve` command's flags).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Names the model answers to (`model` field, `/v1/models`); the first is reported.
    pub served_model_names: Vec<String>,
    /// Bearer token required on every route but `/health` and `/ready` when set.
    pub api_key: Option<String>,
    /// Leave `/metrics` open even with an API key (cluster-internal scrapers).
    pub public_metrics: bool,
    /// Sequences allowed to wait beyond the engine's `max_num_seqs` before 429.
    pub max_queued_requests: usize,
    /// Prompt tokens allowed to wait for their prefill before new requests get 429 (a request
    /// is admitted regardless when none wait).
    pub max_queued_tokens: usize,
    /// Most sequences (prompts x `n`) one request may ask for (400 above).
    pub max_seqs_per_request: usize,
    /// Most tokens one request may take: its prompt tokens plus `n` x `max_tokens` for each
    /// prompt (400 above).
    pub max_tokens_per_request: usize,
    /// Log each generation request's body (prompts, messages) at INFO. Off by default: logs
    /// carry ids, sizes, timings and statuses, never text.
    pub log_request_text: bool,
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
    /// CORS origins (`*` for any); empty: no CORS headers.
    pub allowed_origins: Vec<String>,
    /// How long a SIGTERM/SIGINT waits for in-flight requests.
    pub drain_timeout: Duration,
    /// `/ready` fails when the engine has not answered for this long.
    pub watchdog_timeout: Duration,
    /// Backend description for `/version`.
    pub backend: String,
    /// A connection that has not sent a request's whole header block within this time is
    /// closed (slowloris); it also bounds how long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// A request whose body has not fully arrived this long after its headers gets 408.
    pub body_read_timeout: Duration,
    /// Open client connections at most; further connections are closed at once.
    pub max_connections: usize,
    /// The sampling a request starts from before its own fields: the model's generation
    /// defaults (`--generation-config auto`) over OpenAI's (temperature 1, top_p 1).
    pub sampling_defaults: SamplingParams,
    /// `--scheduling-policy priority`: requests' `priority` field orders the queue (lower
    /// first) and preemption (the largest value first). Off (`fcfs`), a non-zero `priority` is
    /// a 400, as in vLLM.
    pub priority_scheduling: bool,
    /// How `/v1/embeddings` pools token states (`--pooling`, else the model's own, else mean).
    pub pooling: switchyard_runtime::pooling::Pooling,
    /// Which `dimensions` `/v1/embeddings` accepts (the model's Matryoshka declaration, or
    /// `--matryoshka-dimensions`).
    pub matryoshka: switchyard_runtime::pooling::Matryoshka,
    /// Serve the chat page (`/`) and the dashboard (`/dashboard`); `--no-webui` turns both off.
    pub webui: bool,
    /// Facts about the server the dashboard shows (device, SIMD level, ...), as label / value.
    pub server_facts: Vec<(String, String)>,
    /// The flags the server runs with (effective values, never the API key), for the dashboard.
    pub server_flags: Vec<(String, String)>,
    /// Tool-call parser: from the chat template, none, or this family
    /// (`--tool-call-parser`).
    pub tool_call_parser: tools::Choice<tools::ParserKind>,
    /// Reasoning parser: from the chat template, none, or this one (`--reasoning-parser`).
    pub reasoning_parser: tools::Choice<tools::ReasoningKind>,
    /// Most `/v1/responses` answers kept for `previous_response_id` and `GET /v1/responses/{id}`
    /// (`--responses-store-size`; 0 keeps none).
    pub responses_store_size: usize,
    /// How long a stored response is kept (`--responses-store-ttl`).
    pub responses_store_ttl: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            served_model_names: vec!["model".into()],
            api_key: None,
            max_queued_requests: 256,
            max_queued_tokens: 65536,
            max_seqs_per_request: 64,
            max_tokens_per_request: 1 << 21,
            log_request_text: false,
            max_body_bytes: 8 << 20,
            allowed_origins: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            watchdog_timeout: Duration::from_secs(30),
            backend: "cpu".into(),
            public_metrics: false,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            sampling_defaults: switchyard_runtime::GenerationDefaults::default().base_params(),
            priority_scheduling: false,
            pooling: switchyard_runtime::pooling::Pooling::Mean,
            matryoshka: switchyard_runtime::pooling::Matryoshka::No,
            webui: true,
            server_facts: Vec::new(),
            server_flags: Vec::new(),
            tool_call_parser: tools::Choice::Auto,
            reasoning_parser: tools::Choice::Auto,
            responses_store_size: 1024,
            responses_store_ttl: Duration::from_secs(3600),
        }
    }
}

/// What the model's chat template supports, and the parsers its answers go through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatCaps {
    /// The template renders `tools` ([`ChatTemplate::supports_tools`]).
    pub tools: bool,
    /// The tool-call parser (detected or `--tool-call-parser`).
    pub parser: Option<tools::ParserKind>,
    /// The reasoning parser (detected or `--reasoning-parser`).
    pub reasoning: Option<tools::ReasoningKind>,
}

impl ChatCaps {
    /// The capabilities of the template `source` (compiled: `template`) under the server's
    /// parser settings.
    pub fn new(
        source: Option<&str>,
        template: Option<&ChatTemplate>,
        config: &ServerConfig,
    ) -> Self {
        let (Some(source), Some(template)) = (source, template) else {
            return Self::default();
        };
        let parser = match config.tool_call_parser {
            tools::Choice::Auto => tools::ParserKind::detect(source),
            tools::Choice::Off => None,
            tools::Choice::Use(k) => Some(k),
        };
        let reasoning = match config.reasoning_parser {
            tools::Choice::Auto => tools::ReasoningKind::detect(source),
            tools::Choice::Off => None,
            tools::Choice::Use(k) => Some(k),
        };
        Self {
            tools: template.supports_tools(),
            parser,
            reasoning,
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    /// The engine.
    pub engine: EngineHandle,
    /// Settings.
    pub config: ServerConfig,
    /// The model's chat template, if it has one (else chat is a 400).
    pub chat_template: Option<ChatTemplate>,
    /// Why the template is unusable, if it failed to compile.
    pub chat_template_error: Option<String>,
    /// What the template does with tools and reasoning.
    pub chat_caps: ChatCaps,
    /// Metrics.
    pub metrics: Metrics,
    /// Sequences of unfinished requests (admission).
    pub in_flight: AtomicUsize,
    /// Prompt tokens of admitted requests whose prefill has not produced output yet.
    pub queued_tokens: AtomicUsize,
    /// Serializes admission's check-and-add of the two counts.
    admission_lock: Mutex<()>,
    /// Set on SIGTERM/SIGINT: not ready, new requests 503.
    pub draining: AtomicBool,
    /// Milliseconds since `started` of the engine's last answer to the watchdog.
    last_engine_answer_ms: AtomicU64,
    /// The latest engine stats snapshot.
    last_stats: Mutex<Option<EngineStats>>,
    /// Process start.
    pub started: Instant,
    /// The constraint compiler for structured outputs, built on first use (the token trie).
    pub grammars:
        std::sync::OnceLock<Result<Arc<switchyard_runtime::constraint::Grammars>, String>>,
    /// Stored `/v1/responses` answers.
    pub responses: api::ResponseStore,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State for `engine`; compiles the tokenizer's chat template.
    pub fn new(engine: EngineHandle, config: ServerConfig) -> Arc<Self> {
        let tok = engine.tokenizer().clone();
        let text = |id: Option<u32>| {
            id.and_then(|i| tok.token_text(i))
                .unwrap_or_default()
                .to_string()
        };
        let (chat_template, chat_template_error) = match &tok.chat_template {
            None => (None, None),
            Some(src) => {
                match ChatTemplate::new(src, &text(tok.bos), &text(tok.eos_ids.first().copied())) {
                    Ok(t) => (Some(t), None),
                    Err(e) => {
                        tracing::warn!("the model's chat template does not compile: {e}");
                        (None, Some(e.to_string()))
                    }
                }
            }
        };
        let chat_caps = ChatCaps::new(
            tok.chat_template.as_deref(),
            chat_template.as_ref(),
            &config,
        );
        if chat_template.is_some() {
            tracing::info!(
                "chat: tools {}, tool-call parser {}, reasoning parser {}",
                if chat_caps.tools {
                    "rendered by the template"
                } else {
                    "not in the template"
                },
                chat_caps.parser.map_or("none", tools::ParserKind::name),
                if chat_caps.reasoning.is_some() {
                    "<think>"
                } else {
                    "none"
                },
            );
        }
        let metrics = Metrics::new(&config.served_model_names[0]);
        let responses =
            api::ResponseStore::new(config.responses_store_size, config.responses_store_ttl);
        Arc::new(Self {
            responses,
            engine,
            config,
            chat_template,
            chat_template_error,
            chat_caps,
            metrics,
            in_flight: AtomicUsize::new(0),
            queued_tokens: AtomicUsize::new(0),
            admission_lock: Mutex::new(()),
            draining: AtomicBool::new(false),
            last_engine_answer_ms: AtomicU64::new(0),
            last_stats: Mutex::new(None),
            started: Instant::now(),
            grammars: std::sync::OnceLock::new(),
        })
    }

    /// The name reported in responses.
    pub fn model_name(&self) -> &str {
        &self.config.served_model_names[0]
    }

    /// Engine stats, fresh if the engine answers within a second, else the last snapshot.
    pub async fn stats(&self) -> Option<EngineStats> {
        match tokio::time::timeout(Duration::from_secs(1), self.engine.stats()).await {
            Ok(Ok(s)) => {
                self.record_answer(s);
                Some(s)
            }
            _ => *self.last_stats.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    fn record_answer(&self, s: EngineStats) {
        self.last_engine_answer_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        *self.last_stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    /// Time since the engine last answered.
    pub fn engine_silence(&self) -> Duration {
        let last = Duration::from_millis(self.last_engine_answer_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Polls the engine once a second (the `/ready` watchdog): a loop stuck in a step stops
/// answering, and `/ready` turns 503 after `watchdog_timeout`.
pub fn spawn_watchdog(state: Arc<AppState>) {
    tokio::spawn(async move {
        loop {
            if let Ok(s) = state.engine.stats().await {
                state.record_answer(s);
            } else {
                // The engine is gone: stay silent (never ready again).
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Adds `X-Request-Id` (echoed or generated), counts responses by status, logs each request.
async fn request_id(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    req.extensions_mut().insert(api::RequestId(id.clone()));
    let t0 = Instant::now();
    let mut resp = next.run(req).await;
    state.metrics.observe_status(resp.status().as_u16());
    let log = RequestLog {
        id: id.clone(),
        method,
        path,
        status: resp.status().as_u16(),
        t0,
    };
    let streamed = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streamed {
        // Logged when the stream ends (or the client leaves), with its whole duration.
        let (parts, body) = resp.into_parts();
        let s = futures::StreamExt::map(body.into_data_stream(), move |chunk| {
            let _keep = &log;
            chunk
        });
        resp = Response::from_parts(parts, Body::from_stream(s));
    } else {
        drop(log);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

/// One request's log line, written when dropped: at once for a plain response, at the end
/// of the body for a stream. Sizes and timings only, never the request's text.
struct RequestLog {
    id: String,
    method: Method,
    path: String,
    status: u16,
    t0: Instant,
}

/// Paths polled by dashboards, probes and scrapers (the web UI's dashboard asks for `/metrics`
/// every second): their successful request lines go at DEBUG so they do not flood the INFO log;
/// a failure (401, a 503 from `/ready`) stays at INFO.
const QUIET_PATHS: &[&str] = &["/metrics", "/health", "/ready"];

impl Drop for RequestLog {
    fn drop(&mut self) {
        let ms = self.t0.elapsed().as_millis() as u64;
        let (id, method, path, status) = (&self.id, &self.method, &self.path, self.status);
        if status < 400 && QUIET_PATHS.contains(&path.as_str()) {
            tracing::debug!(request_id = %id, %method, %path, status, ms, "request");
        } else {
            tracing::info!(request_id = %id, %method, %path, status, ms, "request");
        }
    }
}

/// An error answered before a handler runs, in the shape of the route's API: Anthropic's on
/// `/v1/messages*`, OpenAI's elsewhere.
fn early_error(path: &str, e: ApiError) -> Response {
    if path.starts_with("/v1/messages") {
        api::anthropic_error(e)
    } else {
        e.into_response()
    }
}

/// Requires the API key (constant-time compare) when one is configured: `Authorization: Bearer
/// KEY`, or Anthropic's `x-api-key: KEY`.
async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let header_str = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let bearer = header_str(header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let x_api_key = header_str("x-api-key").unwrap_or("");
        let ok = constant_time_eq(bearer.as_bytes(), key.as_bytes())
            | constant_time_eq(x_api_key.as_bytes(), key.as_bytes());
        if !ok {
            return early_error(req.uri().path(), ApiError::unauthorized());
        }
    }
    next.run(req).await
}

/// Reads the whole request body within `body_read_timeout` (else 408) and the body limit
/// (else 413), so a client that trickles its body cannot hold a handler forever.
async fn read_body(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let limit = state.config.max_body_bytes;
    // An announced length over the limit is refused before any of the body is read (a client
    // that announces 64 MiB and sends 64 KiB must not wait out the body timeout).
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let path = req.uri().path().to_string();
    if announced.is_some_and(|n| n > limit as u64) {
        return early_error(&path, ApiError::too_large(limit));
    }
    let (parts, body) = req.into_parts();
    let timeout = state.config.body_read_timeout;
    let collected = tokio::time::timeout(
        timeout,
        http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)),
    )
    .await;
    match collected {
        Err(_) => {
            tracing::warn!(?timeout, "request body not received in time");
            early_error(&path, ApiError::body_timeout(timeout))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            early_error(&path, ApiError::too_large(limit))
        }
        Ok(Err(e)) => early_error(
            &path,
            ApiError::bad_request(format!("could not read the request body: {e}")),
        ),
        Ok(Ok(c)) => {
            let bytes = c.to_bytes();
            if state.config.log_request_text {
                let id = parts
                    .extensions
                    .get::<api::RequestId>()
                    .map(|r| r.0.as_str());
                tracing::info!(
                    request_id = id.unwrap_or(""),
                    path = parts.uri.path(),
                    body = %String::from_utf8_lossy(&bytes[..bytes.len().min(64 << 10)]),
                    "request text (--log-request-text)"
                );
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// Compares without an early exit on the first differing byte (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

async fn not_found(req: Request) -> ApiError {
    ApiError::route_not_found(req.method().as_str(), req.uri().path())
}

/// The router with every route and layer.
pub fn router(state: Arc<AppState>) -> Router {
    let mut protected = Router::new()
        .route("/v1/completions", post(api::completions))
        .route("/v1/chat/completions", post(api::chat_completions))
        .route("/v1/embeddings", post(api::embeddings))
        .route("/v1/responses", post(api::create_response))
        .route(
            "/v1/responses/{id}",
            get(api::get_response).delete(api::delete_response),
        )
        .route("/v1/messages", post(api::messages))
        .route("/v1/messages/count_tokens", post(api::count_tokens))
        .route("/v1/models", get(api::models))
        .route("/tokenize", post(api::tokenize))
        .route("/detokenize", post(api::detokenize))
        .route("/tokenizer_info", get(api::tokenizer_info))
        .route("/version", get(api::version))
        .route("/openapi.json", get(api::openapi));
    let mut open = Router::new()
        .route("/health", get(api::health))
        .route("/ready", get(api::ready));
    if state.config.webui {
        protected = protected.route("/ui/info", get(webui::info));
        open = open.merge(webui::routes());
    }
    if state.config.public_metrics {
        open = open.route("/metrics", get(api::metrics));
    } else {
        protected = protected.route("/metrics", get(api::metrics));
    }
    // Layers added later run first: auth, then the body is read.
    let protected = protected
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_body,
        ))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    let mut app = protected
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(|req: Request| async move {
            let path = req.uri().path();
            early_error(
                path,
                ApiError::method_not_allowed(req.method().as_str(), path),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_id,
        ));
    if !state.config.allowed_origins.is_empty() {
        let origin = if state.config.allowed_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                state
                    .config
                    .allowed_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("x-request-id"),
                    HeaderName::from_static("x-api-key"),
                    HeaderName::from_static("anthropic-version"),
                ])
                .expose_headers([HeaderName::from_static("x-request-id")]),
        );
    }
    app.with_state(state)
}

/// Serves on `listener` until SIGTERM/SIGINT (or `shutdown` resolves), then drains: stops
/// accepting, answers 503 to new requests on open connections, closes idle keep-alive
/// connections, waits up to `drain_timeout` for in-flight requests, and returns.
///
/// Our own accept loop over hyper (instead of `axum::serve`) so that slow clients are bounded:
/// a header block must arrive within `header_read_timeout` (idle keep-alive connections are
/// closed after the same time), a body within `body_read_timeout` ([`read_body`]), and at most
/// `max_connections` connections are open at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    spawn_watchdog(state.clone());
    let app = router(state.clone());
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "listening");
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let st = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        st.draining.store(true, Ordering::SeqCst);
        tracing::info!(
            in_flight = st.in_flight.load(Ordering::SeqCst),
            "shutting down: draining in-flight requests"
        );
        let _ = drain_tx.send(true);
    });

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(
        state.config.max_connections.max(1),
    ));
    let mut rx = drain_rx.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = rx.wait_for(|d| *d) => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                max_connections = state.config.max_connections,
                "connection limit reached; closing the new connection"
            );
            state.metrics.observe_rejected_connection();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    let timeout = state.config.drain_timeout;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(timeout) => {
            tracing::warn!(
                in_flight = state.in_flight.load(Ordering::SeqCst),
                "drain timeout reached; exiting with requests still in flight"
            );
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// A response with a JSON body.
pub(crate) fn json_response(status: StatusCode, v: &serde_json::Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }
}
