//! Serving benchmark for any OpenAI-compatible endpoint (Switchyard, llama-server, vLLM, ...):
//! `switchyard bench serve` and `switchyard bench report`.
//!
//! - [`workload`]: random-token, shared-prefix, JSONL and bundled prompt workloads.
//! - [`client`] and [`sse`]: streamed requests, SSE parsing, per-token timing.
//! - [`runner`]: closed-loop concurrency sweeps and open-loop Poisson arrivals.
//! - [`metrics`]: vLLM-named metrics (TTFT, TPOT, ITL, E2EL, goodput, throughputs).
//! - [`result`]: the JSON result schema; [`report`]: tables, markdown, SVG plots.
//! - [`cost`]: USD per million tokens from an hourly price or benches/instances.toml.
#![deny(missing_docs)]

pub mod cli;
pub mod client;
pub mod cost;
pub mod metrics;
pub mod report;
pub mod result;
pub mod runner;
pub mod sse;
pub mod workload;
