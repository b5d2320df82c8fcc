//! Helpers shared by the end-to-end tests: locating the real models and golden files.
#![allow(dead_code)]

use std::path::PathBuf;

use switchyard_runtime::Model;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Loads a registry model from the cache. The test command fetches the models first
/// (`scripts/test.sh`); a missing model is a failure with instructions, never a skip.
pub fn model(alias: &str) -> Model {
    match Model::load(alias, false) {
        Ok(m) => m,
        Err(e) => panic!("model {alias} unavailable: {e}\nrun scripts/fetch-models.sh first (scripts/test.sh does)"),
    }
}

/// Parses a golden JSON file of `alias`.
pub fn golden(alias: &str, file: &str) -> serde_json::Value {
    let p = root().join("tests/golden").join(alias).join(file);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "golden file {} missing ({e}); run scripts/gen-reference.sh",
            p.display()
        )
    });
    serde_json::from_str(&s).unwrap()
}

/// Both models we test on.
pub const MODELS: [&str; 2] = ["gemma-3-270m", "qwen2.5-coder-0.5b-instruct"];
