//! `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages API on top of
//! chat. The body is read into a chat body ([`input`]) and runs through the chat machinery
//! (template, tools, the call grammar); the answer's parsed pieces become content blocks
//! (`thinking`, `text`, `tool_use`) and Anthropic's stream events ([`Blocks`]). Errors have
//! Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.

mod input;

use super::chat::{chat_prompt, prepare_chat};
use super::*;
use crate::tools::Piece;
use switchyard_core::StopReason;

/// An error in Anthropic's shape, with the same status (and `Retry-After`).
pub fn anthropic_error(e: ApiError) -> Response {
    let kind = match e.status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": e.message}});
    let mut r = json_response(e.status, &body);
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, s.into());
    }
    r
}

/// A streamed event: its name (also its `type`) and its data.
type Ev = (String, Value);

fn ev(ty: &str, mut body: Value) -> Ev {
    body["type"] = json!(ty);
    (ty.to_string(), body)
}

/// Anthropic's id for a parsed call (`toolu_…` for `call_…`).
fn tool_use_id(call_id: &str) -> String {
    match call_id.strip_prefix("call_") {
        Some(rest) => format!("toolu_{rest}"),
        None => format!("toolu_{call_id}"),
    }
}

/// The content blocks of an answer, built from its parsed pieces, with their stream events
/// (`content_block_start`, `content_block_delta`…, `content_block_stop`).
#[derive(Debug, Default)]
struct Blocks {
    blocks: Vec<Value>,
    /// The text or thinking block being streamed: its kind (`text`, `thinking`).
    open: Option<&'static str>,
}

impl Blocks {
    fn push(&mut self, pieces: Vec<Piece>) -> Vec<Ev> {
        let mut out = Vec::new();
        for p in pieces {
            match p {
                Piece::Content(s) => self.text("text", &s, &mut out),
                Piece::Reasoning(s) => self.text("thinking", &s, &mut out),
                Piece::Call(c) => {
                    self.close(&mut out);
                    let index = self.blocks.len();
                    let id = tool_use_id(&c.id);
                    out.push(ev(
                        "content_block_start",
                        json!({"index": index, "content_block":
                            {"type": "tool_use", "id": id, "name": c.name, "input": {}}}),
                    ));
                    out.push(ev(
                        "content_block_delta",
                        json!({"index": index, "delta":
                            {"type": "input_json_delta", "partial_json": c.arguments}}),
                    ));
                    out.push(ev("content_block_stop", json!({"index": index})));
                    let input = serde_json::from_str::<Value>(&c.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    self.blocks.push(
                        json!({"type": "tool_use", "id": id, "name": c.name, "input": input}),
                    );
                }
            }
        }
        out
    }

    fn text(&mut self, kind: &'static str, s: &str, out: &mut Vec<Ev>) {
        if s.is_empty() {
            return;
        }
        if self.open != Some(kind) {
            self.close(out);
            let block = if kind == "text" {
                json!({"type": "text", "text": ""})
            } else {
                json!({"type": "thinking", "thinking": "", "signature": ""})
            };
            out.push(ev(
                "content_block_start",
                json!({"index": self.blocks.len(), "content_block": block}),
            ));
            self.blocks.push(block);
            self.open = Some(kind);
        }
        let index = self.blocks.len() - 1;
        let (field, delta) = if kind == "text" {
            ("text", json!({"type": "text_delta", "text": s}))
        } else {
            ("thinking", json!({"type": "thinking_delta", "thinking": s}))
        };
        if let Some(Value::String(t)) = self.blocks[index].get_mut(field) {
            t.push_str(s);
        }
        out.push(ev(
            "content_block_delta",
            json!({"index": index, "delta": delta}),
        ));
    }

    fn close(&mut self, out: &mut Vec<Ev>) {
        if self.open.take().is_some() {
            out.push(ev(
                "content_block_stop",
                json!({"index": self.blocks.len() - 1}),
            ));
        }
    }

    /// Closes the open block.
    fn finish(&mut self) -> Vec<Ev> {
        let mut out = Vec::new();
        self.close(&mut out);
        out
    }

    fn has_tool_use(&self) -> bool {
        self.blocks.iter().any(|b| b["type"] == "tool_use")
    }
}

/// `stop_reason` and `stop_sequence`.
fn stop_reason(f: Option<&FinishReason>, tool_use: bool) -> (&'static str, Value) {
    match f {
        Some(FinishReason::Length) => ("max_tokens", Value::Null),
        _ if tool_use => ("tool_use", Value::Null),
        Some(FinishReason::Stop(StopReason::StopString(s))) => ("stop_sequence", json!(s)),
        _ => ("end_turn", Value::Null),
    }
}

/// Anthropic's usage: `input_tokens` are the prompt tokens not read from the prefix cache.
fn usage(prompt: usize, cached: usize, output: usize) -> Value {
    json!({"input_tokens": prompt - cached.min(prompt), "output_tokens": output,
           "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0})
}

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    run(state, b).await.unwrap_or_else(anthropic_error)
}

async fn run(state: Arc<AppState>, b: Result<Bytes, BytesRejection>) -> AppResult {
    let t0 = Instant::now();
    check_draining(&state)?;
    let mut f = body(&state, b)?;
    check_model(&state, &mut f)?;
    let (chat, stream) = input::convert(&mut f, false)?;
    f.finish()?;
    let job = prepare_chat(&state, Fields::from_map(chat), "messages")
        .await
        .map_err(input::rename)?;
    let r = job.request;
    let prompt = r.prompt.len();
    let sub = submit_all(&state, vec![r], "messages").map_err(input::rename)?;
    let id = format!("msg_{:032x}", rand::random::<u128>());
    let model = state.model_name().to_string();
    let mut tracker = Tracker::new(&state, t0);
    let mut o = job.parse.output();
    let mut blocks = Blocks::default();
    if stream {
        let (mut cached, mut out_tokens, mut finish) = (0, 0, None);
        let on = move |step: Step<'_>| -> Vec<Ev> {
            match step {
                Step::Start => vec![
                    ev(
                        "message_start",
                        json!({"message": {"id": id, "type": "message", "role": "assistant",
                            "content": [], "model": model, "stop_reason": null,
                            "stop_sequence": null, "usage": usage(prompt, 0, 0)}}),
                    ),
                    ev("ping", json!({})),
                ],
                Step::Output(out) => {
                    cached = out.usage.cached_tokens;
                    out_tokens = out.usage.completion_tokens;
                    let mut pieces = o.push(&out.text);
                    if out.finish.is_some() {
                        pieces.extend(o.finish());
                        finish = out.finish.clone();
                    }
                    blocks.push(pieces)
                }
                Step::Failed(e) => vec![ev(
                    "error",
                    json!({"error": {"type": "api_error", "message": e.message}}),
                )],
                Step::End => {
                    let mut evs = blocks.finish();
                    let (reason, seq) = stop_reason(finish.as_ref(), blocks.has_tool_use());
                    let mut u = usage(prompt, cached, out_tokens);
                    u["output_tokens"] = json!(out_tokens);
                    evs.push(ev(
                        "message_delta",
                        json!({"delta": {"stop_reason": reason, "stop_sequence": seq},
                               "usage": u}),
                    ));
                    evs.push(ev("message_stop", json!({})));
                    evs
                }
            }
        };
        return Ok(event_sse(sub, tracker, on));
    }
    let acc = collect(sub, &mut tracker).await?;
    let ch = acc
        .get(&(0, 0))
        .ok_or_else(|| ApiError::internal("the engine returned no output"))?;
    blocks.push(o.push(&ch.text));
    blocks.push(o.finish());
    blocks.finish();
    let (reason, seq) = stop_reason(ch.finish.as_ref(), blocks.has_tool_use());
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": blocks.blocks, "stop_reason": reason, "stop_sequence": seq,
            "usage": usage(prompt, ch.cached_tokens, ch.completion_tokens),
        }),
    ))
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, the prompt tokens the request's
/// system, messages and tools render to.
pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let count = || -> AppResult {
        let mut f = body(&state, b)?;
        check_model(&state, &mut f)?;
        let (chat, _) = input::convert(&mut f, true)?;
        f.finish()?;
        let prompt =
            chat_prompt(&state, Fields::from_map(chat), "messages").map_err(input::rename)?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"input_tokens": prompt.len()}),
        ))
    };
    count().unwrap_or_else(anthropic_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolCall;

    #[test]
    fn blocks_and_events() {
        let mut b = Blocks::default();
        let mut evs = b.push(vec![
            Piece::Reasoning("hm".into()),
            Piece::Content("A".into()),
        ]);
        evs.extend(b.push(vec![
            Piece::Content("B".into()),
            Piece::Call(ToolCall {
                id: "call_x".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into(),
            }),
        ]));
        evs.extend(b.finish());
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
            ]
        );
        assert_eq!(
            evs[4].1["delta"],
            json!({"type": "text_delta", "text": "A"})
        );
        assert_eq!(evs[8].1["delta"]["partial_json"], "{\"a\":1}");
        assert_eq!(
            b.blocks,
            vec![
                json!({"type": "thinking", "thinking": "hm", "signature": ""}),
                json!({"type": "text", "text": "AB"}),
                json!({"type": "tool_use", "id": "toolu_x", "name": "f", "input": {"a": 1}}),
            ]
        );
        assert!(b.has_tool_use());
        assert_eq!(stop_reason(None, true).0, "tool_use");
        assert_eq!(
            stop_reason(Some(&FinishReason::Length), true).0,
            "max_tokens"
        );
        let s = FinishReason::Stop(StopReason::StopString("X".into()));
        assert_eq!(stop_reason(Some(&s), false), ("stop_sequence", json!("X")));
        assert_eq!(usage(10, 4, 2)["input_tokens"], 6);
    }

    #[test]
    fn error_shape() {
        let r = anthropic_error(ApiError::invalid("max_tokens", "`max_tokens` is required"));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = anthropic_error(ApiError::overloaded("busy"));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[axum::http::header::RETRY_AFTER], "1");
    }
}
