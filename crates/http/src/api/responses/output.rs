//! The output items of a response (`message` with `output_text`, `function_call`,
//! `reasoning`), built from the parsed pieces of the model's text, with the stream events that
//! announce them in OpenAI's order: `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`…, `response.output_text.done`,
//! `response.content_part.done`, `response.output_item.done`; a function call as
//! `response.output_item.added`, `response.function_call_arguments.delta`,
//! `response.function_call_arguments.done`, `response.output_item.done`.

use serde_json::{json, Value};

use crate::tools::Piece;

/// A streamed event: its name (also its `type`) and its data.
pub(super) type Ev = (String, Value);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Reasoning,
}

/// The item being streamed.
#[derive(Debug)]
struct Open {
    kind: Kind,
    id: String,
    index: usize,
    text: String,
}

/// Builds the output items and numbers the events.
#[derive(Debug, Default)]
pub(super) struct Builder {
    seq: u64,
    items: Vec<Value>,
    open: Option<Open>,
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", rand::random::<u128>())
}

fn part(kind: Kind, text: &str) -> Value {
    match kind {
        Kind::Message => {
            json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
        }
        Kind::Reasoning => json!({"type": "reasoning_text", "text": text}),
    }
}

fn item(kind: Kind, id: &str, status: &str, content: Vec<Value>) -> Value {
    match kind {
        Kind::Message => json!({"id": id, "type": "message", "status": status,
                                "role": "assistant", "content": content}),
        Kind::Reasoning => json!({"id": id, "type": "reasoning", "status": status,
                                  "summary": [], "content": content}),
    }
}

impl Builder {
    /// An event of type `ty`: `body` with `type` and the next `sequence_number`.
    pub(super) fn event(&mut self, ty: &str, mut body: Value) -> Ev {
        body["type"] = json!(ty);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        (ty.to_string(), body)
    }

    /// The items finished so far.
    pub(super) fn items(&self) -> &[Value] {
        &self.items
    }

    /// Adds `pieces`; returns their events.
    pub(super) fn push(&mut self, pieces: Vec<Piece>) -> Vec<Ev> {
        let mut out = Vec::new();
        for p in pieces {
            match p {
                Piece::Content(s) => self.text(Kind::Message, &s, &mut out),
                Piece::Reasoning(s) => self.text(Kind::Reasoning, &s, &mut out),
                Piece::Call(c) => {
                    self.close("completed", &mut out);
                    let index = self.items.len();
                    let id = new_id("fc");
                    let mut it = json!({"id": id, "type": "function_call",
                        "status": "in_progress", "call_id": c.id, "name": c.name,
                        "arguments": ""});
                    out.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": it}),
                    ));
                    out.push(self.event(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": c.arguments}),
                    ));
                    out.push(self.event(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "name": c.name,
                               "arguments": c.arguments}),
                    ));
                    it["arguments"] = json!(c.arguments);
                    it["status"] = json!("completed");
                    out.push(self.event(
                        "response.output_item.done",
                        json!({"output_index": index, "item": it}),
                    ));
                    self.items.push(it);
                }
            }
        }
        out
    }

    fn text(&mut self, kind: Kind, s: &str, out: &mut Vec<Ev>) {
        if s.is_empty() {
            return;
        }
        if self.open.as_ref().map(|o| o.kind) != Some(kind) {
            self.close("completed", out);
            self.start(kind, out);
        }
        let Some(o) = &mut self.open else { return };
        o.text.push_str(s);
        let (id, index) = (o.id.clone(), o.index);
        let body = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": s});
        let ev = match kind {
            Kind::Message => {
                let mut b = body;
                b["logprobs"] = json!([]);
                self.event("response.output_text.delta", b)
            }
            Kind::Reasoning => self.event("response.reasoning_text.delta", body),
        };
        out.push(ev);
    }

    fn start(&mut self, kind: Kind, out: &mut Vec<Ev>) {
        let index = self.items.len();
        let id = new_id(if kind == Kind::Message { "msg" } else { "rs" });
        let it = item(kind, &id, "in_progress", vec![]);
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": it}),
        ));
        out.push(self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "part": part(kind, "")}),
        ));
        self.open = Some(Open {
            kind,
            id,
            index,
            text: String::new(),
        });
    }

    fn close(&mut self, status: &str, out: &mut Vec<Ev>) {
        let Some(o) = self.open.take() else { return };
        let done = match o.kind {
            Kind::Message => "response.output_text.done",
            Kind::Reasoning => "response.reasoning_text.done",
        };
        let mut body = json!({"item_id": o.id, "output_index": o.index, "content_index": 0,
                              "text": o.text});
        if o.kind == Kind::Message {
            body["logprobs"] = json!([]);
        }
        out.push(self.event(done, body));
        let p = part(o.kind, &o.text);
        out.push(self.event(
            "response.content_part.done",
            json!({"item_id": o.id, "output_index": o.index, "content_index": 0, "part": p}),
        ));
        let it = item(o.kind, &o.id, status, vec![p]);
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": o.index, "item": it}),
        ));
        self.items.push(it);
    }

    /// Closes the open item with `status` (`completed`, or `incomplete` when the output was
    /// cut at `max_output_tokens`); an answer with no items gets an empty message.
    pub(super) fn finish(&mut self, status: &str) -> Vec<Ev> {
        let mut out = Vec::new();
        if self.open.is_none() && self.items.is_empty() {
            self.start(Kind::Message, &mut out);
        }
        self.close(status, &mut out);
        out
    }

    /// The answer as one chat assistant message (what the store keeps for a continuation):
    /// the message text, the reasoning, the calls.
    pub(super) fn chat_message(&self) -> Value {
        let (mut content, mut reasoning, mut calls) = (String::new(), String::new(), vec![]);
        for it in &self.items {
            let text = || {
                it["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<String>()
            };
            match it["type"].as_str() {
                Some("message") => content.push_str(&text()),
                Some("reasoning") => reasoning.push_str(&text()),
                Some("function_call") => calls.push(json!({"id": it["call_id"],
                    "type": "function",
                    "function": {"name": it["name"], "arguments": it["arguments"]}})),
                _ => {}
            }
        }
        let mut m = json!({"role": "assistant", "content": content});
        if !reasoning.is_empty() {
            m["reasoning_content"] = json!(reasoning);
        }
        if !calls.is_empty() {
            m["tool_calls"] = json!(calls);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolCall;

    fn types(evs: &[Ev]) -> Vec<&str> {
        evs.iter().map(|(t, _)| t.as_str()).collect()
    }

    /// Text, then a call: the message's events in order, closed before the call's; sequence
    /// numbers count up from 0; the items and the chat message hold the same.
    #[test]
    fn events_in_order_and_items() {
        let mut b = Builder::default();
        let mut evs = b.push(vec![Piece::Content("Hel".into())]);
        evs.extend(b.push(vec![Piece::Content("lo".into())]));
        evs.extend(b.push(vec![Piece::Call(ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into(),
        })]));
        evs.extend(b.finish("completed"));
        assert_eq!(
            types(&evs),
            [
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
            ]
        );
        for (i, (t, e)) in evs.iter().enumerate() {
            assert_eq!(
                (e["type"].as_str(), e["sequence_number"].as_u64()),
                (Some(t.as_str()), Some(i as u64))
            );
        }
        assert_eq!(evs[4].1["text"], "Hello");
        let items = b.items();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["content"][0]["text"], "Hello");
        assert_eq!(items[0]["status"], "completed");
        assert_eq!(items[1]["call_id"], "call_1");
        assert_eq!(items[1]["arguments"], "{\"a\":1}");
        assert_eq!(evs[7].1["output_index"], 1);
        assert_eq!(
            b.chat_message(),
            json!({"role": "assistant", "content": "Hello", "tool_calls": [{"id": "call_1",
                   "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]})
        );
    }

    /// Nothing generated: one empty message; reasoning is an item of its own.
    #[test]
    fn empty_answer_and_reasoning() {
        let mut b = Builder::default();
        let evs = b.finish("incomplete");
        assert_eq!(evs.len(), 5);
        assert_eq!(b.items()[0]["status"], "incomplete");
        assert_eq!(b.items()[0]["content"][0]["text"], "");
        let mut b = Builder::default();
        b.push(vec![
            Piece::Reasoning("think".into()),
            Piece::Content("ok".into()),
        ]);
        b.finish("completed");
        assert_eq!(b.items()[0]["type"], "reasoning");
        assert_eq!(b.items()[1]["type"], "message");
        assert_eq!(b.chat_message()["reasoning_content"], "think");
    }
}
