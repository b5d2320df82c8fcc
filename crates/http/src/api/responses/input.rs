//! A `/v1/responses` body read into a chat body (`messages`, `tools`, `tool_choice`,
//! `response_format`, `max_tokens`, sampling) for [`super::super::chat`], plus what the answer
//! echoes and what the store keeps. Every field is read by name; known OpenAI fields this server
//! cannot honour are a 400 naming them.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::store::ResponseStore;
use crate::error::ApiError;
use crate::params::{type_error, Fields};

/// A `/v1/responses` request in chat form.
#[derive(Debug)]
pub(super) struct Converted {
    /// The chat body (`model` already checked and left out).
    pub chat: Map<String, Value>,
    /// The conversation without `instructions`: the stored history (`previous_response_id`)
    /// and this request's input, in chat form.
    pub conversation: Vec<Value>,
    /// The request fields the response object echoes.
    pub echo: Map<String, Value>,
    /// `stream`.
    pub stream: bool,
    /// `store` (default true).
    pub store: bool,
}

/// 400: `param` is an OpenAI field this server cannot honour.
fn unsupported(param: &str, why: &str) -> ApiError {
    ApiError::unsupported(param, why)
}

fn object(at: &str, v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        v => Err(type_error(at, "an object", &v)),
    }
}

/// A string field of `m`, absent or null as None.
fn opt_str(m: &mut Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, ApiError> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(type_error(&format!("{at}.{key}"), "a string", &v)),
    }
}

fn req_str(m: &mut Map<String, Value>, key: &str, at: &str) -> Result<String, ApiError> {
    opt_str(m, key, at)?.ok_or_else(|| {
        ApiError::invalid(format!("{at}.{key}"), format!("`{at}.{key}` is required"))
    })
}

/// Rejects what is left of an object (the keys every item may carry were taken).
fn no_more(m: &Map<String, Value>, at: &str) -> Result<(), ApiError> {
    match m.iter().find(|(_, v)| !v.is_null()) {
        Some((k, _)) => Err(unsupported(&format!("{at}.{k}"), " (unknown field)")),
        None => Ok(()),
    }
}

/// The text of message content: a string, or parts of `input_text` / `output_text` / `text`
/// (joined by newlines). Images, files and audio are a 400.
fn content_text(v: Option<Value>, at: &str) -> Result<String, ApiError> {
    let parts = match v {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::String(s)) => return Ok(s),
        Some(Value::Array(p)) => p,
        Some(v) => {
            return Err(type_error(
                &format!("{at}.content"),
                "a string or an array of content parts",
                &v,
            ))
        }
    };
    let mut texts = Vec::with_capacity(parts.len());
    for (j, p) in parts.into_iter().enumerate() {
        let pat = format!("{at}.content[{j}]");
        let mut p = object(&pat, p)?;
        let ty = req_str(&mut p, "type", &pat)?;
        match ty.as_str() {
            "input_text" | "output_text" | "text" => texts.push(req_str(&mut p, "text", &pat)?),
            "refusal" => texts.push(req_str(&mut p, "refusal", &pat)?),
            _ => {
                return Err(unsupported(
                    &format!("{pat}.type"),
                    &format!(" (content part `{ty}`: text only)"),
                ))
            }
        }
        // What the API returns with output text, sent back as given.
        p.remove("annotations");
        p.remove("logprobs");
        no_more(&p, &pat)?;
    }
    Ok(texts.join("\n"))
}

/// The ids of the calls the assistant messages of `conversation` made.
fn call_ids(conversation: &[Value]) -> HashSet<String> {
    conversation
        .iter()
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// Appends the input items to `msgs` in chat form: messages, `function_call` (on the
/// preceding assistant message, or a new one), `function_call_output` (a `tool` message
/// answering a known call), `reasoning` (the next assistant message's reasoning).
fn input_items(v: Value, msgs: &mut Vec<Value>) -> Result<(), ApiError> {
    let items = match v {
        Value::String(s) => {
            msgs.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(a) => a,
        v => {
            return Err(type_error(
                "input",
                "a string or an array of input items",
                &v,
            ))
        }
    };
    let mut calls = call_ids(msgs);
    let mut reasoning: Option<String> = None;
    // Whether the last message is an assistant turn that calls may join.
    let mut open_assistant = false;
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("input[{i}]");
        let mut m = object(&at, item)?;
        let ty = match opt_str(&mut m, "type", &at)? {
            Some(t) => t,
            None if m.contains_key("role") => "message".into(),
            None => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!("`{at}.type` is required"),
                ))
            }
        };
        // Items the API returned carry these; they are the client's business.
        m.remove("id");
        m.remove("status");
        match ty.as_str() {
            "message" => {
                let role = req_str(&mut m, "role", &at)?;
                let role = match role.as_str() {
                    "user" | "assistant" | "system" => role,
                    "developer" => "system".into(),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("{at}.role"),
                            format!(
                                "unknown role `{role}` (expected user, assistant, system or \
                                 developer)"
                            ),
                        ))
                    }
                };
                let content = content_text(m.remove("content"), &at)?;
                m.remove("phase");
                no_more(&m, &at)?;
                let mut msg = json!({"role": role, "content": content});
                if role == "assistant" {
                    if let Some(r) = reasoning.take() {
                        msg["reasoning_content"] = json!(r);
                    }
                }
                open_assistant = role == "assistant";
                msgs.push(msg);
            }
            "function_call" => {
                let call_id = req_str(&mut m, "call_id", &at)?;
                let name = req_str(&mut m, "name", &at)?;
                let arguments = req_str(&mut m, "arguments", &at)?;
                if !matches!(
                    serde_json::from_str::<Value>(&arguments),
                    Ok(Value::Object(_))
                ) {
                    return Err(ApiError::invalid(
                        format!("{at}.arguments"),
                        format!("`{at}.arguments` must be a JSON object in a string"),
                    ));
                }
                m.remove("namespace");
                no_more(&m, &at)?;
                let call = json!({"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}});
                calls.insert(call_id);
                if !open_assistant {
                    let mut msg = json!({"role": "assistant", "content": ""});
                    if let Some(r) = reasoning.take() {
                        msg["reasoning_content"] = json!(r);
                    }
                    msgs.push(msg);
                    open_assistant = true;
                }
                if let Some(Value::Object(last)) = msgs.last_mut() {
                    match last.get_mut("tool_calls") {
                        Some(Value::Array(a)) => a.push(call),
                        _ => {
                            last.insert("tool_calls".into(), json!([call]));
                        }
                    }
                }
            }
            "function_call_output" => {
                let call_id = req_str(&mut m, "call_id", &at)?;
                if !calls.contains(&call_id) {
                    return Err(ApiError::invalid(
                        format!("{at}.call_id"),
                        format!(
                            "`call_id` {call_id:?} answers no function_call of this input or of \
                             the previous response"
                        ),
                    ));
                }
                let output = match m.remove("output") {
                    Some(Value::String(s)) => s,
                    Some(v @ Value::Array(_)) => content_text(Some(v), &format!("{at}.output"))?,
                    Some(v) => return Err(type_error(&format!("{at}.output"), "a string", &v)),
                    None => {
                        return Err(ApiError::invalid(
                            format!("{at}.output"),
                            format!("`{at}.output` is required"),
                        ))
                    }
                };
                no_more(&m, &at)?;
                open_assistant = false;
                msgs.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            "reasoning" => {
                let mut text = Vec::new();
                for key in ["content", "summary"] {
                    if let Some(v) = m.remove(key) {
                        let Value::Array(parts) = v else {
                            return Err(type_error(&format!("{at}.{key}"), "an array", &v));
                        };
                        for (j, p) in parts.into_iter().enumerate() {
                            let mut p = object(&format!("{at}.{key}[{j}]"), p)?;
                            if key == "content" {
                                text.push(req_str(&mut p, "text", &format!("{at}.{key}[{j}]"))?);
                            }
                        }
                    }
                }
                if m.get("encrypted_content").is_some_and(|v| !v.is_null()) {
                    return Err(unsupported(
                        &format!("{at}.encrypted_content"),
                        " (this server never encrypts reasoning)",
                    ));
                }
                m.remove("encrypted_content");
                no_more(&m, &at)?;
                reasoning = Some(text.join("\n"));
            }
            _ => {
                return Err(unsupported(
                    &format!("{at}.type"),
                    &format!(
                        " (input item `{ty}`: message, function_call, function_call_output and \
                         reasoning are)"
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Responses' flat function tools, `{type: "function", name, description, parameters,
/// strict}`, in chat form. Built-in tools (web search, file search, ...) are a 400.
fn tools(v: Value) -> Result<Value, ApiError> {
    let Value::Array(a) = v else {
        return Err(type_error("tools", "an array of tools", &v));
    };
    let mut out = Vec::with_capacity(a.len());
    for (i, t) in a.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let mut t = object(&at, t)?;
        let ty = req_str(&mut t, "type", &at)?;
        if ty != "function" {
            return Err(unsupported(
                &format!("{at}.type"),
                &format!(" (tool type `{ty}`: only `function` tools are; no built-in tools)"),
            ));
        }
        let mut f = Map::new();
        for k in ["name", "description", "parameters", "strict"] {
            if let Some(v) = t.remove(k).filter(|v| !v.is_null()) {
                f.insert(k.into(), v);
            }
        }
        no_more(&t, &at)?;
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(Value::Array(out))
}

/// `tool_choice` in chat form: the strings as they are, `{type: "function", name}` as a named
/// function.
fn tool_choice(v: Value) -> Result<Value, ApiError> {
    match v {
        Value::String(_) => Ok(v),
        Value::Object(mut m) => {
            let ty = req_str(&mut m, "type", "tool_choice")?;
            if ty != "function" {
                return Err(unsupported(
                    "tool_choice.type",
                    &format!(" (`{ty}`: a string or {{\"type\": \"function\", \"name\"}} is)"),
                ));
            }
            let name = req_str(&mut m, "name", "tool_choice")?;
            no_more(&m, "tool_choice")?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        v => Err(type_error("tool_choice", "a string or an object", &v)),
    }
}

/// `text`: `format` (`text`, `json_object`, `json_schema` with `name`, `schema`, `strict`,
/// `description`) as the chat `response_format`; returns it and `text` as echoed.
fn text(v: Value) -> Result<(Option<Value>, Value), ApiError> {
    let mut m = object("text", v)?;
    if m.get("verbosity").is_some_and(|v| !v.is_null()) {
        return Err(unsupported("text.verbosity", ""));
    }
    m.remove("verbosity");
    let format = match m.remove("format") {
        None | Some(Value::Null) => json!({"type": "text"}),
        Some(f) => f,
    };
    no_more(&m, "text")?;
    let mut f = object("text.format", format.clone())?;
    let ty = req_str(&mut f, "type", "text.format")?;
    let rf = match ty.as_str() {
        "text" => None,
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let mut js = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = f.remove(k).filter(|v| !v.is_null()) {
                    js.insert(k.into(), v);
                }
            }
            Some(json!({"type": "json_schema", "json_schema": js}))
        }
        _ => {
            return Err(ApiError::invalid(
                "text.format.type",
                format!("unknown text.format type `{ty}` (text, json_object or json_schema)"),
            ))
        }
    };
    no_more(&f, "text.format")?;
    Ok((rf, json!({"format": format})))
}

/// `metadata`: at most 16 string values (OpenAI's limits).
fn metadata(v: Value) -> Result<Value, ApiError> {
    let m = object("metadata", v)?;
    if m.len() > 16 {
        return Err(ApiError::invalid(
            "metadata",
            "`metadata` has at most 16 keys",
        ));
    }
    for (k, v) in &m {
        if k.len() > 64 || v.as_str().is_none_or(|s| s.len() > 512) {
            return Err(ApiError::invalid(
                "metadata",
                "`metadata` keys are at most 64 characters and values strings of at most 512",
            ));
        }
    }
    Ok(Value::Object(m))
}

/// Fields accepted when they ask for the only behaviour there is.
fn only(
    f: &mut Fields,
    key: &str,
    allowed: &[Value],
    why: &str,
) -> Result<Option<Value>, ApiError> {
    match f.take(key) {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        Some(_) => Err(unsupported(key, why)),
    }
}

/// Reads a `/v1/responses` body (`model` already taken).
pub(super) fn convert(f: &mut Fields, store: &ResponseStore) -> Result<Converted, ApiError> {
    let mut chat = Map::new();
    let mut echo = Map::new();
    // Refused first: fields that change what the request means.
    only(
        f,
        "background",
        &[json!(false)],
        " (no background responses)",
    )?;
    only(
        f,
        "truncation",
        &[json!("disabled")],
        " (`auto`: the input is never truncated)",
    )?;
    only(
        f,
        "include",
        &[json!([])],
        " (no extra output data to include)",
    )?;
    only(f, "service_tier", &[json!("auto"), json!("default")], "")?;
    only(f, "stream_options", &[], "")?;
    only(
        f,
        "top_logprobs",
        &[json!(0)],
        " (no logprobs in responses)",
    )?;
    for k in ["max_tool_calls", "prompt", "conversation"] {
        if f.take(k).is_some() {
            return Err(unsupported(k, ""));
        }
    }
    match f.take("reasoning") {
        None => {}
        Some(Value::Object(m)) if m.values().all(Value::is_null) => {}
        Some(Value::Object(m)) => {
            let k = m.iter().find(|(_, v)| !v.is_null()).map_or("", |(k, _)| k);
            return Err(unsupported(
                &format!("reasoning.{k}"),
                " (the model's chat template decides whether it reasons)",
            ));
        }
        Some(v) => return Err(type_error("reasoning", "an object", &v)),
    }
    let previous = f.string("previous_response_id")?;
    let mut conversation = match &previous {
        None => Vec::new(),
        Some(id) => {
            store
                .get(id)
                .ok_or_else(|| ApiError {
                    code: Some("previous_response_not_found"),
                    ..ApiError::not_found(
                        "previous_response_id",
                        format!(
                            "previous response `{id}` not found: unknown, not stored \
                                 (`store: false`), or evicted from this server's store \
                                 (--responses-store-size, --responses-store-ttl)"
                        ),
                    )
                })?
                .conversation
        }
    };
    let input = f
        .take("input")
        .ok_or_else(|| ApiError::invalid("input", "`input` is required"))?;
    input_items(input, &mut conversation)?;
    let instructions = f.string("instructions")?;
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    if let Some(i) = &instructions {
        messages.push(json!({"role": "system", "content": i}));
    }
    messages.extend(conversation.iter().cloned());
    chat.insert("messages".into(), Value::Array(messages));
    let tools_given = f.take("tools");
    if let Some(t) = &tools_given {
        chat.insert("tools".into(), tools(t.clone())?);
    }
    let choice = f.take("tool_choice");
    if let Some(c) = &choice {
        chat.insert("tool_choice".into(), tool_choice(c.clone())?);
    }
    let parallel = f.bool("parallel_tool_calls")?;
    if let Some(p) = parallel {
        chat.insert("parallel_tool_calls".into(), json!(p));
    }
    let text_echo = match f.take("text") {
        None => json!({"format": {"type": "text"}}),
        Some(t) => {
            let (rf, echo) = text(t)?;
            if let Some(rf) = rf {
                chat.insert("response_format".into(), rf);
            }
            echo
        }
    };
    let max_output = f.take("max_output_tokens");
    if let Some(m) = &max_output {
        chat.insert("max_tokens".into(), m.clone());
    }
    // `priority` as on the other generation routes (vLLM's extension).
    for k in ["temperature", "top_p", "priority"] {
        if let Some(v) = f.take(k) {
            chat.insert(k.into(), v);
        }
    }
    let metadata = match f.take("metadata") {
        None => json!({}),
        Some(m) => metadata(m)?,
    };
    let stream = f.bool("stream")?.unwrap_or(false);
    let store = f.bool("store")?.unwrap_or(true);
    echo.insert("instructions".into(), json!(instructions));
    echo.insert(
        "max_output_tokens".into(),
        max_output.unwrap_or(Value::Null),
    );
    echo.insert("metadata".into(), metadata);
    echo.insert(
        "parallel_tool_calls".into(),
        json!(parallel.unwrap_or(true)),
    );
    echo.insert("previous_response_id".into(), json!(previous));
    echo.insert("text".into(), text_echo);
    echo.insert(
        "tool_choice".into(),
        choice.unwrap_or_else(|| json!("auto")),
    );
    echo.insert("tools".into(), tools_given.unwrap_or_else(|| json!([])));
    echo.insert("store".into(), json!(store));
    for k in ["user", "safety_identifier", "prompt_cache_key"] {
        echo.insert(k.into(), json!(f.string(k)?));
    }
    echo.insert("reasoning".into(), json!({"effort": null, "summary": null}));
    echo.insert("truncation".into(), json!("disabled"));
    echo.insert("background".into(), json!(false));
    echo.insert("service_tier".into(), json!("default"));
    echo.insert("top_logprobs".into(), json!(0));
    echo.insert("max_tool_calls".into(), Value::Null);
    Ok(Converted {
        chat,
        conversation,
        echo,
        stream,
        store,
    })
}

/// An error about the chat body, renamed to the Responses field it came from.
pub(super) fn rename(mut e: ApiError) -> ApiError {
    if let Some(p) = &e.param {
        let renamed = [
            ("response_format.json_schema.", "text.format."),
            ("response_format", "text.format"),
            ("max_tokens", "max_output_tokens"),
            ("messages", "input"),
        ]
        .iter()
        .find_map(|(from, to)| p.strip_prefix(from).map(|rest| format!("{to}{rest}")));
        let renamed = renamed.or_else(|| {
            // Chat's `tools[i].function.name` is Responses' `tools[i].name`.
            p.starts_with("tools[")
                .then(|| p.replacen(".function.", ".", 1))
                .filter(|r| r != p)
        });
        if let Some(r) = renamed {
            e.param = Some(r);
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn conv(body: Value) -> Result<Converted, ApiError> {
        let store = ResponseStore::new(4, Duration::from_secs(60));
        let mut f = Fields::parse(body.to_string().as_bytes()).unwrap();
        let c = convert(&mut f, &store)?;
        f.finish()?;
        Ok(c)
    }

    #[test]
    fn items_become_chat_messages() {
        let c = conv(json!({
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "dev"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "hi", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{\"x\":1}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "42"},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}, "strict": true}},
            "max_output_tokens": 7,
            "metadata": {"k": "v"},
            "priority": -1,
        }))
        .unwrap();
        let m = &c.chat["messages"];
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(m[1], json!({"role": "system", "content": "dev"}));
        assert_eq!(m[2], json!({"role": "user", "content": "a\nb"}));
        assert_eq!(
            m[3],
            json!({"role": "assistant", "content": "hi", "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]})
        );
        assert_eq!(
            m[4],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "42"})
        );
        // Instructions do not carry over to a continuation.
        assert_eq!(c.conversation.len(), 4);
        assert_eq!(
            c.chat["tools"],
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": true}}])
        );
        assert_eq!(
            c.chat["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert_eq!(
            c.chat["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(
            (c.chat["max_tokens"].clone(), c.chat["priority"].clone()),
            (json!(7), json!(-1))
        );
        assert_eq!(c.echo["metadata"], json!({"k": "v"}));
        assert!(c.store && !c.stream);
    }

    #[test]
    fn unsupported_and_bad_fields_name_themselves() {
        for (body, param, status) in [
            (json!({"input": "x", "background": true}), "background", 400),
            (
                json!({"input": "x", "reasoning": {"effort": "high"}}),
                "reasoning.effort",
                400,
            ),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
                400,
            ),
            (
                json!({"input": "x", "include": ["reasoning.encrypted_content"]}),
                "include",
                400,
            ),
            (
                json!({"input": [{"type": "function_call_output", "call_id": "c9", "output": "1"}]}),
                "input[0].call_id",
                400,
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
                "input[0].content[0].type",
                400,
            ),
            (
                json!({"input": [{"type": "item_reference", "id": "x"}]}),
                "input[0].type",
                400,
            ),
            (
                json!({"input": "x", "previous_response_id": "resp_nope"}),
                "previous_response_id",
                404,
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "xml"}}}),
                "text.format.type",
                400,
            ),
            (
                json!({"input": "x", "frequency_penalty": 1}),
                "frequency_penalty",
                400,
            ),
            (json!({}), "input", 400),
        ] {
            let e = conv(body.clone()).err().unwrap_or_else(|| panic!("{body}"));
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
            assert_eq!(e.status.as_u16(), status, "{body}: {e}");
        }
    }

    #[test]
    fn chat_errors_are_renamed() {
        let r = |p: &str| rename(ApiError::invalid(p, "x")).param.unwrap();
        assert_eq!(r("response_format.json_schema.name"), "text.format.name");
        assert_eq!(r("max_tokens"), "max_output_tokens");
        assert_eq!(r("messages"), "input");
        assert_eq!(r("tools[1].function.name"), "tools[1].name");
        assert_eq!(r("temperature"), "temperature");
    }
}
