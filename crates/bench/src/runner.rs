//! Load generation: closed loop (N concurrent clients, each sending its next request when the
//! last finished) and open loop (Poisson arrivals at a request rate, optionally capped by a
//! maximum concurrency, as `vllm bench serve --request-rate R --max-concurrency C`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::client::Target;
use crate::metrics::RequestOutcome;
use crate::workload::Workload;

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `concurrency` clients, each sending its next request when its last one finished.
    Closed,
    /// Poisson arrivals at `request_rate` (all at once when `null`), at most `concurrency` in
    /// flight when set.
    Open,
}

/// One load point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadPoint {
    /// Closed or open loop.
    pub mode: Mode,
    /// Closed loop: clients; open loop: the cap on requests in flight (`None`: no cap).
    pub concurrency: Option<usize>,
    /// Open loop: mean requests per second (`None`: infinite, all requests at once).
    pub request_rate: Option<f64>,
}

impl LoadPoint {
    /// A closed-loop point.
    pub fn closed(concurrency: usize) -> Self {
        LoadPoint {
            mode: Mode::Closed,
            concurrency: Some(concurrency),
            request_rate: None,
        }
    }

    /// An open-loop point (`rate` infinite: all at once).
    pub fn open(rate: f64, max_concurrency: Option<usize>) -> Self {
        LoadPoint {
            mode: Mode::Open,
            concurrency: max_concurrency,
            request_rate: rate.is_finite().then_some(rate),
        }
    }

    /// A short name: `c=4`, `rate=2/s`, `rate=2/s c<=8`.
    pub fn name(&self) -> String {
        let rate = self
            .request_rate
            .map(|r| format!("{r}"))
            .unwrap_or_else(|| "inf".into());
        match (self.mode, self.concurrency) {
            (Mode::Open, Some(c)) => format!("rate={rate}/s c<={c}"),
            (Mode::Open, None) => format!("rate={rate}/s"),
            (Mode::Closed, c) => format!("c={}", c.unwrap_or(1)),
        }
    }
}

/// When a point ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many requests.
    Requests(u64),
    /// No new request after this long (requests in flight finish).
    Duration(Duration),
}

fn progress(stop: Stop, label: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = match stop {
        Stop::Requests(n) => {
            let pb = ProgressBar::new(n);
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{elapsed_precise}] {bar:30} {pos}/{len} requests {msg}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            pb
        }
        Stop::Duration(d) => {
            let pb = ProgressBar::new(d.as_secs().max(1));
            pb.set_style(
                ProgressStyle::with_template("{prefix:>14} [{elapsed_precise}] {bar:30} {msg}")
                    .expect("template")
                    .progress_chars("=> "),
            );
            pb
        }
    };
    pb.set_prefix(label.to_string());
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

struct Shared {
    outcomes: Mutex<Vec<RequestOutcome>>,
    failed: std::sync::atomic::AtomicUsize,
    pb: ProgressBar,
    stop: Stop,
    t0: Instant,
}

impl Shared {
    fn record(&self, o: RequestOutcome) {
        use std::sync::atomic::Ordering;
        if !o.success {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.outcomes.lock().expect("lock").push(o);
        let failed = self.failed.load(Ordering::Relaxed);
        match self.stop {
            Stop::Requests(_) => self.pb.inc(1),
            Stop::Duration(d) => self
                .pb
                .set_position(self.t0.elapsed().as_secs().min(d.as_secs())),
        }
        if failed > 0 {
            self.pb.set_message(format!("({failed} failed)"));
        }
    }
    fn more(&self, sent: u64) -> bool {
        match self.stop {
            Stop::Requests(n) => sent < n,
            Stop::Duration(d) => self.t0.elapsed() < d,
        }
    }
}

/// Runs one point: requests `first_index..` of the workload. Returns the outcomes (in completion
/// order) and the wall time in seconds.
pub async fn run_point(
    target: Arc<Target>,
    workload: Arc<Workload>,
    point: LoadPoint,
    stop: Stop,
    first_index: u64,
    seed: u64,
    show_progress: bool,
) -> (Vec<RequestOutcome>, f64) {
    let t0 = Instant::now();
    let shared = Arc::new(Shared {
        outcomes: Mutex::new(Vec::new()),
        failed: Default::default(),
        pb: progress(stop, &point.name(), show_progress),
        stop,
        t0,
    });
    match point.mode {
        Mode::Closed => {
            let clients = point.concurrency.unwrap_or(1).max(1);
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut tasks = Vec::with_capacity(clients);
            for _ in 0..clients {
                let (target, workload, shared, next) = (
                    target.clone(),
                    workload.clone(),
                    shared.clone(),
                    next.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if !shared.more(i) {
                            break;
                        }
                        let req = workload.request(first_index + i);
                        let o = target.send(&req, shared.t0).await;
                        shared.record(o);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        Mode::Open => {
            let rate = point.request_rate.unwrap_or(f64::INFINITY);
            let sem = point
                .concurrency
                .map(|c| Arc::new(Semaphore::new(c.max(1))));
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_A11C);
            let mut due = Duration::ZERO;
            let mut tasks = Vec::new();
            let mut i = 0u64;
            while shared.more(i) {
                if rate.is_finite() && rate > 0.0 {
                    // Exponential inter-arrival times: a Poisson process.
                    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                    due += Duration::from_secs_f64(-u.ln() / rate);
                    tokio::time::sleep_until((t0 + due).into()).await;
                    if !shared.more(i) {
                        break;
                    }
                }
                let permit = match &sem {
                    Some(s) => Some(s.clone().acquire_owned().await.expect("semaphore")),
                    None => None,
                };
                let (target, workload, shared) = (target.clone(), workload.clone(), shared.clone());
                let index = first_index + i;
                tasks.push(tokio::spawn(async move {
                    let req = workload.request(index);
                    let o = target.send(&req, shared.t0).await;
                    shared.record(o);
                    drop(permit);
                }));
                i += 1;
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }
    let dur = t0.elapsed().as_secs_f64();
    shared.pb.finish_and_clear();
    let outcomes = std::mem::take(&mut *shared.outcomes.lock().expect("lock"));
    (outcomes, dur)
}
