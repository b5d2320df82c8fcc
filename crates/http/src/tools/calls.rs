//! Tool-call parsers, one scanner for the four families, streaming.
//!
//! The text is scanned once, left to right. At a *call position* (below) a family's marker
//! starts a candidate call; the candidate is a call when it parses completely: the family's
//! syntax, valid JSON where the syntax has JSON, a function name that is one of the request's
//! tools, and the closing marker (which may be missing only at the very end of the output).
//! Anything else, from the marker on, is ordinary text: a `<tool_call>` that does not open a
//! valid call is never a broken call, it stays in `content`.
//!
//! Call positions:
//! - `hermes`, `qwen3_coder`: the start of a line (only spaces or tabs before it on its line),
//!   outside a Markdown code fence (a line starting with three backticks opens or closes one),
//!   or right after another call. Before any text, `hermes` also takes a bare
//!   `{"name": …, "arguments": …}` object, or one alone in a fenced block (```` ```json ````),
//!   as small Qwen2.5 models write their calls (llama.cpp's Hermes parser does the same).
//! - `mistral`: anywhere (`[TOOL_CALLS]` is a special token, not something prose contains).
//! - `llama3_json`: before any text, i.e. at the start of the answer (after whitespace), or
//!   after another call and an optional `;`.
//!
//! Whitespace just before a call and just after one is not content. While a candidate is open,
//! and while the text's tail could still become a marker, the text is held back (streaming);
//! it is released as soon as it is decided. Because a decision only ever depends on the text
//! up to the point where it is made, the pieces of any chunking join to the pieces of the whole.

use serde_json::{Map, Value};

use super::{new_call_id, ParserKind, Piece, ToolSpec};

/// A parsed call as the response gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_…` (Mistral: 9 letters and digits).
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, a JSON object as a string.
    pub arguments: String,
}

/// What to skip after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    No,
    Ws,
    /// Whitespace and one `;` (Llama's separator).
    WsSemi,
}

/// A call as found in the text.
struct RawCall {
    name: String,
    args: Value,
    id: Option<String>,
}

enum Parsed {
    /// The calls and the bytes they take.
    Calls(Vec<RawCall>, usize),
    /// Not decided before more text.
    Incomplete,
    /// Not a call: the marker is text.
    Invalid,
}

/// `Incomplete`, or at the end of the output `Invalid`.
fn more(eof: bool) -> Parsed {
    if eof {
        Parsed::Invalid
    } else {
        Parsed::Incomplete
    }
}

enum Lit {
    Yes(usize),
    Partial,
    No,
}

/// Whether `s` starts with `lit` (or is a proper prefix of it).
fn lit(s: &str, lit: &str) -> Lit {
    if s.starts_with(lit) {
        Lit::Yes(lit.len())
    } else if lit.starts_with(s) {
        Lit::Partial
    } else {
        Lit::No
    }
}

/// Bytes of leading whitespace.
fn ws(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

/// The JSON object or array at the start of `s` (after whitespace) and the bytes it takes;
/// `Err(true)`: incomplete, `Err(false)`: not one.
fn json_value(s: &str) -> Result<(Value, usize), bool> {
    let t = s.trim_start();
    match t.chars().next() {
        None => return Err(true),
        Some('{' | '[') => {}
        Some(_) => return Err(false),
    }
    let mut it = serde_json::Deserializer::from_str(s).into_iter::<Value>();
    match it.next() {
        Some(Ok(v)) => Ok((v, it.byte_offset())),
        Some(Err(e)) if e.is_eof() => Err(true),
        None => Err(true),
        Some(Err(_)) => Err(false),
    }
}

/// The incremental parser of one choice's answer text.
#[derive(Debug)]
pub struct CallParser {
    kind: ParserKind,
    tools: Vec<ToolSpec>,
    max_calls: usize,
    buf: String,
    pending_ws: String,
    line_blank: bool,
    head_open: bool,
    head_ticks: u8,
    in_fence: bool,
    text_seen: bool,
    skip: Skip,
    calls: usize,
}

impl CallParser {
    /// A parser of `kind` calls to `tools`; with `parallel` false, calls after the first are
    /// dropped.
    pub fn new(kind: ParserKind, tools: Vec<ToolSpec>, parallel: bool) -> Self {
        Self {
            kind,
            tools,
            max_calls: if parallel { usize::MAX } else { 1 },
            buf: String::new(),
            pending_ws: String::new(),
            line_blank: true,
            head_open: false,
            head_ticks: 0,
            in_fence: false,
            text_seen: false,
            skip: Skip::No,
            calls: 0,
        }
    }

    /// Pieces decided after `text` more.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        self.scan(false)
    }

    /// The rest, at the end of the output.
    pub fn finish(&mut self) -> Vec<Piece> {
        self.scan(true)
    }

    fn at_call_position(&self) -> bool {
        match self.kind {
            ParserKind::Hermes => (self.line_blank && !self.in_fence) || !self.text_seen,
            ParserKind::Qwen3Coder => self.line_blank && !self.in_fence,
            ParserKind::Mistral => true,
            ParserKind::Llama3Json => !self.text_seen,
        }
    }

    fn markers(&self) -> &'static [&'static str] {
        match self.kind {
            // Before any text, also a bare JSON call or one alone in a ```json fence (small
            // Qwen2.5 models answer so; llama.cpp's Hermes parser reads them the same way).
            ParserKind::Hermes if !self.text_seen => &["<tool_call>", "{", "```json", "```\n"],
            ParserKind::Hermes | ParserKind::Qwen3Coder => &["<tool_call>"],
            ParserKind::Mistral => &["[TOOL_CALLS]"],
            ParserKind::Llama3Json => &["<|python_tag|>", "{"],
        }
    }

    /// Some(true): a marker starts `rest`; Some(false): `rest` may still become one; None: no.
    fn marker_at(&self, rest: &str, eof: bool) -> Option<bool> {
        let m = self.markers();
        if m.iter().any(|m| rest.starts_with(m)) {
            Some(true)
        } else if !eof && m.iter().any(|m| m.starts_with(rest)) {
            Some(false)
        } else {
            None
        }
    }

    fn scan(&mut self, eof: bool) -> Vec<Piece> {
        let buf = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < buf.len() {
            let rest = &buf[i..];
            let c = rest.chars().next().unwrap_or_default();
            match self.skip {
                Skip::Ws | Skip::WsSemi if c.is_whitespace() => {
                    i += c.len_utf8();
                    continue;
                }
                Skip::WsSemi if c == ';' => {
                    self.skip = Skip::Ws;
                    i += 1;
                    continue;
                }
                _ => self.skip = Skip::No,
            }
            if self.at_call_position() {
                match self.marker_at(rest, eof) {
                    Some(false) => break,
                    Some(true) => match self.parse(rest, eof) {
                        Parsed::Incomplete => break,
                        Parsed::Calls(calls, len) => {
                            self.pending_ws.clear();
                            if !text.is_empty() {
                                out.push(Piece::Content(std::mem::take(&mut text)));
                            }
                            for c in calls {
                                if self.calls < self.max_calls {
                                    out.push(Piece::Call(self.finish_call(c)));
                                }
                                self.calls += 1;
                            }
                            i += len;
                            self.line_blank = true;
                            self.head_open = false;
                            self.skip = if self.kind == ParserKind::Llama3Json {
                                Skip::WsSemi
                            } else {
                                Skip::Ws
                            };
                            continue;
                        }
                        Parsed::Invalid => {}
                    },
                    None => {}
                }
            }
            self.text_char(c, &mut text);
            i += c.len_utf8();
        }
        if eof {
            text.push_str(&std::mem::take(&mut self.pending_ws));
        }
        self.buf = buf[i..].to_string();
        if !text.is_empty() {
            out.push(Piece::Content(text));
        }
        out
    }

    /// `c` is text: into `text` (whitespace held until something else follows), and the line
    /// and fence state.
    fn text_char(&mut self, c: char, text: &mut String) {
        if c.is_whitespace() {
            self.pending_ws.push(c);
        } else {
            text.push_str(&std::mem::take(&mut self.pending_ws));
            text.push(c);
            self.text_seen = true;
        }
        if c == '\n' {
            self.line_blank = true;
            self.head_open = false;
        } else if self.line_blank && (c == ' ' || c == '\t') {
        } else {
            if self.line_blank {
                self.line_blank = false;
                self.head_open = true;
                self.head_ticks = 0;
            }
            if self.head_open {
                if c == '`' {
                    self.head_ticks += 1;
                    if self.head_ticks == 3 {
                        self.in_fence = !self.in_fence;
                        self.head_open = false;
                    }
                } else {
                    self.head_open = false;
                }
            }
        }
    }

    fn finish_call(&self, c: RawCall) -> ToolCall {
        let id = match (self.kind, c.id) {
            (ParserKind::Mistral, Some(id))
                if id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                id
            }
            _ => new_call_id(self.kind),
        };
        ToolCall {
            id,
            name: c.name,
            arguments: serde_json::to_string(&c.args).unwrap_or_else(|_| "{}".into()),
        }
    }

    fn known(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// A call from a JSON object `{"name": …, <one of arg_keys>: {…}}` naming a known tool.
    fn call_from_json(&self, v: &Value, arg_keys: &[&str]) -> Option<RawCall> {
        let o = v.as_object()?;
        let name = o.get("name")?.as_str()?;
        self.known(name)?;
        let args = match arg_keys.iter().find_map(|k| o.get(*k)) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(a @ Value::Object(_)) => a.clone(),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(a @ Value::Object(_)) => a,
                _ => return None,
            },
            Some(_) => return None,
        };
        Some(RawCall {
            name: name.to_string(),
            args,
            id: o.get("id").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// A candidate starting at a marker at the start of `s`.
    fn parse(&self, s: &str, eof: bool) -> Parsed {
        match self.kind {
            ParserKind::Hermes => self.parse_hermes(s, eof),
            ParserKind::Qwen3Coder => self.parse_qwen3_coder(s, eof),
            ParserKind::Mistral => self.parse_mistral(s, eof),
            ParserKind::Llama3Json => self.parse_llama(s, eof),
        }
    }

    /// The closing marker at `s[p..]` after whitespace: the call ends there, or at the end of
    /// the output when only (part of) the marker is left.
    fn close(s: &str, mut p: usize, end: &str, call: Vec<RawCall>, eof: bool) -> Parsed {
        p += ws(&s[p..]);
        match lit(&s[p..], end) {
            Lit::Yes(l) => Parsed::Calls(call, p + l),
            Lit::Partial if eof => Parsed::Calls(call, s.len()),
            Lit::Partial => Parsed::Incomplete,
            Lit::No => Parsed::Invalid,
        }
    }

    fn parse_hermes(&self, s: &str, eof: bool) -> Parsed {
        if s.starts_with('{') || s.starts_with("```") {
            // The bare forms, before any text: `{…}`, or `{…}` alone in a ```json fence.
            let fenced = s.starts_with("```");
            let p = if s.starts_with("```json") {
                7
            } else if fenced {
                3
            } else {
                0
            };
            let (v, n) = match json_value(&s[p..]) {
                Ok(x) => x,
                Err(true) => return more(eof),
                Err(false) => return Parsed::Invalid,
            };
            let Some(call) = self.call_from_json(&v, &["arguments", "parameters"]) else {
                return Parsed::Invalid;
            };
            return if fenced {
                Self::close(s, p + n, "```", vec![call], eof)
            } else {
                Parsed::Calls(vec![call], p + n)
            };
        }
        let p = "<tool_call>".len();
        let (v, n) = match json_value(&s[p..]) {
            Ok(x) => x,
            Err(true) => return more(eof),
            Err(false) => return Parsed::Invalid,
        };
        let Some(call) = self.call_from_json(&v, &["arguments", "parameters"]) else {
            return Parsed::Invalid;
        };
        Self::close(s, p + n, "</tool_call>", vec![call], eof)
    }

    fn parse_qwen3_coder(&self, s: &str, eof: bool) -> Parsed {
        let mut p = "<tool_call>".len();
        p += ws(&s[p..]);
        match lit(&s[p..], "<function=") {
            Lit::Yes(l) => p += l,
            Lit::Partial => return more(eof),
            Lit::No => return Parsed::Invalid,
        }
        // `NAME>` / `KEY>`: up to `>` on the same line.
        let word = |p: usize| -> Result<(String, usize), Parsed> {
            match s[p..].find(['>', '\n', '<']) {
                Some(k) if s.as_bytes()[p + k] == b'>' => {
                    Ok((s[p..p + k].trim().to_string(), p + k + 1))
                }
                Some(_) => Err(Parsed::Invalid),
                None => Err(more(eof)),
            }
        };
        let (name, q) = match word(p) {
            Ok(x) => x,
            Err(e) => return e,
        };
        p = q;
        let Some(tool) = self.known(&name) else {
            return Parsed::Invalid;
        };
        let props = tool.parameters.get("properties");
        let mut args = Map::new();
        loop {
            p += ws(&s[p..]);
            match lit(&s[p..], "</function>") {
                Lit::Yes(l) => {
                    p += l;
                    break;
                }
                Lit::Partial => return more(eof),
                Lit::No => {}
            }
            match lit(&s[p..], "<parameter=") {
                Lit::Yes(l) => p += l,
                Lit::Partial => return more(eof),
                Lit::No => return Parsed::Invalid,
            }
            let (key, q) = match word(p) {
                Ok(x) => x,
                Err(e) => return e,
            };
            p = q;
            let Some(e) = s[p..].find("</parameter>") else {
                return more(eof);
            };
            let raw = &s[p..p + e];
            p += e + "</parameter>".len();
            let value = param_value(raw, props.and_then(|pr| pr.get(&key)));
            args.insert(key, value);
        }
        let call = RawCall {
            name,
            args: Value::Object(args),
            id: None,
        };
        Self::close(s, p, "</tool_call>", vec![call], eof)
    }

    fn parse_mistral(&self, s: &str, eof: bool) -> Parsed {
        let mut p = "[TOOL_CALLS]".len();
        p += ws(&s[p..]);
        match s[p..].chars().next() {
            None => more(eof),
            Some('[') if !s[p..].starts_with("[CALL_ID]") && !s[p..].starts_with("[ARGS]") => {
                let (v, n) = match json_value(&s[p..]) {
                    Ok(x) => x,
                    Err(true) => return more(eof),
                    Err(false) => return Parsed::Invalid,
                };
                let Value::Array(a) = v else {
                    return Parsed::Invalid;
                };
                let calls: Option<Vec<RawCall>> = a
                    .iter()
                    .map(|c| self.call_from_json(c, &["arguments", "parameters"]))
                    .collect();
                match calls {
                    Some(c) if !c.is_empty() => Parsed::Calls(c, p + n),
                    _ => Parsed::Invalid,
                }
            }
            Some(_) => {
                let name_len = s[p..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
                    .unwrap_or(s.len() - p);
                if p + name_len == s.len() {
                    return more(eof);
                }
                let name = s[p..p + name_len].to_string();
                p += name_len;
                if self.known(&name).is_none() {
                    return Parsed::Invalid;
                }
                let mut id = None;
                match lit(&s[p..], "[CALL_ID]") {
                    Lit::Yes(l) => {
                        p += l;
                        let Some(k) = s[p..].find("[ARGS]") else {
                            return if s.len() - p > 64 {
                                Parsed::Invalid
                            } else {
                                more(eof)
                            };
                        };
                        id = Some(s[p..p + k].trim().to_string());
                        p += k;
                    }
                    Lit::Partial => return more(eof),
                    Lit::No => {}
                }
                match lit(&s[p..], "[ARGS]") {
                    Lit::Yes(l) => p += l,
                    Lit::Partial => return more(eof),
                    Lit::No => return Parsed::Invalid,
                }
                let (v, n) = match json_value(&s[p..]) {
                    Ok(x) => x,
                    Err(true) => return more(eof),
                    Err(false) => return Parsed::Invalid,
                };
                if !v.is_object() {
                    return Parsed::Invalid;
                }
                Parsed::Calls(vec![RawCall { name, args: v, id }], p + n)
            }
        }
    }

    fn parse_llama(&self, s: &str, eof: bool) -> Parsed {
        let mut p = 0;
        match lit(s, "<|python_tag|>") {
            Lit::Yes(l) => p += l,
            Lit::Partial => return more(eof),
            Lit::No => {}
        }
        let (v, n) = match json_value(&s[p..]) {
            Ok(x) => x,
            Err(true) => return more(eof),
            Err(false) => return Parsed::Invalid,
        };
        match self.call_from_json(&v, &["parameters", "arguments"]) {
            Some(c) => Parsed::Calls(vec![c], p + n),
            None => Parsed::Invalid,
        }
    }
}

/// A `qwen3_coder` parameter's value from its text (one newline at each end is the format's):
/// typed by the tool's schema for it (`string` as is; `integer`, `number`, `boolean`, `null`,
/// `object`, `array` parsed when the text is one, in the order the schema lists its types); a
/// parameter the schema does not name is a string; a schema without a type takes JSON when the
/// text is JSON. What fits no listed type stays a string.
fn param_value(raw: &str, schema: Option<&Value>) -> Value {
    let v = raw.strip_prefix('\n').unwrap_or(raw);
    let v = v.strip_suffix('\n').unwrap_or(v);
    let string = || Value::String(v.to_string());
    let Some(schema) = schema else {
        return string();
    };
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return serde_json::from_str(v).unwrap_or_else(|_| string()),
    };
    let t = v.trim();
    for ty in types {
        let parsed = match ty {
            "string" => return string(),
            "integer" => t.parse::<i64>().ok().map(Value::from),
            "number" => serde_json::from_str::<Value>(t)
                .ok()
                .filter(Value::is_number),
            "boolean" => match t.to_ascii_lowercase().as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            "null" => (t == "null" || t == "None").then_some(Value::Null),
            "object" => serde_json::from_str::<Value>(t)
                .ok()
                .filter(Value::is_object),
            "array" => serde_json::from_str::<Value>(t)
                .ok()
                .filter(Value::is_array),
            _ => None,
        };
        if let Some(p) = parsed {
            return p;
        }
    }
    string()
}
