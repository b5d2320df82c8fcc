use serde_json::json;

use super::*;

fn tools() -> Vec<ToolSpec> {
    let (specs, _) = parse_tools(json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                           "metric": {"type": "boolean"}, "tags": {"type": "array"},
                           "where": {"type": "object"}},
            "required": ["city"]}}},
        {"type": "function", "function": {"name": "search", "parameters": {
            "type": "object", "properties": {"q": {"type": "string"}}}}},
    ]))
    .unwrap();
    specs
}

/// A call with a blank id (ids are random).
fn call(name: &str, args: &str) -> ToolCall {
    ToolCall {
        id: String::new(),
        name: name.into(),
        arguments: args.into(),
    }
}

/// The output of `text` fed in `chunks` (byte offsets where a chunk ends), ids checked and
/// blanked.
fn run_chunks(out: &mut Output, text: &str, cuts: &[usize], kind: ParserKind) -> Assembled {
    let mut a = Assembled::default();
    let mut last = 0;
    for &c in cuts.iter().chain([text.len()].iter()) {
        if c < last || !text.is_char_boundary(c) {
            continue;
        }
        a.add(&out.push(&text[last..c]));
        last = c;
    }
    a.add(&out.finish());
    for c in &mut a.calls {
        if kind == ParserKind::Mistral {
            assert!(
                c.id.len() == 9 && c.id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{}",
                c.id
            );
        } else {
            assert!(c.id.starts_with("call_") && c.id.len() == 29, "{}", c.id);
        }
        c.id.clear();
    }
    a
}

fn parser(kind: ParserKind) -> Output {
    Output::new(None, Some(CallParser::new(kind, tools(), true)))
}

/// Parses `text` whole, then checks that every chunking into two pieces, and one character
/// at a time, and a few three-piece chunkings give the same answer.
fn parse_all_ways(kind: ParserKind, think: Option<bool>, text: &str) -> Assembled {
    let mk = || {
        Output::new(
            think.map(ThinkSplitter::new),
            Some(CallParser::new(kind, tools(), true)),
        )
    };
    let whole = run_chunks(&mut mk(), text, &[], kind);
    for cut in 0..=text.len() {
        let got = run_chunks(&mut mk(), text, &[cut], kind);
        assert_eq!(got, whole, "{kind:?}: split at {cut} of {text:?}");
    }
    let every: Vec<usize> = (0..=text.len()).collect();
    assert_eq!(
        run_chunks(&mut mk(), text, &every, kind),
        whole,
        "{kind:?}: one byte at a time"
    );
    for a in (0..text.len()).step_by(7) {
        for b in (a..text.len()).step_by(5) {
            assert_eq!(
                run_chunks(&mut mk(), text, &[a, b], kind),
                whole,
                "{kind:?}: {a},{b}"
            );
        }
    }
    whole
}

fn expect(a: &Assembled, content: &str, calls: &[ToolCall]) {
    assert_eq!(a.content, content, "content of {a:?}");
    assert_eq!(a.calls, calls, "calls of {a:?}");
}

#[test]
fn hermes_calls() {
    let k = ParserKind::Hermes;
    let a = parse_all_ways(
        k,
        None,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>",
    );
    expect(
        &a,
        "",
        &[call("get_weather", r#"{"city":"Paris","days":2}"#)],
    );
    // Text before, two parallel calls, key order kept, no closing tag at the very end.
    let a = parse_all_ways(
        k,
        None,
        "Let me look.\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"a\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"days\": 1, \"city\": \"Oslo\"}}\n",
    );
    expect(
        &a,
        "Let me look.",
        &[
            call("search", r#"{"q":"a"}"#),
            call("get_weather", r#"{"days":1,"city":"Oslo"}"#),
        ],
    );
    // "parameters" and a stringified "arguments" are read too.
    let a = parse_all_ways(
        k,
        None,
        "<tool_call>{\"name\": \"search\", \"parameters\": {\"q\": \"x\"}}</tool_call><tool_call>{\"name\": \"search\", \"arguments\": \"{\\\"q\\\": \\\"y\\\"}\"}</tool_call>",
    );
    expect(
        &a,
        "",
        &[
            call("search", r#"{"q":"x"}"#),
            call("search", r#"{"q":"y"}"#),
        ],
    );
}

/// Small Qwen2.5 models (the test suite's 0.5B coder) answer a call as bare JSON or in a
/// ```json fence: read as a call only before any text.
#[test]
fn hermes_bare_json_at_the_start() {
    let k = ParserKind::Hermes;
    let a = parse_all_ways(
        k,
        None,
        "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
    );
    expect(&a, "", &[call("get_weather", r#"{"city":"Paris"}"#)]);
    let a = parse_all_ways(
        k,
        None,
        "```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\n    \"city\": \"Paris\"\n  }\n}\n```\nDone.",
    );
    expect(&a, "Done.", &[call("get_weather", r#"{"city":"Paris"}"#)]);
    for text in [
        "Here:\n{\"name\": \"search\", \"arguments\": {}}",
        "```json\n{\"a\": 1}\n```",
        "```python\nprint(1)\n```",
        "```json\n{\"name\": \"search\", \"arguments\": {}}\nmore\n```",
        "{\"name\": \"unknown\", \"arguments\": {}}",
    ] {
        let a = parse_all_ways(k, None, text);
        expect(&a, text, &[]);
    }
}

#[test]
fn hermes_lookalikes_stay_text() {
    let k = ParserKind::Hermes;
    for text in [
        // Not at a line start.
        "Use <tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call> like this.",
        // Inside a code fence.
        "Example:\n```\n<tool_call>\n{\"name\": \"search\", \"arguments\": {}}\n</tool_call>\n```\nDone.",
        // Invalid JSON.
        "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": }\n</tool_call>",
        // Unknown function.
        "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>",
        // Arguments not an object.
        "<tool_call>\n{\"name\": \"search\", \"arguments\": [1]}\n</tool_call>",
        // Something after the JSON before the closing tag.
        "<tool_call>\n{\"name\": \"search\", \"arguments\": {}} oops\n</tool_call>",
        // Cut inside the JSON.
        "<tool_call>\n{\"name\": \"search\", \"argu",
        "<tool_call",
        "plain text with < and <tool and a trailing space ",
    ] {
        let a = parse_all_ways(k, None, text);
        expect(&a, text, &[]);
    }
    // After a fence closes, calls count again.
    let text =
        "```\n<tool_call>x\n```\n<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call>";
    let a = parse_all_ways(k, None, text);
    expect(&a, "```\n<tool_call>x\n```", &[call("search", "{}")]);
}

#[test]
fn qwen3_coder_calls() {
    let k = ParserKind::Qwen3Coder;
    let text = "I'll check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=metric>\nTrue\n</parameter>\n<parameter=tags>\n[\"a\", 1]\n</parameter>\n<parameter=where>\n{\"lat\": 1.5}\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=search>\n<parameter=q>\nline 1\nline 2\n</parameter>\n<parameter=extra>\n42\n</parameter>\n</function>\n</tool_call>";
    let a = parse_all_ways(k, None, text);
    expect(
        &a,
        "I'll check.",
        &[
            call(
                "get_weather",
                r#"{"city":"New York","days":3,"metric":true,"tags":["a",1],"where":{"lat":1.5}}"#,
            ),
            // A parameter the schema does not name is a string.
            call("search", r#"{"q":"line 1\nline 2","extra":"42"}"#),
        ],
    );
    // A value that does not fit its type stays a string.
    let a = parse_all_ways(
        k,
        None,
        "<tool_call>\n<function=get_weather>\n<parameter=days>\nthree\n</parameter>\n</function>\n</tool_call>",
    );
    expect(&a, "", &[call("get_weather", r#"{"days":"three"}"#)]);
    for text in [
        "<tool_call>\n<function=nope>\n</function>\n</tool_call>",
        "<tool_call>\n<function=search>\n<parameter=q>\nunterminated",
        "<tool_call>\n<function=search>\nstray text\n</function>\n</tool_call>",
        "<tool_call>\n{\"name\": \"search\", \"arguments\": {}}\n</tool_call>",
    ] {
        let a = parse_all_ways(k, None, text);
        expect(&a, text, &[]);
    }
}

#[test]
fn mistral_calls() {
    let k = ParserKind::Mistral;
    // The JSON-array form (Mistral Nemo), with the model's 9-character id kept.
    let a = parse_all_ways(
        k,
        None,
        "[TOOL_CALLS][{\"name\": \"search\", \"arguments\": {\"q\": \"a\"}, \"id\": \"abcDEF123\"}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}]",
    );
    expect(
        &a,
        "",
        &[
            call("search", r#"{"q":"a"}"#),
            call("get_weather", r#"{"city":"Rome"}"#),
        ],
    );
    let mut o = parser(k);
    let mut x = Assembled::default();
    x.add(
        &o.push("[TOOL_CALLS][{\"name\": \"search\", \"arguments\": {}, \"id\": \"abcDEF123\"}]"),
    );
    x.add(&o.finish());
    assert_eq!(x.calls[0].id, "abcDEF123");
    // The name-first form (Small 3.2, Devstral), several calls, and [CALL_ID].
    let a = parse_all_ways(
        k,
        None,
        "Sure.[TOOL_CALLS]search[ARGS]{\"q\": \"b\"}[TOOL_CALLS]get_weather[CALL_ID]x1y2z3w4v[ARGS]{\"city\": \"Bern\"}",
    );
    expect(
        &a,
        "Sure.",
        &[
            call("search", r#"{"q":"b"}"#),
            call("get_weather", r#"{"city":"Bern"}"#),
        ],
    );
    for text in [
        "[TOOL_CALLS]unknown[ARGS]{}",
        "[TOOL_CALLS]search{\"q\": 1}",
        "[TOOL_CALLS][{\"name\": \"search\"",
        "[TOOL_CALLS][]",
        "[TOOL",
    ] {
        let a = parse_all_ways(k, None, text);
        expect(&a, text, &[]);
    }
}

#[test]
fn llama3_calls() {
    let k = ParserKind::Llama3Json;
    let a = parse_all_ways(
        k,
        None,
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Lima\"}}",
    );
    expect(&a, "", &[call("get_weather", r#"{"city":"Lima"}"#)]);
    let a = parse_all_ways(
        k,
        None,
        "<|python_tag|>{\"type\": \"function\", \"name\": \"search\", \"parameters\": {\"q\": \"1\"}}; {\"name\": \"search\", \"parameters\": {\"q\": \"2\"}}",
    );
    expect(
        &a,
        "",
        &[
            call("search", r#"{"q":"1"}"#),
            call("search", r#"{"q":"2"}"#),
        ],
    );
    for text in [
        // JSON that is not a call, and a call after text.
        "{\"answer\": 42}",
        "Here: {\"name\": \"search\", \"parameters\": {}}",
        "{\"name\": \"search\", \"parameters\": {\"q\": ",
        "<b>bold</b>",
    ] {
        let a = parse_all_ways(k, None, text);
        expect(&a, text, &[]);
    }
}

#[test]
fn parallel_tool_calls_false_keeps_the_first() {
    let mut o = Output::new(
        None,
        Some(CallParser::new(ParserKind::Hermes, tools(), false)),
    );
    let text = "<tool_call>{\"name\": \"search\", \"arguments\": {\"q\": 1}}</tool_call>\n<tool_call>{\"name\": \"search\", \"arguments\": {\"q\": 2}}</tool_call>";
    let a = run_chunks(&mut o, text, &[], ParserKind::Hermes);
    expect(&a, "", &[call("search", r#"{"q":1}"#)]);
}

#[test]
fn reasoning_then_calls() {
    let k = ParserKind::Hermes;
    // Qwen3: the model opens the block itself.
    let text = "<think>\nThe user wants weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Kyiv\"}}\n</tool_call>";
    let a = parse_all_ways(k, Some(false), text);
    assert_eq!(a.reasoning, "The user wants weather.");
    expect(&a, "", &[call("get_weather", r#"{"city":"Kyiv"}"#)]);
    // DeepSeek-R1 distills: the prompt opened it.
    let a = parse_all_ways(k, Some(true), "Hmm, 2+2.\n</think>\n\nIt is 4.");
    assert_eq!(a.reasoning, "Hmm, 2+2.");
    expect(&a, "It is 4.", &[]);
    // No closing tag: all reasoning.
    let a = parse_all_ways(k, Some(true), "still thinking <th");
    assert_eq!(a.reasoning, "still thinking <th");
    expect(&a, "", &[]);
    // A <think> not at the start is text.
    let a = parse_all_ways(k, Some(false), "Use the <think> tag.");
    assert_eq!(a.reasoning, "");
    expect(&a, "Use the <think> tag.", &[]);
    // A call inside the reasoning is not a call.
    let a = parse_all_ways(
        k,
        Some(false),
        "<think>\n<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call>\n</think>\nNo.",
    );
    assert_eq!(
        a.reasoning,
        "<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call>"
    );
    expect(&a, "No.", &[]);
}

#[test]
fn reasoning_alone() {
    let mut o = Output::new(Some(ThinkSplitter::new(false)), None);
    let mut a = Assembled::default();
    for piece in [
        "<thi", "nk>a", " b  ", "  c</thi", "nk>  ", "\n", "d e ", "f",
    ] {
        a.add(&o.push(piece));
    }
    a.add(&o.finish());
    assert_eq!(
        (a.reasoning.as_str(), a.content.as_str()),
        ("a b    c", "d e f")
    );
    assert!(ThinkSplitter::prompt_ends_inside("<|Assistant|><think>\n"));
    assert!(!ThinkSplitter::prompt_ends_inside(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    ));
    assert!(!ThinkSplitter::prompt_ends_inside(
        "<|im_start|>assistant\n"
    ));
}

#[test]
fn detection_from_templates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/templates");
    let read =
        |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    for (file, want, think) in [
        (
            "Qwen-Qwen2.5-7B-Instruct.jinja",
            Some(ParserKind::Hermes),
            false,
        ),
        ("Qwen-Qwen3-0.6B.jinja", Some(ParserKind::Hermes), true),
        ("Qwen-QwQ-32B.jinja", Some(ParserKind::Hermes), true),
        ("Qwen3-Coder.jinja", Some(ParserKind::Qwen3Coder), false),
        ("Qwen3.5-4B.jinja", Some(ParserKind::Qwen3Coder), true),
        (
            "meta-llama-Llama-3.1-8B-Instruct.jinja",
            Some(ParserKind::Llama3Json),
            false,
        ),
        (
            "meta-llama-Llama-3.2-3B-Instruct.jinja",
            Some(ParserKind::Llama3Json),
            false,
        ),
        (
            "mistralai-Mistral-Nemo-Instruct-2407.jinja",
            Some(ParserKind::Mistral),
            false,
        ),
        (
            "Mistral-Small-3.2-24B-Instruct-2506.jinja",
            Some(ParserKind::Mistral),
            false,
        ),
        ("GLM-4.6.jinja", None, true),
        ("google-gemma-2-2b-it.jinja", None, false),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", None, true),
    ] {
        let src = read(file);
        assert_eq!(ParserKind::detect(&src), want, "{file}");
        assert_eq!(ReasoningKind::detect(&src).is_some(), think, "{file}");
    }
    for n in ParserKind::NAMES {
        assert_eq!(ParserKind::from_name(n).unwrap().name(), n);
    }
}

#[test]
fn tools_and_choice_validation() {
    let ok = json!([{"type": "function", "function": {"name": "f"}}]);
    let (specs, _) = parse_tools(ok).unwrap();
    assert_eq!(specs[0].parameters, json!({}));
    for (tools, param) in [
        (json!({"type": "function"}), "tools"),
        (
            json!([{"type": "function", "function": {}}]),
            "tools[0].function.name",
        ),
        (
            json!([{"type": "function", "function": {"name": ""}}]),
            "tools[0].function.name",
        ),
        (
            json!([{"type": "function", "function": {"name": "a b"}}]),
            "tools[0].function.name",
        ),
        (
            json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
            "tools[0].function.parameters",
        ),
        (
            json!([{"type": "function", "function": {"name": "f", "parameters": []}}]),
            "tools[0].function.parameters",
        ),
        (json!([{"type": "code_interpreter"}]), "tools[0].type"),
        (json!([{"function": {"name": "f"}}]), "tools[0].type"),
        (json!([{"type": "function"}]), "tools[0].function"),
        (
            json!([{"type": "function", "function": {"name": "f"}},
                   {"type": "function", "function": {"name": "f"}}]),
            "tools[1].function.name",
        ),
    ] {
        let e = parse_tools(tools.clone()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{tools}: {}", e.message);
    }
    let t = tools();
    assert_eq!(parse_tool_choice(None, &t).unwrap(), ToolChoice::Auto);
    assert_eq!(parse_tool_choice(None, &[]).unwrap(), ToolChoice::None);
    assert_eq!(
        parse_tool_choice(Some(json!("required")), &t).unwrap(),
        ToolChoice::Required
    );
    assert_eq!(
        parse_tool_choice(
            Some(json!({"type": "function", "function": {"name": "search"}})),
            &t
        )
        .unwrap(),
        ToolChoice::Named("search".into())
    );
    for c in [
        json!("sometimes"),
        json!({"type": "function", "function": {"name": "nope"}}),
        json!({"type": "function"}),
        json!(3),
    ] {
        let e = parse_tool_choice(Some(c.clone()), &t).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"), "{c}");
    }
    let e = parse_tool_choice(
        Some(json!({"type": "function", "function": {"name": "nope"}})),
        &t,
    )
    .unwrap_err();
    assert!(
        e.message.contains("`nope`") && e.message.contains("get_weather, search"),
        "{}",
        e.message
    );
    let e = parse_tool_choice(Some(json!("required")), &[]).unwrap_err();
    assert!(e.message.contains("needs `tools`"), "{}", e.message);
}

#[test]
fn history_messages() {
    let m = messages::parse_messages(json!([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{\"z\": 1, \"a\": [true]}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42", "name": "f"},
        {"role": "assistant", "content": "It is 42.", "tool_calls": [], "reasoning_content": "r"},
    ]))
    .unwrap();
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        serde_json::to_string(&json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "a\nb"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "f", "arguments": {"z": 1, "a": [true]}}}]},
            {"role": "tool", "content": "42", "name": "f", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is 42.", "reasoning_content": "r"},
        ]))
        .unwrap()
    );
    let call = json!({"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
    for (msgs, param) in [
        (
            json!([{"role": "tool", "content": "x"}]),
            "messages[0].tool_call_id",
        ),
        (
            json!([{"role": "tool", "content": "x", "tool_call_id": "c9"}]),
            "messages[0].tool_call_id",
        ),
        (
            json!([call, {"role": "tool", "content": "x", "tool_call_id": 1}]),
            "messages[1].tool_call_id",
        ),
        (
            json!([{"role": "assistant", "tool_calls": {"id": "c1"}}]),
            "messages[0].tool_calls",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"type": "function",
                "function": {"name": "f", "arguments": "{}"}}]}]),
            "messages[0].tool_calls[0].id",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{not json"}}]}]),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "[1]"}}]}]),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c1", "function": {"arguments": "{}"}}]}]),
            "messages[0].tool_calls[0].function.name",
        ),
        (
            json!([{"role": "function", "content": "x"}]),
            "messages[0].role",
        ),
        (
            json!([{"role": "robot", "content": "x"}]),
            "messages[0].role",
        ),
        (
            json!([{"role": "user", "content": "x", "tool_calls": []}]),
            "messages[0].tool_calls",
        ),
    ] {
        let e = messages::parse_messages(msgs.clone()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{msgs}: {}", e.message);
    }
}

#[test]
fn grammar_shapes() {
    let t = tools();
    let opts = GrammarOpts {
        parallel: false,
        reasoning: None,
        mistral_tool_calls_token: None,
    };
    for k in [
        ParserKind::Hermes,
        ParserKind::Llama3Json,
        ParserKind::Mistral,
        ParserKind::Qwen3Coder,
    ] {
        assert_eq!(tool_call_grammar(&t, &ToolChoice::Auto, k, opts), None);
        assert_eq!(tool_call_grammar(&t, &ToolChoice::None, k, opts), None);
    }
    let g = tool_call_grammar(
        &t,
        &ToolChoice::Named("search".into()),
        ParserKind::Hermes,
        opts,
    )
    .unwrap();
    let mut lines = g.lines();
    assert_eq!(lines.next(), Some("start: call"));
    let call = lines.next().unwrap();
    let json_text = call
        .strip_prefix("call: \"<tool_call>\\n\" %json ")
        .and_then(|s| s.strip_suffix(" \"\\n</tool_call>\""))
        .unwrap_or_else(|| panic!("{call}"));
    let schema: Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(schema["properties"]["name"], json!({"const": "search"}));
    assert_eq!(
        schema["properties"]["arguments"]["properties"]["q"],
        json!({"type": "string"})
    );
    assert_eq!(schema["required"], json!(["name", "arguments"]));
    // Required, parallel, after reasoning: every tool, repeated, after an optional think block.
    let g = tool_call_grammar(
        &t,
        &ToolChoice::Required,
        ParserKind::Hermes,
        GrammarOpts {
            parallel: true,
            reasoning: Some(false),
            ..opts
        },
    )
    .unwrap();
    assert!(g.starts_with("start: think? call (\"\\n\" call)*\n"), "{g}");
    assert!(
        g.contains("\"anyOf\":[") && g.contains("{\"const\":\"get_weather\"}"),
        "{g}"
    );
    assert!(
        g.contains("think[lazy]: /\\s*<think>(?s:.*)<[\\/]think>\\s*/"),
        "{g}"
    );
    let g = tool_call_grammar(&t, &ToolChoice::Required, ParserKind::Llama3Json, opts).unwrap();
    assert!(
        g.contains("\"parameters\":{") && !g.contains("\"arguments\""),
        "{g}"
    );
    let g = tool_call_grammar(
        &t,
        &ToolChoice::Required,
        ParserKind::Mistral,
        GrammarOpts {
            mistral_tool_calls_token: Some(9),
            parallel: true,
            ..opts
        },
    )
    .unwrap();
    assert!(
        g.starts_with("start: call\ncall: <[9]> \"[\" item (\", \" item)* \"]\"\n"),
        "{g}"
    );
    let g = tool_call_grammar(
        &t,
        &ToolChoice::Named("get_weather".into()),
        ParserKind::Qwen3Coder,
        opts,
    )
    .unwrap();
    // `city` is required and a string (any text), `days` optional and JSON by its schema.
    assert!(
        g.contains("fn0: \"<function=get_weather>\\n\" fn0_p0 fn0_p1? "),
        "{g}"
    );
    assert!(
        g.contains("fn0_p0: \"<parameter=city>\\n\" fn0_p0_v \"\\n\""),
        "{g}"
    );
    assert!(
        g.contains(
            "fn0_p1: \"<parameter=days>\\n\" %json {\"type\":\"integer\"} \"\\n</parameter>\\n\""
        ),
        "{g}"
    );
    assert!(
        g.contains("call: \"<tool_call>\\n\" (fn0) \"</tool_call>\""),
        "{g}"
    );
}
