//! Incremental detokenization on the real tokenizers: streamed deltas concatenate to the full
//! decode and never contain half a UTF-8 character (no U+FFFD from a split byte sequence).

mod common;

use switchyard_runtime::tokenizer::IncrementalDecoder;

const TEXTS: &[&str] = &[
    "Hello, world! 👋🏽 Ça va? 日本語のテキスト、한국어, العربية, हिन्दी.",
    "👨‍👩‍👧‍👦 family, 🇫🇷 flag, emoji run 🎉🎉🎉",
    "fn main() {\n\tprintln!(\"{}\", 42);\n}\n\n\n   spaces   ",
    "byte fallback: \u{1F9EC} \u{10348} \u{2603}",
];

fn check(alias: &str) {
    let m = common::model(alias);
    let tok = &m.tokenizer;
    for text in TEXTS {
        let ids = tok.encode(text, false).unwrap();
        let mut dec = IncrementalDecoder::new(true);
        let mut streamed = String::new();
        let mut held_back = 0;
        for &id in &ids {
            let d = dec.push(tok, id).unwrap();
            if d.is_empty() {
                held_back += 1;
            }
            assert!(
                !d.contains('\u{FFFD}'),
                "{alias}: delta {d:?} holds a replacement character"
            );
            streamed.push_str(&d);
        }
        streamed.push_str(&dec.flush(tok).unwrap());
        assert_eq!(
            streamed,
            tok.decode(&ids, true).unwrap(),
            "{alias}: stream differs from full decode"
        );
        assert_eq!(streamed, *text, "{alias}: round trip");
        eprintln!(
            "{alias}: {text:?}: {} tokens, {held_back} held back",
            ids.len()
        );
    }
}

#[test]
fn incremental_gemma() {
    check("gemma-3-270m");
}

#[test]
fn incremental_qwen() {
    check("qwen2.5-coder-0.5b-instruct");
}

#[test]
fn split_utf8_is_held_back() {
    // Gemma's byte-fallback tokens <0xF0><0x9F><0xA7><0xAC> spell one emoji over four tokens.
    let m = common::model("gemma-3-270m");
    let tok = &m.tokenizer;
    let bytes: Vec<u32> = ["<0xF0>", "<0x9F>", "<0xA7>", "<0xAC>"]
        .iter()
        .map(|t| tok.token_id(t).unwrap())
        .collect();
    let mut dec = IncrementalDecoder::new(true);
    let deltas: Vec<String> = bytes.iter().map(|&id| dec.push(tok, id).unwrap()).collect();
    assert_eq!(deltas, vec!["", "", "", "\u{1F9EC}"]);
}
