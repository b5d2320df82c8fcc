//! `POST /v1/chat/completions`.

use super::*;
use crate::tools::{
    self, Assembled, CallParser, Output, ParserKind, Piece, ThinkSplitter, ToolChoice, ToolSpec,
};
use crate::ChatCaps;
use switchyard_runtime::constraint::ConstraintSpec;

/// A `POST /v1/chat/completions` body as the handler reads it: the engine request (template
/// rendered, prompt tokenized), or the error the handler answers. Needs no engine.
pub fn validate_chat_body(
    body: &[u8],
    served: &[String],
    template: &ChatTemplate,
    ctx: ParseCtx<'_>,
) -> Result<EngineRequest, ApiError> {
    let caps = ChatCaps {
        tools: template.supports_tools(),
        ..ChatCaps::default()
    };
    let mut f = Fields::parse(body)?;
    check_model_names(served, &mut f)?;
    Ok(parse_chat(f, template, caps, ctx)?.request)
}

/// A parsed chat request: the engine request (prompt rendered and tokenized), the response
/// options, and how the answer is parsed.
pub(super) struct ChatJob {
    pub(super) request: EngineRequest,
    logprobs: bool,
    stream: StreamOpts,
    pub(super) parse: OutputSpec,
    /// The output constraint (`response_format` and friends, or the grammar forcing a tool call),
    /// compiled by the handler.
    constraint: Option<(&'static str, switchyard_runtime::constraint::ConstraintSpec)>,
    /// Trigger tokens that make `constraint` lazy (`tool_choice: "auto"`: free text until the
    /// model opens a call, then the call grammar); empty for an eager constraint.
    lazy: Vec<u32>,
}

/// How each choice's text is parsed: reasoning and tool calls.
#[derive(Debug, Clone)]
pub(super) struct OutputSpec {
    /// `Some(starts_inside)` when reasoning is parsed.
    reasoning: Option<bool>,
    /// The call parser, with the tools and `parallel_tool_calls`, when calls are parsed.
    calls: Option<(ParserKind, Vec<ToolSpec>, bool)>,
}

impl OutputSpec {
    /// Fresh parsers for one choice's text.
    pub(super) fn output(&self) -> Output {
        Output::new(
            self.reasoning.map(ThinkSplitter::new),
            self.calls
                .as_ref()
                .map(|(k, t, par)| CallParser::new(*k, t.clone(), *par)),
        )
    }
}

/// The tool fields of a chat body: tools (specs and as given), choice, parallel calls,
/// template variables.
struct ToolFields {
    specs: Vec<ToolSpec>,
    raw: Option<Value>,
    choice: ToolChoice,
    parallel: bool,
    kwargs: Map<String, Value>,
}

fn tool_fields(f: &mut Fields, caps: ChatCaps) -> Result<ToolFields, ApiError> {
    let (specs, raw) = match f.take("tools") {
        None => (Vec::new(), None),
        Some(v) => {
            let (s, raw) = tools::parse_tools(v)?;
            (s, Some(raw))
        }
    };
    let choice = tools::parse_tool_choice(f.take("tool_choice"), &specs)?;
    let parallel = f.bool("parallel_tool_calls")?.unwrap_or(true);
    let kwargs = match f.take("chat_template_kwargs") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(v) => return Err(type_error("chat_template_kwargs", "an object", &v)),
    };
    if let Some(k) = kwargs
        .keys()
        .find(|k| crate::template::RESERVED_VARIABLES.contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            "chat_template_kwargs",
            format!("`chat_template_kwargs` cannot set `{k}` (the request's own fields do)"),
        ));
    }
    if !specs.is_empty() && !caps.tools {
        return Err(ApiError::invalid(
            "tools",
            "this model's chat template does not render tools (no tool calling with this \
             model); send the request without `tools`",
        ));
    }
    if choice != ToolChoice::None && caps.parser.is_none() {
        return Err(ApiError::invalid(
            "tools",
            format!(
                "no tool-call parser is known for this model's chat template; start the server \
                 with --tool-call-parser NAME ({}), or send tool_choice \"none\"",
                ParserKind::NAMES.join(", ")
            ),
        ));
    }
    // An empty list renders as no tools.
    let raw = raw.filter(|_| !specs.is_empty());
    Ok(ToolFields {
        specs,
        raw,
        choice,
        parallel,
        kwargs,
    })
}

/// Reads a chat body after `model` (checked by the caller): messages, tools, options, sampling;
/// renders the template and tokenizes.
fn parse_chat(
    mut f: Fields,
    template: &ChatTemplate,
    caps: ChatCaps,
    ctx: ParseCtx<'_>,
) -> Result<ChatJob, ApiError> {
    let (tok, vocab, max_model_len) = (ctx.tok, ctx.vocab, ctx.max_model_len);
    let messages = tools::messages::parse_messages(
        f.take("messages")
            .ok_or_else(|| ApiError::invalid("messages", "`messages` is required"))?,
    )?;
    let tf = tool_fields(&mut f, caps)?;
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
    let mut constraint = crate::structured::constraint(&mut f)?;
    let mut lazy = Vec::new();
    let add_generation_prompt = f.bool("add_generation_prompt")?;
    let continue_final = f.bool("continue_final_message")?.unwrap_or(false);
    if continue_final && add_generation_prompt == Some(true) {
        return Err(ApiError::invalid(
            "continue_final_message",
            "`continue_final_message` cannot be combined with `add_generation_prompt: true`",
        ));
    }
    let add_generation_prompt = !continue_final && add_generation_prompt.unwrap_or(true);
    let stream = params::stream_opts(&mut f)?;
    let special_set = f.has("skip_special_tokens");
    let mut r = EngineRequest::default();
    params::sampling(&mut f, &mut r, vocab, ctx.defaults)?;
    r.priority = params::priority(&mut f, ctx.priority_scheduling)?;
    f.finish()?;
    let text = template
        .render_json(
            &messages,
            add_generation_prompt,
            tf.raw.as_ref(),
            &tf.kwargs,
        )
        .map_err(|e| ApiError::invalid("messages", format!("chat template: {e}")))?;
    let text = if continue_final {
        open_final_message(text, &messages)?
    } else {
        text
    };
    r.prompt = tok
        .encode(&text, false)
        .map_err(|e| ApiError::invalid("messages", format!("cannot tokenize: {e}")))?;
    let room = max_model_len.saturating_sub(r.prompt.len()).max(1);
    r.max_tokens = max_completion.or(max_tokens).map_or(room, |m| m as usize);
    r.logprobs = logprobs.then(|| top.unwrap_or(0) as usize);
    let reasoning = caps
        .reasoning
        .map(|_| ThinkSplitter::prompt_ends_inside(&text));
    let calls = match (tf.choice != ToolChoice::None, caps.parser) {
        (true, Some(kind)) => {
            // The family's markers are special tokens: keep them in the text unless the client
            // chose otherwise.
            if kind.needs_special_tokens() && !special_set {
                r.skip_special_tokens = false;
            }
            Some((kind, tf.specs.clone(), tf.parallel))
        }
        _ => None,
    };
    if let Some((kind, specs, parallel)) = &calls {
        // `required` or a named function: the grammar of the family's call syntax, with each
        // tool's `parameters` as the arguments' JSON schema, constrains the answer.
        let grammar = tools::tool_call_grammar(
            specs,
            &tf.choice,
            *kind,
            tools::GrammarOpts {
                parallel: *parallel,
                reasoning,
                mistral_tool_calls_token: tok.token_id("[TOOL_CALLS]"),
            },
        );
        if let Some(g) = grammar {
            if let Some((param, _)) = &constraint {
                return Err(ApiError::invalid(
                    *param,
                    format!(
                        "`{param}` cannot be combined with tool_choice \"required\" or a named \
                         function (the tool call's grammar constrains the answer)"
                    ),
                ));
            }
            constraint = Some(("tool_choice", ConstraintSpec::Lark(g)));
        } else if tf.choice == ToolChoice::Auto && constraint.is_none() {
            // `auto`: once the model opens a call with the family's marker token, the rest of
            // the answer follows the call grammar (any of the tools), so a started call parses.
            if let Some(t) = kind.trigger().and_then(|m| tok.token_id(m)) {
                let g = tools::tool_call_grammar(
                    specs,
                    &ToolChoice::Required,
                    *kind,
                    tools::GrammarOpts {
                        parallel: *parallel,
                        reasoning: None,
                        mistral_tool_calls_token: tok.token_id("[TOOL_CALLS]"),
                    },
                );
                if let Some(g) = g {
                    constraint = Some(("tools", ConstraintSpec::Lark(g)));
                    lazy = vec![t];
                }
            }
        }
    }
    Ok(ChatJob {
        request: r,
        logprobs,
        stream,
        parse: OutputSpec { reasoning, calls },
        constraint,
        lazy,
    })
}

/// `continue_final_message` (vLLM's; Anthropic's prefill): the rendered conversation cut right
/// after the final assistant message's text, so that the model goes on with that message
/// instead of closing it.
fn open_final_message(text: String, messages: &[Value]) -> Result<String, ApiError> {
    let bad = |m: &str| ApiError::invalid("continue_final_message", m.to_string());
    let last = messages
        .last()
        .filter(|m| m["role"] == "assistant")
        .ok_or_else(|| {
            bad("`continue_final_message` needs the last message to be the assistant's")
        })?;
    let content = last["content"].as_str().unwrap_or("");
    if content.trim().is_empty() {
        return Err(bad("the final assistant message to continue has no text"));
    }
    // Templates may strip the message's surrounding whitespace.
    let end = [content, content.trim_end(), content.trim()]
        .iter()
        .find_map(|c| text.rfind(c).map(|i| i + c.len()))
        .ok_or_else(|| bad("the chat template does not write the final message's text as given"))?;
    let mut text = text;
    text.truncate(end);
    Ok(text)
}

/// The message fields of a parsed answer: `content` (null when empty and there are calls),
/// `reasoning_content` and `reasoning` (when any), `tool_calls` (when any).
fn message_fields(a: &Assembled, m: &mut Map<String, Value>) {
    let content = if a.content.is_empty() && !a.calls.is_empty() {
        Value::Null
    } else {
        Value::String(a.content.clone())
    };
    m.insert("content".into(), content);
    if !a.reasoning.is_empty() {
        m.insert("reasoning_content".into(), json!(a.reasoning));
        m.insert("reasoning".into(), json!(a.reasoning));
    }
    if !a.calls.is_empty() {
        let calls: Vec<Value> = a
            .calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        m.insert("tool_calls".into(), Value::Array(calls));
    }
}

/// `finish_reason`: `tool_calls` when the answer ended on its own after calls.
fn finish_reason(f: Option<&FinishReason>, calls: usize) -> &'static str {
    let r = f.map_or("stop", openai_finish_reason);
    if calls > 0 && r == "stop" {
        "tool_calls"
    } else {
        r
    }
}

/// The stream deltas of `pieces`: reasoning and content together, then each call as OpenAI
/// streams it: a delta with its index, id, type and name (arguments ""), then one with the
/// arguments.
fn piece_deltas(pieces: &[Piece], next_call: &mut usize) -> Vec<Value> {
    let mut out = Vec::new();
    let (mut reasoning, mut content) = (String::new(), String::new());
    let flush = |out: &mut Vec<Value>, reasoning: &mut String, content: &mut String| {
        if reasoning.is_empty() && content.is_empty() {
            return;
        }
        let mut d = Map::new();
        if !reasoning.is_empty() {
            d.insert("reasoning_content".into(), json!(reasoning));
            d.insert("reasoning".into(), json!(std::mem::take(reasoning)));
        }
        if !content.is_empty() {
            d.insert("content".into(), json!(std::mem::take(content)));
        }
        out.push(Value::Object(d));
    };
    for p in pieces {
        match p {
            Piece::Reasoning(s) => reasoning.push_str(s),
            Piece::Content(s) => content.push_str(s),
            Piece::Call(c) => {
                flush(&mut out, &mut reasoning, &mut content);
                let i = *next_call;
                *next_call += 1;
                out.push(
                    json!({"tool_calls": [{"index": i, "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": ""}}]}),
                );
                out.push(json!({"tool_calls": [{"index": i,
                    "function": {"arguments": c.arguments}}]}));
            }
        }
    }
    flush(&mut out, &mut reasoning, &mut content);
    out
}

/// The model's chat template, or the 400 saying why there is none (`field`: the request's
/// conversation field).
fn chat_template<'a>(state: &'a AppState, field: &str) -> Result<&'a ChatTemplate, ApiError> {
    state.chat_template.as_ref().ok_or_else(|| {
        let why = state
            .chat_template_error
            .as_deref()
            .map(|e| format!(" (its template does not compile: {e})"))
            .unwrap_or_default();
        ApiError::invalid(
            field,
            format!(
                "model `{}` has no chat template{why}; use /v1/completions",
                state.model_name()
            ),
        )
    })
}

/// Reads a chat body whose `model` was checked: renders and tokenizes the conversation and
/// compiles the output constraint into the engine request. `/v1/responses` and `/v1/messages`
/// run through here with their bodies converted to a chat body (`field` names their
/// conversation field in a missing-template error).
pub(super) async fn prepare_chat(
    state: &Arc<AppState>,
    f: Fields,
    field: &str,
) -> Result<ChatJob, ApiError> {
    let template = chat_template(state, field)?;
    let mut job = parse_chat(f, template, state.chat_caps, ParseCtx::of(state))?;
    if let Some((param, spec)) = job.constraint.take() {
        let lazy = std::mem::take(&mut job.lazy);
        job.request.constraint = Some(compile_constraint(state, spec, param).await?.lazy(lazy));
    }
    Ok(job)
}

/// The prompt tokens a chat body renders to, without compiling its constraint or running it
/// (`/v1/messages/count_tokens`).
pub(super) fn chat_prompt(state: &AppState, f: Fields, field: &str) -> Result<Vec<u32>, ApiError> {
    let template = chat_template(state, field)?;
    Ok(
        parse_chat(f, template, state.chat_caps, ParseCtx::of(state))?
            .request
            .prompt,
    )
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
    let tok = state.engine.tokenizer().clone();
    let ChatJob {
        request: r,
        logprobs,
        stream,
        parse,
        ..
    } = prepare_chat(&state, f, "messages").await?;
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
        let mut outputs: Vec<Output> = (0..n).map(|_| parse.output()).collect();
        let mut next_call = vec![0usize; n];
        let choices = move |_p: usize, out: &EngineOutput| {
            let mut v = Vec::new();
            let lp = if logprobs {
                json!({"content": chat_logprobs(&tok, out.logprobs.as_deref().unwrap_or(&[]))})
            } else {
                Value::Null
            };
            let has_lp = logprobs && out.logprobs.as_ref().is_some_and(|l| !l.is_empty());
            let first = !role_sent[out.index];
            let o = &mut outputs[out.index];
            let mut deltas: Vec<Value> = if o.active() {
                let mut pieces = o.push(&out.text);
                if out.finish.is_some() {
                    pieces.extend(o.finish());
                }
                piece_deltas(&pieces, &mut next_call[out.index])
            } else if !out.text.is_empty() {
                vec![json!({"content": out.text})]
            } else {
                Vec::new()
            };
            if deltas.is_empty() && (has_lp || (first && out.finish.is_some())) {
                deltas.push(json!({"content": ""}));
            }
            let mut lp = Some(lp);
            for mut delta in deltas {
                if !role_sent[out.index] {
                    role_sent[out.index] = true;
                    let mut d = Map::new();
                    d.insert("role".into(), json!("assistant"));
                    if let Value::Object(m) = delta {
                        d.extend(m);
                    }
                    delta = Value::Object(d);
                }
                v.push(json!({"index": out.index, "delta": delta,
                    "logprobs": lp.take().unwrap_or(Value::Null), "finish_reason": null}));
            }
            if let Some(f) = &out.finish {
                v.push(json!({"index": out.index, "delta": {}, "logprobs": null,
                    "finish_reason": finish_reason(Some(f), outputs[out.index].n_calls)}));
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
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        let mut o = parse.output();
        let calls = if o.active() {
            let mut a = Assembled::default();
            a.add(&o.push(&c.text));
            a.add(&o.finish());
            message_fields(&a, &mut message);
            a.calls.len()
        } else {
            message.insert("content".into(), json!(c.text));
            0
        };
        choices.push(json!({
            "index": i,
            "message": message,
            "logprobs": if logprobs { json!({"content": chat_logprobs(&tok, &c.logprobs)}) } else { Value::Null },
            "finish_reason": finish_reason(c.finish.as_ref(), calls),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &str) -> Fields {
        Fields::parse(s.as_bytes()).unwrap()
    }

    const TOOLS: &str = r#""tools": [{"type": "function", "function": {"name": "f"}}]"#;

    /// `tools` for a template that does not render them, or with no parser for its calls: a
    /// 400 saying so; `tool_choice: none` needs no parser.
    #[test]
    fn tools_need_template_support_and_a_parser() {
        let hermes = ChatCaps {
            tools: true,
            parser: Some(ParserKind::Hermes),
            reasoning: None,
        };
        let no_tools = ChatCaps::default();
        let e = tool_fields(&mut fields(&format!("{{{TOOLS}}}")), no_tools)
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("tools"));
        assert!(e.message.contains("does not render tools"), "{}", e.message);
        let no_parser = ChatCaps {
            parser: None,
            ..hermes
        };
        let e = tool_fields(&mut fields(&format!("{{{TOOLS}}}")), no_parser)
            .err()
            .unwrap();
        assert!(
            e.message.contains("--tool-call-parser") && e.message.contains("qwen3_coder"),
            "{}",
            e.message
        );
        let t = tool_fields(
            &mut fields(&format!("{{{TOOLS}, \"tool_choice\": \"none\"}}")),
            no_parser,
        )
        .ok()
        .unwrap();
        assert_eq!(t.choice, ToolChoice::None);
        assert!(t.raw.is_some(), "tools still reach the template");
        let t = tool_fields(
            &mut fields(&format!(
                "{{{TOOLS}, \"parallel_tool_calls\": false, \"chat_template_kwargs\": {{\"enable_thinking\": false}}}}"
            )),
            hermes,
        )
        .ok()
        .unwrap();
        assert_eq!(
            (t.choice, t.parallel, t.kwargs["enable_thinking"].clone()),
            (ToolChoice::Auto, false, json!(false))
        );
        // An empty list is no tools (nothing to support or parse).
        let t = tool_fields(&mut fields(r#"{"tools": []}"#), no_tools)
            .ok()
            .unwrap();
        assert_eq!((t.choice, t.raw), (ToolChoice::None, None));
    }

    /// `continue_final_message`: the prompt ends with the final assistant text, open.
    #[test]
    fn final_message_left_open() {
        let msgs = [
            json!({"role": "user", "content": "Hi"}),
            json!({"role": "assistant", "content": "Hello "}),
        ];
        let text = "<u>Hi</u><a>Hello</a>\n".to_string();
        assert_eq!(
            open_final_message(text.clone(), &msgs).unwrap(),
            "<u>Hi</u><a>Hello"
        );
        let e = open_final_message(text.clone(), &msgs[..1]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("continue_final_message"));
        let e = open_final_message(text, &[json!({"role": "assistant", "content": "Bye"})])
            .unwrap_err();
        assert!(e.message.contains("as given"), "{}", e.message);
    }

    /// Streaming deltas: text and reasoning together, each call as a name delta then an
    /// arguments delta, indices counting across outputs.
    #[test]
    fn deltas_of_pieces() {
        let call = |n: &str| {
            Piece::Call(tools::ToolCall {
                id: format!("call_{n}"),
                name: n.into(),
                arguments: "{\"a\":1}".into(),
            })
        };
        let mut next = 0;
        let d = piece_deltas(
            &[
                Piece::Reasoning("r".into()),
                Piece::Content("c".into()),
                call("f"),
            ],
            &mut next,
        );
        assert_eq!(
            d,
            vec![
                json!({"reasoning_content": "r", "reasoning": "r", "content": "c"}),
                json!({"tool_calls": [{"index": 0, "id": "call_f", "type": "function",
                    "function": {"name": "f", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}),
            ]
        );
        let d = piece_deltas(&[call("g")], &mut next);
        assert_eq!(d[0]["tool_calls"][0]["index"], 1);
        assert_eq!(finish_reason(None, 2), "tool_calls");
        assert_eq!(finish_reason(Some(&FinishReason::Length), 1), "length");
        assert_eq!(finish_reason(None, 0), "stop");
    }

    #[test]
    fn finish_reasons_in_openai_spelling() {
        use switchyard_core::StopReason;
        let stop = FinishReason::Stop(StopReason::Eos(2));
        assert_eq!(finish_reason(Some(&stop), 0), "stop");
        assert_eq!(finish_reason(Some(&stop), 1), "tool_calls");
        let s = FinishReason::Stop(StopReason::StopString("x".into()));
        assert_eq!(finish_reason(Some(&s), 0), "stop");
        assert_eq!(finish_reason(Some(&FinishReason::Length), 0), "length");
        assert_eq!(finish_reason(Some(&FinishReason::Cancelled), 0), "abort");
        assert_eq!(finish_reason(Some(&FinishReason::Cancelled), 1), "abort");
    }
}
