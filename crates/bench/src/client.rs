//! The HTTP side: one streamed request to an OpenAI-compatible endpoint, timed as vLLM times it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use crate::metrics::RequestOutcome;
use crate::sse::{parse_data, Chunk, SseParser};
use crate::workload::BenchRequest;

/// Which OpenAI API to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/completions`: `prompt`, streamed `choices[0].text`.
    Completions,
    /// `/v1/chat/completions`: one user message, streamed `choices[0].delta.content`.
    Chat,
}

impl Endpoint {
    /// Parses `/v1/completions`, `/v1/chat/completions`, `completions` or `chat`.
    pub fn parse(s: &str) -> anyhow::Result<Endpoint> {
        match s.trim_end_matches('/') {
            "/v1/completions" | "v1/completions" | "completions" => Ok(Endpoint::Completions),
            "/v1/chat/completions" | "v1/chat/completions" | "chat" | "chat/completions" => {
                Ok(Endpoint::Chat)
            }
            other => anyhow::bail!(
                "--endpoint '{other}': expected /v1/completions or /v1/chat/completions"
            ),
        }
    }

    /// The path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// Where and how to send requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// The HTTP client (connection pool).
    pub client: reqwest::Client,
    /// Base URL, without a trailing slash and without `/v1`.
    pub base_url: String,
    /// The API.
    pub endpoint: Endpoint,
    /// `model` sent in each request.
    pub model: String,
    /// Bearer token.
    pub api_key: Option<String>,
    /// Send `ignore_eos: true` (vLLM and llama-server honour it).
    pub ignore_eos: bool,
    /// `temperature`, when set.
    pub temperature: Option<f64>,
    /// Extra fields merged into every body.
    pub extra_body: Map<String, Value>,
}

/// Normalizes a base URL: no trailing slash, no trailing `/v1`.
pub fn normalize_base_url(u: &str) -> String {
    let u = u.trim_end_matches('/');
    u.strip_suffix("/v1").unwrap_or(u).to_string()
}

/// An HTTP client with a per-request timeout.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        // A fresh connection per request: servers close kept-alive connections on their own
        // terms (llama-server's cpp-httplib after 5 requests or 5 s idle), and a request sent on
        // a connection the server is closing fails with "connection closed before message
        // completed" — a client artefact, not a server error. A loopback or LAN connect costs
        // well under a millisecond, far below any TTFT measured here.
        .pool_max_idle_per_host(0)
        .build()
}

fn short(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// The error and its causes, `a: b: c`.
fn chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn transport_class(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "stream"
    } else {
        "request"
    }
}

impl Target {
    /// The JSON body for one request.
    pub fn body(&self, req: &BenchRequest) -> Value {
        let mut b = json!({
            "model": self.model,
            "max_tokens": req.output_len,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let m = b.as_object_mut().expect("object");
        match self.endpoint {
            Endpoint::Completions => {
                m.insert("prompt".into(), json!(req.prompt));
            }
            Endpoint::Chat => {
                m.insert(
                    "messages".into(),
                    json!([{"role": "user", "content": req.prompt}]),
                );
            }
        }
        if self.ignore_eos {
            m.insert("ignore_eos".into(), json!(true));
        }
        if let Some(t) = self.temperature {
            m.insert("temperature".into(), json!(t));
        }
        for (k, v) in &self.extra_body {
            m.insert(k.clone(), v.clone());
        }
        b
    }

    /// Sends one request and times it; `t0` is the start of the load point.
    pub async fn send(&self, req: &BenchRequest, t0: Instant) -> RequestOutcome {
        let url = format!("{}{}", self.base_url, self.endpoint.path());
        let body = self.body(req);
        let st = Instant::now();
        let mut out = RequestOutcome {
            start_s: st.duration_since(t0).as_secs_f64(),
            prompt_tokens: req.prompt_len as u64,
            ..Default::default()
        };
        let fail = |mut out: RequestOutcome, class: &str, detail: String| {
            out.success = false;
            out.error = Some(class.to_string());
            out.error_detail = Some(short(&detail));
            out
        };
        let mut rb = self.client.post(&url).json(&body);
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return fail(out, transport_class(&e), chain(&e)),
        };
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            let text = resp.text().await.unwrap_or_default();
            return fail(out, status.as_str(), text);
        }
        let mut parser = SseParser::new();
        let mut stream = resp.bytes_stream();
        // TTFT counts from the first chunk that carries output (text, reasoning or a tool
        // call), not from a role-only chunk; `first_any` is the fallback for a stream whose
        // only chunk is its finish (an immediate end of sequence).
        let mut first: Option<Instant> = None;
        let mut first_any: Option<Instant> = None;
        let mut last = st;
        let mut end = st;
        let mut text_chunks = 0u64;
        let mut usage_out: Option<u64> = None;
        let mut usage_in: Option<u64> = None;
        let mut done = false;
        let mut events = Vec::new();
        while !done {
            match stream.next().await {
                Some(Ok(bytes)) => events.extend(parser.push(&bytes)),
                Some(Err(e)) => return fail(out, transport_class(&e), chain(&e)),
                None => {
                    events.extend(parser.finish());
                    done = true;
                }
            }
            for ev in events.drain(..) {
                let now = Instant::now();
                match parse_data(&ev) {
                    Ok(Chunk::Token {
                        text,
                        output,
                        usage,
                    }) => {
                        first_any.get_or_insert(now);
                        end = now;
                        if output {
                            if first.is_none() {
                                first = Some(now);
                            } else {
                                out.itl_s.push(now.duration_since(last).as_secs_f64());
                            }
                            last = now;
                        }
                        if !text.is_empty() {
                            text_chunks += 1;
                        }
                        if let Some(u) = usage {
                            usage_in = u.prompt_tokens.or(usage_in);
                            usage_out = u.completion_tokens.or(usage_out);
                        }
                    }
                    Ok(Chunk::Usage(u)) => {
                        usage_in = u.prompt_tokens.or(usage_in);
                        usage_out = u.completion_tokens.or(usage_out);
                    }
                    Ok(Chunk::Done) => done = true,
                    Ok(Chunk::Error(msg)) => return fail(out, "server_error", msg),
                    Ok(Chunk::Other) => {}
                    Err(e) => return fail(out, "parse", format!("{e}: {ev}")),
                }
            }
        }
        let Some(first) = first.or(first_any) else {
            return fail(
                out,
                "no_tokens",
                "stream ended without a token chunk".into(),
            );
        };
        out.success = true;
        out.ttft_s = first.duration_since(st).as_secs_f64();
        out.e2el_s = end.duration_since(st).as_secs_f64();
        out.output_tokens = usage_out.unwrap_or(text_chunks);
        if let Some(p) = usage_in {
            out.prompt_tokens = p;
            out.usage_reported = true;
        }
        out
    }

    /// Asks `/v1/models` for the served models and the `owned_by` of the first; also returns
    /// the `Server` header.
    pub async fn probe_models(
        &self,
    ) -> anyhow::Result<(Vec<String>, Option<String>, Option<String>)> {
        let mut rb = self.client.get(format!("{}/v1/models", self.base_url));
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        let r = rb.send().await?;
        let server = r
            .headers()
            .get("server")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let v: Value = r.error_for_status()?.json().await?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ids = data
            .iter()
            .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let owned_by = data
            .first()
            .and_then(|m| m.get("owned_by"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok((ids, owned_by, server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_urls() {
        assert_eq!(normalize_base_url("http://h:1/v1/"), "http://h:1");
        assert_eq!(normalize_base_url("http://h:1"), "http://h:1");
        assert_eq!(Endpoint::parse("chat").unwrap(), Endpoint::Chat);
        assert_eq!(
            Endpoint::parse("/v1/completions").unwrap(),
            Endpoint::Completions
        );
        assert!(Endpoint::parse("/v1/embeddings").is_err());
        let mut extra = Map::new();
        extra.insert("top_k".into(), json!(1));
        let t = Target {
            client: reqwest::Client::new(),
            base_url: "http://x".into(),
            endpoint: Endpoint::Chat,
            model: "m".into(),
            api_key: None,
            ignore_eos: true,
            temperature: Some(0.0),
            extra_body: extra,
        };
        let r = BenchRequest {
            index: 0,
            prompt: "hi".into(),
            prompt_len: 1,
            output_len: 7,
        };
        let b = t.body(&r);
        assert_eq!(b["messages"][0]["content"], "hi");
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["top_k"], 1);
        let t2 = Target {
            endpoint: Endpoint::Completions,
            ignore_eos: false,
            ..t
        };
        let b2 = t2.body(&r);
        assert_eq!(b2["prompt"], "hi");
        assert!(b2.get("ignore_eos").is_none());
        assert!(b2.get("messages").is_none());
    }
}
