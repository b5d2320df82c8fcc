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
