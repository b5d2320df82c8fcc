//! Constrained decoding in the engine on the real models (CPU backend): the mask admits exactly
//! the grammar's continuations (EOS only once the output is complete), constrained outputs
//! match their schema, and greedy outputs (constrained or not) do not depend on the batch, on
//! preemption or on `n`. The HTTP surface and 50+ schemas are checked by
//! `tests/structured_outputs.py` (with PyPI `jsonschema`).

mod common;

use std::sync::Arc;

use serde_json::{json, Value};
use switchyard_runtime::constraint::{Constraint, ConstraintSpec, Grammars};
use switchyard_runtime::engine::{
    Completion, EngineConfig, EngineHandle, EngineRequest, FinishReason, KvCacheSize,
};

fn engine(alias: &str, blocks: usize) -> EngineHandle {
    let m = common::model(alias);
    let backend = common::backend(&m);
    let config = EngineConfig {
        kv_cache: KvCacheSize::Bytes((blocks * backend.kv_bytes_per_block(16)) as u64),
        sliding_window_kv: false,
        ..EngineConfig::default()
    };
    EngineHandle::start(backend, Arc::new(m.tokenizer), &m.config, config).unwrap()
}

fn compile(e: &EngineHandle, spec: ConstraintSpec) -> Constraint {
    Grammars::new(e.tokenizer())
        .unwrap()
        .compile(&spec)
        .unwrap()
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "year": {"type": "integer", "minimum": 1800, "maximum": 2100},
            "tags": {"type": "array", "items": {"enum": ["old", "new", "big"]}, "minItems": 1, "maxItems": 2}
        },
        "required": ["city", "year", "tags"],
        "additionalProperties": false
    })
}

/// The schema above, checked by hand (the test has no JSON-schema validator).
fn valid(text: &str) -> bool {
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let city = m
        .get("city")
        .and_then(Value::as_str)
        .map(|s| s.chars().count() <= 20);
    let year = m
        .get("year")
        .and_then(Value::as_i64)
        .map(|y| (1800..=2100).contains(&y));
    let tags = m.get("tags").and_then(Value::as_array).map(|a| {
        (1..=2).contains(&a.len())
            && a.iter()
                .all(|t| matches!(t.as_str(), Some("old" | "new" | "big")))
    });
    m.len() == 3 && city == Some(true) && year == Some(true) && tags == Some(true)
}

#[test]
fn mask_admits_the_grammar_and_eos_only_at_the_end_qwen() {
    let e = engine("qwen2.5-coder-0.5b-instruct", 64);
    let tok = e.tokenizer().clone();
    let c = compile(&e, ConstraintSpec::JsonSchema(schema()));
    let text = r#"{"city": "Paris", "year": 1889, "tags": ["old"]}"#;
    assert!(valid(text));
    let ids = tok.encode(text, false).unwrap();
    let eos = tok.eos_ids[0] as usize;
    let mut st = c.start();
    let n = e.info().vocab_size;
    for (i, &id) in ids.iter().enumerate() {
        let mut logits = vec![0f32; n];
        st.apply(&mut logits).unwrap();
        assert!(
            logits[id as usize].is_finite(),
            "token {i} ({:?}) masked",
            tok.decode(&[id], false)
        );
        assert!(
            logits[eos].is_infinite(),
            "EOS allowed before the end, at token {i}"
        );
        if i == 0 {
            // Only an object's opening (with or without blanks) may start.
            let allowed = logits.iter().filter(|v| v.is_finite()).count();
            assert!(
                allowed < 200,
                "{allowed} of {n} tokens may start the output"
            );
        }
        st.accept(id);
    }
    let mut logits = vec![0f32; n];
    st.apply(&mut logits).unwrap();
    assert!(
        logits[eos].is_finite(),
        "EOS not allowed after a complete object"
    );
    // A wrong first token is masked: a key the schema does not have.
    let mut st = c.start();
    let mut logits = vec![0f32; n];
    st.apply(&mut logits).unwrap();
    let bad = tok.encode("hello", false).unwrap()[0] as usize;
    assert!(logits[bad].is_infinite());
    // Regex and choice.
    let c = compile(&e, ConstraintSpec::Choice(vec!["yes".into(), "no".into()]));
    let mut st = c.start();
    let mut logits = vec![0f32; n];
    st.apply(&mut logits).unwrap();
    let ok: Vec<String> = (0..n)
        .filter(|&i| logits[i].is_finite())
        .map(|i| tok.decode(&[i as u32], false).unwrap())
        .collect();
    assert!(
        ok.iter()
            .all(|t| "yes".starts_with(t.as_str()) || "no".starts_with(t.as_str())),
        "{ok:?}"
    );
    assert!(
        ok.contains(&"yes".to_string()) && ok.contains(&"no".to_string()),
        "{ok:?}"
    );
}

#[test]
fn a_lazy_constraint_is_free_until_its_trigger_token_qwen() {
    let e = engine("qwen2.5-coder-0.5b-instruct", 64);
    let tok = e.tokenizer().clone();
    let n = e.info().vocab_size;
    let trigger = tok
        .token_id("<tool_call>")
        .expect("Qwen has <tool_call> as one token");
    let grammar = r#"start: "<tool_call>\n" %json {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]} "\n</tool_call>""#;
    let c = compile(&e, ConstraintSpec::Lark(grammar.into())).lazy(vec![trigger]);
    assert!(c.is_lazy());
    let mut st = c.start();
    // Before the trigger: nothing masked, whatever is accepted.
    for text in ["Let me check", " the weather."] {
        for id in tok.encode(text, false).unwrap() {
            let mut logits = vec![0f32; n];
            st.apply(&mut logits).unwrap();
            assert!(
                logits.iter().all(|v| v.is_finite()),
                "masked before the trigger"
            );
            st.accept(id);
        }
    }
    // The trigger starts the grammar: then only "\n" (the grammar's next text) may follow;
    // following the grammar to its end allows EOS, and a stray token before is masked.
    let mut logits = vec![0f32; n];
    st.apply(&mut logits).unwrap();
    st.accept(trigger);
    let ids = tok.encode("\n{\"a\": 12}\n</tool_call>", false).unwrap();
    for (i, &id) in ids.iter().enumerate() {
        let mut logits = vec![0f32; n];
        st.apply(&mut logits).unwrap();
        if i == 0 {
            let ok: Vec<String> = (0..n)
                .filter(|&i| logits[i].is_finite())
                .map(|i| tok.decode(&[i as u32], false).unwrap())
                .collect();
            assert!(!ok.is_empty() && ok.len() < 50, "{ok:?}");
            assert!(ok.iter().all(|t| t.starts_with('\n')), "{ok:?}");
        }
        assert!(
            logits[id as usize].is_finite(),
            "{:?} masked",
            tok.decode(&[id], false)
        );
        assert!(logits[tok.encode("hello", false).unwrap()[0] as usize].is_infinite());
        st.accept(id);
    }
    let mut logits = vec![0f32; n];
    st.apply(&mut logits).unwrap();
    assert!(logits[tok.eos_ids[0] as usize].is_finite());
}

#[test]
fn bad_constraints_are_errors_naming_the_problem_qwen() {
    let e = engine("qwen2.5-coder-0.5b-instruct", 16);
    let g = Grammars::new(e.tokenizer()).unwrap();
    for (spec, want) in [
        (
            ConstraintSpec::JsonSchema(json!({"type": "object", "if": {}})),
            "if",
        ),
        (ConstraintSpec::Regex("(unclosed".into()), "regex"),
        (
            ConstraintSpec::Lark("start: nothing_defined".into()),
            "nothing_defined",
        ),
        (
            ConstraintSpec::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
            "json_schema",
        ),
    ] {
        let err = g.compile(&spec).unwrap_err().to_string();
        assert!(err.contains(want), "{spec:?}: {err}");
    }
}

/// Greedy requests, constrained and not, together under a pool small enough to preempt, then
/// each alone with room: the same tokens; every constrained output is valid.
#[test]
fn constrained_outputs_are_valid_and_batch_invariant_gemma() {
    let small = engine("gemma-3-270m", 14);
    let tok = small.tokenizer().clone();
    let c = compile(&small, ConstraintSpec::JsonSchema(schema()));
    let reqs: Vec<EngineRequest> = (0..6)
        .map(|i| {
            let prompt =
                format!("Record {i} of the city archive, as JSON with city, year and tags:\n");
            let mut r = EngineRequest::new(tok.encode(&prompt, true).unwrap(), 60);
            if i % 3 != 2 {
                r.constraint = Some(c.clone());
            } else {
                r.ignore_eos = true;
            }
            r
        })
        .collect();
    let streams: Vec<_> = reqs
        .iter()
        .map(|r| small.submit(r.clone()).unwrap())
        .collect();
    let together: Vec<Completion> = streams
        .into_iter()
        .map(|s| s.collect_blocking().unwrap().pop().unwrap())
        .collect();
    let st = small.stats_blocking().unwrap();
    assert!(st.num_preemptions > 0, "no preemption happened: {st:?}");
    assert_eq!(st.num_free_blocks, st.num_blocks);
    drop(small);
    let big = engine("gemma-3-270m", 256);
    for (i, (r, t)) in reqs.iter().zip(&together).enumerate() {
        let alone = big
            .submit(r.clone())
            .unwrap()
            .collect_blocking()
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(
            alone.token_ids, t.token_ids,
            "request {i}: {:?} vs {:?}",
            alone.text, t.text
        );
        if r.constraint.is_some() {
            assert!(
                matches!(t.finish, FinishReason::Stop(_)),
                "request {i}: {:?}",
                t.finish
            );
            assert!(valid(&t.text), "request {i}: {:?}", t.text);
        }
    }
    eprintln!(
        "{} preemptions; e.g. {:?}",
        st.num_preemptions, together[0].text
    );
}

/// `n > 1` with sampling: every choice has its own matcher and is valid.
#[test]
fn sampled_choices_each_follow_the_schema_gemma() {
    let e = engine("gemma-3-270m", 256);
    let tok = e.tokenizer().clone();
    let c = compile(&e, ConstraintSpec::JsonSchema(schema()));
    let mut r = EngineRequest::new(tok.encode("A city as JSON:", true).unwrap(), 80);
    r.n = 6;
    r.sampling.temperature = 1.0;
    r.sampling.seed = Some(7);
    r.constraint = Some(c);
    let outs = e.submit(r).unwrap().collect_blocking().unwrap();
    assert_eq!(outs.len(), 6);
    let texts: Vec<&str> = outs.iter().map(|o| o.text.as_str()).collect();
    for o in &outs {
        assert!(valid(&o.text), "{:?} ({:?})", o.text, o.finish);
    }
    assert!(
        texts.iter().any(|t| *t != texts[0]),
        "all choices equal: {texts:?}"
    );
}
