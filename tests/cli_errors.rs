//! Bad input on the command line: each case must exit non-zero with one readable error line
//! naming the problem, and never panic.

mod common;

use std::path::Path;
use std::process::Command;

use switchyard_runtime::gguf::{GgufFile, Value};
use switchyard_runtime::gguf_write::GgufWriter;

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
    expect_error_from(&["info", "--no-fetch", "--model", model], needle);
}

/// As [`expect_error`] for the command line `args`.
fn expect_error_from(args: &[&str], needle: &str) {
    let model = args.join(" ");
    let (code, err) = run(args);
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

/// A minimal GGUF: the architecture and one 256x1 tensor of type `ty`.
fn gguf(arch: &str, ty: u32) -> Vec<u8> {
    GgufWriter::new()
        .kv("general.architecture", Value::Str(arch.into()))
        .tensor("token_embd.weight", ty, &[256, 1], vec![0u8; 1024])
        .to_bytes()
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
    let p = write(&d, "iq2.gguf", &gguf("llama", 16));
    expect_error(&p, "unsupported type IQ2_XXS");
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

/// A copy of the qwen3 architecture test model (scripts/build-arch-models.sh) changed by `f`.
fn altered_qwen3(tag: &str, f: impl FnOnce(&mut GgufWriter)) -> String {
    let src = switchyard_runtime::registry::cache_dir().join("arch-models/qwen3.gguf");
    let g = GgufFile::open(&src).unwrap_or_else(|e| {
        panic!("{e}: run scripts/build-arch-models.sh first (scripts/test.sh does)")
    });
    let mut w = GgufWriter::from_file(&g);
    f(&mut w);
    write(&tmpdir(tag), &format!("{tag}.gguf"), &w.to_bytes())
}

/// Loading the weights (not just the header) of `model` fails with one line naming `needles`.
fn expect_load_error(model: &str, needles: &[&str]) {
    for n in needles {
        expect_error_from(
            &[
                "generate",
                "--no-fetch",
                "--model",
                model,
                "--prompt",
                "hi",
                "--max-tokens",
                "1",
            ],
            n,
        );
    }
}

#[test]
fn unsupported_tokenizer() {
    let p = altered_qwen3("tok", |w| {
        w.kv("tokenizer.ggml.model", Value::Str("rwkv".into()));
    });
    expect_error(&p, "rwkv");
}

#[test]
fn missing_tensor_names_the_file_and_the_tensor() {
    let p = altered_qwen3("missing", |w| {
        w.remove_tensor("blk.1.attn_k.weight");
    });
    expect_load_error(&p, &["missing.gguf", "blk.1.attn_k.weight"]);
}

#[test]
fn wrong_shape_names_the_tensor_and_what_was_expected() {
    // ffn_up is [hidden 96, ffn 128]: give it 64 rows of the right width instead.
    let p = altered_qwen3("shape", |w| {
        w.tensor("blk.0.ffn_up.weight", 0, &[96, 64], vec![0u8; 96 * 64 * 4]);
    });
    expect_load_error(
        &p,
        &[
            "shape.gguf",
            "blk.0.ffn_up.weight",
            "expected shape [96, 128], found [96, 64]",
        ],
    );
}
