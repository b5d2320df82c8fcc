//! Bad input on the command line: each case must exit non-zero with one readable error line
//! naming the problem, and never panic.

mod common;

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn expect_error(model: &str, needle: &str) {
    let (code, err) = run(&["info", "--no-fetch", "--model", model]);
    assert_ne!(code, 0, "{model}: exit code 0");
    assert!(!err.contains("panicked"), "{model}: panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{model}: expected one line, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        err.contains(needle),
        "{model}: {err:?} does not mention {needle:?}"
    );
}

fn push_str(v: &mut Vec<u8>, s: &str) {
    v.extend((s.len() as u64).to_le_bytes());
    v.extend(s.as_bytes());
}

/// A minimal GGUF: one string metadata entry and one 32x1 tensor of type `ty`.
fn gguf(arch: &str, ty: u32) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(1u64.to_le_bytes());
    v.extend(1u64.to_le_bytes());
    push_str(&mut v, "general.architecture");
    v.extend(8u32.to_le_bytes());
    push_str(&mut v, arch);
    push_str(&mut v, "token_embd.weight");
    v.extend(2u32.to_le_bytes());
    v.extend(256u64.to_le_bytes());
    v.extend(1u64.to_le_bytes());
    v.extend(ty.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    while !v.len().is_multiple_of(32) {
        v.push(0);
    }
    v.extend(vec![0u8; 1024]);
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn missing_file() {
    expect_error("/nonexistent/dir/model.gguf", "does not exist");
}

#[test]
fn unknown_alias() {
    expect_error("no-such-model-alias", "unknown model 'no-such-model-alias'");
}

#[test]
fn wrong_magic() {
    let d = tmpdir("magic");
    let p = write(&d, "bad.gguf", b"PK\x03\x04 this is a zip, not a model");
    expect_error(&p, "is not a GGUF file");
}

#[test]
fn truncated_real_model() {
    let m = common::model("gemma-3-270m");
    let bytes = std::fs::read(&m.path).unwrap();
    let d = tmpdir("trunc");
    // Cut inside the tensor data and inside the metadata.
    let p = write(&d, "cut-data.gguf", &bytes[..bytes.len() / 2]);
    expect_error(&p, "truncated or corrupt");
    let p = write(&d, "cut-meta.gguf", &bytes[..4096]);
    expect_error(&p, "truncated or corrupt");
}

#[test]
fn unsupported_architecture() {
    let d = tmpdir("arch");
    let p = write(&d, "mamba.gguf", &gguf("mamba", 0));
    expect_error(&p, "unsupported architecture 'mamba'");
}

#[test]
fn unsupported_quant_type() {
    let d = tmpdir("quant");
    let p = write(&d, "q5k.gguf", &gguf("llama", 13));
    expect_error(&p, "unsupported type Q5_K");
}

#[test]
fn generate_rejects_bad_model_too() {
    let (code, err) = run(&[
        "generate",
        "--no-fetch",
        "--model",
        "/nonexistent.gguf",
        "--prompt",
        "hi",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.starts_with("error: ") && err.contains("does not exist") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn corrupt_cached_file_names_the_file_and_the_fix() {
    // A copy of the cache with a truncated default model.
    let m = common::model("gemma-3-270m");
    let cache = tmpdir("cache");
    std::fs::create_dir_all(cache.join("models")).unwrap();
    let bytes = std::fs::read(&m.path).unwrap();
    std::fs::write(
        cache.join("models/gemma-3-270m-q4_k_m.gguf"),
        &bytes[..1 << 20],
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["info", "--no-fetch", "--model", "gemma-3-270m"])
        .env("SWITCHYARD_CACHE", &cache)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("corrupt or truncated")
            && err.contains("scripts/fetch-models.sh gemma-3-270m"),
        "{err}"
    );
    assert!(err.contains("gemma-3-270m-q4_k_m.gguf"), "{err}");
}
