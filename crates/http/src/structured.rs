//! Structured output requests: OpenAI's `response_format` and vLLM's `structured_outputs`
//! object and older top-level `guided_*` fields, read into one [`ConstraintSpec`].

use serde_json::{Map, Value};
use switchyard_runtime::constraint::ConstraintSpec;

use crate::error::ApiError;
use crate::params::{type_error, Fields};

/// Longest constraint text (schema, regex, grammar) accepted, in bytes.
pub const MAX_CONSTRAINT_BYTES: usize = 256 * 1024;

/// Reads `response_format`, `structured_outputs` and `guided_json` / `guided_regex` /
/// `guided_choice` / `guided_grammar` (plus vLLM's `guided_whitespace_pattern`, refused, and
/// `guided_decoding_backend`, which may only name `guidance`). At most one constraint per
/// request; `response_format: {"type": "text"}` is none.
/// Returns the constraint with the request field it came from.
pub fn constraint(f: &mut Fields) -> Result<Option<(&'static str, ConstraintSpec)>, ApiError> {
    let mut found: Vec<(&'static str, ConstraintSpec)> = Vec::new();
    if let Some(rf) = f.take("response_format") {
        if let Some(c) = response_format(rf)? {
            found.push(("response_format", c));
        }
    }
    if let Some(so) = f.take("structured_outputs") {
        found.push(("structured_outputs", structured_outputs(so)?));
    }
    if let Some(v) = f.take("guided_json") {
        found.push(("guided_json", json_schema("guided_json", v)?));
    }
    if let Some(v) = f.take("guided_regex") {
        found.push(("guided_regex", regex("guided_regex", v)?));
    }
    if let Some(v) = f.take("guided_choice") {
        found.push(("guided_choice", choice("guided_choice", v)?));
    }
    if let Some(v) = f.take("guided_grammar") {
        found.push(("guided_grammar", grammar("guided_grammar", v)?));
    }
    if let Some(v) = f.take("guided_decoding_backend") {
        match v.as_str() {
            Some("guidance" | "llguidance" | "auto") => {}
            _ => {
                return Err(ApiError::invalid(
                    "guided_decoding_backend",
                    "`guided_decoding_backend` may only be `guidance` (llguidance, this server's \
                     only structured-output engine) or `auto`",
                ))
            }
        }
    }
    if f.take("guided_whitespace_pattern").is_some() {
        return Err(ApiError::unsupported("guided_whitespace_pattern", ""));
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => {
            let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
            Err(ApiError::invalid(
                names[1],
                format!(
                    "only one output constraint per request; got {}",
                    names.join(" and ")
                ),
            ))
        }
    }
}

fn object(at: &str, v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        v => Err(type_error(at, "an object", &v)),
    }
}

fn check_size(at: &str, len: usize) -> Result<(), ApiError> {
    if len > MAX_CONSTRAINT_BYTES {
        return Err(ApiError::invalid(
            at,
            format!("`{at}` is {len} bytes; at most {MAX_CONSTRAINT_BYTES} are accepted"),
        ));
    }
    Ok(())
}

/// OpenAI's `response_format`: `text`, `json_object` or `json_schema`.
fn response_format(v: Value) -> Result<Option<ConstraintSpec>, ApiError> {
    let mut m = object("response_format", v)?;
    let ty = match m.remove("type") {
        Some(Value::String(t)) => t,
        Some(v) => return Err(type_error("response_format.type", "a string", &v)),
        None => {
            return Err(ApiError::invalid(
                "response_format.type",
                "`response_format.type` is required (text, json_object or json_schema)",
            ))
        }
    };
    let out = match ty.as_str() {
        "text" => None,
        "json_object" => Some(ConstraintSpec::JsonObject),
        "json_schema" => {
            let js = m.remove("json_schema").ok_or_else(|| {
                ApiError::invalid(
                    "response_format.json_schema",
                    "`response_format.json_schema` is required with type json_schema",
                )
            })?;
            let mut js = object("response_format.json_schema", js)?;
            match js.remove("name") {
                Some(Value::String(n))
                    if !n.is_empty()
                        && n.len() <= 64
                        && n
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {}
                Some(Value::String(_)) => {
                    return Err(ApiError::invalid(
                        "response_format.json_schema.name",
                        "`name` must be 1-64 characters of a-z, A-Z, 0-9, _ and -",
                    ))
                }
                Some(v) => {
                    return Err(type_error(
                        "response_format.json_schema.name",
                        "a string",
                        &v,
                    ))
                }
                None => {
                    return Err(ApiError::invalid(
                        "response_format.json_schema.name",
                        "`response_format.json_schema.name` is required",
                    ))
                }
            }
            js.remove("description");
            match js.remove("strict") {
                None | Some(Value::Null) | Some(Value::Bool(_)) => {}
                Some(v) => {
                    return Err(type_error(
                        "response_format.json_schema.strict",
                        "a boolean",
                        &v,
                    ))
                }
            }
            let schema = match js.remove("schema") {
                // OpenAI: without a schema, any JSON.
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(s) => s,
            };
            if let Some(k) = js.keys().next() {
                return Err(ApiError::unsupported(
                    &format!("response_format.json_schema.{k}"),
                    "",
                ));
            }
            Some(json_schema("response_format.json_schema.schema", schema)?)
        }
        other => {
            return Err(ApiError::invalid(
                "response_format.type",
                format!("unknown response_format type `{other}` (expected text, json_object or json_schema)"),
            ))
        }
    };
    if let Some(k) = m.keys().next() {
        return Err(ApiError::unsupported(&format!("response_format.{k}"), ""));
    }
    Ok(out)
}

/// vLLM's `structured_outputs`: exactly one of `json`, `regex`, `choice`, `grammar`,
/// `json_object`.
fn structured_outputs(v: Value) -> Result<ConstraintSpec, ApiError> {
    let m = object("structured_outputs", v)?;
    let mut out = Vec::new();
    for (k, v) in m {
        if v.is_null() || (k == "json_object" && v == Value::Bool(false)) {
            continue;
        }
        let at = format!("structured_outputs.{k}");
        out.push(match k.as_str() {
            "json" => json_schema(&at, v)?,
            "regex" => regex(&at, v)?,
            "choice" => choice(&at, v)?,
            "grammar" => grammar(&at, v)?,
            "json_object" => match v {
                Value::Bool(true) => ConstraintSpec::JsonObject,
                v => return Err(type_error(&at, "a boolean", &v)),
            },
            "backend" => match v.as_str() {
                Some("guidance" | "llguidance" | "auto") => continue,
                _ => {
                    return Err(ApiError::invalid(
                        at,
                        "the structured-output backend may only be `guidance` or `auto`",
                    ))
                }
            },
            _ => return Err(ApiError::unsupported(&at, "")),
        });
    }
    match out.len() {
        1 => Ok(out.pop().expect("one")),
        0 => Err(ApiError::invalid(
            "structured_outputs",
            "`structured_outputs` needs one of json, regex, choice, grammar or json_object",
        )),
        _ => Err(ApiError::invalid(
            "structured_outputs",
            "`structured_outputs` takes only one of json, regex, choice, grammar and json_object",
        )),
    }
}

/// A JSON schema: an object or a boolean, or (vLLM) a string holding one.
fn json_schema(at: &str, v: Value) -> Result<ConstraintSpec, ApiError> {
    let v = match v {
        Value::String(s) => {
            check_size(at, s.len())?;
            serde_json::from_str(&s).map_err(|e| {
                ApiError::invalid(at, format!("`{at}` is a string but not JSON: {e}"))
            })?
        }
        v => v,
    };
    match v {
        Value::Object(_) => {
            check_size(at, v.to_string().len())?;
            Ok(ConstraintSpec::JsonSchema(v))
        }
        // `true` accepts any JSON, `false` nothing (which compiling reports).
        Value::Bool(true) => Ok(ConstraintSpec::JsonSchema(Value::Object(Map::new()))),
        Value::Bool(false) => Err(ApiError::invalid(
            at,
            "the JSON schema `false` admits no output",
        )),
        v => Err(type_error(at, "a JSON schema (an object)", &v)),
    }
}

fn regex(at: &str, v: Value) -> Result<ConstraintSpec, ApiError> {
    match v {
        Value::String(s) if s.is_empty() => Err(ApiError::invalid(at, "the regex is empty")),
        Value::String(s) => {
            check_size(at, s.len())?;
            Ok(ConstraintSpec::Regex(s))
        }
        v => Err(type_error(at, "a string", &v)),
    }
}

fn choice(at: &str, v: Value) -> Result<ConstraintSpec, ApiError> {
    let Value::Array(a) = v else {
        return Err(type_error(at, "an array of strings", &v));
    };
    if a.is_empty() {
        return Err(ApiError::invalid(at, format!("`{at}` must not be empty")));
    }
    let mut out = Vec::with_capacity(a.len());
    let mut total = 0;
    for (i, c) in a.into_iter().enumerate() {
        match c {
            Value::String(s) if s.is_empty() => {
                return Err(ApiError::invalid(
                    format!("{at}[{i}]"),
                    "a choice must not be empty",
                ))
            }
            Value::String(s) => {
                total += s.len();
                out.push(s);
            }
            v => return Err(type_error(&format!("{at}[{i}]"), "a string", &v)),
        }
    }
    check_size(at, total)?;
    Ok(ConstraintSpec::Choice(out))
}

fn grammar(at: &str, v: Value) -> Result<ConstraintSpec, ApiError> {
    match v {
        Value::String(s) if s.trim().is_empty() => {
            Err(ApiError::invalid(at, "the grammar is empty"))
        }
        Value::String(s) => {
            check_size(at, s.len())?;
            Ok(ConstraintSpec::Lark(s))
        }
        v => Err(type_error(at, "a string (a Lark grammar)", &v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Option<ConstraintSpec>, ApiError> {
        let mut f = Fields::parse(body.as_bytes()).unwrap();
        let c = constraint(&mut f)?;
        f.finish()?;
        Ok(c.map(|(_, c)| c))
    }

    #[test]
    fn each_surface_reads_its_constraint() {
        assert_eq!(
            parse(r#"{"response_format": {"type": "text"}}"#).unwrap(),
            None
        );
        assert_eq!(
            parse(r#"{"response_format": {"type": "json_object"}}"#).unwrap(),
            Some(ConstraintSpec::JsonObject)
        );
        let s = parse(
            r#"{"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": {"type": "integer"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Some(ConstraintSpec::JsonSchema(
                serde_json::json!({"type": "integer"})
            ))
        );
        assert_eq!(
            parse(r#"{"guided_json": "{\"type\": \"string\"}"}"#).unwrap(),
            Some(ConstraintSpec::JsonSchema(
                serde_json::json!({"type": "string"})
            ))
        );
        assert_eq!(
            parse(r#"{"structured_outputs": {"regex": "[0-9]+"}}"#).unwrap(),
            Some(ConstraintSpec::Regex("[0-9]+".into()))
        );
        assert_eq!(
            parse(r#"{"guided_choice": ["yes", "no"]}"#).unwrap(),
            Some(ConstraintSpec::Choice(vec!["yes".into(), "no".into()]))
        );
        assert_eq!(
            parse(r#"{"structured_outputs": {"grammar": "start: \"a\""}}"#).unwrap(),
            Some(ConstraintSpec::Lark("start: \"a\"".into()))
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, param) in [
            (
                r#"{"response_format": {"type": "xml"}}"#,
                "response_format.type",
            ),
            (
                r#"{"response_format": {"type": "json_schema"}}"#,
                "response_format.json_schema",
            ),
            (
                r#"{"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}"#,
                "response_format.json_schema.name",
            ),
            (
                r#"{"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": 3}}}"#,
                "response_format.json_schema.schema",
            ),
            (r#"{"guided_json": "{not json"}"#, "guided_json"),
            (r#"{"guided_choice": []}"#, "guided_choice"),
            (r#"{"guided_regex": 5}"#, "guided_regex"),
            (r#"{"structured_outputs": {}}"#, "structured_outputs"),
            (
                r#"{"structured_outputs": {"regex": "a", "choice": ["b"]}}"#,
                "structured_outputs",
            ),
            (
                r#"{"structured_outputs": {"structural_tag": "x"}}"#,
                "structured_outputs.structural_tag",
            ),
            (
                r#"{"guided_regex": "a", "guided_choice": ["b"]}"#,
                "guided_choice",
            ),
            (
                r#"{"guided_decoding_backend": "xgrammar", "guided_regex": "a"}"#,
                "guided_decoding_backend",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
        }
    }
}
