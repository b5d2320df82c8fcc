//! Server-sent events as OpenAI-compatible servers stream them.
//!
//! [`SseParser`] turns bytes, split anywhere (mid-line, mid-UTF-8 character), into complete
//! events; [`parse_data`] classifies one event's `data:` payload for `/v1/completions`
//! (`choices[0].text`) and `/v1/chat/completions` (`choices[0].delta.content`).

use serde_json::Value;

/// Incremental SSE decoder: feed it bytes as they arrive, get back the `data` of each complete
/// event (multi-line `data:` fields joined with `\n`, comments and other fields dropped).
#[derive(Default, Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// A parser with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the data of every event completed by them, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut out);
        }
        self.buf.drain(..start);
        out
    }

    /// Ends the stream: an event not followed by a blank line is still delivered (some servers
    /// close the connection right after the last `data:` line).
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8_lossy(&rest)
                .trim_end_matches('\r')
                .to_string();
            self.line(&line, &mut out);
        }
        if let Some(d) = self.data.take() {
            out.push(d);
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(d) = self.data.take() {
                out.push(d);
            }
            return;
        }
        if line.starts_with(':') {
            return; // comment / keep-alive ping
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
    }
}

/// What one streamed event carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// A chunk with a non-empty `choices` array (its text may be empty, e.g. the chat role
    /// chunk, a finish-only chunk or a special token).
    Token {
        /// The text of `choices[0]` (`text` or `delta.content`), empty if none.
        text: String,
        /// Whether `choices[0]` carries generated output: non-empty text or content, reasoning
        /// (`reasoning_content` / `reasoning`) or tool calls. Only these count for TTFT and
        /// ITL: a role-only chunk sent before the prefill ends is not a token.
        output: bool,
        /// Usage, when the server puts it on the same chunk.
        usage: Option<Usage>,
    },
    /// A chunk without choices carrying `usage` (`stream_options.include_usage`).
    Usage(Usage),
    /// `data: [DONE]`.
    Done,
    /// An `error` object in the stream.
    Error(String),
    /// Anything else (no choices, no usage).
    Other,
}

/// Token counts reported by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<u64>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<u64>,
}

fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    if u.is_null() {
        return None;
    }
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64),
        completion_tokens: u.get("completion_tokens").and_then(Value::as_u64),
    })
}

/// Classifies one event's data. Errors only when the payload is not JSON.
pub fn parse_data(data: &str) -> Result<Chunk, serde_json::Error> {
    let d = data.trim();
    if d == "[DONE]" {
        return Ok(Chunk::Done);
    }
    let v: Value = serde_json::from_str(d)?;
    if let Some(e) = v.get("error") {
        let msg = e
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        return Ok(Chunk::Error(msg));
    }
    let usage = usage_of(&v);
    match v.get("choices").and_then(Value::as_array) {
        Some(choices) if !choices.is_empty() => {
            let c = &choices[0];
            let delta = c.get("delta");
            let non_empty = |k: &str| {
                delta.and_then(|d| d.get(k)).is_some_and(|v| match v {
                    Value::String(s) => !s.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    Value::Null => false,
                    _ => true,
                })
            };
            let text = c
                .get("text")
                .and_then(Value::as_str)
                .or_else(|| {
                    c.get("delta")
                        .and_then(|d| d.get("content"))
                        .and_then(Value::as_str)
                })
                .unwrap_or("")
                .to_string();
            let output = !text.is_empty()
                || non_empty("reasoning_content")
                || non_empty("reasoning")
                || non_empty("tool_calls");
            Ok(Chunk::Token {
                text,
                output,
                usage,
            })
        }
        _ => Ok(match usage {
            Some(u) => Chunk::Usage(u),
            None => Chunk::Other,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads() {
        let stream = "data: {\"choices\":[{\"text\":\"h\u{e9}llo\"}]}\n\n: ping\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\r\n\r\ndata: [DONE]\n\n";
        let bytes = stream.as_bytes();
        // Every split point, including inside the two-byte 'é'.
        for cut in 0..bytes.len() {
            let mut p = SseParser::new();
            let mut ev = p.push(&bytes[..cut]);
            ev.extend(p.push(&bytes[cut..]));
            ev.extend(p.finish());
            assert_eq!(ev.len(), 3, "cut {cut}: {ev:?}");
            assert_eq!(
                parse_data(&ev[0]).unwrap(),
                Chunk::Token {
                    text: "h\u{e9}llo".into(),
                    output: true,
                    usage: None
                }
            );
            assert_eq!(
                parse_data(&ev[1]).unwrap(),
                Chunk::Usage(Usage {
                    prompt_tokens: Some(3),
                    completion_tokens: Some(2)
                })
            );
            assert_eq!(parse_data(&ev[2]).unwrap(), Chunk::Done);
        }
    }

    #[test]
    fn byte_at_a_time() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: [DONE]";
        let mut p = SseParser::new();
        let mut ev = Vec::new();
        for b in stream {
            ev.extend(p.push(std::slice::from_ref(b)));
        }
        ev.extend(p.finish()); // last event has no blank line
        let chunks: Vec<Chunk> = ev.iter().map(|e| parse_data(e).unwrap()).collect();
        assert_eq!(
            chunks,
            vec![
                Chunk::Token {
                    text: "a".into(),
                    output: true,
                    usage: None
                },
                Chunk::Token {
                    text: String::new(),
                    output: false,
                    usage: None
                },
                Chunk::Done
            ]
        );
    }

    #[test]
    fn multiline_data_and_errors() {
        let mut p = SseParser::new();
        let ev = p.push(b"event: x\ndata: {\"error\":\ndata: {\"message\":\"boom\"}}\n\n");
        assert_eq!(ev.len(), 1);
        assert_eq!(parse_data(&ev[0]).unwrap(), Chunk::Error("boom".into()));
        assert!(parse_data("{not json").is_err());
        assert_eq!(parse_data("{\"id\":1}").unwrap(), Chunk::Other);
        // Usage on the final token chunk (some servers do this).
        let c = parse_data(
            "{\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}",
        )
        .unwrap();
        assert_eq!(
            c,
            Chunk::Token {
                text: String::new(),
                output: false,
                usage: Some(Usage {
                    prompt_tokens: Some(5),
                    completion_tokens: Some(7)
                })
            }
        );
    }

    #[test]
    fn only_chunks_with_output_are_tokens() {
        let out = |d: &str| match parse_data(d).unwrap() {
            Chunk::Token { output, .. } => output,
            c => panic!("{c:?}"),
        };
        // The role chunk a server may send before its prefill ends is not a token.
        assert!(!out(
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(!out(
            r#"{"choices":[{"delta":{"role":"assistant","content":null}}]}"#
        ));
        assert!(!out(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#));
        assert!(out(
            r#"{"choices":[{"delta":{"role":"assistant","content":"Hi"}}]}"#
        ));
        assert!(out(
            r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#
        ));
        assert!(out(r#"{"choices":[{"delta":{"reasoning":"hmm"}}]}"#));
        assert!(out(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f"}}]}}]}"#
        ));
        assert!(!out(r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#));
        assert!(out(r#"{"choices":[{"text":"x"}]}"#));
    }
}
