//! Presenting results: the terminal table, and `bench report`'s markdown and SVG plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::result::{BenchResult, PointResult};
use crate::runner::Mode;
use crate::workload::Dataset;

/// Formats a number with `prec` decimals, or `-` when absent / not finite.
fn f(x: Option<f64>, prec: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.prec$}"),
        _ => "-".into(),
    }
}

/// An aligned markdown table (also readable in a terminal).
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let n = headers.len();
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i].saturating_sub(c.chars().count());
            if i == 0 {
                let _ = write!(s, " {c}{} |", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{c} |", " ".repeat(pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    let mut sep = String::from("|");
    for (i, wi) in w.iter().enumerate() {
        let dashes = "-".repeat((*wi).max(3));
        if i == 0 {
            let _ = write!(sep, " {dashes} |");
        } else {
            let _ = write!(sep, " {}: |", &dashes[1..]);
        }
    }
    out.push_str(&sep);
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// The per-point table of one result.
pub fn points_table(r: &BenchResult) -> String {
    let priced = r.pricing.is_some();
    let good = !r.slo.is_empty();
    let mut headers = vec![
        "point",
        "ok",
        "fail",
        "req/s",
        "out tok/s",
        "total tok/s",
        "TTFT p50/p90/p99 ms",
        "TPOT p50/p99 ms",
        "ITL p50/p90/p99 ms",
        "E2EL p50/p99 ms",
    ];
    if good {
        headers.push("goodput req/s");
    }
    if priced {
        headers.push("$/M out tok");
    }
    let rows: Vec<Vec<String>> = r
        .points
        .iter()
        .map(|p| {
            let m = &p.metrics;
            let mut row = vec![
                p.load.name(),
                m.completed.to_string(),
                m.failed.to_string(),
                f(Some(m.request_throughput), 2),
                f(Some(m.output_throughput), 1),
                f(Some(m.total_token_throughput), 1),
                format!(
                    "{} / {} / {}",
                    f(Some(m.ttft_ms.median), 1),
                    f(Some(m.ttft_ms.p90), 1),
                    f(Some(m.ttft_ms.p99), 1)
                ),
                format!(
                    "{} / {}",
                    f(Some(m.tpot_ms.median), 2),
                    f(Some(m.tpot_ms.p99), 2)
                ),
                format!(
                    "{} / {} / {}",
                    f(Some(m.itl_ms.median), 2),
                    f(Some(m.itl_ms.p90), 2),
                    f(Some(m.itl_ms.p99), 2)
                ),
                format!(
                    "{} / {}",
                    f(Some(m.e2el_ms.median), 0),
                    f(Some(m.e2el_ms.p99), 0)
                ),
            ];
            if good {
                row.push(f(Some(m.request_goodput), 2));
            }
            if priced {
                row.push(f(p.usd_per_million_output_tokens, 3));
            }
            row
        })
        .collect();
    let mut s = render_table(&headers, &rows);
    for p in &r.points {
        if !p.metrics.errors.is_empty() {
            let e: Vec<String> = p
                .metrics
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(s, "errors at {}: {}", p.load.name(), e.join(", "));
        }
    }
    s
}

fn describe(r: &BenchResult) -> String {
    let w = &r.workload;
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- server: {} at {}{}, model `{}`",
        r.server.backend, r.server.base_url, r.server.endpoint, r.server.model
    );
    let gpus = if m.gpus.is_empty() {
        String::new()
    } else {
        format!(", GPUs: {}", m.gpus.join(", "))
    };
    let _ = writeln!(
        s,
        "- client machine: {} ({} cores, {} logical CPUs, {} GiB){gpus}",
        m.cpu_model, m.physical_cores, m.logical_cpus, m.memory_gib
    );
    let _ = writeln!(
        s,
        "- tool: {} {} (commit {}), started {}",
        r.tool.name, r.tool.version, r.tool.git_commit, r.started_at
    );
    let dataset = match &w.dataset {
        Dataset::Random => "random tokens".to_string(),
        Dataset::SharedPrefix {
            num_groups,
            prefix_len,
        } => format!("shared prefix ({num_groups} groups x {prefix_len}-token prefix)"),
        Dataset::Jsonl { path } => format!("prompts from {path}"),
        Dataset::Bundled => "bundled prompt set".to_string(),
        Dataset::CodeEdit => "code-edit prompt set".to_string(),
        Dataset::SummarizeQuotes => "summarize-quotes prompt set".to_string(),
    };
    let amount = match (w.num_prompts, w.duration_s) {
        (Some(n), _) => format!("{n} requests per point"),
        (None, Some(d)) => format!("{d} s per point"),
        _ => String::new(),
    };
    let input = w
        .input_len
        .map_or_else(|| "the prompts' own".to_string(), |l| l.to_string());
    let output = if w.per_prompt_output_len {
        format!("each prompt's own (else {})", w.output_len)
    } else {
        w.output_len.to_string()
    };
    let _ = writeln!(
        s,
        "- workload: {dataset}, input {input} tokens, output {output} tokens, ignore_eos {}, tokenizer {}, {amount}, {} warm-up, seed {}",
        w.ignore_eos,
        w.tokenizer.as_deref().unwrap_or("none (random words)"),
        w.warmup_requests,
        w.seed
    );
    let _ = writeln!(
        s,
        "- sampling: temperature {}{}",
        w.temperature.map_or_else(
            || "not sent (server default)".to_string(),
            |t| t.to_string()
        ),
        w.extra_body
            .as_deref()
            .map_or_else(String::new, |e| format!(", extra body {e}"))
    );
    if !r.slo.is_empty() {
        let slos: Vec<String> = [
            ("ttft", r.slo.ttft_ms),
            ("tpot", r.slo.tpot_ms),
            ("e2el", r.slo.e2el_ms),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} <= {v} ms")))
        .collect();
        let _ = writeln!(s, "- goodput SLO: {}", slos.join(", "));
    }
    if let Some(p) = &r.pricing {
        let _ = writeln!(
            s,
            "- pricing: {} USD/h{}, {}{}",
            p.usd_per_hour,
            p.instance
                .as_ref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default(),
            p.basis,
            p.source
                .as_ref()
                .map(|u| format!(", {u}"))
                .unwrap_or_default()
        );
    }
    for (k, v) in &r.notes {
        let _ = writeln!(s, "- {k}: {v}");
    }
    s
}

/// The x value of a point on the plots: concurrency (closed loop) or request rate (open).
fn x_of(p: &PointResult, open: bool) -> Option<f64> {
    if open {
        p.load.request_rate
    } else {
        p.load.concurrency.map(|c| c as f64)
    }
}

type Series = Vec<(String, Vec<(f64, f64)>)>;

fn series(results: &[BenchResult], open: bool, y: impl Fn(&PointResult) -> f64) -> Series {
    results
        .iter()
        .map(|r| {
            let mut pts: Vec<(f64, f64)> = r
                .points
                .iter()
                .filter(|p| (p.load.mode == Mode::Open) == open)
                .filter_map(|p| Some((x_of(p, open)?, y(p))))
                .filter(|(x, y)| *x > 0.0 && y.is_finite())
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (r.label.clone(), pts)
        })
        .collect()
}

/// Draws line charts side by side into one SVG: one panel per (title, series), x on a log
/// scale, one line per result file.
fn plot_panels(path: &Path, x_desc: &str, panels: &[(&str, &str, Series)]) -> Result<()> {
    let width = 520 * panels.len() as u32;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, (title, y_desc, ser)) in areas.iter().zip(panels) {
        let mut ticks: Vec<f64> = ser
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.0))
            .collect();
        ticks.sort_by(|a, b| a.total_cmp(b));
        ticks.dedup();
        let (xmin, xmax) = ticks
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
        let (xmin, xmax) = if xmin.is_finite() {
            (xmin / 1.5, xmax * 1.5)
        } else {
            (0.5, 2.0)
        };
        let ymax = ser
            .iter()
            .flat_map(|(_, p)| p.iter().map(|q| q.1))
            .fold(0f64, f64::max);
        // Headroom for the legend in the upper left: the data stays below it (about 20 px
        // per line in a plot area of about 320 px), so no point hides behind it.
        let legend = ((20 * ser.len() + 16) as f64 / 320.0).min(0.6);
        let ymax = if ymax > 0.0 {
            ymax / (1.0 - legend - 0.05)
        } else {
            1.0
        };
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((xmin..xmax).log_scale().with_key_points(ticks), 0f64..ymax)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(*y_desc)
            .max_light_lines(0)
            .x_label_formatter(&|x| format!("{x}"))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (i, (name, pts)) in ser.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Writes `report.md`, `throughput.svg`, `ttft.svg` and `itl.svg` into `out`; returns the
/// paths written.
pub fn write_report(files: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(!files.is_empty(), "no result files given");
    let mut results: Vec<BenchResult> = files
        .iter()
        .map(|p| BenchResult::load(p))
        .collect::<Result<_>>()?;
    // Lines need distinct names: add the file name to repeated labels.
    let labels: Vec<String> = results.iter().map(|r| r.label.clone()).collect();
    for (r, path) in results.iter_mut().zip(files) {
        if labels.iter().filter(|l| **l == r.label).count() > 1 {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            r.label = format!("{} ({name})", r.label);
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let open = results
        .iter()
        .flat_map(|r| r.points.first())
        .next()
        .is_some_and(|p| p.load.mode == Mode::Open);
    let x_desc = if open {
        "request rate (req/s)"
    } else {
        "concurrency"
    };
    let mut written = Vec::new();

    let tp = out.join("throughput.svg");
    plot_panels(
        &tp,
        x_desc,
        &[
            (
                "Output token throughput",
                "tokens/s",
                series(&results, open, |p| p.metrics.output_throughput),
            ),
            (
                "Total token throughput",
                "tokens/s",
                series(&results, open, |p| p.metrics.total_token_throughput),
            ),
            (
                "Request throughput",
                "requests/s",
                series(&results, open, |p| p.metrics.request_throughput),
            ),
        ],
    )?;
    written.push(tp);
    for (file, name, get) in [
        (
            "ttft.svg",
            "TTFT",
            (|p: &PointResult| p.metrics.ttft_ms) as fn(&PointResult) -> _,
        ),
        ("itl.svg", "ITL", |p: &PointResult| p.metrics.itl_ms),
    ] {
        let path = out.join(file);
        plot_panels(
            &path,
            x_desc,
            &[
                (
                    &format!("{name} median"),
                    "ms",
                    series(&results, open, |p| get(p).median),
                ),
                (
                    &format!("{name} p90"),
                    "ms",
                    series(&results, open, |p| get(p).p90),
                ),
                (
                    &format!("{name} p99"),
                    "ms",
                    series(&results, open, |p| get(p).p99),
                ),
            ],
        )?;
        written.push(path);
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Serving benchmark report\n");
    let _ = writeln!(
        md,
        "{} result file(s); metrics are named and defined as in `vllm bench serve` (see \
         benches/README.md). Latencies in ms; throughputs per second of wall time.\n",
        results.len()
    );
    // Side by side: output throughput per x value.
    let mut xs: Vec<f64> = results
        .iter()
        .flat_map(|r| r.points.iter().filter_map(|p| x_of(p, open)))
        .collect();
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.dedup();
    if results.len() > 1 && !xs.is_empty() {
        let _ = writeln!(md, "## Side by side: output tokens/s (TTFT p50 ms)\n");
        let mut headers = vec![x_desc.to_string()];
        headers.extend(results.iter().map(|r| r.label.clone()));
        let rows: Vec<Vec<String>> = xs
            .iter()
            .map(|x| {
                let mut row = vec![format!("{x}")];
                for r in &results {
                    let p = r.points.iter().find(|p| x_of(p, open) == Some(*x));
                    row.push(match p {
                        Some(p) => format!(
                            "{} ({})",
                            f(Some(p.metrics.output_throughput), 1),
                            f(Some(p.metrics.ttft_ms.median), 1)
                        ),
                        None => "-".into(),
                    });
                }
                row
            })
            .collect();
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        md.push_str(&render_table(&h, &rows));
        md.push('\n');
    }
    let _ = writeln!(md, "## Plots\n");
    let _ = writeln!(md, "![throughput](throughput.svg)\n");
    let _ = writeln!(md, "![TTFT percentiles](ttft.svg)\n");
    let _ = writeln!(md, "![ITL percentiles](itl.svg)\n");
    for (r, path) in results.iter().zip(files) {
        let _ = writeln!(md, "## {} (`{}`)\n", r.label, path.display());
        md.push_str(&describe(r));
        md.push('\n');
        md.push_str(&points_table(r));
        md.push('\n');
    }
    let mdp = out.join("report.md");
    std::fs::write(&mdp, md).with_context(|| format!("writing {}", mdp.display()))?;
    written.insert(0, mdp);
    Ok(written)
}
