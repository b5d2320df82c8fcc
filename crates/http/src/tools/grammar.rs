//! The grammar that forces a tool call (`tool_choice: "required"` or a named function), in
//! llguidance's Lark dialect: the family's call syntax with `%json { schema }` for the arguments
//! (each tool's `parameters`), so the constrained engine can only produce calls that the family's
//! parser ([`super::calls`]) reads back as calls to the request's tools.
//!
//! Shapes (`parallel` allows more than one call, separated as the family separates them):
//! - `hermes`: `<tool_call>\n{"name": NAME, "arguments": {…}}\n</tool_call>`, one JSON schema
//!   per tool (`name` a `const`).
//! - `llama3_json`: `{"name": NAME, "parameters": {…}}`, several joined by `; `.
//! - `mistral`: `[TOOL_CALLS][{"name": NAME, "arguments": {…}}, …]` (the array form every
//!   Mistral template's parser reads); `[TOOL_CALLS]` as the special token `<[ID]>` when its
//!   id is given, else as text.
//! - `qwen3_coder`: `<tool_call>\n<function=NAME>\n` then each parameter as
//!   `<parameter=KEY>\nVALUE\n</parameter>\n` (required ones always, optional ones may be left
//!   out, in the schema's order; a `string` value is any text, other values JSON by their
//!   schema), then `</function>\n</tool_call>`.
//!
//! A reasoning model may think first: when reasoning is parsed the grammar begins with an
//! optional `<think>…</think>` (or, when the prompt opened the block, with its rest).

use serde_json::{json, Value};

use super::{ParserKind, ToolChoice, ToolSpec};

/// How the grammar starts and repeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrammarOpts {
    /// More than one call allowed (`parallel_tool_calls`).
    pub parallel: bool,
    /// Reasoning is parsed: `Some(true)` when the prompt ends inside `<think>`, `Some(false)`
    /// when the answer may open one; `None` for no reasoning.
    pub reasoning: Option<bool>,
    /// The token id of Mistral's `[TOOL_CALLS]` special token.
    pub mistral_tool_calls_token: Option<u32>,
}

/// A Lark string literal of `s`.
fn lark_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The Lark grammar (llguidance dialect) forcing `family`'s call syntax with arguments matching
/// the tools' schemas: for `required`, a call of any of `tools`; for a named function, of that
/// one. `None` for `auto` and `none` (nothing forced).
pub fn tool_call_grammar(
    tools: &[ToolSpec],
    choice: &ToolChoice,
    family: ParserKind,
    opts: GrammarOpts,
) -> Option<String> {
    let allowed: Vec<&ToolSpec> = match choice {
        ToolChoice::None | ToolChoice::Auto => return None,
        ToolChoice::Required => tools.iter().collect(),
        ToolChoice::Named(n) => tools.iter().filter(|t| &t.name == n).collect(),
    };
    if allowed.is_empty() {
        return None;
    }
    let mut g = String::new();
    let (call, sep) = match family {
        ParserKind::Hermes => {
            let schemas: Vec<Value> = allowed
                .iter()
                .map(|t| object_schema(&t.name, "arguments", &t.parameters))
                .collect();
            g.push_str(&format!(
                "call: \"<tool_call>\\n\" %json {} \"\\n</tool_call>\"\n",
                any_of(schemas)
            ));
            ("call", "\"\\n\"")
        }
        ParserKind::Llama3Json => {
            let schemas: Vec<Value> = allowed
                .iter()
                .map(|t| object_schema(&t.name, "parameters", &t.parameters))
                .collect();
            g.push_str(&format!("call: %json {}\n", any_of(schemas)));
            ("call", "\"; \"")
        }
        ParserKind::Mistral => {
            let schemas: Vec<Value> = allowed
                .iter()
                .map(|t| object_schema(&t.name, "arguments", &t.parameters))
                .collect();
            let marker = opts
                .mistral_tool_calls_token
                .map_or_else(|| lark_str("[TOOL_CALLS]"), |id| format!("<[{id}]>"));
            let items = if opts.parallel {
                "item (\", \" item)*"
            } else {
                "item"
            };
            g.push_str(&format!("call: {marker} \"[\" {items} \"]\"\n"));
            g.push_str(&format!("item: %json {}\n", any_of(schemas)));
            // One array holds every call.
            return Some(finish(g, "call", None, opts));
        }
        ParserKind::Qwen3Coder => {
            let mut alts = Vec::new();
            for (i, t) in allowed.iter().enumerate() {
                let rule = format!("fn{i}");
                let mut body = vec![lark_str(&format!("<function={}>\n", t.name))];
                let props = t.parameters.get("properties").and_then(Value::as_object);
                let required: Vec<&str> = t
                    .parameters
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for (j, (k, schema)) in props.into_iter().flatten().enumerate() {
                    let prule = format!("fn{i}_p{j}");
                    let is_string = schema.get("type").and_then(Value::as_str) == Some("string");
                    let value = if is_string {
                        // Any text up to the first "\n</parameter>".
                        g.push_str(&format!("{prule}_v[lazy]: /(?s:.*)\\n<[\\/]parameter>/\n"));
                        format!("{prule}_v \"\\n\"")
                    } else {
                        format!(
                            "%json {} \"\\n</parameter>\\n\"",
                            serde_json::to_string(schema).unwrap_or_else(|_| "{}".into())
                        )
                    };
                    g.push_str(&format!(
                        "{prule}: {} {value}\n",
                        lark_str(&format!("<parameter={k}>\n"))
                    ));
                    body.push(if required.contains(&k.as_str()) {
                        prule
                    } else {
                        format!("{prule}?")
                    });
                }
                body.push(lark_str("</function>\n"));
                g.push_str(&format!("{rule}: {}\n", body.join(" ")));
                alts.push(rule);
            }
            g.push_str(&format!(
                "call: \"<tool_call>\\n\" ({}) \"</tool_call>\"\n",
                alts.join(" | ")
            ));
            ("call", "\"\\n\"")
        }
    };
    Some(finish(g, call, Some(sep), opts))
}

/// The `start` rule: optional reasoning, then one call or (parallel) several separated by `sep`.
fn finish(mut g: String, call: &str, sep: Option<&str>, opts: GrammarOpts) -> String {
    let calls = match (opts.parallel, sep) {
        (true, Some(sep)) => format!("{call} ({sep} {call})*"),
        _ => call.to_string(),
    };
    let start = match opts.reasoning {
        None => format!("start: {calls}\n"),
        Some(true) => {
            g.push_str("think_rest[lazy]: /(?s:.*)<[\\/]think>\\s*/\n");
            format!("start: think_rest {calls}\n")
        }
        Some(false) => {
            g.push_str("think[lazy]: /\\s*<think>(?s:.*)<[\\/]think>\\s*/\n");
            format!("start: think? {calls}\n")
        }
    };
    start + &g
}

/// `{"type": "object", "properties": {"name": {"const": NAME}, ARGS_KEY: PARAMS}, …}`.
fn object_schema(name: &str, args_key: &str, params: &Value) -> Value {
    let params = match params {
        Value::Object(m) if !m.is_empty() => params.clone(),
        _ => json!({"type": "object"}),
    };
    let mut props = serde_json::Map::new();
    props.insert("name".into(), json!({ "const": name }));
    props.insert(args_key.into(), params);
    json!({
        "type": "object",
        "properties": props,
        "required": ["name", args_key],
        "additionalProperties": false,
    })
}

fn any_of(mut schemas: Vec<Value>) -> String {
    let v = if schemas.len() == 1 {
        schemas.remove(0)
    } else {
        json!({ "anyOf": schemas })
    };
    serde_json::to_string(&v).unwrap_or_else(|_| "{}".into())
}
