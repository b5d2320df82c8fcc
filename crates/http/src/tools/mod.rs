//! Tool calling and reasoning for `/v1/chat/completions`: the request's `tools` / `tool_choice`
//! ([`parse_tools`], [`parse_tool_choice`]), the conversation history with tool calls and tool
//! results ([`messages`]), which parser fits a chat template ([`ParserKind::detect`],
//! [`ReasoningKind::detect`]), the output parsers ([`calls`]: each family's call syntax, streaming;
//! [`reasoning`]: `<think>…</think>`), their combination over one choice's text ([`Output`]) and
//! the grammar that forces a call ([`grammar`]).
//!
//! # Detection rules (from the chat template's source text, first match wins)
//! - `qwen3_coder`: the template has `<tool_call>`, `<function=` and `<parameter=` (Qwen3-Coder,
//!   Qwen3.5, Nemotron 3 Nano).
//! - `hermes`: it has `<tool_call>` and not `<arg_key>` (Qwen2.5, Qwen3, QwQ, Hermes 2/3, Granite
//!   4; GLM's `<arg_key>` format is another syntax).
//! - `mistral`: it has `[TOOL_CALLS]` (Mistral Nemo, Small 3.2, Devstral, Ministral).
//! - `llama3_json`: it has `<|python_tag|>`, or both `<|start_header_id|>` and `ipython`
//!   (Llama 3.1, 3.2, 3.3).
//! - otherwise none: a request with tools needs `serve --tool-call-parser NAME`.
//!
//! Whether a template renders tools at all is found by rendering a probe conversation with one
//! tool and looking for the tool's name in the output ([`crate::template::ChatTemplate::supports_tools`]).
//! Reasoning (`<think>`) is detected when the template mentions `</think>` (Qwen3, QwQ, DeepSeek-R1
//! distills, SmolLM3, GLM); `serve --reasoning-parser` overrides both ways.

pub mod calls;
pub mod grammar;
pub mod messages;
pub mod reasoning;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::params::type_error;

pub use calls::{CallParser, ToolCall};
pub use grammar::{tool_call_grammar, GrammarOpts};
pub use reasoning::ThinkSplitter;

/// A tool-call syntax family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParserKind {
    /// `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Qwen2.5 / Qwen3 / Hermes).
    Hermes,
    /// `{"name": …, "parameters": {…}}` at the start of the answer, optionally after
    /// `<|python_tag|>`, several separated by `;` (Llama 3.x).
    Llama3Json,
    /// `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` or `[TOOL_CALLS]name[ARGS]{…}`
    /// (`[CALL_ID]id` optional before `[ARGS]`).
    Mistral,
    /// `<tool_call><function=NAME><parameter=KEY>value</parameter>…</function></tool_call>`.
    Qwen3Coder,
}

impl ParserKind {
    /// Every parser's name, as `--tool-call-parser` takes it.
    pub const NAMES: [&'static str; 4] = ["hermes", "llama3_json", "mistral", "qwen3_coder"];

    /// The parser called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "hermes" => Self::Hermes,
            "llama3_json" => Self::Llama3Json,
            "mistral" => Self::Mistral,
            "qwen3_coder" => Self::Qwen3Coder,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hermes => "hermes",
            Self::Llama3Json => "llama3_json",
            Self::Mistral => "mistral",
            Self::Qwen3Coder => "qwen3_coder",
        }
    }

    /// The family whose call syntax the template `source` teaches (module docs: the rules).
    pub fn detect(source: &str) -> Option<Self> {
        let has = |s: &str| source.contains(s);
        if has("<tool_call>") && has("<function=") && has("<parameter=") {
            Some(Self::Qwen3Coder)
        } else if has("<tool_call>") && !has("<arg_key>") {
            Some(Self::Hermes)
        } else if has("[TOOL_CALLS]") {
            Some(Self::Mistral)
        } else if has("<|python_tag|>") || (has("<|start_header_id|>") && has("ipython")) {
            Some(Self::Llama3Json)
        } else {
            None
        }
    }

    /// Whether the family's markers are special tokens, which the text keeps only with
    /// `skip_special_tokens: false`.
    pub fn needs_special_tokens(self) -> bool {
        matches!(self, Self::Mistral | Self::Llama3Json)
    }

    /// The marker that opens the family's calls and is the first thing its call grammar
    /// matches: when the vocabulary has it as one token, `tool_choice: "auto"` constrains the
    /// call lazily from that token on. Llama 3's JSON calls open with plain `{`: none.
    pub fn trigger(self) -> Option<&'static str> {
        match self {
            Self::Hermes | Self::Qwen3Coder => Some("<tool_call>"),
            Self::Mistral => Some("[TOOL_CALLS]"),
            Self::Llama3Json => None,
        }
    }
}

/// A reasoning syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningKind {
    /// `<think>…</think>` at the start of the answer (or the answer starts inside it when the
    /// prompt ends in an open `<think>`).
    Think,
}

impl ReasoningKind {
    /// Names `--reasoning-parser` takes (all the same `<think>` syntax).
    pub const NAMES: [&'static str; 3] = ["deepseek_r1", "qwen3", "think"];

    /// The parser called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES.contains(&name).then_some(Self::Think)
    }

    /// The reasoning syntax the template `source` uses: `<think>` when it mentions `</think>`.
    pub fn detect(source: &str) -> Option<Self> {
        source.contains("</think>").then_some(Self::Think)
    }
}

/// A server-wide parser choice: detect from the template, none, or this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice<T> {
    /// From the chat template.
    #[default]
    Auto,
    /// Never.
    Off,
    /// Always this one.
    Use(T),
}

/// One tool of the request: its name and its parameters' JSON schema (`{}` when not given).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// `function.name`.
    pub name: String,
    /// `function.parameters` (an object schema).
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// No call: the output is not parsed for calls.
    None,
    /// The model decides.
    #[default]
    Auto,
    /// At least one call.
    Required,
    /// A call of this function.
    Named(String),
}

/// Reads `tools`: an array of `{"type": "function", "function": {"name", "description"?,
/// "parameters"?, "strict"?}}`. Returns the specs and the array as given (the template's `tools`).
pub fn parse_tools(v: Value) -> Result<(Vec<ToolSpec>, Value), ApiError> {
    let Value::Array(a) = &v else {
        return Err(type_error("tools", "an array of tools", &v));
    };
    let mut specs = Vec::with_capacity(a.len());
    for (i, t) in a.iter().enumerate() {
        let at = format!("tools[{i}]");
        let Value::Object(t) = t else {
            return Err(type_error(&at, "an object", t));
        };
        match t.get("type") {
            Some(Value::String(s)) if s == "function" => {}
            Some(Value::String(s)) => {
                return Err(ApiError::unsupported(
                    &format!("{at}.type"),
                    &format!(" (tool type `{s}`: only `function` is)"),
                ))
            }
            Some(x) => return Err(type_error(&format!("{at}.type"), "\"function\"", x)),
            None => {
                return Err(ApiError::invalid(
                    format!("{at}.type"),
                    format!("`{at}.type` is required (\"function\")"),
                ))
            }
        }
        let f = match t.get("function") {
            Some(Value::Object(f)) => f,
            Some(x) => return Err(type_error(&format!("{at}.function"), "an object", x)),
            None => {
                return Err(ApiError::invalid(
                    format!("{at}.function"),
                    format!("`{at}.function` is required"),
                ))
            }
        };
        let name = match f.get("name") {
            Some(Value::String(n)) if valid_name(n) => n.clone(),
            Some(Value::String(n)) => {
                return Err(ApiError::invalid(
                    format!("{at}.function.name"),
                    format!(
                        "tool name {n:?} must be 1 to 64 letters, digits, underscores, dots or \
                         dashes"
                    ),
                ))
            }
            Some(x) => return Err(type_error(&format!("{at}.function.name"), "a string", x)),
            None => {
                return Err(ApiError::invalid(
                    format!("{at}.function.name"),
                    format!("`{at}.function.name` is required"),
                ))
            }
        };
        if specs.iter().any(|s: &ToolSpec| s.name == name) {
            return Err(ApiError::invalid(
                format!("{at}.function.name"),
                format!("two tools are named `{name}`"),
            ));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(x) => {
                return Err(type_error(
                    &format!("{at}.function.parameters"),
                    "a JSON schema object",
                    x,
                ))
            }
        };
        if let Some(d) = f
            .get("description")
            .filter(|d| !d.is_null() && !d.is_string())
        {
            return Err(type_error(
                &format!("{at}.function.description"),
                "a string",
                d,
            ));
        }
        specs.push(ToolSpec { name, parameters });
    }
    Ok((specs, v))
}

/// OpenAI's rule for function names.
fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Reads `tool_choice` against the request's tools (`none` when there are none).
pub fn parse_tool_choice(v: Option<Value>, tools: &[ToolSpec]) -> Result<ToolChoice, ApiError> {
    let Some(v) = v else {
        return Ok(if tools.is_empty() {
            ToolChoice::None
        } else {
            ToolChoice::Auto
        });
    };
    let choice = match &v {
        Value::String(s) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "unknown tool_choice {s:?} (expected \"none\", \"auto\", \"required\" or \
                         {{\"type\": \"function\", \"function\": {{\"name\": …}}}})"
                    ),
                ))
            }
        },
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "a tool_choice object must be {\"type\": \"function\", \"function\": {\"name\": …}}",
                ));
            }
            match o.get("function").and_then(|f| f.get("name")) {
                Some(Value::String(n)) => ToolChoice::Named(n.clone()),
                _ => {
                    return Err(ApiError::invalid(
                        "tool_choice",
                        "`tool_choice.function.name` must be a string",
                    ))
                }
            }
        }
        x => return Err(type_error("tool_choice", "a string or an object", x)),
    };
    match &choice {
        ToolChoice::None => {}
        _ if tools.is_empty() => {
            return Err(ApiError::invalid(
                "tool_choice",
                "`tool_choice` other than \"none\" needs `tools`",
            ))
        }
        ToolChoice::Named(n) if !tools.iter().any(|t| &t.name == n) => {
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            return Err(ApiError::invalid(
                "tool_choice",
                format!(
                    "tool_choice names the function `{n}`, which is not in `tools` ({})",
                    names.join(", ")
                ),
            ));
        }
        _ => {}
    }
    Ok(choice)
}

/// A fresh tool-call id: `call_` and 24 letters and digits, or, for Mistral (whose templates
/// require it), 9 letters and digits.
pub fn new_call_id(kind: ParserKind) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let n = if kind == ParserKind::Mistral { 9 } else { 24 };
    let s: String = (0..n)
        .map(|_| ALNUM[rand::random::<u32>() as usize % ALNUM.len()] as char)
        .collect();
    if kind == ParserKind::Mistral {
        s
    } else {
        format!("call_{s}")
    }
}

/// One piece of a choice's parsed output.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Reasoning text (`reasoning_content`).
    Reasoning(String),
    /// Answer text (`content`).
    Content(String),
    /// A complete tool call.
    Call(ToolCall),
}

/// The parsers over one choice's generated text: reasoning first, then tool calls on the text
/// after it. Feeding the text in any chunking gives the same pieces, joined, as feeding it at once.
#[derive(Debug)]
pub struct Output {
    think: Option<ThinkSplitter>,
    calls: Option<CallParser>,
    /// Calls emitted so far.
    pub n_calls: usize,
}

impl Output {
    /// Parsers for one choice: `think` when reasoning is parsed, `calls` when tool calls are.
    pub fn new(think: Option<ThinkSplitter>, calls: Option<CallParser>) -> Self {
        Self {
            think,
            calls,
            n_calls: 0,
        }
    }

    /// Whether this parses anything (else the text passes through).
    pub fn active(&self) -> bool {
        self.think.is_some() || self.calls.is_some()
    }

    /// Pieces final after `text` (more held back until they are decided).
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.run(text, false)
    }

    /// The rest, at the end of the output.
    pub fn finish(&mut self) -> Vec<Piece> {
        self.run("", true)
    }

    fn run(&mut self, text: &str, eof: bool) -> Vec<Piece> {
        let mut out = Vec::new();
        let content: Vec<String> = match &mut self.think {
            Some(t) => {
                let mut c = Vec::new();
                for (is_reasoning, s) in t.push(text, eof) {
                    if is_reasoning {
                        out.push(Piece::Reasoning(s));
                    } else {
                        c.push(s);
                    }
                }
                c
            }
            None => vec![text.to_string()],
        };
        match &mut self.calls {
            Some(p) => {
                let mut evs = Vec::new();
                for c in &content {
                    evs.extend(p.push(c));
                }
                if eof {
                    evs.extend(p.finish());
                }
                for e in evs {
                    if matches!(e, Piece::Call(_)) {
                        self.n_calls += 1;
                    }
                    out.push(e);
                }
            }
            None => out.extend(
                content
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .map(Piece::Content),
            ),
        }
        out
    }
}

/// A whole answer assembled from its pieces.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Assembled {
    /// The reasoning text.
    pub reasoning: String,
    /// The answer text.
    pub content: String,
    /// The calls.
    pub calls: Vec<ToolCall>,
}

impl Assembled {
    /// Adds `pieces`.
    pub fn add(&mut self, pieces: &[Piece]) {
        for p in pieces {
            match p {
                Piece::Reasoning(s) => self.reasoning.push_str(s),
                Piece::Content(s) => self.content.push_str(s),
                Piece::Call(c) => self.calls.push(c.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
