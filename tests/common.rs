//! Helpers shared by the end-to-end tests: locating the real models and golden files.
#![allow(dead_code)]

use std::path::PathBuf;

use switchyard_runtime::Model;

/// The repository root: `SWITCHYARD_TEST_ROOT` when set (test executables copied to another
/// machine, `scripts/gpu-real.sh`), else where this crate was built.
pub fn root() -> PathBuf {
    if let Some(r) = std::env::var_os("SWITCHYARD_TEST_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(r);
    }
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

/// The (token id, reference logit) pairs one position of a golden logits file records: its
/// top entries (`top`: `[id, logit]`), then the logits of the fixed `probe` ids (`probe`).
pub fn golden_pairs<'a>(
    p: &'a serde_json::Value,
    probe: &'a [u32],
) -> impl Iterator<Item = (usize, f64)> + 'a {
    p["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_u64().unwrap() as usize, e[1].as_f64().unwrap()))
        .chain(
            probe
                .iter()
                .zip(p["probe"].as_array().unwrap())
                .map(|(&id, v)| (id as usize, v.as_f64().unwrap())),
        )
}

/// Both models we test on.
pub const MODELS: [&str; 2] = ["gemma-3-270m", "qwen2.5-coder-0.5b-instruct"];

/// A Hugging Face-format copy of a registry model built by `scripts/build-hf-test-models.sh`
/// (`variant`: `f32` or `bf16`). Missing is a failure with instructions, never a skip.
pub fn hf_dir(alias: &str, variant: &str) -> PathBuf {
    let d = switchyard_runtime::registry::cache_dir()
        .join("hf")
        .join(format!("{alias}-{variant}"));
    assert!(
        d.join(".stamp").is_file(),
        "{} missing: run scripts/build-hf-test-models.sh first (scripts/test.sh does)",
        d.display()
    );
    d
}

/// Loads the Hugging Face-format copy `hf_dir(alias, variant)`.
pub fn hf_model(alias: &str, variant: &str) -> Model {
    let d = hf_dir(alias, variant);
    Model::open_hf_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()))
}

/// The device the model tests run on: the CPU, unless `SWITCHYARD_TEST_DEVICE=cuda` asks for
/// CUDA device 0 (the real-weight GPU check on a lent device machine, `scripts/gpu-real.sh`).
/// A device that is asked for and missing fails the test; it never falls back to the CPU.
pub fn on_gpu() -> bool {
    match std::env::var("SWITCHYARD_TEST_DEVICE").as_deref() {
        Err(_) | Ok("") | Ok("cpu") => false,
        Ok("cuda") => true,
        Ok(other) => panic!("SWITCHYARD_TEST_DEVICE={other}: expected cpu or cuda"),
    }
}

/// With `SWITCHYARD_CUDA_TRACE_STEPS=1`, the CUDA backend's per-step trace (logged through
/// `tracing`) goes to the test's stderr.
fn init_trace_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var("SWITCHYARD_CUDA_TRACE_STEPS").is_ok_and(|v| v == "1") {
        ONCE.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "switchyard_cuda_trace=info",
                ))
                .with_writer(std::io::stderr)
                .try_init();
        });
    }
}

/// Loads `m` on the test device (see [`on_gpu`]).
pub fn backend(m: &Model) -> Box<dyn switchyard_core::Backend> {
    init_trace_logs();
    if on_gpu() {
        let dev = switchyard_backend_cuda::probe()
            .unwrap_or_else(|e| panic!("SWITCHYARD_TEST_DEVICE=cuda but no CUDA device: {e}"));
        eprintln!("test device: CUDA 0 ({})", dev[0].name);
        Box::new(switchyard_backend_cuda::CudaBackend::load(0, &m.config, m.weights()).unwrap())
    } else {
        Box::new(switchyard_backend_cpu::CpuBackend::load(&m.config, m.weights()).unwrap())
    }
}
