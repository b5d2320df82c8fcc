//! Chat templates: the model's own Jinja template from the GGUF, rendered with `minijinja`
//! under Hugging Face's conventions (`messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token`, `raise_exception`, `strftime_now`, `tools` (the request's, else none),
//! `documents` none, extra variables from `chat_template_kwargs`, `trim_blocks` +
//! `lstrip_blocks`), with Python's semantics where jinja2's differ from minijinja's ([`py`]): how
//! values print, transformers' `tojson`, Python string methods, jinja2's tests. Checked byte for
//! byte against jinja2 on real models' templates by `tests/chat_templates.rs`.

mod py;

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

/// One chat message, content already flattened to text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's civil-from-days).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Seconds since the Unix epoch now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Python's `strftime` of the UTC time `secs` for the directives templates use (`%Y %y %m %d %e
/// %B %b %h %A %a %j %H %I %M %S %p %%`); any other `%x` is kept as written.
fn strftime(fmt: &str, secs: u64) -> String {
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (y, m, d) = civil(days);
    let (hour, min, sec) = (sod / 3600, sod / 60 % 60, sod % 60);
    let month = MONTHS[(m - 1) as usize];
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[(days + 4).rem_euclid(7) as usize];
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('B') => out.push_str(month),
            Some('b' | 'h') => out.push_str(&month[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('M') => out.push_str(&format!("{min:02}")),
            Some('S') => out.push_str(&format!("{sec:02}")),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 of (year, month, day) (Howard Hinnant's days-from-civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Template engine instructions one rendering may run: real chat templates take a few hundred per
/// message (Qwen's ~150), so this admits conversations of tens of thousands of messages and
/// stops a runaway loop within about a second.
const TEMPLATE_FUEL: u64 = 20_000_000;

impl ChatTemplate {
    /// Compiles `source`; `bos` / `eos` are the tokenizer's texts of those tokens.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(py::unknown_method);
        env.set_formatter(py::format);
        env.add_filter("tojson", py::tojson);
        env.add_filter("string", py::string);
        env.add_filter("length", py::length);
        env.add_filter("count", py::length);
        env.add_filter("wordcount", py::wordcount);
        env.add_filter("center", py::center_filter);
        env.add_filter("round", py::round);
        env.add_test("iterable", py::is_iterable);
        env.add_test("sequence", py::is_sequence);
        env.add_test("number", py::is_number);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |fmt: String| strftime(&fmt, unix_now()));
        // A template comes with the model (GGUF metadata, tokenizer_config.json): one that loops
        // for ever or nearly so ends in this request's error instead of holding a worker.
        env.set_fuel(Some(TEMPLATE_FUEL));
        // minijinja's compiler can panic on some invalid templates (found by fuzzing:
        // `{% import 'x' as 'y' %}` reaches an `unreachable!`): a template that does not compile.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            env.add_template_owned("chat", source.to_string())
        }))
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::SyntaxError,
                "the template engine failed compiling this template",
            ))
        })?;
        Ok(Self {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// This template with `strftime_now` formatting the fixed UTC time `unix_secs` instead of
    /// the current time: reproducible renderings (tests, golden files).
    #[must_use]
    pub fn with_fixed_time(mut self, unix_secs: u64) -> Self {
        self.env
            .add_function("strftime_now", move |fmt: String| strftime(&fmt, unix_secs));
        self
    }

    /// Renders `messages`, ending with the assistant's turn header when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect();
        self.render_json(
            &messages,
            add_generation_prompt,
            None,
            &serde_json::Map::new(),
        )
    }

    /// Renders `messages` (JSON objects as the template reads them: `role`, `content`,
    /// `tool_calls`, `tool_call_id`, ...) with `tools` (the request's list as given, or none)
    /// and the extra variables `kwargs` (`chat_template_kwargs`, e.g. `enable_thinking`), ending
    /// with the assistant's turn header when `add_generation_prompt`. As transformers'
    /// `apply_chat_template(messages, tools=tools, add_generation_prompt=..., **kwargs)`: the
    /// kwargs cannot replace `messages`, `tools`, `documents`, `add_generation_prompt` or the
    /// special tokens.
    pub fn render_json(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, Error> {
        let t = self.env.get_template("chat")?;
        let mut ctx = kwargs.clone();
        ctx.insert(
            "messages".into(),
            serde_json::Value::from(messages.to_vec()),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            serde_json::Value::Bool(add_generation_prompt),
        );
        // As transformers' apply_chat_template: defined, and none without tools.
        ctx.insert(
            "tools".into(),
            tools.cloned().unwrap_or(serde_json::Value::Null),
        );
        ctx.insert("documents".into(), serde_json::Value::Null);
        ctx.insert("bos_token".into(), self.bos.clone().into());
        ctx.insert("eos_token".into(), self.eos.clone().into());
        let ctx = Value::from_serialize(&ctx);
        // A panic inside minijinja (found by fuzzing: `''[::-1]` indexes an empty string, and
        // `s[:4:-1]` overflows) is this request's error, not a crashed handler.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.render(ctx))).unwrap_or_else(
            |_| {
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "the template engine failed on this template",
                ))
            },
        )
    }

    /// Whether the template renders tools: a conversation with one probe tool renders and
    /// shows the tool's name (llama.cpp finds a template's tool support the same way).
    pub fn supports_tools(&self) -> bool {
        const PROBE: &str = "switchyard_probe_tool";
        let tools = serde_json::json!([{"type": "function", "function": {
            "name": PROBE, "description": "probe",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}}}]);
        let msgs = [serde_json::json!({"role": "user", "content": "hi"})];
        self.render_json(&msgs, true, Some(&tools), &serde_json::Map::new())
            .is_ok_and(|s| s.contains(PROBE))
    }
}

/// Names a request's `chat_template_kwargs` may not set (the server sets them).
pub const RESERVED_VARIABLES: [&str; 6] = [
    "messages",
    "tools",
    "documents",
    "add_generation_prompt",
    "bos_token",
    "eos_token",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runaway_template_runs_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let e = t.render(&[], false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfFuel, "{e}");
        // A long real conversation still renders.
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let msgs: Vec<Message> = (0..20_000).map(|i| msg("user", &format!("m{i}"))).collect();
        let s = t.render(&msgs, true).unwrap();
        assert!(s.contains("m19999<|im_end|>"));
    }

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn chatml() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let s = t.render(&[msg("user", "Hi")], true).unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn hf_conventions() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}\n  {{ m.content.strip() | upper }}|{% endfor %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        // trim_blocks ate the newline after `endif`; the indent before `{{` stays (as in jinja2).
        assert_eq!(t.render(&[msg("user", "  a ")], false).unwrap(), "<s>  A|");
        let e = t.render(&[msg("tool", "x")], false).unwrap_err();
        assert!(e.to_string().contains("no tools"), "{e}");
    }

    /// Fuzz find (chat_template): minijinja 2.24 overflows computing the length of a slice
    /// with a negative step and a stop (`ops.rs`: `start - stop`), a panic with overflow checks.
    #[test]
    fn negative_step_slice_is_no_panic() {
        let t = ChatTemplate::new("{{ messages[0].content[:4:-1] }}", "", "").unwrap();
        let r = t.render(&[msg("user", "ab")], false);
        // Release builds (no overflow checks) render it; with overflow checks it is an error.
        assert!(r.is_ok() || r.unwrap_err().to_string().contains("template engine"));
    }

    /// Fuzz find (chat_template): minijinja 2.24 indexes out of bounds reversing an empty
    /// string (`''[::-1]`), a panic in every build; with a Qwen-style template that reverses
    /// message content, an empty message would crash the handler.
    #[test]
    fn reversed_empty_string_is_an_error_not_a_panic() {
        let t = ChatTemplate::new("{{ messages[0].content[::-1] }}", "", "").unwrap();
        assert_eq!(t.render(&[msg("user", "abc")], false).unwrap(), "cba");
        let e = t.render(&[msg("user", "")], false).unwrap_err();
        assert!(e.to_string().contains("template engine"), "{e}");
    }

    /// Fuzz find (chat_template): minijinja 2.24's compiler reaches `unreachable!` on an import
    /// into a string literal; a model whose template has one crashed the server at start-up
    /// instead of serving without chat.
    #[test]
    fn compiler_panic_is_a_compile_error() {
        let e = ChatTemplate::new("{% import 'x' as 'y' %}", "", "").unwrap_err();
        assert!(e.to_string().contains("template engine"), "{e}");
    }

    /// A template that nests a list in itself or asks for a huge padding gets an error, not a
    /// stack overflow or an allocation of gigabytes.
    #[test]
    fn printing_is_bounded() {
        let deep = "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}";
        for out in ["{{ ns.x }}", "{{ ns.x | tojson }}", "{{ ns.x | string }}"] {
            let t = ChatTemplate::new(&format!("{deep}{out}"), "", "").unwrap();
            let e = t.render(&[], false).unwrap_err();
            assert!(e.to_string().contains("nested deeper"), "{out}: {e}");
        }
        for src in [
            "{{ 'a'.ljust(1000000000) }}",
            "{{ 'a' | center(1000000000) }}",
            "{{ [1] | tojson(indent=1000000000) }}",
        ] {
            let e = ChatTemplate::new(src, "", "")
                .unwrap()
                .render(&[], false)
                .unwrap_err();
            assert!(e.to_string().contains("width"), "{src}: {e}");
        }
        let t = ChatTemplate::new("{{ 2.5 | round(1000000000) }}", "", "").unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "2.5");
    }

    #[test]
    fn date() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        // 2026-11-03 07:05:09 UTC, a Tuesday, day 307.
        let t = 1_793_689_509;
        assert_eq!(
            strftime("%d %B %Y (%b %m) %A %a %j %H:%M:%S %I%p %y %e %q %%", t),
            "03 November 2026 (Nov 11) Tuesday Tue 307 07:05:09 07AM 26  3 %q %"
        );
    }
}
