//! `switchyard serve`: the OpenAI-compatible HTTP server on one model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use switchyard_http::tools::{Choice, ParserKind, ReasoningKind};
use switchyard_http::{AppState, ServerConfig};
use switchyard_runtime::engine::{EngineConfig, EngineHandle, KvCacheSize};
use switchyard_runtime::pooling::{Matryoshka, Pooling};

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) model: crate::ModelArgs,
    /// Address to listen on.
    #[arg(long, env = "SWITCHYARD_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start-up).
    #[arg(long, env = "SWITCHYARD_PORT", default_value_t = 8080)]
    port: u16,
    /// Names clients may use in `model` (comma-separated; the first is reported).
    /// Default: the model's alias or file stem.
    #[arg(long, env = "SWITCHYARD_SERVED_MODEL_NAME", value_delimiter = ',')]
    served_model_name: Vec<String>,
    /// Require `Authorization: Bearer KEY` on every route but /health and /ready (and
    /// /metrics with --public-metrics).
    #[arg(long, env = "SWITCHYARD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Sequences allowed to wait beyond --max-num-seqs before new requests get 429.
    #[arg(long, env = "SWITCHYARD_MAX_QUEUED_REQUESTS", default_value_t = 256)]
    max_queued_requests: usize,
    /// Prompt tokens allowed to wait for their prefill before new requests get 429 with
    /// Retry-After (a request is always admitted when none wait).
    #[arg(long, env = "SWITCHYARD_MAX_QUEUED_TOKENS", default_value_t = 65536)]
    max_queued_tokens: usize,
    /// Most sequences one request may ask for: prompts x n (400 above).
    #[arg(long, env = "SWITCHYARD_MAX_SEQS_PER_REQUEST", default_value_t = 64)]
    max_seqs_per_request: usize,
    /// Most tokens one request may take: its prompt tokens plus n x max_tokens per prompt (400
    /// above). Default: --max-num-seqs x max_model_len.
    #[arg(long, env = "SWITCHYARD_MAX_TOKENS_PER_REQUEST")]
    max_tokens_per_request: Option<usize>,
    /// Log each generation request's body (prompts, messages) at INFO. Without it, logs carry
    /// ids, sizes, timings and statuses only, never prompt or output text.
    #[arg(long, env = "SWITCHYARD_LOG_REQUEST_TEXT")]
    log_request_text: bool,
    /// Largest request body in bytes (413 above).
    #[arg(long, env = "SWITCHYARD_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// CORS: allowed origins, comma-separated (`*` for any). Default: no CORS headers.
    #[arg(long, env = "SWITCHYARD_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Seconds SIGTERM/SIGINT waits for in-flight requests before exiting.
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", default_value_t = 30.0)]
    drain_timeout: f64,
    /// Seconds without an answer from the engine loop before /ready reports 503.
    #[arg(long, env = "SWITCHYARD_WATCHDOG_TIMEOUT", default_value_t = 30.0)]
    watchdog_timeout: f64,
    /// Most sequences running at once.
    #[arg(long, env = "SWITCHYARD_MAX_NUM_SEQS", default_value_t = 64)]
    max_num_seqs: usize,
    /// Token budget of one engine step (decodes plus prefill chunks).
    #[arg(long, env = "SWITCHYARD_MAX_NUM_BATCHED_TOKENS", default_value_t = 512)]
    max_num_batched_tokens: usize,
    /// KV cache size: bytes (`2GiB`, `512MiB`, `1000000`) or a fraction of free memory
    /// (`0.5`). Default: up to 4 GiB, no more than --max-num-seqs full-length sequences need.
    #[arg(long, env = "SWITCHYARD_KV_CACHE_MEMORY")]
    kv_cache_memory: Option<String>,
    /// Longest sequence (prompt + completion); default: the model's context length.
    #[arg(long, env = "SWITCHYARD_MAX_MODEL_LEN")]
    max_model_len: Option<usize>,
    /// Tokens per KV block.
    #[arg(long, env = "SWITCHYARD_BLOCK_SIZE", default_value_t = 16)]
    block_size: usize,
    /// Serve /metrics without the API key (for Prometheus scrapers inside the cluster).
    #[arg(long, env = "SWITCHYARD_PUBLIC_METRICS")]
    public_metrics: bool,
    /// Seconds a client has to send a request's headers; idle keep-alive connections are
    /// closed after the same time (slowloris defence).
    #[arg(long, env = "SWITCHYARD_HEADER_READ_TIMEOUT", default_value_t = 10.0)]
    header_read_timeout: f64,
    /// Seconds a client has to send a request's body once its headers arrived (408 after).
    #[arg(long, env = "SWITCHYARD_BODY_READ_TIMEOUT", default_value_t = 30.0)]
    body_read_timeout: f64,
    /// Open client connections at most; further ones are closed at once.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Default sampling of requests that leave it out: `auto` takes the model's own
    /// (Hugging Face `generation_config.json`, GGUF `general.sampling.*`) over OpenAI's
    /// defaults (temperature 1, top_p 1); `none` uses OpenAI's only.
    #[arg(long, env = "SWITCHYARD_GENERATION_CONFIG", default_value = "auto", value_parser = ["auto", "none"])]
    generation_config: String,
    /// Tool-call parser for chat requests with `tools`: `auto` picks the family from the chat
    /// template (`<tool_call>` JSON: hermes; `<function=`/`<parameter=`: qwen3_coder;
    /// `[TOOL_CALLS]`: mistral; `<|python_tag|>` / ipython: llama3_json), `none` parses no
    /// calls.
    #[arg(
        long,
        env = "SWITCHYARD_TOOL_CALL_PARSER",
        value_enum,
        default_value = "auto"
    )]
    tool_call_parser: ToolParserArg,
    /// Reasoning parser: `auto` splits `<think>…</think>` into `reasoning_content` when the
    /// chat template uses it; `none` leaves it in `content`; `deepseek_r1`, `qwen3` (the same
    /// `<think>` syntax) force it.
    #[arg(
        long,
        env = "SWITCHYARD_REASONING_PARSER",
        value_enum,
        default_value = "auto"
    )]
    reasoning_parser: ReasoningArg,
    /// Turn off prefix caching.
    #[arg(long, env = "SWITCHYARD_NO_PREFIX_CACHING")]
    no_prefix_caching: bool,
    /// Keep every layer's KV for every position: one block table of all layers, even for
    /// models with sliding-window layers (Gemma 3), whose older blocks are otherwise freed.
    #[arg(long, env = "SWITCHYARD_DISABLE_SLIDING_WINDOW_KV")]
    disable_sliding_window_kv: bool,
    /// `fcfs`: requests run in arrival order (a non-zero `priority` is a 400); `priority`:
    /// the request field `priority` orders the queue (lower runs first, arrival breaks ties)
    /// and, when KV blocks run out, the largest value is preempted first (vLLM's meaning).
    #[arg(long, env = "SWITCHYARD_SCHEDULING_POLICY", default_value = "fcfs", value_parser = ["fcfs", "priority"])]
    scheduling_policy: String,
    /// How `/v1/embeddings` pools the tokens' final hidden states: `mean`, `last` (decoder
    /// embedding models such as Qwen3-Embedding) or `cls` (the first token). Default: what
    /// the model declares (GGUF `{arch}.pooling_type`, sentence-transformers'
    /// `1_Pooling/config.json`), else `mean`.
    #[arg(long, env = "SWITCHYARD_POOLING", value_parser = ["mean", "last", "cls"])]
    pooling: Option<String>,
    /// Sizes `/v1/embeddings` may truncate to (`dimensions`): `any` (up to the hidden size)
    /// or a comma-separated list. Default: what the model declares (`config.json`'s
    /// `is_matryoshka` / `matryoshka_dimensions`), else none (`dimensions` is a 400).
    #[arg(long, env = "SWITCHYARD_MATRYOSHKA_DIMENSIONS")]
    matryoshka_dimensions: Option<String>,
    /// Turn off the built-in chat page (`/`) and dashboard (`/dashboard`): their routes 404.
    #[arg(long, env = "SWITCHYARD_NO_WEBUI")]
    no_webui: bool,
    /// Speculative decoding, in vLLM's JSON shape: `{"method": "ngram",
    /// "num_speculative_tokens": K, "prompt_lookup_min": A, "prompt_lookup_max": B,
    /// "disable_by_batch_size": N}` (drafts from the request's own prompt and output), or
    /// `{"method": "draft_model", "model": M, "num_speculative_tokens": K,
    /// "disable_by_batch_size": N}` (drafts from a smaller model M with the same vocabulary, an
    /// alias or path as -m takes, loaded on the same device; its KV cache comes out of the KV
    /// budget). Drafts are verified in the decode step; greedy output is unchanged. Off by
    /// default.
    #[arg(long, env = "SWITCHYARD_SPECULATIVE_CONFIG")]
    speculative_config: Option<String>,
    /// `/v1/responses`: most answers kept in memory for `previous_response_id` and
    /// `GET /v1/responses/{id}` (the oldest leave first; 0 keeps none). Requests with
    /// `store: false` are never kept.
    #[arg(long, env = "SWITCHYARD_RESPONSES_STORE_SIZE", default_value_t = 1024)]
    responses_store_size: usize,
    /// Seconds a stored `/v1/responses` answer is kept.
    #[arg(long, env = "SWITCHYARD_RESPONSES_STORE_TTL", default_value_t = 3600.0)]
    responses_store_ttl: f64,
}

/// Parses `--speculative-config` (vLLM's JSON shape), if given.
pub(crate) fn parse_speculative(
    json: Option<&str>,
) -> Result<Option<switchyard_runtime::engine::SpeculativeConfig>> {
    json.map(switchyard_runtime::engine::SpeculativeConfig::from_json)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Parses `--matryoshka-dimensions`.
pub(crate) fn parse_matryoshka(s: &str) -> Result<Matryoshka> {
    if s.trim() == "any" {
        return Ok(Matryoshka::Any);
    }
    let dims = s
        .split(',')
        .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
        .collect::<Option<Vec<_>>>()
        .with_context(|| {
            format!("--matryoshka-dimensions {s:?}: expected `any` or sizes like 64,128,256")
        })?;
    Ok(Matryoshka::Dims(dims))
}

/// `--tool-call-parser`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum ToolParserArg {
    Auto,
    None,
    Hermes,
    #[value(name = "llama3_json")]
    Llama3Json,
    Mistral,
    #[value(name = "qwen3_coder")]
    Qwen3Coder,
}

/// `--reasoning-parser` (`deepseek_r1`, `qwen3` and `think` are the same `<think>` syntax).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum ReasoningArg {
    Auto,
    None,
    #[value(name = "deepseek_r1")]
    DeepseekR1,
    Qwen3,
    Think,
}

/// Parses `--kv-cache-memory`.
pub(crate) fn parse_kv(s: &str) -> Result<KvCacheSize> {
    let t = s.trim();
    if let Ok(f) = t.parse::<f64>() {
        if f > 0.0 && f <= 1.0 && t.contains('.') {
            return Ok(KvCacheSize::FractionOfFree(f));
        }
    }
    let lower = t.to_ascii_lowercase();
    let (num, mult) = [
        ("gib", 1u64 << 30),
        ("mib", 1 << 20),
        ("kib", 1 << 10),
        ("gb", 1_000_000_000),
        ("mb", 1_000_000),
        ("kb", 1_000),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| lower.strip_suffix(suf).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((lower.clone(), 1));
    let v: f64 = num.parse().with_context(|| {
        format!("--kv-cache-memory {s:?}: expected bytes like 2GiB / 512MiB / 1000000, or a fraction like 0.5")
    })?;
    if !(v > 0.0 && v.is_finite()) {
        bail!("--kv-cache-memory {s:?} must be positive");
    }
    Ok(KvCacheSize::Bytes((v * mult as f64) as u64))
}

pub(crate) fn run(a: ServeArgs) -> Result<()> {
    let threads = crate::init_threads(a.model.threads)?;
    let t0 = Instant::now();
    let mut model = crate::load_model(&a.model)?;
    if let Some(n) = a.max_model_len {
        // LongRoPE's factor set follows the context served (as llama.cpp's follows -c).
        let n = n.min(model.config.context_length);
        model.config.select_rope_factors(n);
    }
    let speculative = parse_speculative(a.speculative_config.as_deref())?;
    let draft = crate::device::open_draft(speculative.as_ref(), &a.model, &model)?;
    let backend = crate::device::create_backend(a.model.device, &model)?;
    let backend_name = backend.capabilities().device_name.clone();
    let backend_kind = backend.capabilities().kind;
    let kv_cache = match &a.kv_cache_memory {
        Some(s) => parse_kv(s)?,
        None => KvCacheSize::Auto,
    };
    let names = if a.served_model_name.is_empty() {
        let alias = if a.model.model.ends_with(".gguf") || a.model.model.ends_with(".toml") {
            model
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| a.model.model.clone())
        } else if std::path::Path::new(&a.model.model).is_dir() {
            // A Hugging Face directory: its name (a Hub repo id is kept whole, as vLLM does).
            model
                .path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| a.model.model.clone())
        } else {
            a.model.model.clone()
        };
        vec![alias]
    } else {
        a.served_model_name.clone()
    };
    let config = EngineConfig {
        block_size: a.block_size,
        kv_cache,
        max_num_batched_tokens: a.max_num_batched_tokens,
        max_num_seqs: a.max_num_seqs,
        enable_prefix_caching: !a.no_prefix_caching,
        max_model_len: a.max_model_len,
        sliding_window_kv: !a.disable_sliding_window_kv,
        speculative,
    };
    let generation = if a.generation_config == "auto" {
        model.generation.clone()
    } else {
        switchyard_runtime::GenerationDefaults::default()
    };
    tracing::info!(
        "default sampling: {} (--generation-config {})",
        generation.describe(),
        a.generation_config
    );
    let pooling = match &a.pooling {
        Some(p) => Pooling::parse(p).context("--pooling")?,
        None => model.embedding.pooling.unwrap_or(Pooling::Mean),
    };
    let matryoshka = match &a.matryoshka_dimensions {
        Some(s) => parse_matryoshka(s)?,
        None => model.embedding.matryoshka.clone(),
    };
    let draft = crate::device::load_draft(draft, a.model.device, backend_kind)?;
    let tokenizer = Arc::new(model.tokenizer);
    let engine = EngineHandle::start_with_draft(backend, tokenizer, &model.config, config, draft)
        .context("starting the engine")?;
    let info = engine.info().clone();
    let mut facts = vec![
        ("device".to_string(), backend_name.clone()),
        ("backend".to_string(), backend_kind.to_string()),
    ];
    if backend_kind == "cpu" {
        facts.push((
            "SIMD level".into(),
            switchyard_backend_cpu::kernels::simd_level().to_string(),
        ));
    }
    facts.extend([
        ("threads".to_string(), threads.to_string()),
        (
            "architecture".to_string(),
            format!("{:?}", model.config.arch),
        ),
        ("model file".to_string(), model.path.display().to_string()),
        (
            "KV cache".to_string(),
            format!(
                "{} blocks x {} tokens ({:.0} MiB)",
                info.num_blocks,
                info.block_size,
                (info.num_blocks * info.bytes_per_block) as f64 / (1u64 << 20) as f64
            ),
        ),
        ("default sampling".to_string(), generation.describe()),
    ]);
    if info.draft_num_blocks > 0 {
        facts.push((
            "draft model KV cache".to_string(),
            format!(
                "{} blocks x {} tokens ({:.0} MiB)",
                info.draft_num_blocks,
                info.block_size,
                (info.draft_num_blocks * info.draft_bytes_per_block) as f64 / (1u64 << 20) as f64
            ),
        ));
    }
    let flags = flag_values(&a, threads);
    let server = ServerConfig {
        served_model_names: names,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        max_queued_requests: a.max_queued_requests,
        max_queued_tokens: a.max_queued_tokens.max(1),
        max_seqs_per_request: a.max_seqs_per_request.max(1),
        max_tokens_per_request: a
            .max_tokens_per_request
            .unwrap_or(info.max_num_seqs.max(1) * info.max_model_len)
            .max(1),
        log_request_text: a.log_request_text,
        max_body_bytes: a.max_body_bytes,
        allowed_origins: a.allowed_origins,
        drain_timeout: Duration::from_secs_f64(a.drain_timeout.max(0.0)),
        watchdog_timeout: Duration::from_secs_f64(a.watchdog_timeout.max(1.0)),
        backend: backend_name.clone(),
        public_metrics: a.public_metrics,
        header_read_timeout: Duration::from_secs_f64(a.header_read_timeout.max(0.1)),
        body_read_timeout: Duration::from_secs_f64(a.body_read_timeout.max(0.1)),
        max_connections: a.max_connections.max(1),
        sampling_defaults: generation.base_params(),
        priority_scheduling: a.scheduling_policy == "priority",
        pooling,
        matryoshka,
        webui: !a.no_webui,
        server_facts: facts,
        server_flags: flags,
        tool_call_parser: match a.tool_call_parser {
            ToolParserArg::Auto => Choice::Auto,
            ToolParserArg::None => Choice::Off,
            ToolParserArg::Hermes => Choice::Use(ParserKind::Hermes),
            ToolParserArg::Llama3Json => Choice::Use(ParserKind::Llama3Json),
            ToolParserArg::Mistral => Choice::Use(ParserKind::Mistral),
            ToolParserArg::Qwen3Coder => Choice::Use(ParserKind::Qwen3Coder),
        },
        reasoning_parser: match a.reasoning_parser {
            ReasoningArg::Auto => Choice::Auto,
            ReasoningArg::None => Choice::Off,
            ReasoningArg::DeepseekR1 | ReasoningArg::Qwen3 | ReasoningArg::Think => {
                Choice::Use(ReasoningKind::Think)
            }
        },
        responses_store_size: a.responses_store_size,
        responses_store_ttl: Duration::from_secs_f64(a.responses_store_ttl.clamp(0.0, 1e9)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let host = a.host.clone();
    let port = a.port;
    let r = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port}"))?;
        let addr = listener.local_addr()?;
        let state = AppState::new(engine.clone(), server);
        eprintln!(
            "switchyard: serving {} on http://{addr} ({backend_name}; KV {} blocks x {} tokens, max_model_len {}, ready in {:.1} s)",
            state.model_name(),
            info.num_blocks,
            info.block_size,
            info.max_model_len,
            t0.elapsed().as_secs_f64()
        );
        switchyard_http::serve(listener, state, switchyard_http::shutdown_signal()).await?;
        engine.shutdown();
        eprintln!("switchyard: stopped");
        anyhow::Ok(())
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

/// The effective value of every `serve` flag for the dashboard (whether given on the command
/// line, by environment or by default); the API key only as set / not set.
fn flag_values(a: &ServeArgs, threads: usize) -> Vec<(String, String)> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "auto".into());
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    let f = |k: &str, v: String| (format!("--{k}"), v);
    vec![
        f("model", a.model.model.clone()),
        f(
            "device",
            match a.model.device {
                crate::device::Device::Auto => "auto".into(),
                crate::device::Device::Cpu => "cpu".into(),
                crate::device::Device::Cuda(n) => format!("cuda:{n}"),
                crate::device::Device::Neuron => "neuron".into(),
            },
        ),
        f("threads", threads.to_string()),
        f("host", a.host.clone()),
        f("port", a.port.to_string()),
        f("served-model-name", list(&a.served_model_name)),
        f(
            "api-key",
            if a.api_key.as_deref().is_some_and(|k| !k.is_empty()) {
                "(set)".into()
            } else {
                "-".into()
            },
        ),
        f("public-metrics", a.public_metrics.to_string()),
        f("max-num-seqs", a.max_num_seqs.to_string()),
        f(
            "max-num-batched-tokens",
            a.max_num_batched_tokens.to_string(),
        ),
        f(
            "max-model-len",
            opt(&a.max_model_len.map(|n| n.to_string())),
        ),
        f("kv-cache-memory", opt(&a.kv_cache_memory)),
        f("block-size", a.block_size.to_string()),
        f("no-prefix-caching", a.no_prefix_caching.to_string()),
        f(
            "disable-sliding-window-kv",
            a.disable_sliding_window_kv.to_string(),
        ),
        f("generation-config", a.generation_config.clone()),
        f(
            "tool-call-parser",
            format!("{:?}", a.tool_call_parser).to_lowercase(),
        ),
        f(
            "reasoning-parser",
            format!("{:?}", a.reasoning_parser).to_lowercase(),
        ),
        f("max-queued-requests", a.max_queued_requests.to_string()),
        f("max-queued-tokens", a.max_queued_tokens.to_string()),
        f("max-seqs-per-request", a.max_seqs_per_request.to_string()),
        f(
            "max-tokens-per-request",
            opt(&a.max_tokens_per_request.map(|n| n.to_string())),
        ),
        f("max-body-bytes", a.max_body_bytes.to_string()),
        f("max-connections", a.max_connections.to_string()),
        f("allowed-origins", list(&a.allowed_origins)),
        f(
            "header-read-timeout",
            format!("{} s", a.header_read_timeout),
        ),
        f("body-read-timeout", format!("{} s", a.body_read_timeout)),
        f("drain-timeout", format!("{} s", a.drain_timeout)),
        f("watchdog-timeout", format!("{} s", a.watchdog_timeout)),
        f("log-request-text", a.log_request_text.to_string()),
        f("no-mmap", a.model.no_mmap.to_string()),
        f("responses-store-size", a.responses_store_size.to_string()),
        f(
            "responses-store-ttl",
            format!("{} s", a.responses_store_ttl),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_sizes() {
        assert_eq!(parse_kv("2GiB").unwrap(), KvCacheSize::Bytes(2 << 30));
        assert_eq!(parse_kv("512 MiB").unwrap(), KvCacheSize::Bytes(512 << 20));
        assert_eq!(parse_kv("1000000").unwrap(), KvCacheSize::Bytes(1_000_000));
        assert_eq!(parse_kv("0.5").unwrap(), KvCacheSize::FractionOfFree(0.5));
        assert_eq!(parse_kv("1gb").unwrap(), KvCacheSize::Bytes(1_000_000_000));
        assert!(parse_kv("lots").is_err());
        assert!(parse_kv("-1GiB").is_err());
    }

    #[test]
    fn matryoshka_sizes() {
        assert_eq!(parse_matryoshka("any").unwrap(), Matryoshka::Any);
        assert_eq!(
            parse_matryoshka("64, 128").unwrap(),
            Matryoshka::Dims(vec![64, 128])
        );
        assert!(parse_matryoshka("0").is_err());
        assert!(parse_matryoshka("big").is_err());
    }
}
