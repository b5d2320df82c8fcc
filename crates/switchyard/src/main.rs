//! The `switchyard` binary: `serve`, `generate`, `info`, `fetch` and `bench` (engine, serve, report).

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use switchyard_core::{Backend, SamplingParams};
use switchyard_runtime::{generate, registry, Model};

mod bench_engine;
mod device;
mod progress;
mod serve;
mod standin;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "LLM inference server: one binary for CPUs and GPUs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log format on stderr: text or json. Level: SWITCHYARD_LOG (e.g. `info`,
    /// `switchyard_http=debug`); default `info` for serve, `warn` otherwise.
    #[arg(long, global = true, env = "SWITCHYARD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the model over an OpenAI-compatible HTTP API (default http://127.0.0.1:8080).
    Serve(Box<serve::ServeArgs>),
    /// Generate a completion for one prompt; streams only the text to stdout.
    Generate(GenerateArgs),
    /// Print CPU features, backends available, and facts about a model.
    Info(InfoArgs),
    /// Download and verify registry models (or Hub repositories) into the cache.
    Fetch {
        /// Aliases or Hub repositories `org/name[@revision]` (default: the default model).
        aliases: Vec<String>,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Offline throughput of the continuous-batching engine (no HTTP).
    Engine(bench_engine::BenchEngineArgs),
    /// Load-test any OpenAI-compatible server (Switchyard, llama-server, vLLM, ...).
    Serve(Box<switchyard_bench::cli::ServeArgs>),
    /// Markdown report and SVG plots from `bench serve` result files.
    Report(switchyard_bench::cli::ReportArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Model: an alias (see models/), a .gguf path, a manifest .toml, a Hugging Face model
    /// directory, or a Hub repository `org/name[@revision]` (HF_HOME, HF_TOKEN, HF_HUB_OFFLINE).
    #[arg(long, short, env = "SWITCHYARD_MODEL", default_value = registry::DEFAULT_MODEL)]
    model: String,
    /// Worker threads (default: physical cores).
    #[arg(long, env = "SWITCHYARD_THREADS")]
    threads: Option<usize>,
    /// Do not download a registry model that is not cached.
    #[arg(long)]
    no_fetch: bool,
    /// Read the model file into memory instead of memory-mapping it: truncating or rewriting
    /// the file while it is served then cannot fault the process (costs the file's size in RAM).
    #[arg(long, env = "SWITCHYARD_NO_MMAP")]
    no_mmap: bool,
    /// Backend: auto (a GPU when usable, else CPU), cpu, cuda[:N], neuron.
    #[arg(long, env = "SWITCHYARD_DEVICE", default_value = "auto")]
    device: device::Device,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(long, short)]
    prompt: String,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Min-p (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// RNG seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the generated token ids to stderr as well.
    #[arg(long)]
    print_ids: bool,
}

#[derive(Args)]
struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
}

fn init_threads(threads: Option<usize>) -> Result<usize> {
    let n = threads
        .unwrap_or_else(switchyard_core::host::physical_cores)
        .max(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("thread pool")?;
    Ok(n)
}

fn load_model(a: &ModelArgs) -> Result<Model> {
    switchyard_runtime::set_read_into_memory(a.no_mmap);
    Ok(Model::load(&a.model, !a.no_fetch)?)
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    init_threads(a.model.threads)?;
    let t0 = Instant::now();
    let model = load_model(&a.model)?;
    let mut backend = device::create_backend(a.model.device, &model)?;
    let load = t0.elapsed();
    let prompt = model.tokenizer.encode(&a.prompt, true)?;
    if prompt.len() + a.max_tokens > model.config.context_length {
        anyhow::bail!(
            "prompt ({} tokens) + max_tokens ({}) exceeds the model's context length ({})",
            prompt.len(),
            a.max_tokens,
            model.config.context_length
        );
    }
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        seed: a.seed,
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    let mut ids = Vec::new();
    let backend_dyn: &mut dyn Backend = backend.as_mut();
    let stats = generate::generate(
        backend_dyn,
        &model.tokenizer,
        &prompt,
        a.max_tokens,
        params,
        |id, text| {
            ids.push(id);
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        },
    )?;
    let _ = writeln!(out);
    if a.print_ids {
        eprintln!(
            "ids: {:?}",
            ids.iter().filter(|&&i| i != u32::MAX).collect::<Vec<_>>()
        );
    }
    let pp = stats.prompt_tokens as f64 / stats.prefill.as_secs_f64();
    let tg = if stats.completion_tokens > 1 {
        (stats.completion_tokens - 1) as f64 / stats.decode.as_secs_f64()
    } else {
        0.0
    };
    eprintln!(
        "load {:.0} ms | prompt {} tok, {:.1} tok/s | decode {} tok, {:.1} tok/s | first token {:.0} ms after load | finish {:?}",
        load.as_secs_f64() * 1e3,
        stats.prompt_tokens,
        pp,
        stats.completion_tokens,
        tg,
        stats.prefill.as_secs_f64() * 1e3,
        stats.finish
    );
    Ok(())
}

/// The tokenizer as its file names it: GGUF model and pre-tokenizer, or Hugging Face's.
fn tokenizer_kind(model: &switchyard_runtime::Model) -> String {
    use switchyard_runtime::gguf::Value;
    match &model.weights {
        switchyard_runtime::Weights::Gguf(g) => {
            let s = |k: &str| g.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
            match s("tokenizer.ggml.model").as_str() {
                "gpt2" => format!("BPE (gpt2), pre-tokenizer {}", s("tokenizer.ggml.pre")),
                "llama" => format!(
                    "SentencePiece (llama), add_space_prefix {}",
                    model.tokenizer.adds_space_prefix()
                ),
                other => other.to_string(),
            }
        }
        switchyard_runtime::Weights::Hf(_) => "Hugging Face tokenizer.json".into(),
    }
}

fn cmd_info(a: InfoArgs) -> Result<()> {
    let threads = a
        .model
        .threads
        .unwrap_or_else(switchyard_core::host::physical_cores);
    println!("cpu: {}", switchyard_core::host::cpu_name());
    println!(
        "cpu features: {}",
        switchyard_core::host::cpu_features().join(" ")
    );
    println!(
        "threads: {threads} (physical cores {})",
        switchyard_core::host::physical_cores()
    );
    for line in device::describe_backends() {
        println!("backend {line}");
    }
    let model = load_model(&a.model)?;
    let c = &model.config;
    println!("model: {}", model.path.display());
    println!("  architecture: {}", c.arch.gguf_name());
    println!(
        "  size: {:.1} MiB, {:.0}M parameters",
        model.file_size() as f64 / (1 << 20) as f64,
        model.n_params() as f64 / 1e6
    );
    let q: Vec<String> = model
        .quant_types()
        .iter()
        .map(|(t, n)| format!("{t} x{n}"))
        .collect();
    println!("  tensor types: {}", q.join(", "));
    println!(
        "  layers {}, hidden {}, ffn {}, heads {} (kv {}), head dim {}",
        c.n_layers, c.hidden, c.ffn, c.n_heads, c.n_kv_heads, c.head_dim
    );
    if let Some(m) = &c.moe {
        println!(
            "  experts: {} per layer, {} used per token, width {}",
            m.n_expert, m.n_expert_used, m.expert_ffn
        );
    }
    println!("  context length: {}", c.context_length);
    let rs = &c.rope_scaling;
    let mut scaling = match (
        &rs.yarn,
        &rs.longrope,
        &c.rope_freq_factors,
        c.rope_freq_scale,
    ) {
        (Some(y), ..) => format!(
            "yarn, factor {}, original context {}",
            1.0 / c.rope_freq_scale,
            y.original_context
        ),
        (None, Some(lr), ..) => format!(
            "longrope, {} factors (original context {})",
            if c.rope_freq_factors.as_ref() == Some(&lr.long) {
                "long"
            } else {
                "short"
            },
            lr.original_context
        ),
        (None, None, Some(_), _) => "frequency factors (Llama 3.1 style)".to_string(),
        (None, None, None, s) if s != 1.0 => format!("linear, factor {}", 1.0 / s),
        _ => "none".to_string(),
    };
    if rs.attn_factor != 1.0 {
        scaling += &format!(", attention factor {:.4}", rs.attn_factor);
    }
    println!(
        "  rope: base {}{}, {} style, scaling {scaling}",
        c.rope_base,
        if c.rope_base_local != c.rope_base {
            format!(" (sliding layers {})", c.rope_base_local)
        } else {
            String::new()
        },
        if c.arch.rope_neox() {
            "neox"
        } else {
            "interleaved"
        }
    );
    let sliding = c
        .layers
        .iter()
        .filter(|l| matches!(l, switchyard_core::LayerAttention::Sliding { .. }))
        .count();
    if sliding > 0 {
        println!(
            "  attention: {sliding} of {} layers sliding-window",
            c.n_layers
        );
    }
    println!("  vocab: {}", c.vocab_size);
    println!("  tokenizer: {}", tokenizer_kind(&model));
    println!(
        "  chat template: {}",
        if model.tokenizer.chat_template.is_some() {
            "yes"
        } else {
            "no"
        }
    );
    println!("  generation defaults: {}", model.generation.describe());
    let kv_per_token = 2 * c.n_layers * c.kv_dim() * 2;
    println!("  KV cache (f16): {} KiB per token", kv_per_token / 1024);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.cmd, Cmd::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only on a terminal: logs piped to a file or a collector stay plain text.
    let sub = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        sub.json().init();
    } else {
        sub.init();
    }
    registry::set_fetch_progress(Box::new(progress::Bar::new()));
    let r = match cli.cmd {
        Cmd::Serve(a) => serve::run(*a),
        Cmd::Generate(a) => cmd_generate(a),
        Cmd::Info(a) => cmd_info(a),
        Cmd::Bench(BenchCmd::Engine(a)) => bench_engine::run(a),
        Cmd::Bench(BenchCmd::Serve(a)) => switchyard_bench::cli::run_serve(*a).map(|_| ()),
        Cmd::Bench(BenchCmd::Report(a)) => switchyard_bench::cli::run_report(a),
        Cmd::Fetch { aliases } => (|| {
            let aliases = if aliases.is_empty() {
                vec![registry::DEFAULT_MODEL.to_string()]
            } else {
                aliases
            };
            for a in aliases {
                match registry::resolve(&a)? {
                    registry::ModelRef::Manifest(m) => {
                        let p = registry::fetch(&m)?;
                        println!("{}: {}", m.alias, p.display());
                    }
                    registry::ModelRef::Path(p) => println!("{a}: local file {}", p.display()),
                    registry::ModelRef::HfDir(p) => {
                        println!("{a}: local directory {}", p.display())
                    }
                    registry::ModelRef::HfRepo { repo, revision } => {
                        let d =
                            switchyard_runtime::hub::snapshot(&repo, revision.as_deref(), true)?;
                        println!("{a}: {}", d.display());
                    }
                }
            }
            Ok(())
        })(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}
