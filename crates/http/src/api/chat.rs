//! `POST /v1/chat/completions`.

use super::*;

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

pub(super) fn parse_messages(v: Value) -> Result<Vec<Message>, ApiError> {
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
    /// The output constraint, compiled by the handler.
    constraint: Option<(&'static str, switchyard_runtime::constraint::ConstraintSpec)>,
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
    let constraint = crate::structured::constraint(&mut f)?;
    if let Some(tc) = f.take("tool_choice") {
        if tc.as_str() != Some("none") {
            return Err(ApiError::unsupported("tool_choice", " (no tool calling)"));
        }
    }
    let add_generation_prompt = f.bool("add_generation_prompt")?.unwrap_or(true);
    let stream = params::stream_opts(&mut f)?;
    let mut r = EngineRequest::default();
    params::sampling(&mut f, &mut r, vocab, ctx.defaults)?;
    r.priority = params::priority(&mut f, ctx.priority_scheduling)?;
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
        constraint,
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
        request: mut r,
        logprobs,
        stream,
        constraint,
    } = parse_chat(f, template, ParseCtx::of(&state))?;
    if let Some((param, spec)) = constraint {
        r.constraint = Some(compile_constraint(&state, spec, param).await?);
    }
    let n = r.n;
    let prompt_len = r.prompt.len();
    let sub = submit_all(&state, vec![r], "messages")?;
    let id = format!("chatcmpl-{:032x}", rand::random::<u128>());
    let created = unix_now();
    let model = state.model_name().to_string();
    let mut tracker = Tracker::new(&state, t0);
    if stream.stream {
        let head = ChunkHead {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            include_usage: stream.include_usage,
        };
        // Each choice's `role` goes with its first generated output (as OpenAI and vLLM send
        // it), not at once: a chunk before the prefill ends would read as a token.
        let mut role_sent = vec![false; n];
        let choices = move |_p: usize, out: &EngineOutput| {
            let mut v = Vec::new();
            let lp = if logprobs {
                json!({"content": chat_logprobs(&tok, out.logprobs.as_deref().unwrap_or(&[]))})
            } else {
                Value::Null
            };
            let has_lp = logprobs && out.logprobs.as_ref().is_some_and(|l| !l.is_empty());
            let first = !role_sent[out.index];
            if !out.text.is_empty() || has_lp || (first && out.finish.is_some()) {
                role_sent[out.index] = true;
                let delta = if first {
                    json!({"role": "assistant", "content": out.text})
                } else {
                    json!({"content": out.text})
                };
                v.push(json!({"index": out.index, "delta": delta, "logprobs": lp,
                    "finish_reason": null}));
            }
            if let Some(f) = &out.finish {
                v.push(json!({"index": out.index, "delta": {}, "logprobs": null,
                    "finish_reason": f.as_openai()}));
            }
            v
        };
        return Ok(sse_response(head, prompt_len, sub, tracker, choices));
    }
    let acc = collect(sub, &mut tracker).await?;
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
