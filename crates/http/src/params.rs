//! Strict request parsing: every field is taken out of the JSON object by name with a type
//! check, and whatever is left at the end is rejected (400 naming it), so no parameter is ever
//! silently ignored.

use serde_json::{Map, Value};
use switchyard_core::SamplingParams;
use switchyard_runtime::engine::{EngineRequest, MAX_LOGPROBS, MAX_N};

use crate::error::ApiError;

/// Most stop strings per request (OpenAI allows 4; vLLM more).
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_LEN: usize = 1024;
/// Most `stop_token_ids`.
pub const MAX_STOP_TOKEN_IDS: usize = 256;
/// Most `logit_bias` entries (OpenAI's limit is 300).
pub const MAX_LOGIT_BIAS: usize = 1024;

/// OpenAI parameters we know and do not support, with why.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("suffix", " (no fill-in-the-middle)"),
    ("tools", " (no tool calling)"),
    ("tool_choice", " (no tool calling)"),
    ("parallel_tool_calls", " (no tool calling)"),
    ("functions", " (no function calling)"),
    ("function_call", " (no function calling)"),
    ("audio", ""),
    ("modalities", " (text only)"),
    ("prediction", ""),
    ("use_beam_search", " (no beam search)"),
    ("length_penalty", " (no beam search)"),
    ("reasoning_effort", ""),
    ("web_search_options", ""),
];

/// The fields of a JSON request body, consumed one by one.
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    /// Parses a body: must be a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
        match v {
            Value::Object(map) => Ok(Self { map }),
            _ => Err(ApiError::bad_request("request body must be a JSON object")),
        }
    }

    /// The fields of an object built by the server (another API's body converted to this
    /// one's form).
    pub fn from_map(map: Map<String, Value>) -> Self {
        Self { map }
    }

    /// Removes `key`; JSON `null` counts as absent.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is present (not null), without taking it.
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// A boolean.
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(type_error(key, "a boolean", &v)),
        }
    }

    /// A string.
    pub fn string(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(type_error(key, "a string", &v)),
        }
    }

    /// A finite number, checked against `[lo, hi]`.
    pub fn number(&mut self, key: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if !(lo..=hi).contains(&x) {
                    return Err(ApiError::invalid(
                        key,
                        format!("`{key}` must be between {lo} and {hi}, got {n}"),
                    ));
                }
                Ok(Some(x))
            }
            Some(v) => Err(type_error(key, "a number", &v)),
        }
    }

    /// An integer, checked against `[lo, hi]`.
    pub fn int(&mut self, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
                Some(_) => Err(ApiError::invalid(
                    key,
                    format!("`{key}` must be between {lo} and {hi}, got {n}"),
                )),
                None => Err(type_error(key, "an integer", &Value::Number(n))),
            },
            Some(v) => Err(type_error(key, "an integer", &v)),
        }
    }

    /// Rejects every field left: known-unsupported ones with their reason (unless `null`, which
    /// clients send for "not given"), unknown ones always.
    pub fn finish(self) -> Result<(), ApiError> {
        for (k, v) in &self.map {
            if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| n == k) {
                if v.is_null() {
                    continue;
                }
                return Err(ApiError::unsupported(k, why));
            }
            return Err(ApiError::unsupported(k, " (unknown parameter)"));
        }
        Ok(())
    }
}

/// 400: `key` has the wrong JSON type.
pub fn type_error(key: &str, expected: &str, got: &Value) -> ApiError {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::invalid(key, format!("`{key}` must be {expected}, got {kind}"))
}

/// Whether the stream asked for a usage chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOpts {
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

/// Reads `stream` and `stream_options`.
pub fn stream_opts(f: &mut Fields) -> Result<StreamOpts, ApiError> {
    let stream = f.bool("stream")?.unwrap_or(false);
    let mut include_usage = false;
    if let Some(v) = f.take("stream_options") {
        if !stream {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` is only allowed when `stream` is true",
            ));
        }
        let Value::Object(mut m) = v else {
            return Err(type_error("stream_options", "an object", &v));
        };
        match m.remove("include_usage") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => include_usage = b,
            Some(v) => return Err(type_error("stream_options.include_usage", "a boolean", &v)),
        }
        if let Some(k) = m.keys().next() {
            return Err(ApiError::unsupported(
                &format!("stream_options.{k}"),
                " (only include_usage is)",
            ));
        }
    }
    Ok(StreamOpts {
        stream,
        include_usage,
    })
}

/// Reads the sampling, stop and `n` parameters shared by completions and chat into `r`.
/// `vocab` bounds token ids (logit bias, stop token ids); what the request does not set comes
/// from `defaults` (the model's generation defaults, else OpenAI's).
pub fn sampling(
    f: &mut Fields,
    r: &mut EngineRequest,
    vocab: usize,
    defaults: &SamplingParams,
) -> Result<(), ApiError> {
    let mut s = defaults.clone();
    if let Some(t) = f.number("temperature", 0.0, 100.0)? {
        s.temperature = t as f32;
    }
    if let Some(p) = f.number("top_p", 0.0, 1.0)? {
        if p == 0.0 {
            return Err(ApiError::invalid(
                "top_p",
                "`top_p` must be in (0, 1], got 0",
            ));
        }
        // A positive value below f32's range still means "the top token only".
        s.top_p = (p as f32).max(f32::MIN_POSITIVE);
    }
    if let Some(k) = f.int("top_k", -1, i64::from(u32::MAX))? {
        s.top_k = if k <= 0 { 0 } else { k as usize };
    }
    if let Some(p) = f.number("min_p", 0.0, 1.0)? {
        s.min_p = p as f32;
    }
    if let Some(p) = f.number("presence_penalty", -2.0, 2.0)? {
        s.presence_penalty = p as f32;
    }
    if let Some(p) = f.number("frequency_penalty", -2.0, 2.0)? {
        s.frequency_penalty = p as f32;
    }
    if let Some(p) = f.number("repetition_penalty", 0.0, 100.0)? {
        if p == 0.0 {
            return Err(ApiError::invalid(
                "repetition_penalty",
                "`repetition_penalty` must be greater than 0",
            ));
        }
        s.repetition_penalty = p as f32;
    }
    if let Some(seed) = f.int("seed", i64::MIN, i64::MAX)? {
        s.seed = Some(seed as u64);
    }
    if let Some(v) = f.take("logit_bias") {
        let Value::Object(m) = v else {
            return Err(type_error(
                "logit_bias",
                "an object of token id -> bias",
                &v,
            ));
        };
        for (k, b) in m {
            let id: u32 = k.trim().parse().map_err(|_| {
                ApiError::invalid(
                    "logit_bias",
                    format!("`logit_bias` keys must be token ids, got {k:?}"),
                )
            })?;
            if id as usize >= vocab {
                return Err(ApiError::invalid(
                    "logit_bias",
                    format!("`logit_bias` token id {id} is out of range (vocabulary size {vocab})"),
                ));
            }
            let b = b
                .as_f64()
                .filter(|b| (-100.0..=100.0).contains(b))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("`logit_bias` values must be numbers in [-100, 100], got {b}"),
                    )
                })?;
            s.logit_bias.push((id, b as f32));
        }
    }
    r.sampling = s;
    r.stop = match f.take("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                v => Err(type_error("stop", "a string or an array of strings", &v)),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(type_error("stop", "a string or an array of strings", &v)),
    };
    if r.stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "stop strings must not be empty"));
    }
    if r.stop.len() > MAX_STOP_STRINGS || r.stop.iter().any(|s| s.len() > MAX_STOP_LEN) {
        return Err(ApiError::invalid(
            "stop",
            format!("at most {MAX_STOP_STRINGS} stop strings of at most {MAX_STOP_LEN} bytes each"),
        ));
    }
    if let Some(v) = f.take("stop_token_ids") {
        r.stop_token_ids = token_ids(&v, "stop_token_ids", vocab)?;
        if r.stop_token_ids.len() > MAX_STOP_TOKEN_IDS {
            return Err(ApiError::invalid(
                "stop_token_ids",
                format!("at most {MAX_STOP_TOKEN_IDS} stop token ids"),
            ));
        }
    }
    r.ignore_eos = f.bool("ignore_eos")?.unwrap_or(false);
    // Opting out of the server's speculative decoding (the output is the same either way).
    r.speculative = f.bool("speculative_decoding")?.unwrap_or(true);
    if let Some(m) = f.int("min_tokens", 0, i64::from(u32::MAX))? {
        r.min_tokens = m as usize;
    }
    if let Some(n) = f.int("n", 1, MAX_N as i64)? {
        r.n = n as usize;
    }
    if let Some(b) = f.bool("skip_special_tokens")? {
        r.skip_special_tokens = b;
    }
    // `user` identifies the end user for abuse monitoring; we only log it.
    if let Some(u) = f.take("user") {
        if !u.is_string() {
            return Err(type_error("user", "a string", &u));
        }
    }
    Ok(())
}

/// Reads `priority` (vLLM's: an integer, lower runs first, default 0). Without priority
/// scheduling (`--scheduling-policy fcfs`) only 0 is accepted.
pub fn priority(f: &mut Fields, enabled: bool) -> Result<i32, ApiError> {
    let p = f
        .int("priority", i64::from(i32::MIN), i64::from(i32::MAX))?
        .unwrap_or(0) as i32;
    if p != 0 && !enabled {
        return Err(ApiError::invalid(
            "priority",
            format!(
                "got priority {p} but priority scheduling is not enabled (start the server \
                 with --scheduling-policy priority)"
            ),
        ));
    }
    Ok(p)
}

/// An array of token ids below `vocab`.
pub fn token_ids(v: &Value, key: &str, vocab: usize) -> Result<Vec<u32>, ApiError> {
    let Value::Array(a) = v else {
        return Err(type_error(key, "an array of token ids", v));
    };
    a.iter()
        .map(|x| match x.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(id as u32),
            Some(id) => Err(ApiError::invalid(
                key,
                format!("token id {id} in `{key}` is out of range (vocabulary size {vocab})"),
            )),
            None => Err(type_error(key, "an array of token ids", v)),
        })
        .collect()
}

/// Reads `logprobs` of the completions API (an integer count of alternatives).
pub fn completion_logprobs(f: &mut Fields) -> Result<Option<usize>, ApiError> {
    Ok(f.int("logprobs", 0, MAX_LOGPROBS as i64)?
        .map(|n| n as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &str) -> Fields {
        Fields::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn leftovers_are_rejected_by_name() {
        let f = fields(r#"{"suffix": "x"}"#);
        let e = f.finish().unwrap_err();
        assert_eq!(e.param.as_deref(), Some("suffix"));
        let f = fields(r#"{"frobnicate": 1}"#);
        let e = f.finish().unwrap_err();
        assert!(e.message.contains("frobnicate"), "{}", e.message);
        assert!(fields(r#"{"tools": null}"#).finish().is_ok());
        assert!(fields(r#"{"a": null}"#).finish().is_err());
    }

    #[test]
    fn sampling_ranges_and_types() {
        let mut r = EngineRequest::default();
        let mut f = fields(
            r#"{"temperature": 0.5, "top_k": -1, "top_p": 0.9, "stop": "x", "logit_bias": {"5": -100}, "n": 3, "seed": -1}"#,
        );
        let openai = SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        };
        sampling(&mut f, &mut r, 10, &openai).unwrap();
        f.finish().unwrap();
        assert_eq!(r.sampling.temperature, 0.5);
        assert_eq!(r.sampling.top_k, 0);
        assert_eq!(r.stop, vec!["x".to_string()]);
        assert_eq!(r.sampling.logit_bias, vec![(5, -100.0)]);
        assert_eq!(r.n, 3);
        assert_eq!(r.sampling.seed, Some(u64::MAX));
        for (body, param) in [
            (r#"{"temperature": -1}"#, "temperature"),
            (r#"{"temperature": "hot"}"#, "temperature"),
            (r#"{"top_p": 0}"#, "top_p"),
            (r#"{"n": 0}"#, "n"),
            (r#"{"logit_bias": {"10": 1}}"#, "logit_bias"),
            (r#"{"logit_bias": {"a": 1}}"#, "logit_bias"),
            (r#"{"stop": [1]}"#, "stop"),
            (r#"{"stop": ""}"#, "stop"),
            (r#"{"stop_token_ids": [99]}"#, "stop_token_ids"),
            (r#"{"presence_penalty": 3}"#, "presence_penalty"),
            (
                r#"{"stop": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}"#,
                "stop",
            ),
        ] {
            let e = sampling(
                &mut fields(body),
                &mut EngineRequest::default(),
                10,
                &openai,
            )
            .unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    /// What a request leaves out comes from the defaults; what it gives wins.
    #[test]
    fn defaults_fill_what_the_request_leaves_out() {
        let model = SamplingParams {
            temperature: 0.7,
            top_p: 0.8,
            top_k: 20,
            repetition_penalty: 1.1,
            ..SamplingParams::default()
        };
        let mut r = EngineRequest::default();
        sampling(&mut fields(r#"{"top_k": 5}"#), &mut r, 10, &model).unwrap();
        assert_eq!(
            (r.sampling.temperature, r.sampling.top_p, r.sampling.top_k),
            (0.7, 0.8, 5)
        );
        assert_eq!(r.sampling.repetition_penalty, 1.1);
        let mut r = EngineRequest::default();
        sampling(&mut fields(r#"{"temperature": 0}"#), &mut r, 10, &model).unwrap();
        assert!(r.sampling.is_greedy());
        // `null` means "not given": the default stays.
        let mut r = EngineRequest::default();
        sampling(&mut fields(r#"{"temperature": null}"#), &mut r, 10, &model).unwrap();
        assert_eq!(r.sampling.temperature, 0.7);
    }

    #[test]
    fn priority_needs_the_priority_policy() {
        assert_eq!(
            priority(&mut fields(r#"{"priority": -5}"#), true).unwrap(),
            -5
        );
        assert_eq!(
            priority(&mut fields(r#"{"priority": 0}"#), false).unwrap(),
            0
        );
        assert_eq!(priority(&mut fields("{}"), false).unwrap(), 0);
        for (body, enabled) in [
            (r#"{"priority": 3}"#, false),
            (r#"{"priority": 1.5}"#, true),
            (r#"{"priority": 3000000000}"#, true),
        ] {
            let e = priority(&mut fields(body), enabled).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("priority"), "{body}");
        }
    }

    #[test]
    fn stream_options_need_stream() {
        let e = stream_opts(&mut fields(
            r#"{"stream_options": {"include_usage": true}}"#,
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stream_options"));
        let o = stream_opts(&mut fields(
            r#"{"stream": true, "stream_options": {"include_usage": true}}"#,
        ))
        .unwrap();
        assert!(o.stream && o.include_usage);
    }
}
