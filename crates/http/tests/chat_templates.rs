//! The chat templates of the model families people bring render byte for byte as the reference
//! renderer does: Python jinja2 under transformers' `apply_chat_template` conventions, whose
//! renderings `scripts/gen-template-golden.py` wrote to `tests/golden/templates/*.json` from the
//! templates in `tests/data/templates/` (both committed). A template that raises (Gemma 2 with a
//! system message, Mistral with two user turns in a row) is our error, carrying its message.

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchyard_http::template::{ChatTemplate, Message};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Goldens that must be there: the model families of the issue, and the constructs.
const REQUIRED: [&str; 19] = [
    "llama-3.1",
    "llama-3.2",
    "llama-3.3",
    "mistral-nemo",
    "devstral-small",
    "mistral-small-3.2",
    "qwen3",
    "qwen2.5",
    "phi-3.5",
    "gemma-2",
    "smollm3",
    "deepseek-r1-distill-llama",
    "deepseek-r1-distill-qwen",
    "gpt-oss",
    "granite-3.3",
    "granite-4.0",
    "qwen3-coder",
    "constructs",
    "hermes-3",
];

/// The golden files, sorted; fails when they are missing.
fn goldens() -> Vec<(String, Value)> {
    let dir = root().join("tests/golden/templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate with scripts/gen-template-golden.py)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    // The families people bring must stay covered (a golden lost is a failure, not a skip).
    for name in REQUIRED {
        assert!(
            files
                .iter()
                .any(|p| p.file_stem().is_some_and(|s| s == name)),
            "{}: {name}.json is missing (regenerate with scripts/gen-template-golden.py)",
            dir.display()
        );
    }
    files
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_stem().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect()
}

fn compile(name: &str, g: &Value) -> ChatTemplate {
    let path = root().join(g["template"].as_str().unwrap());
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{name}: {}: {e}", path.display()));
    // A tokenizer without BOS (null in the golden) is an empty BOS text for us, as the server
    // passes it.
    let bos = g["bos_token"].as_str().unwrap_or("");
    let eos = g["eos_token"].as_str().unwrap();
    ChatTemplate::new(&source, bos, eos)
        .unwrap_or_else(|e| panic!("{name}: the template does not compile: {e:#}"))
        .with_fixed_time(g["unix_time"].as_u64().unwrap())
}

fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message {
            role: m["role"].as_str().unwrap().into(),
            content: m["content"].as_str().unwrap().into(),
        })
        .collect()
}

/// Where two renderings first differ, with some context of each.
fn first_difference(want: &str, got: &str) -> String {
    let at = want
        .bytes()
        .zip(got.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let around = |s: &str| {
        let lo = (0..=at.saturating_sub(40))
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        let hi = (at + 40..=s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        format!("{:?}", &s[lo.min(s.len())..hi.max(lo.min(s.len()))])
    };
    format!(
        "first difference at byte {at} (lengths {} / {}):\n    want {}\n    got  {}",
        want.len(),
        got.len(),
        around(want),
        around(got)
    )
}

#[test]
fn templates_render_as_the_reference_does() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, g) in goldens() {
        if name == "constructs" {
            continue;
        }
        let t = compile(&name, &g);
        for case in g["cases"].as_array().unwrap() {
            let conv = case["conversation"].as_str().unwrap();
            let agp = case["add_generation_prompt"].as_bool().unwrap();
            let what = format!("{name} / {conv} / add_generation_prompt={agp}");
            let got = t.render(&messages(&case["messages"]), agp);
            checked += 1;
            match (case.get("output").and_then(Value::as_str), got) {
                (Some(want), Ok(got)) if want == got => {}
                (Some(want), Ok(got)) => {
                    failures.push(format!("{what}: {}", first_difference(want, &got)))
                }
                (Some(_), Err(e)) => {
                    failures.push(format!("{what}: reference renders, we fail: {e:#}"))
                }
                (None, Ok(_)) => failures.push(format!(
                    "{what}: reference fails ({}), we render",
                    case["error"]
                )),
                (None, Err(e)) => {
                    // The template's own message reaches the user (the server's 400).
                    let want = case["error"].as_str().unwrap();
                    if case["error_kind"] == "raise_exception" && !e.to_string().contains(want) {
                        failures.push(format!("{what}: error {e} lacks the template's {want:?}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} renderings differ from the reference:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The constructs chat templates are made of (tests, filters, Python methods, printing of
/// non-strings, `tojson` with transformers' options, loops, whitespace control), one small template
/// each, render as the reference renders them.
#[test]
fn constructs_render_as_the_reference_does() {
    let g = goldens()
        .into_iter()
        .find(|(n, _)| n == "constructs")
        .expect("tests/golden/templates/constructs.json (scripts/gen-template-golden.py)")
        .1;
    let msgs = messages(&g["messages"]);
    let agp = g["add_generation_prompt"].as_bool().unwrap();
    let mut failures = Vec::new();
    let cases = g["cases"].as_array().unwrap();
    for case in cases {
        let src = case["source"].as_str().unwrap();
        let got = ChatTemplate::new(
            src,
            g["bos_token"].as_str().unwrap(),
            g["eos_token"].as_str().unwrap(),
        )
        .map(|t| t.with_fixed_time(g["unix_time"].as_u64().unwrap()))
        .and_then(|t| t.render(&msgs, agp));
        match (case.get("output").and_then(Value::as_str), got) {
            (Some(want), Ok(got)) if want == got => {}
            (Some(want), Ok(got)) => {
                failures.push(format!("{src:?}:\n    want {want:?}\n    got  {got:?}"))
            }
            (Some(want), Err(e)) => {
                failures.push(format!("{src:?}:\n    want {want:?}\n    error {e:#}"))
            }
            (None, Ok(got)) => failures.push(format!(
                "{src:?}: reference fails ({}), we render {got:?}",
                case["error"]
            )),
            (None, Err(e)) => {
                let want = case["error"].as_str().unwrap();
                if case["error_kind"] == "raise_exception" && !e.to_string().contains(want) {
                    failures.push(format!("{src:?}: error {e} lacks the template's {want:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} constructs differ from the reference:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A template that raises is an error whose one line names the template's reason: the server
/// answers it as a 400 on `messages` ("chat template: ...").
#[test]
fn raising_template_is_a_clear_error() {
    let g = goldens()
        .into_iter()
        .find(|(n, _)| n == "gemma-2")
        .expect("tests/golden/templates/gemma-2.json")
        .1;
    let t = compile("gemma-2", &g);
    let sys = Message {
        role: "system".into(),
        content: "Be brief.".into(),
    };
    let user = Message {
        role: "user".into(),
        content: "Hi".into(),
    };
    let e = t.render(&[sys, user.clone()], true).unwrap_err();
    let line = e.to_string();
    assert!(line.contains("System role not supported"), "{line}");
    assert!(!line.contains('\n'), "one line: {line:?}");
    // Without the system message it renders.
    assert!(t.render(&[user], true).is_ok());
}

/// Goldens that must carry tool conversations: the families the tool-call parsers cover.
const REQUIRED_TOOLS: [&str; 9] = [
    "qwen2.5",
    "qwen3",
    "qwen3-coder",
    "hermes-3",
    "llama-3.1",
    "llama-3.2",
    "mistral-nemo",
    "mistral-small-3.2",
    "devstral-small",
];

/// Tool conversations (tools in the prompt, assistant tool calls with parsed arguments, tool
/// results, parallel calls, `chat_template_kwargs`) render byte for byte as jinja2 renders them
/// with the same `tools` and variables.
#[test]
fn tool_conversations_render_as_the_reference_does() {
    let goldens = goldens();
    for name in REQUIRED_TOOLS {
        let g = &goldens
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name}.json is missing"))
            .1;
        assert!(
            g["tool_cases"].as_array().is_some_and(|c| !c.is_empty()),
            "{name}.json has no tool_cases (regenerate with scripts/gen-template-golden.py)"
        );
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, g) in &goldens {
        let Some(cases) = g["tool_cases"].as_array() else {
            continue;
        };
        let t = compile(name, g);
        for case in cases {
            let conv = case["conversation"].as_str().unwrap();
            let agp = case["add_generation_prompt"].as_bool().unwrap();
            let what = format!("{name} / {conv} / add_generation_prompt={agp}");
            let msgs = case["messages"].as_array().unwrap();
            let kwargs = case["chat_template_kwargs"].as_object().unwrap();
            let got = t.render_json(msgs, agp, Some(&case["tools"]), kwargs);
            checked += 1;
            match (case.get("output").and_then(Value::as_str), got) {
                (Some(want), Ok(got)) if want == got => {}
                (Some(want), Ok(got)) => {
                    failures.push(format!("{what}: {}", first_difference(want, &got)))
                }
                (Some(_), Err(e)) => {
                    failures.push(format!("{what}: reference renders, we fail: {e:#}"))
                }
                (None, Ok(_)) => failures.push(format!(
                    "{what}: reference fails ({}), we render",
                    case["error"]
                )),
                (None, Err(e)) => {
                    let want = case["error"].as_str().unwrap();
                    if case["error_kind"] == "raise_exception" && !e.to_string().contains(want) {
                        failures.push(format!("{what}: error {e} lacks the template's {want:?}"));
                    }
                }
            }
        }
        // The server finds this template's tool support by rendering a probe.
        assert!(t.supports_tools(), "{name}: tools not detected");
    }
    assert!(checked >= 100, "only {checked} tool renderings");
    assert!(
        failures.is_empty(),
        "{} of {checked} tool renderings differ from the reference:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Templates without tool support are found out by the probe (the server's 400 for `tools`).
#[test]
fn templates_without_tools_are_detected() {
    for (name, g) in goldens() {
        if ["gemma-2", "phi-3.5", "deepseek-r1-distill-qwen", "smollm3"].contains(&name.as_str()) {
            assert!(!compile(&name, &g).supports_tools(), "{name}");
        }
    }
}
