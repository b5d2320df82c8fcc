//! Tokenization of GGUF vocabularies against llama.cpp's own test vectors: the vocabularies
//! `models/ggml-vocab-*.gguf` of the pinned llama.cpp sdist with their `.gguf.inp` (inputs
//! separated by `\n__ggml_vocab_test__\n`) and `.gguf.out` (one line of token ids per input),
//! which llama.cpp's `tests/test-tokenizer-0.cpp` checks `llama_tokenize` against (made by
//! tokenizing the same inputs with the models' Hugging Face tokenizers). As there, inputs are
//! tokenized with `add_special = false` and `parse_special = false`.
//!
//! `scripts/fetch-vocabs.sh` (called by `scripts/test.sh`) puts the files into
//! `$SWITCHYARD_CACHE/vocab`; `SWITCHYARD_VOCAB_DIR` overrides the directory. A missing file of a
//! vocabulary we claim fails the test.

use std::path::{Path, PathBuf};

use switchyard_runtime::gguf::GgufFile;
use switchyard_runtime::tokenizer::Tokenizer;

/// Vocabularies we claim to tokenize exactly as llama.cpp does, each checked on every vector.
const CLAIMED: &[&str] = &[
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

/// Vocabularies without test vectors that must still load (a SentencePiece vocabulary).
const LOAD_ONLY: &[&str] = &["baichuan"];

/// Vocabularies we do not support, with the word the one-line error must name.
const UNSUPPORTED: &[(&str, &str)] = &[
    // Tokenizer models other than SentencePiece / byte-level BPE.
    ("bert-bge", "'bert'"),
    ("nomic-bert-moe", "'t5'"),
    // Byte-level BPE files without `tokenizer.ggml.pre` (llama.cpp falls back to its 'default'
    // splitting with a warning that generation quality will be degraded).
    ("aquila", "tokenizer.ggml.pre"),
    ("gpt-neox", "tokenizer.ggml.pre"),
];

fn vocab_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SWITCHYARD_VOCAB_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    switchyard_runtime::registry::cache_dir().join("vocab")
}

fn need(path: &Path) -> &Path {
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-vocabs.sh (scripts/test.sh does), or set \
         SWITCHYARD_VOCAB_DIR to a directory holding llama.cpp's models/ggml-vocab-* files",
        path.display()
    );
    path
}

fn load(name: &str) -> Result<Tokenizer, String> {
    let path = vocab_dir().join(format!("ggml-vocab-{name}.gguf"));
    let g = GgufFile::open(need(&path)).map_err(|e| e.to_string())?;
    Tokenizer::from_gguf(&g).map_err(|e| e.to_string())
}

/// The vectors as llama.cpp's `read_tests` reads them: inputs split at the marker line, output
/// lines stripped and split at single spaces.
fn vectors(name: &str) -> Vec<(String, Vec<u32>)> {
    let dir = vocab_dir();
    let inp = std::fs::read_to_string(need(&dir.join(format!("ggml-vocab-{name}.gguf.inp"))))
        .expect("read .inp");
    let out = std::fs::read_to_string(need(&dir.join(format!("ggml-vocab-{name}.gguf.out"))))
        .expect("read .out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                inputs.push(rest[..i].to_string());
                rest = &rest[i + sep.len()..];
            }
            None => {
                inputs.push(rest.to_string());
                rest = "";
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.trim()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: {} inputs but {} output lines",
        inputs.len(),
        outputs.len()
    );
    assert!(inputs.len() >= 30, "{name}: only {} vectors", inputs.len());
    inputs.into_iter().zip(outputs).collect()
}

#[test]
fn claimed_vocabularies_match_llamacpp_vectors() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for &name in CLAIMED {
        let tok = match load(name) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: does not load: {e}"));
                continue;
            }
        };
        for (text, want) in vectors(name) {
            checked += 1;
            let got = tok.encode_with(&text, false, false).unwrap();
            if got != want {
                failures.push(format!(
                    "{name}: {text:?}\n    want {want:?}\n    got  {got:?}"
                ));
                continue;
            }
            // Decoding the reference ids gives the text back (a SentencePiece vocabulary that
            // adds a space prefix gives it with that space in front).
            let back = tok.decode(&want, false).unwrap();
            let expect = if tok.adds_space_prefix() && !text.is_empty() {
                format!(" {text}")
            } else {
                text.clone()
            };
            if back != expect {
                failures.push(format!(
                    "{name}: {text:?} decodes back to {back:?}, want {expect:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn unsupported_vocabularies_fail_with_one_clear_line() {
    for &(name, what) in UNSUPPORTED {
        let err = match load(name) {
            Ok(_) => panic!("{name}: loads, but it is listed as unsupported"),
            Err(e) => e,
        };
        assert!(!err.contains('\n'), "{name}: error is not one line: {err}");
        assert!(
            err.contains(what) && err.contains("supported"),
            "{name}: error should name {what} and list what is supported: {err}"
        );
    }
    for &name in LOAD_ONLY {
        load(name).unwrap_or_else(|e| panic!("{name}: does not load: {e}"));
    }
}

/// Every vocabulary in the directory is in one of the lists, so that a new one is not ignored.
#[test]
fn every_vocabulary_is_listed() {
    let dir = vocab_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/fetch-vocabs.sh (scripts/test.sh does)",
            dir.display()
        )
    });
    let mut unlisted = Vec::new();
    for e in entries {
        let f = e.unwrap().file_name().to_string_lossy().to_string();
        let Some(name) = f
            .strip_prefix("ggml-vocab-")
            .and_then(|n| n.strip_suffix(".gguf"))
        else {
            continue;
        };
        let listed = CLAIMED.contains(&name)
            || LOAD_ONLY.contains(&name)
            || UNSUPPORTED.iter().any(|(n, _)| *n == name);
        if !listed {
            unlisted.push(name.to_string());
        }
    }
    assert!(
        unlisted.is_empty(),
        "vocabularies in {} in no list of this test: {unlisted:?}",
        dir.display()
    );
}
