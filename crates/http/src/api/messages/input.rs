//! An Anthropic Messages body read into a chat body for [`super::super::chat`]: `system`
//! (first), each message's blocks (`text`; `tool_use` as the assistant's `tool_calls`;
//! `tool_result` as `tool` messages before the user's text; `thinking` as the assistant's
//! reasoning), `tools` (`input_schema` as `parameters`), `tool_choice` (`auto`, `any` as
//! `required`, `tool` as a named function, `none`; `disable_parallel_tool_use`),
//! `stop_sequences` as `stop`, `max_tokens`, `temperature` / `top_p` / `top_k`. A final
//! assistant message is a prefill: chat's `continue_final_message` leaves it open.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::params::{type_error, Fields};

fn object(at: &str, v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        v => Err(type_error(at, "an object", &v)),
    }
}

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

/// Rejects what is left of a block; `cache_control` is accepted everywhere (the prefix cache
/// is automatic).
fn no_more(m: &mut Map<String, Value>, at: &str) -> Result<(), ApiError> {
    m.remove("cache_control");
    match m.iter().find(|(_, v)| !v.is_null()) {
        Some((k, _)) => Err(ApiError::unsupported(
            &format!("{at}.{k}"),
            " (unknown field)",
        )),
        None => Ok(()),
    }
}

/// Content as blocks: a string is one text block.
fn blocks(v: Value, at: &str) -> Result<Vec<Value>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(a) => Ok(a),
        v => Err(type_error(at, "a string or an array of content blocks", &v)),
    }
}

/// The text of text blocks (`system`, a `tool_result`'s content), joined by newlines.
fn text_of(v: Value, at: &str) -> Result<String, ApiError> {
    let mut texts = Vec::new();
    for (j, b) in blocks(v, at)?.into_iter().enumerate() {
        let bat = format!("{at}[{j}]");
        let mut b = object(&bat, b)?;
        let ty = req_str(&mut b, "type", &bat)?;
        if ty != "text" {
            return Err(ApiError::unsupported(
                &format!("{bat}.type"),
                &format!(" (block type `{ty}` here: text only)"),
            ));
        }
        texts.push(req_str(&mut b, "text", &bat)?);
        b.remove("citations");
        no_more(&mut b, &bat)?;
    }
    Ok(texts.join("\n"))
}

/// Appends one message's chat messages to `out`.
fn message(
    i: usize,
    v: Value,
    out: &mut Vec<Value>,
    calls: &mut HashSet<String>,
) -> Result<(), ApiError> {
    let at = format!("messages[{i}]");
    let mut m = object(&at, v)?;
    let role = req_str(&mut m, "role", &at)?;
    if role != "user" && role != "assistant" {
        return Err(ApiError::invalid(
            format!("{at}.role"),
            format!("unknown role `{role}` (user or assistant; the system prompt is `system`)"),
        ));
    }
    let content = m.remove("content").ok_or_else(|| {
        ApiError::invalid(
            format!("{at}.content"),
            format!("`{at}.content` is required"),
        )
    })?;
    no_more(&mut m, &at)?;
    let (mut texts, mut tool_calls, mut reasoning) = (Vec::new(), Vec::new(), Vec::new());
    for (j, b) in blocks(content, &format!("{at}.content"))?
        .into_iter()
        .enumerate()
    {
        let bat = format!("{at}.content[{j}]");
        let mut b = object(&bat, b)?;
        let ty = req_str(&mut b, "type", &bat)?;
        match (ty.as_str(), role.as_str()) {
            ("text", _) => {
                texts.push(req_str(&mut b, "text", &bat)?);
                b.remove("citations");
            }
            ("tool_use", "assistant") => {
                let id = req_str(&mut b, "id", &bat)?;
                let name = req_str(&mut b, "name", &bat)?;
                let input = match b.remove("input") {
                    Some(v @ Value::Object(_)) => v,
                    Some(v) => return Err(type_error(&format!("{bat}.input"), "an object", &v)),
                    None => json!({}),
                };
                calls.insert(id.clone());
                tool_calls.push(json!({"id": id, "type": "function",
                                       "function": {"name": name, "arguments": input}}));
            }
            ("tool_result", "user") => {
                let id = req_str(&mut b, "tool_use_id", &bat)?;
                if !calls.contains(&id) {
                    return Err(ApiError::invalid(
                        format!("{bat}.tool_use_id"),
                        format!("`tool_use_id` {id:?} answers no tool_use block of an earlier assistant message"),
                    ));
                }
                let mut text = match b.remove("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(v) => text_of(v, &format!("{bat}.content"))?,
                };
                match b.remove("is_error") {
                    None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                    Some(Value::Bool(true)) => text = format!("Error: {text}"),
                    Some(v) => return Err(type_error(&format!("{bat}.is_error"), "a boolean", &v)),
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            ("thinking", "assistant") => {
                reasoning.push(req_str(&mut b, "thinking", &bat)?);
                b.remove("signature");
            }
            ("tool_use" | "thinking", _) | ("tool_result", _) => {
                return Err(ApiError::invalid(
                    format!("{bat}.type"),
                    format!(
                        "a `{ty}` block belongs in a{} message",
                        if ty == "tool_result" {
                            " user"
                        } else {
                            "n assistant"
                        }
                    ),
                ))
            }
            _ => {
                return Err(ApiError::unsupported(
                    &format!("{bat}.type"),
                    &format!(
                        " (content block `{ty}`: text, tool_use, tool_result and thinking are)"
                    ),
                ))
            }
        }
        no_more(&mut b, &bat)?;
    }
    // A user turn of tool results alone is just the results.
    if role == "user" && texts.is_empty() && out.last().is_some_and(|m| m["role"] == "tool") {
        return Ok(());
    }
    let mut msg = json!({"role": role, "content": texts.join("\n")});
    if !tool_calls.is_empty() {
        msg["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        msg["reasoning_content"] = json!(reasoning.join("\n"));
    }
    out.push(msg);
    Ok(())
}

/// `tools`: `{name, description, input_schema}` (type `custom` or none); server tools are a 400.
fn tools(v: Value) -> Result<Value, ApiError> {
    let Value::Array(a) = v else {
        return Err(type_error("tools", "an array of tools", &v));
    };
    let mut out = Vec::with_capacity(a.len());
    for (i, t) in a.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        let mut t = object(&at, t)?;
        match opt_str(&mut t, "type", &at)?.as_deref() {
            None | Some("custom") => {}
            Some(ty) => {
                return Err(ApiError::unsupported(
                    &format!("{at}.type"),
                    &format!(" (server tool `{ty}`: only client tools with `input_schema` are)"),
                ))
            }
        }
        let mut f = Map::new();
        f.insert("name".into(), json!(req_str(&mut t, "name", &at)?));
        if let Some(d) = opt_str(&mut t, "description", &at)? {
            f.insert("description".into(), json!(d));
        }
        match t.remove("input_schema") {
            Some(s @ Value::Object(_)) => {
                f.insert("parameters".into(), s);
            }
            Some(v) => {
                return Err(type_error(
                    &format!("{at}.input_schema"),
                    "a JSON schema object",
                    &v,
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    format!("{at}.input_schema"),
                    format!("`{at}.input_schema` is required"),
                ))
            }
        }
        match t.remove("strict") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => {
                f.insert("strict".into(), json!(b));
            }
            Some(v) => return Err(type_error(&format!("{at}.strict"), "a boolean", &v)),
        }
        // A call's input is sent whole, in one `input_json_delta`, either way.
        match t.remove("eager_input_streaming") {
            None | Some(Value::Null | Value::Bool(_)) => {}
            Some(v) => {
                return Err(type_error(
                    &format!("{at}.eager_input_streaming"),
                    "a boolean",
                    &v,
                ))
            }
        }
        no_more(&mut t, &at)?;
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(Value::Array(out))
}

/// `tool_choice` into the chat body (`tool_choice`, `parallel_tool_calls`).
fn tool_choice(v: Value, chat: &mut Map<String, Value>) -> Result<(), ApiError> {
    let mut m = object("tool_choice", v)?;
    let ty = req_str(&mut m, "type", "tool_choice")?;
    let choice = match ty.as_str() {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            let name = req_str(&mut m, "name", "tool_choice")?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(ApiError::invalid(
                "tool_choice.type",
                format!("unknown tool_choice type `{ty}` (auto, any, tool or none)"),
            ))
        }
    };
    match m.remove("disable_parallel_tool_use") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(d)) => {
            chat.insert("parallel_tool_calls".into(), json!(!d));
        }
        Some(v) => {
            return Err(type_error(
                "tool_choice.disable_parallel_tool_use",
                "a boolean",
                &v,
            ))
        }
    }
    no_more(&mut m, "tool_choice")?;
    chat.insert("tool_choice".into(), choice);
    Ok(())
}

/// `output_config`: `format` (`{type: "json_schema", schema}`) as the chat `response_format`;
/// `effort` is a 400.
fn output_config(v: Value) -> Result<Option<Value>, ApiError> {
    let mut m = object("output_config", v)?;
    if m.get("effort").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::unsupported(
            "output_config.effort",
            " (the model's chat template decides how it reasons)",
        ));
    }
    m.remove("effort");
    let rf = match m.remove("format") {
        None | Some(Value::Null) => None,
        Some(f) => {
            let mut f = object("output_config.format", f)?;
            let ty = req_str(&mut f, "type", "output_config.format")?;
            if ty != "json_schema" {
                return Err(ApiError::invalid(
                    "output_config.format.type",
                    format!("unknown output format `{ty}` (json_schema)"),
                ));
            }
            let schema = f.remove("schema").ok_or_else(|| {
                ApiError::invalid(
                    "output_config.format.schema",
                    "`output_config.format.schema` is required",
                )
            })?;
            no_more(&mut f, "output_config.format")?;
            Some(json!({"type": "json_schema",
                        "json_schema": {"name": "output", "schema": schema}}))
        }
    };
    no_more(&mut m, "output_config")?;
    Ok(rf)
}

/// Reads a Messages body (`model` already taken) into a chat body; with `count_only`
/// (`/v1/messages/count_tokens`) there is no `max_tokens`, sampling or `stream`. Returns the
/// chat body and `stream`.
pub(super) fn convert(
    f: &mut Fields,
    count_only: bool,
) -> Result<(Map<String, Value>, bool), ApiError> {
    let mut chat = Map::new();
    let mut msgs = Vec::new();
    if let Some(s) = f.take("system") {
        msgs.push(json!({"role": "system", "content": text_of(s, "system")?}));
    }
    let Some(messages) = f.take("messages") else {
        return Err(ApiError::invalid("messages", "`messages` is required"));
    };
    let Value::Array(messages) = messages else {
        return Err(type_error("messages", "an array of messages", &messages));
    };
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let mut calls = HashSet::new();
    for (i, m) in messages.into_iter().enumerate() {
        message(i, m, &mut msgs, &mut calls)?;
    }
    // Anthropic's prefill: a final assistant message is continued, not closed.
    if msgs.last().is_some_and(|m| m["role"] == "assistant") {
        chat.insert("continue_final_message".into(), json!(true));
    }
    chat.insert("messages".into(), Value::Array(msgs));
    if let Some(t) = f.take("tools") {
        chat.insert("tools".into(), tools(t)?);
    }
    if let Some(c) = f.take("tool_choice") {
        tool_choice(c, &mut chat)?;
    }
    // Prompt caching is automatic (the prefix cache): a cache breakpoint changes nothing.
    match f.take("cache_control") {
        None | Some(Value::Object(_)) => {}
        Some(v) => return Err(type_error("cache_control", "an object", &v)),
    }
    match f.take("speed") {
        None => {}
        Some(v) if v == "standard" => {}
        Some(_) => return Err(ApiError::unsupported("speed", " (only `standard`)")),
    }
    if let Some(oc) = f.take("output_config") {
        if let Some(rf) = output_config(oc)? {
            chat.insert("response_format".into(), rf);
        }
    }
    match f.take("thinking") {
        None => {}
        Some(Value::Object(m)) if m.get("type") == Some(&json!("disabled")) => {}
        Some(_) => {
            return Err(ApiError::unsupported(
                "thinking",
                " (the model's chat template decides whether it reasons)",
            ))
        }
    }
    if count_only {
        return Ok((chat, false));
    }
    match f.take("max_tokens") {
        Some(m) => {
            chat.insert("max_tokens".into(), m);
        }
        None => return Err(ApiError::invalid("max_tokens", "`max_tokens` is required")),
    }
    if let Some(s) = f.take("stop_sequences") {
        chat.insert("stop".into(), s);
    }
    // `priority` as on the other generation routes (vLLM's extension).
    for k in ["temperature", "top_p", "top_k", "priority"] {
        if let Some(v) = f.take(k) {
            chat.insert(k.into(), v);
        }
    }
    match f.take("metadata") {
        None => {}
        Some(Value::Object(mut m)) => {
            opt_str(&mut m, "user_id", "metadata")?;
            no_more(&mut m, "metadata")?;
        }
        Some(v) => return Err(type_error("metadata", "an object", &v)),
    }
    match f.take("service_tier") {
        None => {}
        Some(v) if v == "auto" || v == "standard_only" => {}
        Some(_) => return Err(ApiError::unsupported("service_tier", "")),
    }
    let stream = f.bool("stream")?.unwrap_or(false);
    Ok((chat, stream))
}

/// An error about the chat body, renamed to the Messages field it came from.
pub(super) fn rename(mut e: ApiError) -> ApiError {
    if let Some(p) = &e.param {
        let r = if p == "continue_final_message" {
            Some("messages".to_string())
        } else if let Some(rest) = p.strip_prefix("response_format.json_schema") {
            Some(format!("output_config.format{rest}"))
        } else if let Some(rest) = p.strip_prefix("response_format") {
            Some(format!("output_config.format{rest}"))
        } else if let Some(rest) = p.strip_prefix("stop") {
            Some(format!("stop_sequences{rest}"))
        } else if p.starts_with("tools[") {
            Some(
                p.replacen(".function.parameters", ".input_schema", 1)
                    .replacen(".function.", ".", 1),
            )
        } else {
            None
        };
        if let Some(r) = r {
            e.param = Some(r);
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(body: Value, count_only: bool) -> Result<(Map<String, Value>, bool), ApiError> {
        let mut f = Fields::parse(body.to_string().as_bytes()).unwrap();
        let c = convert(&mut f, count_only)?;
        f.finish()?;
        Ok(c)
    }

    #[test]
    fn blocks_become_chat_messages() {
        let (c, stream) = conv(
            json!({
                "system": [{"type": "text", "text": "Sys.", "cache_control": {"type": "ephemeral"}}],
                "max_tokens": 5, "stream": true, "stop_sequences": ["END"], "top_k": 3, "priority": 2,
                "messages": [
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                        {"type": "text", "text": "And?"}]},
                ],
                "tools": [{"name": "w", "description": "d", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "metadata": {"user_id": "u"}, "cache_control": {"type": "ephemeral"},
                "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
            }),
            false,
        )
        .unwrap();
        assert!(stream);
        assert_eq!(
            c["messages"],
            json!([
                {"role": "system", "content": "Sys."},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "toolu_1",
                  "type": "function", "function": {"name": "w", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "user", "content": "And?"},
            ])
        );
        assert_eq!(
            c["tools"],
            json!([{"type": "function", "function": {"name": "w", "description": "d", "parameters": {"type": "object"}}}])
        );
        assert_eq!(
            (c["tool_choice"].clone(), c["parallel_tool_calls"].clone()),
            (json!("required"), json!(false))
        );
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(
            (c["max_tokens"].clone(), c["priority"].clone()),
            (json!(5), json!(2))
        );
        assert_eq!(
            c["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}})
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let user = json!({"role": "user", "content": "hi"});
        for (body, count_only, param) in [
            (json!({"messages": [user]}), false, "max_tokens"),
            (json!({"messages": [], "max_tokens": 1}), false, "messages"),
            (
                json!({"messages": [user], "max_tokens": 1}),
                true,
                "max_tokens",
            ),
            (
                json!({"messages": [{"role": "system", "content": "x"}], "max_tokens": 1}),
                false,
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}], "max_tokens": 1}),
                false,
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}], "max_tokens": 1}),
                false,
                "messages[0].content[0].tool_use_id",
            ),
            (
                json!({"messages": [user], "max_tokens": 1, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                false,
                "tools[0].type",
            ),
            (
                json!({"messages": [user], "max_tokens": 1, "tools": [{"name": "f"}]}),
                false,
                "tools[0].input_schema",
            ),
            (
                json!({"messages": [user], "max_tokens": 1, "tool_choice": {"type": "maybe"}}),
                false,
                "tool_choice.type",
            ),
            (
                json!({"messages": [user], "max_tokens": 1, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
                false,
                "thinking",
            ),
            (
                json!({"messages": [user], "max_tokens": 1, "output_config": {"effort": "high"}}),
                false,
                "output_config.effort",
            ),
            (
                json!({"messages": [user], "max_tokens": 1, "output_config": {"format": {"type": "xml"}}}),
                false,
                "output_config.format.type",
            ),
        ] {
            let e = conv(body.clone(), count_only)
                .err()
                .unwrap_or_else(|| panic!("{body}"));
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
            assert_eq!(e.status.as_u16(), 400);
        }
        let r = |p: &str| rename(ApiError::invalid(p, "x")).param.unwrap();
        assert_eq!(r("stop"), "stop_sequences");
        assert_eq!(r("continue_final_message"), "messages");
        assert_eq!(r("tools[0].function.parameters"), "tools[0].input_schema");
        assert_eq!(r("tools[0].function.name"), "tools[0].name");
    }
}
