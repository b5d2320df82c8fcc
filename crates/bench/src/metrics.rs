//! Per-request outcomes and the metrics of one load point, defined as `vllm bench serve`
//! defines them (vllm/benchmarks/serve.py `calculate_metrics`,
//! vllm/benchmarks/lib/endpoint_request_func.py):
//!
//! - TTFT: request start to the first streamed chunk that has a non-empty `choices` array.
//! - ITL: the gaps between successive such chunks (one value per gap, pooled over requests).
//! - E2EL: request start to the last such chunk.
//! - TPOT: per request `(e2el - ttft) / (output_tokens - 1)`, only for `output_tokens > 1`
//!   (for goodput a request with one token has TPOT 0).
//! - output tokens: the server's `usage.completion_tokens`, else the number of chunks with
//!   non-empty text.
//! - throughputs divide by the wall time of the point; goodput counts completed requests that
//!   meet every SLO given.
//! - percentiles are numpy's default (linear interpolation between closest ranks).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What happened to one request.
#[derive(Debug, Clone, Default)]
pub struct RequestOutcome {
    /// Whether it completed (HTTP 200 and at least one token chunk).
    pub success: bool,
    /// Error class when it failed: the HTTP status code (`"503"`), or `connect`, `timeout`,
    /// `stream`, `parse`, `server_error`, `no_tokens`.
    pub error: Option<String>,
    /// A short description of the failure (start of the body, or the error message).
    pub error_detail: Option<String>,
    /// Seconds from the point's start to sending the request.
    pub start_s: f64,
    /// Time to first token, seconds.
    pub ttft_s: f64,
    /// Inter-token latencies, seconds.
    pub itl_s: Vec<f64>,
    /// End-to-end latency, seconds.
    pub e2el_s: f64,
    /// Prompt tokens: the server's usage when reported, else the client's estimate.
    pub prompt_tokens: u64,
    /// Output tokens (see the module docs).
    pub output_tokens: u64,
    /// Whether `prompt_tokens` came from the server's `usage`.
    pub usage_reported: bool,
}

/// Summary statistics of one latency metric, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Dist {
    /// Arithmetic mean.
    pub mean: f64,
    /// 50th percentile.
    pub median: f64,
    /// Population standard deviation (numpy's default).
    pub std: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Number of samples.
    pub n: usize,
}

impl Dist {
    /// Statistics of `xs` given in seconds, reported in milliseconds; all zero when empty
    /// (as vLLM does with `np.mean(xs or 0)`).
    pub fn from_secs(xs: &[f64]) -> Dist {
        if xs.is_empty() {
            return Dist::default();
        }
        let mut v: Vec<f64> = xs.iter().map(|x| x * 1e3).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        Dist {
            mean,
            median: percentile_sorted(&v, 50.0),
            std: var.sqrt(),
            p90: percentile_sorted(&v, 90.0),
            p99: percentile_sorted(&v, 99.0),
            n: v.len(),
        }
    }
}

/// numpy's default percentile (`method="linear"`) of sorted data; `p` in [0, 100].
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = p.clamp(0.0, 100.0) / 100.0 * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// Service-level objectives for goodput, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Slo {
    /// Time to first token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Time per output token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<f64>,
    /// End-to-end latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2el_ms: Option<f64>,
}

impl Slo {
    /// Parses `ttft:500ms,tpot:50ms,e2el:2s` (a bare number is milliseconds).
    pub fn parse(s: &str) -> anyhow::Result<Slo> {
        let mut slo = Slo::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("SLO '{part}': expected name:value"))?;
            let v = v.trim();
            let ms = if let Some(x) = v.strip_suffix("ms") {
                x.trim().parse::<f64>()?
            } else if let Some(x) = v.strip_suffix('s') {
                x.trim().parse::<f64>()? * 1e3
            } else {
                v.parse::<f64>()?
            };
            if !(ms.is_finite() && ms >= 0.0) {
                anyhow::bail!("SLO '{part}': value must be a non-negative number");
            }
            match k.trim() {
                "ttft" => slo.ttft_ms = Some(ms),
                "tpot" => slo.tpot_ms = Some(ms),
                "e2el" => slo.e2el_ms = Some(ms),
                other => anyhow::bail!("unknown SLO metric '{other}' (ttft, tpot, e2el)"),
            }
        }
        Ok(slo)
    }

    /// Whether no objective is set.
    pub fn is_empty(&self) -> bool {
        self.ttft_ms.is_none() && self.tpot_ms.is_none() && self.e2el_ms.is_none()
    }

    /// Whether a completed request meets every objective (vLLM: `slo >= value`).
    pub fn met_by(&self, o: &RequestOutcome) -> bool {
        let tpot = tpot_s(o).unwrap_or(0.0);
        let ok = |limit: Option<f64>, v: f64| limit.is_none_or(|l| l / 1e3 >= v);
        ok(self.ttft_ms, o.ttft_s) && ok(self.tpot_ms, tpot) && ok(self.e2el_ms, o.e2el_s)
    }
}

/// TPOT of one request, seconds; `None` when it produced fewer than two tokens.
pub fn tpot_s(o: &RequestOutcome) -> Option<f64> {
    (o.output_tokens > 1).then(|| (o.e2el_s - o.ttft_s) / (o.output_tokens - 1) as f64)
}

/// The metrics of one load point. Field names follow `vllm bench serve`'s result JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PointMetrics {
    /// Wall time of the point, seconds (first request sent to last response done).
    pub duration: f64,
    /// Completed requests.
    pub completed: usize,
    /// Failed requests.
    pub failed: usize,
    /// Failed requests by class: HTTP status code, or a transport error class.
    pub errors: BTreeMap<String, usize>,
    /// Sum of prompt tokens of completed requests.
    pub total_input_tokens: u64,
    /// Sum of output tokens of completed requests.
    pub total_output_tokens: u64,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Completed requests meeting every SLO, per second (0 when no SLO is set).
    pub request_goodput: f64,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Prompt plus output tokens per second.
    pub total_token_throughput: f64,
    /// Time to first token, ms.
    pub ttft_ms: Dist,
    /// Time per output token (excluding the first), ms.
    pub tpot_ms: Dist,
    /// Inter-token latency, ms.
    pub itl_ms: Dist,
    /// End-to-end request latency, ms.
    pub e2el_ms: Dist,
    /// Most requests in flight at once (sweep over completed requests' intervals).
    pub max_concurrent_requests: usize,
}

/// Computes a point's metrics from its outcomes and wall time.
pub fn compute(outcomes: &[RequestOutcome], duration_s: f64, slo: &Slo) -> PointMetrics {
    let mut m = PointMetrics {
        duration: duration_s,
        ..Default::default()
    };
    let (mut ttfts, mut tpots, mut itls, mut e2els) = (vec![], vec![], vec![], vec![]);
    let mut good = 0usize;
    let mut events = Vec::new();
    for o in outcomes {
        if !o.success {
            m.failed += 1;
            *m.errors
                .entry(o.error.clone().unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
            continue;
        }
        m.completed += 1;
        m.total_input_tokens += o.prompt_tokens;
        m.total_output_tokens += o.output_tokens;
        ttfts.push(o.ttft_s);
        e2els.push(o.e2el_s);
        itls.extend_from_slice(&o.itl_s);
        if let Some(t) = tpot_s(o) {
            tpots.push(t);
        }
        if !slo.is_empty() && slo.met_by(o) {
            good += 1;
        }
        events.push((o.start_s, 1i32));
        events.push((o.start_s + o.e2el_s, -1));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut cur = 0i32;
    for (_, d) in events {
        cur += d;
        m.max_concurrent_requests = m.max_concurrent_requests.max(cur as usize);
    }
    let dur = if duration_s > 0.0 {
        duration_s
    } else {
        f64::NAN
    };
    let rate = |x: f64| if dur.is_nan() { 0.0 } else { x / dur };
    m.request_throughput = rate(m.completed as f64);
    m.request_goodput = rate(good as f64);
    m.output_throughput = rate(m.total_output_tokens as f64);
    m.total_token_throughput = rate((m.total_input_tokens + m.total_output_tokens) as f64);
    m.ttft_ms = Dist::from_secs(&ttfts);
    m.tpot_ms = Dist::from_secs(&tpots);
    m.itl_ms = Dist::from_secs(&itls);
    m.e2el_ms = Dist::from_secs(&e2els);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(start: f64, ttft: f64, e2el: f64, out: u64, itl: Vec<f64>) -> RequestOutcome {
        RequestOutcome {
            success: true,
            start_s: start,
            ttft_s: ttft,
            e2el_s: e2el,
            output_tokens: out,
            prompt_tokens: 10,
            itl_s: itl,
            ..Default::default()
        }
    }

    fn fail(code: &str) -> RequestOutcome {
        RequestOutcome {
            error: Some(code.into()),
            ..Default::default()
        }
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        // np.percentile(range(1, 11), [50, 90, 99]) = 5.5, 9.1, 9.91
        assert!((percentile_sorted(&v, 50.0) - 5.5).abs() < 1e-12);
        assert!((percentile_sorted(&v, 90.0) - 9.1).abs() < 1e-12);
        assert!((percentile_sorted(&v, 99.0) - 9.91).abs() < 1e-12);
        assert_eq!(percentile_sorted(&v, 0.0), 1.0);
        assert_eq!(percentile_sorted(&v, 100.0), 10.0);
        assert_eq!(percentile_sorted(&[3.0], 99.0), 3.0);
        assert_eq!(percentile_sorted(&[], 50.0), 0.0);
        let d = Dist::from_secs(&[0.004, 0.001, 0.003, 0.002]); // unsorted input
        assert!((d.mean - 2.5).abs() < 1e-9);
        assert!((d.median - 2.5).abs() < 1e-9);
        assert!((d.std - 1.25f64.sqrt()).abs() < 1e-9);
        assert_eq!(d.n, 4);
        assert_eq!(Dist::from_secs(&[]), Dist::default());
    }

    #[test]
    fn tpot_and_throughput() {
        // 100 ms to first token, 11 tokens over 1.1 s: TPOT = 1.0 s / 10 = 100 ms.
        let a = ok(0.0, 0.1, 1.1, 11, vec![0.1; 10]);
        // One token only: no TPOT sample.
        let b = ok(0.5, 0.2, 0.2, 1, vec![]);
        let outs = vec![a.clone(), b, fail("503"), fail("503"), fail("connect")];
        let m = compute(&outs, 2.0, &Slo::default());
        assert_eq!(m.completed, 2);
        assert_eq!(m.failed, 3);
        assert_eq!(m.errors.get("503"), Some(&2));
        assert_eq!(m.errors.get("connect"), Some(&1));
        assert_eq!(m.total_output_tokens, 12);
        assert_eq!(m.total_input_tokens, 20);
        assert!((m.request_throughput - 1.0).abs() < 1e-12);
        assert!((m.output_throughput - 6.0).abs() < 1e-12);
        assert!((m.total_token_throughput - 16.0).abs() < 1e-12);
        assert_eq!(m.tpot_ms.n, 1);
        assert!((m.tpot_ms.mean - 100.0).abs() < 1e-9);
        assert_eq!(m.itl_ms.n, 10);
        assert!((m.itl_ms.median - 100.0).abs() < 1e-9);
        assert!((m.ttft_ms.mean - 150.0).abs() < 1e-9);
        assert!((m.e2el_ms.median - 650.0).abs() < 1e-9);
        assert_eq!(m.max_concurrent_requests, 2); // [0, 1.1) overlaps [0.5, 0.7)
        assert_eq!(m.request_goodput, 0.0); // no SLO
        assert!((tpot_s(&a).unwrap() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn goodput_against_slo() {
        let slo = Slo::parse("ttft:500ms,tpot:50ms").unwrap();
        assert_eq!(slo.ttft_ms, Some(500.0));
        assert_eq!(slo.tpot_ms, Some(50.0));
        assert_eq!(slo.e2el_ms, None);
        assert_eq!(Slo::parse("e2el:2s").unwrap().e2el_ms, Some(2000.0));
        assert_eq!(Slo::parse("ttft:250").unwrap().ttft_ms, Some(250.0));
        assert!(Slo::parse("foo:1ms").is_err());
        assert!(Slo::parse("ttft").is_err());
        let outs = vec![
            ok(0.0, 0.25, 0.5, 9, vec![]),              // TPOT 31.25 ms: good
            ok(0.0, 0.6, 0.7, 2, vec![]),               // TTFT too slow
            ok(0.0, 0.1, 0.1 + 0.06 * 9.0, 10, vec![]), // TPOT 60 ms: too slow
            ok(0.0, 0.5, 0.5, 1, vec![]),               // one token: TPOT 0, TTFT on the limit
            fail("500"),
        ];
        let m = compute(&outs, 4.0, &slo);
        assert_eq!(m.completed, 4);
        assert!(
            (m.request_goodput - 0.5).abs() < 1e-12,
            "{}",
            m.request_goodput
        );
    }
}
