//! Prometheus metrics under vLLM's names with the `switchyard:` prefix (so dashboards built
//! for `vllm:` port by renaming), in the text exposition format.
//!
//! Engine-side numbers (running / waiting requests, KV usage, prefix cache, token counters,
//! preemptions) come from an [`EngineStats`] snapshot taken at scrape time; request latencies
//! and counts by finish reason and HTTP status are recorded by the server as requests end.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use switchyard_runtime::engine::EngineStats;

/// Bucket upper bounds (seconds) of the time-to-first-token histogram (vLLM's).
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// Buckets of the inter-token latency histogram (vLLM's).
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// Buckets of the constraint timing histograms (mask computation, sampling's wait for it,
/// grammar compilation).
const MASK_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Buckets of the end-to-end latency histogram (vLLM's request latency buckets).
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug)]
struct Inner {
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    queue: Histogram,
    mask: Histogram,
    mask_wait: Histogram,
    compile: Histogram,
    by_finish: BTreeMap<&'static str, u64>,
    by_status: BTreeMap<u16, u64>,
    rejected_overload: u64,
    rejected_connections: u64,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    model: String,
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Empty metrics for `model` (the `model_name` label).
    pub fn new(model: &str) -> Self {
        Self {
            model: model.replace(['"', '\\', '\n'], "_"),
            inner: Mutex::new(Inner {
                ttft: Histogram::new(TTFT_BUCKETS),
                itl: Histogram::new(ITL_BUCKETS),
                e2e: Histogram::new(E2E_BUCKETS),
                queue: Histogram::new(E2E_BUCKETS),
                mask: Histogram::new(MASK_BUCKETS),
                mask_wait: Histogram::new(MASK_BUCKETS),
                compile: Histogram::new(MASK_BUCKETS),
                by_finish: BTreeMap::new(),
                by_status: BTreeMap::new(),
                rejected_overload: 0,
                rejected_connections: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request's first token arrived `secs` after it was received.
    pub fn observe_ttft(&self, secs: f64) {
        self.lock().ttft.observe(secs);
    }

    /// Gaps between consecutive tokens of one choice.
    pub fn observe_itl(&self, secs: f64) {
        self.lock().itl.observe(secs);
    }

    /// A request waited `secs` in the engine before its first step.
    pub fn observe_queue(&self, secs: f64) {
        self.lock().queue.observe(secs);
    }

    /// A request ended (`reason`: stop, length, abort, error) `secs` after it was received.
    pub fn observe_finished(&self, reason: &'static str, secs: f64) {
        let mut i = self.lock();
        i.e2e.observe(secs);
        *i.by_finish.entry(reason).or_default() += 1;
    }

    /// A response with `status` was sent.
    pub fn observe_status(&self, status: u16) {
        *self.lock().by_status.entry(status).or_default() += 1;
    }

    /// A request was refused by the admission limit.
    pub fn observe_overload(&self) {
        self.lock().rejected_overload += 1;
    }

    /// A connection was closed at once because `max_connections` were open.
    pub fn observe_rejected_connection(&self) {
        self.lock().rejected_connections += 1;
    }

    /// The exposition text, with engine numbers from `stats` (`None`: engine unreachable).
    pub fn render(&self, stats: Option<&EngineStats>) -> String {
        let l = format!("model_name=\"{}\"", self.model);
        let mut o = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: f64| {
            let _ = writeln!(
                o,
                "# HELP switchyard:{name} {help}\n# TYPE switchyard:{name} {kind}\nswitchyard:{name}{{{l}}} {v}"
            );
        };
        if let Some(s) = stats {
            one(
                "num_requests_running",
                "gauge",
                "Sequences running in the engine.",
                s.num_running as f64,
            );
            one(
                "num_requests_waiting",
                "gauge",
                "Sequences waiting (new or preempted).",
                s.num_waiting as f64,
            );
            one(
                "kv_cache_usage_perc",
                "gauge",
                "Fraction of KV cache blocks in use (1 = full).",
                f64::from(s.kv_usage),
            );
            one(
                "kv_cache_num_blocks",
                "gauge",
                "KV cache blocks in the pool.",
                s.num_blocks as f64,
            );
            one(
                "kv_cache_free_blocks",
                "gauge",
                "Free KV cache blocks (including evictable cached ones).",
                s.num_free_blocks as f64,
            );
            one(
                "prefix_cache_queries_total",
                "counter",
                "Prompt tokens looked up in the prefix cache.",
                s.prefix_cache_queries as f64,
            );
            one(
                "prefix_cache_hits_total",
                "counter",
                "Prompt tokens found in the prefix cache.",
                s.prefix_cache_hits as f64,
            );
            one(
                "prompt_tokens_total",
                "counter",
                "Prompt tokens of admitted sequences.",
                s.prompt_tokens_total as f64,
            );
            one(
                "generation_tokens_total",
                "counter",
                "Tokens generated.",
                s.generation_tokens_total as f64,
            );
            one(
                "num_preemptions_total",
                "counter",
                "Sequences preempted (and later recomputed).",
                s.num_preemptions as f64,
            );
            one(
                "spec_decode_num_drafts_total",
                "counter",
                "Speculative decoding: drafts verified.",
                s.spec_num_drafts as f64,
            );
            one(
                "spec_decode_num_draft_tokens_total",
                "counter",
                "Speculative decoding: draft tokens verified.",
                s.spec_num_draft_tokens as f64,
            );
            one(
                "spec_decode_num_accepted_tokens_total",
                "counter",
                "Speculative decoding: draft tokens accepted.",
                s.spec_num_accepted_tokens as f64,
            );
            one(
                "padding_tokens_total",
                "counter",
                "Token slots of padding added to fit static shapes (Neuron buckets).",
                s.padding_tokens_total as f64,
            );
            one(
                "engine_steps_total",
                "counter",
                "Forward steps run by the engine.",
                s.num_steps as f64,
            );
        }
        let mut i = self.lock();
        i.ttft.render(
            &mut o,
            "switchyard:time_to_first_token_seconds",
            "Time from receiving a request to its first generated token.",
            &l,
        );
        i.itl.render(
            &mut o,
            "switchyard:inter_token_latency_seconds",
            "Time between consecutive generated tokens of a choice.",
            &l,
        );
        i.e2e.render(
            &mut o,
            "switchyard:e2e_request_latency_seconds",
            "Time from receiving a request to its end.",
            &l,
        );
        i.queue.render(
            &mut o,
            "switchyard:request_queue_time_seconds",
            "Time a request waited in the engine before its first step.",
            &l,
        );
        let t = switchyard_runtime::constraint::take_timings();
        let inner = &mut *i;
        for (h, v) in [
            (&mut inner.mask, t.mask),
            (&mut inner.mask_wait, t.wait),
            (&mut inner.compile, t.compile),
        ] {
            for x in v {
                h.observe(f64::from(x));
            }
        }
        i.mask.render(
            &mut o,
            "switchyard:constraint_mask_seconds",
            "Time to advance a structured-output matcher and compute its next token mask (on a mask worker, beside the forward pass).",
            &l,
        );
        i.mask_wait.render(
            &mut o,
            "switchyard:constraint_mask_wait_seconds",
            "Time sampling waited for a structured-output mask (the part the forward pass did not hide).",
            &l,
        );
        i.compile.render(
            &mut o,
            "switchyard:constraint_compile_seconds",
            "Time to compile a structured-output constraint (cache misses).",
            &l,
        );
        let _ = writeln!(
            o,
            "# HELP switchyard:request_success_total Requests ended, by finish reason.\n# TYPE switchyard:request_success_total counter"
        );
        for r in ["stop", "length", "abort", "error"] {
            let v = i.by_finish.get(r).copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "switchyard:request_success_total{{{l},finished_reason=\"{r}\"}} {v}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP switchyard:http_requests_total HTTP responses, by status code.\n# TYPE switchyard:http_requests_total counter"
        );
        for (s, v) in &i.by_status {
            let _ = writeln!(
                o,
                "switchyard:http_requests_total{{{l},status=\"{s}\"}} {v}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP switchyard:requests_rejected_overload_total Requests refused with 429 by the admission limit.\n# TYPE switchyard:requests_rejected_overload_total counter\nswitchyard:requests_rejected_overload_total{{{l}}} {}",
            i.rejected_overload
        );
        let _ = writeln!(
            o,
            "# HELP switchyard:connections_rejected_total Connections closed at once because --max-connections were open.\n# TYPE switchyard:connections_rejected_total counter\nswitchyard:connections_rejected_total{{{l}}} {}",
            i.rejected_connections
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new("m");
        m.observe_ttft(0.03);
        m.observe_ttft(3.0);
        m.observe_finished("stop", 1.0);
        m.observe_status(200);
        m.observe_status(200);
        m.observe_status(429);
        let s = m.render(Some(&EngineStats {
            num_running: 2,
            ..Default::default()
        }));
        assert!(s.contains("switchyard:num_requests_running{model_name=\"m\"} 2"));
        assert!(s.contains(
            "switchyard:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.04\"} 1"
        ));
        assert!(s.contains(
            "switchyard:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"5\"} 2"
        ));
        assert!(s.contains("switchyard:time_to_first_token_seconds_count{model_name=\"m\"} 2"));
        assert!(s.contains(
            "switchyard:request_success_total{model_name=\"m\",finished_reason=\"stop\"} 1"
        ));
        assert!(s.contains("switchyard:http_requests_total{model_name=\"m\",status=\"429\"} 1"));
        assert!(s.contains("switchyard:http_requests_total{model_name=\"m\",status=\"200\"} 2"));
    }
}
