//! `switchyard bench engine`: offline throughput of the continuous-batching engine, no HTTP.
//! Seeded random-token prompts, greedy decoding with `ignore_eos`, a sweep over the number of
//! concurrent clients; reports requests/s, output and total tokens/s, TTFT and time per token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use switchyard_runtime::engine::{EngineConfig, EngineHandle, EngineRequest, KvCacheSize};
use switchyard_runtime::tokenizer::Tokenizer;

#[derive(Args)]
pub(crate) struct BenchEngineArgs {
    #[command(flatten)]
    model: crate::ModelArgs,
    /// Prompt tokens per request (random tokens).
    #[arg(long, default_value_t = 128)]
    input_len: usize,
    /// Generated tokens per request (EOS is ignored).
    #[arg(long, default_value_t = 128)]
    output_len: usize,
    /// Requests per sweep point (default: 2 × concurrency, at least 4).
    #[arg(long)]
    num_requests: Option<usize>,
    /// Concurrent clients; a comma-separated list runs a sweep (e.g. 1,4,16,64).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Token budget of one engine step.
    #[arg(long, default_value_t = 512)]
    max_num_batched_tokens: usize,
    /// KV cache blocks (default: sized for the largest concurrency).
    #[arg(long, conflicts_with = "kv_cache_memory")]
    num_blocks: Option<usize>,
    /// KV cache size in bytes (`64MiB`) or as a fraction of free memory (`0.5`); default: sized
    /// for the largest concurrency.
    #[arg(long)]
    kv_cache_memory: Option<String>,
    /// One block table of all layers even for sliding-window models (to compare).
    #[arg(long)]
    disable_sliding_window_kv: bool,
    /// Speculative decoding config (vLLM's JSON shape; see `serve --speculative-config`).
    #[arg(long)]
    speculative_config: Option<String>,
    /// Seed of the random prompts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run on a stand-in backend instead of `--device`: it computes nothing and takes this many
    /// milliseconds of device time per step (the model gives only its tokenizer and shape; its
    /// weights are not read). Reports the ideal `sequences / step time` and the fraction the
    /// engine reaches.
    #[arg(long, value_name = "MS")]
    standin_step_ms: Option<f64>,
    /// How the stand-in waits out a step: spin (as a CUDA stream synchronize does by default)
    /// or sleep.
    #[arg(long, value_enum, default_value = "spin", requires = "standin_step_ms")]
    standin_wait: crate::standin::Wait,
}

/// One request's measurements.
struct Sample {
    ttft: Duration,
    latency: Duration,
    output_tokens: usize,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `len` random non-special tokens (after BOS when the model adds one), seeded.
fn random_prompt(tok: &Tokenizer, seed: u64, len: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = tok.bos.filter(|_| tok.add_bos).into_iter().collect();
    let mut state = seed;
    while ids.len() < len {
        state = splitmix(state);
        let id = (state % tok.vocab_size as u64) as u32;
        if !tok.is_special(id) {
            ids.push(id);
        }
    }
    ids
}

/// Runs `n` requests through `c` client threads; returns per-request samples and wall time.
fn sweep_point(
    engine: &EngineHandle,
    prompts: Vec<Vec<u32>>,
    output_len: usize,
    c: usize,
) -> Result<(Vec<Sample>, Duration, usize)> {
    let prompts = Arc::new(prompts);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..c)
        .map(|_| {
            let (engine, prompts, next) = (engine.clone(), prompts.clone(), next.clone());
            std::thread::spawn(move || -> Result<Vec<Sample>> {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = prompts.get(i) else {
                        return Ok(out);
                    };
                    let req = EngineRequest {
                        ignore_eos: true,
                        ..EngineRequest::new(p.clone(), output_len)
                    };
                    let start = Instant::now();
                    let mut stream = engine.submit(req)?;
                    let mut ttft = None;
                    let mut output_tokens = 0;
                    while let Some(item) = stream.blocking_recv() {
                        let o = item?;
                        if !o.token_ids.is_empty() && ttft.is_none() {
                            ttft = Some(start.elapsed());
                        }
                        output_tokens += o.token_ids.len();
                    }
                    let latency = start.elapsed();
                    out.push(Sample {
                        ttft: ttft.unwrap_or(latency),
                        latency,
                        output_tokens,
                    });
                }
            })
        })
        .collect::<Vec<_>>();
    // Sample the engine while the clients run: the most sequences running in one step.
    let mut peak = 0;
    while !clients.iter().all(|h| h.is_finished()) {
        peak = peak.max(engine.stats_blocking()?.num_running);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut samples = Vec::new();
    for h in clients {
        let s = h
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        samples.extend(s);
    }
    Ok((samples, t0.elapsed(), peak))
}

/// Columns of the report.
const HEADERS: [&str; 11] = [
    "concurrency",
    "requests",
    "duration s",
    "req/s",
    "output tok/s",
    "total tok/s",
    "mean TTFT ms",
    "p50 TTFT ms",
    "mean TPOT ms",
    "peak running",
    "preemptions",
];

/// One Markdown table row, each cell right-aligned to its header's width.
fn print_row(cells: &[String]) {
    let line: String = cells
        .iter()
        .zip(HEADERS)
        .map(|(c, h)| format!(" {c:>w$} |", w = h.len()))
        .collect();
    println!("|{line}");
}

fn mean(x: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = x.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// The stand-in's summary of one sweep point: the ideal `sequences / step time`, what the
/// engine reached, and where the time went (steps, mean forward call, host time between them).
fn standin_line(
    step_ms: f64,
    wait: crate::standin::Wait,
    seqs: usize,
    out_tokens: usize,
    wall: Duration,
    (greedy0, logits0, busy0): (u64, u64, u64),
    (greedy1, logits1, busy1): (u64, u64, u64),
) -> String {
    let secs = wall.as_secs_f64();
    let achieved = out_tokens as f64 / secs;
    let ideal = if step_ms > 0.0 {
        let ideal = seqs as f64 * 1e3 / step_ms;
        format!(
            "ideal {ideal:.0} tok/s, achieved {achieved:.0} tok/s ({:.1}%)",
            100.0 * achieved / ideal
        )
    } else {
        format!("achieved {achieved:.0} tok/s")
    };
    let greedy = greedy1 - greedy0;
    let steps = greedy + logits1 - logits0;
    let busy = (busy1 - busy0) as f64 / 1e9;
    let per_step = |s: f64| 1e3 * s / steps.max(1) as f64;
    format!(
        "standin: step {step_ms:.1} ms ({}), {seqs} seqs, {ideal} | {steps} steps ({greedy} \
         with the device argmax), forward {:.3} ms mean, host {:.3} ms per step between forwards",
        wait.name(),
        per_step(busy),
        per_step((secs - busy).max(0.0)),
    )
}

pub(crate) fn run(a: BenchEngineArgs) -> Result<()> {
    anyhow::ensure!(
        a.input_len >= 1 && a.output_len >= 1,
        "--input-len and --output-len must be at least 1"
    );
    anyhow::ensure!(
        !a.concurrency.is_empty() && a.concurrency.iter().all(|&c| c >= 1),
        "--concurrency must list numbers >= 1"
    );
    let threads = crate::init_threads(a.model.threads)?;
    let model = crate::load_model(&a.model)?;
    let (backend, standin) = match a.standin_step_ms {
        Some(ms) => {
            anyhow::ensure!(
                ms.is_finite() && (0.0..=10_000.0).contains(&ms),
                "--standin-step-ms must be between 0 and 10000"
            );
            let s = crate::standin::StandIn::new(
                &model.config,
                crate::standin::ordinary_tokens(&model.tokenizer, model.config.vocab_size),
                Duration::from_secs_f64(ms / 1e3),
                a.standin_wait,
            )?;
            let stats = s.stats();
            (
                Box::new(s) as Box<dyn switchyard_core::Backend>,
                Some((ms, stats)),
            )
        }
        None => (crate::device::create_backend(a.model.device, &model)?, None),
    };
    let caps = backend.capabilities();
    let max_c = *a.concurrency.iter().max().expect("not empty");
    let max_len = a.input_len + a.output_len;
    let kv_cache = match (&a.kv_cache_memory, a.num_blocks) {
        (Some(s), _) => crate::serve::parse_kv(s)?,
        (None, Some(n)) => KvCacheSize::Blocks(n),
        (None, None) => KvCacheSize::Auto,
    };
    let config = EngineConfig {
        kv_cache,
        max_num_batched_tokens: a.max_num_batched_tokens,
        max_num_seqs: max_c,
        max_model_len: Some(max_len),
        sliding_window_kv: !a.disable_sliding_window_kv,
        speculative: crate::serve::parse_speculative(a.speculative_config.as_deref())?,
        ..EngineConfig::default()
    };
    let draft = crate::device::open_draft(config.speculative.as_ref(), &a.model, &model)?;
    let draft = crate::device::load_draft(draft, a.model.device, caps.kind)?;
    let tokenizer = Arc::new(model.tokenizer);
    let engine =
        EngineHandle::start_with_draft(backend, tokenizer.clone(), &model.config, config, draft)
            .context("starting the engine")?;
    let info = engine.info().clone();
    let name = model.path.file_name().unwrap_or_default().to_string_lossy();
    println!(
        "model {name} | backend {} ({}), {threads} threads | kv {} blocks x {} tokens, {} \
         KV groups, {:.1} MiB, max concurrency {:.2} | step budget {} tokens | input {} output {}",
        caps.kind,
        caps.device_name,
        info.num_blocks,
        info.block_size,
        info.num_kv_groups,
        (info.num_blocks * info.bytes_per_block) as f64 / (1 << 20) as f64,
        info.max_concurrency(),
        info.max_num_batched_tokens,
        a.input_len,
        a.output_len
    );
    if info.draft_num_blocks > 0 {
        println!(
            "draft model kv {} blocks x {} tokens, {:.1} MiB",
            info.draft_num_blocks,
            info.block_size,
            (info.draft_num_blocks * info.draft_bytes_per_block) as f64 / (1 << 20) as f64
        );
    }
    // Warm-up: pages the weights in and touches the code paths once.
    engine
        .submit(EngineRequest {
            ignore_eos: true,
            ..EngineRequest::new(random_prompt(&tokenizer, u64::MAX, 16), 4)
        })?
        .collect_blocking()?;

    print_row(&HEADERS.map(String::from));
    let rule: String = HEADERS
        .iter()
        .map(|h| "-".repeat(h.len() + 2) + "|")
        .collect();
    println!("|{rule}");
    let mut standin_lines = Vec::new();
    for (run, &c) in a.concurrency.iter().enumerate() {
        let n = a.num_requests.unwrap_or((2 * c).max(4));
        // Fresh prompts per sweep point: no prefix-cache hits across points.
        let prompts: Vec<Vec<u32>> = (0..n)
            .map(|i| {
                random_prompt(
                    &tokenizer,
                    splitmix(a.seed ^ ((run as u64) << 32) ^ i as u64),
                    a.input_len,
                )
            })
            .collect();
        let before = engine.stats_blocking()?;
        let device_before = standin.as_ref().map(|(_, s)| s.snapshot());
        let (samples, wall, peak) = sweep_point(&engine, prompts, a.output_len, c)?;
        let after = engine.stats_blocking()?;
        let secs = wall.as_secs_f64();
        let out_tokens: usize = samples.iter().map(|s| s.output_tokens).sum();
        let mut ttfts: Vec<f64> = samples.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect();
        ttfts.sort_by(f64::total_cmp);
        let tpot = mean(
            samples
                .iter()
                .filter(|s| s.output_tokens > 1)
                .map(|s| (s.latency - s.ttft).as_secs_f64() * 1e3 / (s.output_tokens - 1) as f64),
        );
        print_row(&[
            c.to_string(),
            n.to_string(),
            format!("{secs:.2}"),
            format!("{:.3}", n as f64 / secs),
            format!("{:.1}", out_tokens as f64 / secs),
            format!("{:.1}", (n * a.input_len + out_tokens) as f64 / secs),
            format!("{:.0}", mean(ttfts.iter().copied())),
            format!("{:.0}", ttfts[ttfts.len() / 2]),
            format!("{tpot:.1}"),
            peak.to_string(),
            (after.num_preemptions - before.num_preemptions).to_string(),
        ]);
        if let (Some((ms, stats)), Some(b)) = (&standin, device_before) {
            standin_lines.push(standin_line(
                *ms,
                a.standin_wait,
                c.min(n),
                out_tokens,
                wall,
                b,
                stats.snapshot(),
            ));
        }
    }
    engine.shutdown();
    if !standin_lines.is_empty() {
        println!();
    }
    for line in standin_lines {
        println!("{line}");
    }
    Ok(())
}
