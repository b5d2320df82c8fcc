//! `switchyard bench serve` and `switchyard bench report`: arguments and drivers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::client::{http_client, normalize_base_url, Endpoint, Target};
use crate::cost::Pricing;
use crate::metrics::{compute, Slo};
use crate::report::{points_table, write_report};
use crate::result::{
    now_rfc3339, BenchResult, Machine, PointResult, Server, Tool, WorkloadInfo, SCHEMA,
};
use crate::runner::{run_point, LoadPoint, Stop};
use crate::workload::{Dataset, LenDist, TextSource, Workload};

/// Dataset names for `--dataset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    /// Random-token prompts of `--input-len` tokens.
    Random,
    /// `--num-groups` long prefixes (`--prefix-len`) shared by the requests, plus a random
    /// suffix of `--input-len` tokens.
    SharedPrefix,
    /// Prompts from `--dataset-path` (JSONL: `{"prompt": ..., "output_len": N?}` a line).
    Jsonl,
    /// The bundled prompt set (benches/prompts/switchyard-tasks.jsonl).
    Bundled,
    /// Code editing: a source file in the prompt, returned with a small change
    /// (benches/prompts/code-edit.jsonl; the speculative-decoding workload).
    CodeEdit,
    /// Summaries quoting a passage's exact sentences (benches/prompts/summarize-quotes.jsonl).
    SummarizeQuotes,
}

/// `switchyard bench serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Base URL of the OpenAI-compatible server (with or without `/v1`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base_url: String,
    /// API: /v1/completions or /v1/chat/completions (streamed).
    #[arg(long, default_value = "/v1/completions")]
    pub endpoint: String,
    /// `model` to send (default: the first of the server's /v1/models).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Tokenizer for random prompts and prompt counts: a registry alias, .gguf path, Hugging Face
    /// model directory or Hub repository that is already local (default: try --model; else
    /// random words).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Workload.
    #[arg(long, value_enum, default_value = "random")]
    pub dataset: DatasetName,
    /// JSONL prompt file for --dataset jsonl.
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    /// Prompt tokens: N or MIN:MAX (uniform), default 128. For shared-prefix: the suffix after
    /// the prefix. Not for prompt files (jsonl, bundled), whose prompts have their own lengths.
    #[arg(long)]
    pub input_len: Option<LenDist>,
    /// Output tokens (max_tokens): N or MIN:MAX (uniform), default 128. For prompt files it
    /// replaces each line's own `output_len` when given.
    #[arg(long)]
    pub output_len: Option<LenDist>,
    /// shared-prefix: number of distinct prefixes.
    #[arg(long, default_value_t = 4)]
    pub num_groups: usize,
    /// shared-prefix: tokens per prefix.
    #[arg(long, default_value_t = 512)]
    pub prefix_len: usize,
    /// Send `ignore_eos: true` so outputs run to max_tokens (vLLM, llama-server; OpenAI's API
    /// rejects it: pass false there).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ignore_eos: bool,
    /// Sampling temperature to send (default: the server's).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Extra JSON object merged into every request body, e.g. '{"top_k": 1}'.
    #[arg(long)]
    pub extra_body: Option<String>,
    /// Closed loop: comma-separated client counts, one point each. With --request-rate: the
    /// cap on requests in flight.
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Open loop: comma-separated Poisson request rates (req/s, `inf` = all at once), one
    /// point each.
    #[arg(long, value_delimiter = ',')]
    pub request_rate: Vec<f64>,
    /// Requests per point (default 100 unless --duration).
    #[arg(long)]
    pub num_prompts: Option<u64>,
    /// Seconds per point instead of a request count.
    #[arg(long, conflicts_with = "num_prompts")]
    pub duration: Option<f64>,
    /// Warm-up requests before the first point (not measured).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Seed for prompts and arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Goodput objectives, e.g. ttft:500ms,tpot:50ms (also e2el).
    #[arg(long)]
    pub slo: Option<String>,
    /// Price of the serving machine, USD per hour (for $ per million tokens).
    #[arg(long)]
    pub price_per_hour: Option<f64>,
    /// Instance from benches/instances.toml (list prices), e.g. aws:g6.xlarge.
    #[arg(long)]
    pub instance: Option<String>,
    /// Write the JSON result here.
    #[arg(long)]
    pub result_file: Option<PathBuf>,
    /// Name of this run in reports (default: "BACKEND MODEL").
    #[arg(long)]
    pub label: Option<String>,
    /// Backend name to record (default: detected from /v1/models owned_by or Server header).
    #[arg(long)]
    pub backend: Option<String>,
    /// Free-form KEY=VALUE notes recorded in the result (repeatable).
    #[arg(long = "note")]
    pub notes: Vec<String>,
    /// API key (sent as a bearer token).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `switchyard bench report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Result files of `bench serve`, one line each in the plots.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output directory for report.md and the SVG plots.
    #[arg(long, short, default_value = "bench-report")]
    pub out: PathBuf,
}

fn load_points(a: &ServeArgs) -> Result<Vec<LoadPoint>> {
    if a.request_rate.is_empty() {
        let cs = if a.concurrency.is_empty() {
            vec![1]
        } else {
            a.concurrency.clone()
        };
        if cs.contains(&0) {
            bail!("--concurrency values must be >= 1");
        }
        return Ok(cs.into_iter().map(LoadPoint::closed).collect());
    }
    let mut pts = Vec::new();
    for &r in &a.request_rate {
        if r.is_nan() || r <= 0.0 {
            bail!("--request-rate values must be > 0 (or inf)");
        }
        if a.concurrency.is_empty() {
            if r.is_infinite() && a.duration.is_some() {
                bail!("--request-rate inf with --duration needs a --concurrency cap");
            }
            pts.push(LoadPoint::open(r, None));
        } else {
            for &c in &a.concurrency {
                pts.push(LoadPoint::open(r, Some(c.max(1))));
            }
        }
    }
    Ok(pts)
}

fn parse_notes(notes: &[String]) -> Result<BTreeMap<String, String>> {
    notes
        .iter()
        .map(|n| {
            n.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("--note '{n}': expected KEY=VALUE"))
        })
        .collect()
}

/// Runs `bench serve`: prints the table, writes the result file when asked, returns the result.
pub fn run_serve(a: ServeArgs) -> Result<BenchResult> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(serve(a))
}

async fn serve(a: ServeArgs) -> Result<BenchResult> {
    let endpoint = Endpoint::parse(&a.endpoint)?;
    let points = load_points(&a)?;
    let slo = match &a.slo {
        Some(s) => Slo::parse(s)?,
        None => Slo::default(),
    };
    let pricing = Pricing::from_args(a.price_per_hour, a.instance.as_deref())?;
    let notes = parse_notes(&a.notes)?;
    let extra_body = match &a.extra_body {
        Some(s) => {
            match serde_json::from_str::<serde_json::Value>(s).context("--extra-body: not JSON")? {
                serde_json::Value::Object(m) => m,
                _ => bail!("--extra-body must be a JSON object"),
            }
        }
        None => Default::default(),
    };
    if a.timeout.is_nan() || a.timeout <= 0.0 {
        bail!("--timeout must be > 0");
    }
    let stop = match (a.num_prompts, a.duration) {
        (_, Some(d)) if d > 0.0 => Stop::Duration(Duration::from_secs_f64(d)),
        (_, Some(_)) => bail!("--duration must be > 0"),
        (Some(0), _) => bail!("--num-prompts must be >= 1"),
        (n, None) => Stop::Requests(n.unwrap_or(100)),
    };
    let base_url = normalize_base_url(&a.base_url);
    let client = http_client(Duration::from_secs_f64(a.timeout))?;
    let mut target = Target {
        client,
        base_url: base_url.clone(),
        endpoint,
        model: a.model.clone().unwrap_or_default(),
        api_key: a.api_key.clone(),
        ignore_eos: a.ignore_eos,
        temperature: a.temperature,
        extra_body,
    };
    // Ask the server what it serves (also a reachability check when --model is not given).
    let probe = target.probe_models().await;
    let (detected_backend, first_model) = match &probe {
        Ok((ids, owned_by, server)) => (
            owned_by.clone().or_else(|| server.clone()),
            ids.first().cloned(),
        ),
        Err(_) => (None, None),
    };
    if a.model.is_none() {
        match (first_model, probe) {
            (Some(m), _) => target.model = m,
            (None, Err(e)) => bail!("--model not given and {base_url}/v1/models failed: {e}"),
            (None, Ok(_)) => bail!("--model not given and {base_url}/v1/models lists none"),
        }
    }
    let backend = a
        .backend
        .clone()
        .or(detected_backend)
        .unwrap_or_else(|| "unknown".into());

    // Prompts: a real tokenizer when one is local.
    let (source, tokenizer) = {
        let candidates: Vec<String> = match &a.tokenizer {
            Some(t) => vec![t.clone()],
            None => a.model.iter().cloned().collect(),
        };
        let mut found = (TextSource::Words, None);
        for c in candidates {
            match TextSource::from_model(&c) {
                Ok(s) => {
                    found = (s, Some(c));
                    break;
                }
                Err(e) if a.tokenizer.is_some() => {
                    return Err(e.context(format!("--tokenizer {c}")));
                }
                Err(_) => {}
            }
        }
        found
    };
    if tokenizer.is_none() && matches!(a.dataset, DatasetName::Random | DatasetName::SharedPrefix) {
        eprintln!(
            "note: no local tokenizer for '{}' (use --tokenizer ALIAS|FILE.gguf); prompts are \
             random words, and prompt token counts come from the server's usage",
            target.model
        );
    }
    let dataset = match a.dataset {
        DatasetName::Random => Dataset::Random,
        DatasetName::SharedPrefix => Dataset::SharedPrefix {
            num_groups: a.num_groups,
            prefix_len: a.prefix_len,
        },
        DatasetName::Jsonl => Dataset::Jsonl {
            path: a
                .dataset_path
                .as_ref()
                .context("--dataset jsonl needs --dataset-path")?
                .to_string_lossy()
                .into_owned(),
        },
        DatasetName::Bundled => Dataset::Bundled,
        DatasetName::CodeEdit => Dataset::CodeEdit,
        DatasetName::SummarizeQuotes => Dataset::SummarizeQuotes,
    };
    let from_file = matches!(
        a.dataset,
        DatasetName::Jsonl
            | DatasetName::Bundled
            | DatasetName::CodeEdit
            | DatasetName::SummarizeQuotes
    );
    if from_file && a.input_len.is_some() {
        bail!(
            "--input-len does not apply to --dataset {}: its prompts have their own lengths \
             (use --dataset random or shared-prefix for a set prompt length)",
            a.dataset
                .to_possible_value()
                .map_or("?".into(), |v| v.get_name().to_string())
        );
    }
    let default_len: LenDist = "128".parse().expect("a length");
    let input_len = (!from_file).then(|| a.input_len.unwrap_or(default_len));
    let output_len = a.output_len.unwrap_or(default_len);
    let per_prompt_output_len = from_file && a.output_len.is_none();
    let mut workload = Workload::new(
        dataset.clone(),
        input_len.unwrap_or(default_len),
        output_len,
        a.seed,
        source,
    )?;
    if !per_prompt_output_len {
        workload.use_output_len_for_all();
    }
    let workload = Arc::new(workload);
    let target = Arc::new(target);
    let started_at = now_rfc3339();
    let show = !a.no_progress;

    if a.warmup > 0 {
        eprintln!("warming up with {} request(s)...", a.warmup);
        let (outs, _) = run_point(
            target.clone(),
            workload.clone(),
            LoadPoint::closed(a.warmup.min(4)),
            Stop::Requests(a.warmup as u64),
            1 << 40,
            a.seed,
            false,
        )
        .await;
        if let Some(bad) = outs.iter().find(|o| !o.success) {
            if outs.iter().all(|o| !o.success) {
                bail!(
                    "every warm-up request failed ({}: {}); check --base-url, --endpoint and --model",
                    bad.error.as_deref().unwrap_or("?"),
                    bad.error_detail.as_deref().unwrap_or("")
                );
            }
        }
    }

    let mut results = Vec::new();
    for (k, point) in points.iter().enumerate() {
        let (outs, dur) = run_point(
            target.clone(),
            workload.clone(),
            *point,
            stop,
            (k as u64 + 1) << 32, // fresh prompts per point: no cross-point prefix-cache hits
            a.seed.wrapping_add(k as u64),
            show,
        )
        .await;
        let metrics = compute(&outs, dur, &slo);
        let sample_errors = outs
            .iter()
            .filter(|o| !o.success)
            .take(5)
            .map(|o| {
                format!(
                    "{}: {}",
                    o.error.as_deref().unwrap_or("?"),
                    o.error_detail.as_deref().unwrap_or("")
                )
            })
            .collect();
        let p = PointResult {
            load: *point,
            usd_per_million_output_tokens: pricing
                .as_ref()
                .and_then(|p| p.usd_per_million(metrics.output_throughput)),
            usd_per_million_total_tokens: pricing
                .as_ref()
                .and_then(|p| p.usd_per_million(metrics.total_token_throughput)),
            metrics,
            sample_errors,
        };
        eprintln!(
            "{}: {} ok, {} failed, {:.1} output tok/s, TTFT p50 {:.1} ms, ITL p50 {:.2} ms",
            point.name(),
            p.metrics.completed,
            p.metrics.failed,
            p.metrics.output_throughput,
            p.metrics.ttft_ms.median,
            p.metrics.itl_ms.median
        );
        results.push(p);
    }

    let result = BenchResult {
        schema: SCHEMA.into(),
        label: a
            .label
            .clone()
            .unwrap_or_else(|| format!("{backend} {}", target.model)),
        tool: Tool::current(),
        started_at,
        machine: Machine::detect(),
        server: Server {
            base_url,
            endpoint: endpoint.path().into(),
            backend,
            model: target.model.clone(),
        },
        workload: WorkloadInfo {
            dataset,
            input_len,
            output_len,
            per_prompt_output_len,
            ignore_eos: a.ignore_eos,
            seed: a.seed,
            tokenizer,
            num_prompts: match stop {
                Stop::Requests(n) => Some(n),
                Stop::Duration(_) => None,
            },
            duration_s: a.duration,
            warmup_requests: a.warmup,
            temperature: a.temperature,
            extra_body: a.extra_body.clone(),
        },
        slo,
        pricing,
        notes,
        points: results,
    };
    println!("\n{} ({})", result.label, result.server.base_url);
    print!("{}", points_table(&result));
    if let Some(p) = &a.result_file {
        result.save(p)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(result)
}

/// Runs `bench report`.
pub fn run_report(a: ReportArgs) -> Result<()> {
    for p in write_report(&a.files, &a.out)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}
