//! `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`: OpenAI's Responses API on top
//! of chat. The body is read into a chat body ([`input`]), rendered, tokenized and constrained
//! by the chat machinery (tools, `tool_choice`, `text.format` as `response_format`), and the
//! answer's parsed pieces become output items and stream events ([`output`]). Stored responses
//! ([`store`]) continue with `previous_response_id`.

mod input;
mod output;
mod store;

pub use store::ResponseStore;

use axum::extract::Path;

use super::chat::prepare_chat;
use super::*;
use output::{Builder, Ev};
use store::Stored;

/// What every version of one response object shares.
struct Head {
    id: String,
    created: u64,
    model: String,
    echo: Map<String, Value>,
    conversation: Vec<Value>,
    store: bool,
    prompt_tokens: usize,
}

/// Rounds an `f32` setting for echoing (0.7, not 0.699999988).
fn echo_f32(x: f32) -> Value {
    json!((f64::from(x) * 1e6).round() / 1e6)
}

impl Head {
    /// The response object with `status`, `output` and the counts so far.
    fn response(&self, status: &str, output: &[Value], usage: Option<(usize, usize)>) -> Value {
        let mut r = json!({
            "id": self.id, "object": "response", "created_at": self.created,
            "status": status, "model": self.model, "output": output, "error": null,
            "incomplete_details": null,
        });
        if status == "incomplete" {
            r["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        if status == "completed" || status == "incomplete" {
            r["completed_at"] = json!(unix_now());
        }
        r["usage"] = match usage {
            None => Value::Null,
            Some((cached, out)) => json!({
                "input_tokens": self.prompt_tokens,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": out,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.prompt_tokens + out,
            }),
        };
        if let Value::Object(m) = &mut r {
            m.extend(self.echo.clone());
        }
        r
    }

    /// Keeps a finished response (unless `store: false`).
    fn keep(&self, state: &AppState, response: &Value, b: &Builder) {
        if !self.store {
            return;
        }
        let mut conversation = self.conversation.clone();
        conversation.push(b.chat_message());
        state.responses.put(
            self.id.clone(),
            Stored {
                response: response.clone(),
                conversation,
            },
        );
    }
}

/// The response status for how the answer ended.
fn status_of(f: Option<&FinishReason>) -> &'static str {
    match f {
        Some(FinishReason::Length) => "incomplete",
        Some(FinishReason::Cancelled) => "cancelled",
        _ => "completed",
    }
}

/// `POST /v1/responses`.
pub async fn create_response(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> AppResult {
    let t0 = Instant::now();
    check_draining(&state)?;
    let mut f = body(&state, b)?;
    check_model(&state, &mut f)?;
    let c = input::convert(&mut f, &state.responses)?;
    f.finish()?;
    let job = prepare_chat(&state, Fields::from_map(c.chat), "input")
        .await
        .map_err(input::rename)?;
    let r = job.request;
    let mut echo = c.echo;
    echo.insert("temperature".into(), echo_f32(r.sampling.temperature));
    echo.insert("top_p".into(), echo_f32(r.sampling.top_p));
    let head = Head {
        id: format!("resp_{:032x}", rand::random::<u128>()),
        created: unix_now(),
        model: state.model_name().to_string(),
        echo,
        conversation: c.conversation,
        store: c.store,
        prompt_tokens: r.prompt.len(),
    };
    let sub = submit_all(&state, vec![r], "input").map_err(input::rename)?;
    let mut tracker = Tracker::new(&state, t0);
    let mut o = job.parse.output();
    let mut b = Builder::default();
    if c.stream {
        let st = state.clone();
        let (mut cached, mut out_tokens, mut finish) = (0, 0, None);
        let on = move |step: Step<'_>| -> Vec<Ev> {
            match step {
                Step::Start => {
                    let r = head.response("in_progress", &[], None);
                    vec![
                        b.event("response.created", json!({"response": r.clone()})),
                        b.event("response.in_progress", json!({"response": r})),
                    ]
                }
                Step::Output(out) => {
                    cached = out.usage.cached_tokens;
                    out_tokens = out.usage.completion_tokens;
                    let mut pieces = o.push(&out.text);
                    if out.finish.is_some() {
                        pieces.extend(o.finish());
                        finish = out.finish.clone();
                    }
                    b.push(pieces)
                }
                Step::Failed(e) => {
                    let mut r = head.response("failed", b.items(), None);
                    r["error"] = json!({"code": "server_error", "message": e.message});
                    vec![b.event("response.failed", json!({"response": r}))]
                }
                Step::End => {
                    let status = status_of(finish.as_ref());
                    let mut evs = b.finish(status);
                    let r = head.response(status, b.items(), Some((cached, out_tokens)));
                    head.keep(&st, &r, &b);
                    let ty = if status == "completed" {
                        "response.completed"
                    } else {
                        "response.incomplete"
                    };
                    evs.push(b.event(ty, json!({"response": r})));
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
    b.push(o.push(&ch.text));
    b.push(o.finish());
    let status = status_of(ch.finish.as_ref());
    b.finish(status);
    let r = head.response(
        status,
        b.items(),
        Some((ch.cached_tokens, ch.completion_tokens)),
    );
    head.keep(&state, &r, &b);
    Ok(json_response(StatusCode::OK, &r))
}

fn unknown_response(id: &str) -> ApiError {
    ApiError::not_found(
        "response_id",
        format!("response `{id}` not found: unknown, not stored, or evicted from the store"),
    )
}

/// `GET /v1/responses/{id}`: a stored response.
pub async fn get_response(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> AppResult {
    let s = state
        .responses
        .get(&id)
        .ok_or_else(|| unknown_response(&id))?;
    Ok(json_response(StatusCode::OK, &s.response))
}

/// `DELETE /v1/responses/{id}`: forgets a stored response.
pub async fn delete_response(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> AppResult {
    if !state.responses.remove(&id) {
        return Err(unknown_response(&id));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": id, "object": "response", "deleted": true}),
    ))
}
