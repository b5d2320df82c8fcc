//! The result file: a stable JSON schema (`switchyard.bench.serve/v1`, documented in
//! benches/README.md). Fields are only ever added; a breaking change bumps the schema name.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cost::Pricing;
use crate::metrics::{PointMetrics, Slo};
use crate::runner::LoadPoint;
use crate::workload::{Dataset, LenDist};

/// The schema name written in every result file.
pub const SCHEMA: &str = "switchyard.bench.serve/v1";

/// The tool that wrote the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `switchyard`.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The git commit it was built from (`unknown` outside a checkout).
    pub git_commit: String,
}

impl Tool {
    /// This build.
    pub fn current() -> Tool {
        Tool {
            name: "switchyard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: option_env!("SWITCHYARD_GIT_COMMIT")
                .unwrap_or("unknown")
                .into(),
        }
    }
}

/// The machine the benchmark client ran on (the server's, too, when it is local).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu_model: String,
    /// Logical CPUs available to the process.
    pub logical_cpus: usize,
    /// Physical cores.
    pub physical_cores: usize,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// `linux`, ...
    pub os: String,
    /// `x86_64`, ...
    pub arch: String,
    /// GPUs named by `nvidia-smi`, if any.
    #[serde(default)]
    pub gpus: Vec<String>,
}

impl Machine {
    /// Reads this machine's facts.
    pub fn detect() -> Machine {
        let logical = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let memory_gib = switchyard_core::host::system_memory()
            .0
            .map(|b| (b as f64 / (1u64 << 30) as f64 * 10.0).round() / 10.0)
            .unwrap_or(0.0);
        let gpus = std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=name", "--format=csv,noheader"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Machine {
            cpu_model: switchyard_core::host::cpu_name(),
            logical_cpus: logical,
            physical_cores: switchyard_core::host::physical_cores(),
            memory_gib,
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            gpus,
        }
    }
}

/// The server benchmarked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Base URL.
    pub base_url: String,
    /// `/v1/completions` or `/v1/chat/completions`.
    pub endpoint: String,
    /// Backend name: `--backend`, else `owned_by` of `/v1/models` (`llamacpp`, `vllm`, ...),
    /// else the `Server` header, else `unknown`.
    pub backend: String,
    /// The `model` sent.
    pub model: String,
}

/// What was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadInfo {
    /// The dataset.
    pub dataset: Dataset,
    /// Prompt length distribution, tokens (random and shared-prefix; suffix for the latter);
    /// `null` for prompt files, whose prompts have their own lengths.
    pub input_len: Option<LenDist>,
    /// `max_tokens` distribution (for prompt files: of lines without their own `output_len`).
    pub output_len: LenDist,
    /// Prompt files: each line's own `output_len` was used where it has one (no `--output-len`
    /// given).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_prompt_output_len: bool,
    /// Whether `ignore_eos: true` was sent.
    pub ignore_eos: bool,
    /// Seed of the workload and arrival times.
    pub seed: u64,
    /// Tokenizer used to make and count prompts (`null`: random words).
    pub tokenizer: Option<String>,
    /// Requests per point (`null` with a duration).
    pub num_prompts: Option<u64>,
    /// Seconds per point (`null` with a request count).
    pub duration_s: Option<f64>,
    /// Warm-up requests before the first point (not measured).
    pub warmup_requests: usize,
    /// The `temperature` sent (`null`: none sent, the server's default; absent in files
    /// written before it was recorded).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// The extra JSON merged into every request body, as given (`--extra-body`).
    #[serde(default)]
    pub extra_body: Option<String>,
}

/// One load point's configuration and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointResult {
    /// The load.
    #[serde(flatten)]
    pub load: LoadPoint,
    /// The metrics.
    #[serde(flatten)]
    pub metrics: PointMetrics,
    /// USD per million output tokens (when priced and some tokens came out).
    #[serde(default)]
    pub usd_per_million_output_tokens: Option<f64>,
    /// USD per million prompt plus output tokens.
    #[serde(default)]
    pub usd_per_million_total_tokens: Option<f64>,
    /// Up to five failure descriptions, for debugging.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample_errors: Vec<String>,
}

/// A whole result file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Name of the line in reports (`--label`, default `backend model`).
    pub label: String,
    /// The tool.
    pub tool: Tool,
    /// UTC time the run started, RFC 3339.
    pub started_at: String,
    /// The client machine.
    pub machine: Machine,
    /// The server.
    pub server: Server,
    /// The workload.
    pub workload: WorkloadInfo,
    /// Goodput objectives (empty: goodput not computed).
    pub slo: Slo,
    /// Pricing, when given.
    pub pricing: Option<Pricing>,
    /// Free-form notes (`--note`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
    /// The load points, in the order run.
    pub points: Vec<PointResult>,
}

impl BenchResult {
    /// Reads and checks a result file.
    pub fn load(path: &Path) -> Result<BenchResult> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let r: BenchResult = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a bench serve result", path.display()))?;
        if r.schema != SCHEMA {
            bail!(
                "{}: schema '{}', expected '{SCHEMA}'",
                path.display(),
                r.schema
            );
        }
        Ok(r)
    }

    /// Writes the file (pretty JSON).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// RFC 3339 UTC timestamp of now.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// RFC 3339 UTC timestamp of Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn machine_detects_something() {
        let m = Machine::detect();
        assert!(m.logical_cpus >= 1 && m.physical_cores >= 1);
        assert!(!m.os.is_empty());
    }
}
