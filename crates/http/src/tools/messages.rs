//! The conversation as the chat template sees it, from OpenAI's `messages`, as vLLM and
//! transformers pass it: `role` (`developer` becomes `system`), `content` flattened to text (text
//! parts joined by newlines; absent or null is ""), `name` when given, and
//! - assistant `tool_calls` as `{"id", "type": "function", "function": {"name", "arguments"}}`
//!   with `arguments` parsed from its JSON string into an object (templates print it with
//!   `tojson` or iterate it); an empty list is left out; `reasoning_content` (or `reasoning`)
//!   as `reasoning_content` (Qwen3's templates read it);
//! - tool results: `tool_call_id` (required, and it must answer an earlier assistant call).

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::params::type_error;

/// A string field, absent or null as None.
fn opt_str(m: &mut Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, ApiError> {
    match m.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(type_error(&format!("{at}.{key}"), "a string", &v)),
    }
}

fn content_text(v: Option<Value>, at: &str) -> Result<String, ApiError> {
    Ok(match v {
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
                    _ => return Err(ApiError::invalid(pat, "a text part needs a string `text`")),
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
    })
}

/// One `tool_calls` entry in the template's form.
fn tool_call(v: Value, at: &str) -> Result<(Value, String), ApiError> {
    let Value::Object(mut c) = v else {
        return Err(type_error(at, "an object", &v));
    };
    let id = opt_str(&mut c, "id", at)?
        .ok_or_else(|| ApiError::invalid(format!("{at}.id"), format!("`{at}.id` is required")))?;
    match opt_str(&mut c, "type", at)?.as_deref() {
        None | Some("function") => {}
        Some(t) => {
            return Err(ApiError::invalid(
                format!("{at}.type"),
                format!("tool call type `{t}` is not supported (only `function`)"),
            ))
        }
    }
    let f = match c.remove("function") {
        Some(Value::Object(f)) => f,
        Some(v) => return Err(type_error(&format!("{at}.function"), "an object", &v)),
        None => {
            return Err(ApiError::invalid(
                format!("{at}.function"),
                format!("`{at}.function` is required"),
            ))
        }
    };
    if let Some(k) = c.keys().next() {
        return Err(ApiError::unsupported(&format!("{at}.{k}"), ""));
    }
    let fat = format!("{at}.function");
    let name = match f.get("name") {
        Some(Value::String(n)) => n.clone(),
        Some(v) => return Err(type_error(&format!("{fat}.name"), "a string", v)),
        None => {
            return Err(ApiError::invalid(
                format!("{fat}.name"),
                format!("`{fat}.name` is required"),
            ))
        }
    };
    let args = match f.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(a @ Value::Object(_)) => a,
            Ok(_) => {
                return Err(ApiError::invalid(
                    format!("{fat}.arguments"),
                    format!("`{fat}.arguments` must be a JSON object in a string"),
                ))
            }
            Err(e) => {
                return Err(ApiError::invalid(
                    format!("{fat}.arguments"),
                    format!("`{fat}.arguments` is not valid JSON: {e}"),
                ))
            }
        },
        Some(a @ Value::Object(_)) => a.clone(),
        Some(v) => return Err(type_error(&format!("{fat}.arguments"), "a JSON string", v)),
    };
    let mut func = Map::new();
    func.insert("name".into(), Value::String(name));
    func.insert("arguments".into(), args);
    let mut out = Map::new();
    out.insert("id".into(), Value::String(id.clone()));
    out.insert("type".into(), Value::String("function".into()));
    out.insert("function".into(), Value::Object(func));
    Ok((Value::Object(out), id))
}

/// Reads `messages` into the template's form (module docs).
pub fn parse_messages(v: Value) -> Result<Vec<Value>, ApiError> {
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
    let mut call_ids: Vec<String> = Vec::new();
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
            "system" | "user" | "assistant" | "tool" => role,
            "developer" => "system".to_string(),
            "function" => {
                return Err(ApiError::unsupported(
                    &format!("{at}.role"),
                    " (role `function` is OpenAI's deprecated form: use `tool` messages and `tool_calls`)",
                ))
            }
            _ => {
                return Err(ApiError::invalid(
                    format!("{at}.role"),
                    format!(
                        "unknown role `{role}` (expected system, developer, user, assistant or tool)"
                    ),
                ))
            }
        };
        let content = content_text(m.remove("content"), &at)?;
        let mut msg = Map::new();
        msg.insert("role".into(), Value::String(role.clone()));
        msg.insert("content".into(), Value::String(content));
        if let Some(n) = opt_str(&mut m, "name", &at)? {
            msg.insert("name".into(), Value::String(n));
        }
        if role == "assistant" {
            match m.remove("tool_calls") {
                None | Some(Value::Null) => {}
                Some(Value::Array(calls)) => {
                    let mut list = Vec::with_capacity(calls.len());
                    for (j, c) in calls.into_iter().enumerate() {
                        let (c, id) = tool_call(c, &format!("{at}.tool_calls[{j}]"))?;
                        call_ids.push(id);
                        list.push(c);
                    }
                    if !list.is_empty() {
                        msg.insert("tool_calls".into(), Value::Array(list));
                    }
                }
                Some(v) => {
                    return Err(type_error(
                        &format!("{at}.tool_calls"),
                        "a list of tool calls",
                        &v,
                    ))
                }
            }
            let rc = opt_str(&mut m, "reasoning_content", &at)?;
            let r = opt_str(&mut m, "reasoning", &at)?;
            if let Some(r) = rc.or(r) {
                msg.insert("reasoning_content".into(), Value::String(r));
            }
            // OpenAI's SDK sends these back with the assistant message.
            for k in ["refusal", "annotations", "audio", "function_call"] {
                if m.get(k).is_some_and(Value::is_null) {
                    m.remove(k);
                }
            }
        }
        if role == "tool" {
            let Some(id) = opt_str(&mut m, "tool_call_id", &at)? else {
                return Err(ApiError::invalid(
                    format!("{at}.tool_call_id"),
                    "a `tool` message needs `tool_call_id` (the id of the call it answers)",
                ));
            };
            if !call_ids.contains(&id) {
                return Err(ApiError::invalid(
                    format!("{at}.tool_call_id"),
                    format!(
                        "`tool_call_id` {id:?} answers no tool call of an earlier assistant message"
                    ),
                ));
            }
            msg.insert("tool_call_id".into(), Value::String(id));
        }
        if let Some(k) = m.keys().next() {
            return Err(ApiError::unsupported(&format!("{at}.{k}"), ""));
        }
        out.push(Value::Object(msg));
    }
    Ok(out)
}
