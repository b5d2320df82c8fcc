//! The small routes: models, health, readiness, metrics, version, the OpenAPI document and
//! the tokenizer endpoints.

use super::*;

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
/// the vocabulary size), without `/ui/info` when the server runs with `--no-webui`.
pub async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    let mut v = crate::openapi::for_model(state.engine.info().vocab_size);
    if !state.config.webui {
        crate::openapi::without_webui(&mut v);
    }
    json_response(StatusCode::OK, &v)
}

/// `POST /tokenize` (vLLM's shapes): `{"prompt": "..."}` or `{"messages": [...]}`, optional
/// `add_special_tokens` (default true for a prompt, false for messages, whose template writes
/// them), `add_generation_prompt` (chat, default true), `return_token_strs`; answers `tokens`,
/// `count`, `max_model_len` (and `token_strs`, each token's vocabulary entry, when asked).
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> AppResult {
    let mut f = body(&state, b)?;
    check_model(&state, &mut f)?;
    let tok = state.engine.tokenizer().clone();
    let add_special = f.bool("add_special_tokens")?;
    let add_gen = f.bool("add_generation_prompt")?;
    let token_strs = f.bool("return_token_strs")?.unwrap_or(false);
    let prompt = f.string("prompt")?;
    let messages = f.take("messages");
    // As vLLM's /tokenize: the chat request's tools and template variables render too.
    let tools = match f.take("tools") {
        None => None,
        Some(v) => Some(crate::tools::parse_tools(v)?.1),
    };
    let kwargs = match f.take("chat_template_kwargs") {
        None => serde_json::Map::new(),
        Some(Value::Object(m)) => m,
        Some(v) => return Err(params::type_error("chat_template_kwargs", "an object", &v)),
    };
    f.finish()?;
    if add_gen.is_some() && prompt.is_some() {
        return Err(ApiError::invalid(
            "add_generation_prompt",
            "`add_generation_prompt` applies to `messages` only",
        ));
    }
    let add_gen = add_gen.unwrap_or(true);
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
                .render_json(
                    &crate::tools::messages::parse_messages(m)?,
                    add_gen,
                    tools
                        .as_ref()
                        .filter(|t| t.as_array().is_some_and(|a| !a.is_empty())),
                    &kwargs,
                )
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
    let mut out = json!({
        "count": tokens.len(),
        "max_model_len": state.engine.info().max_model_len,
        "tokens": tokens,
    });
    if token_strs {
        let strs: Vec<&str> = tokens
            .iter()
            .map(|&t| tok.token_text(t).unwrap_or_default())
            .collect();
        out["token_strs"] = json!(strs);
    }
    Ok(json_response(StatusCode::OK, &out))
}

/// `GET /tokenizer_info`: the tokenizer's configuration as vLLM answers it (the fields of a
/// Hugging Face `tokenizer_config.json` plus `tokenizer_class`), which lm-evaluation-harness's
/// remote tokenizer reads: special tokens as text, whether BOS / EOS are added, the chat
/// template, the longest sequence served. Special tokens the model lacks are `null`.
pub async fn tokenizer_info(State(state): State<Arc<AppState>>) -> Response {
    let tok = state.engine.tokenizer();
    let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).map(str::to_string);
    let mut out = json!({
        // Our tokenizers are `tokenizers`-library pipelines, as Hugging Face's generic fast
        // tokenizer class is.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": text(tok.bos),
        "eos_token": text(tok.eos_ids.first().copied()),
        "pad_token": text(tok.pad),
        "unk_token": text(tok.unk),
        "add_bos_token": tok.add_bos,
        "add_eos_token": tok.adds_eos(),
        "model_max_length": state.engine.info().max_model_len,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(t) = &tok.chat_template {
        out["chat_template"] = json!(t);
    }
    json_response(StatusCode::OK, &out)
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
