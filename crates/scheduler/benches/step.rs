//! One scheduler step (schedule + update) with many running sequences: the engine's
//! per-step bookkeeping cost outside the model.
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use switchyard_core::SeqId;
use switchyard_scheduler::{Request, SampledToken, Scheduler, SchedulerConfig};

/// One step: schedule, then every sampling sequence gets `token`.
fn step(s: &mut Scheduler, token: u32) {
    let plan = s.schedule();
    let out: Vec<_> = plan
        .seqs
        .iter()
        .filter(|q| q.samples)
        .map(|q| (q.id, SampledToken::token(token)))
        .collect();
    s.update(&plan, &out).unwrap();
}

fn running(n: usize) -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig {
        block_size: 16,
        num_blocks: 64 * 1024,
        max_num_batched_tokens: 8192,
        max_num_seqs: n,
        enable_prefix_caching: true,
        ..Default::default()
    })
    .unwrap();
    for i in 0..n {
        let prompt: Vec<u32> = (0..128).map(|t| (t * 7 + i as u32 * 13) % 50_000).collect();
        s.add_request(Request::new(SeqId(i as u64), prompt, 1024))
            .unwrap();
    }
    // Prefill everything once so that the measured steps are pure decode steps.
    step(&mut s, 1);
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler_step");
    for n in [1, 16, 64, 256] {
        g.bench_function(BenchmarkId::new("decode", n), |b| {
            // A fresh, just-prefilled scheduler per iteration (setup not timed), so every
            // measured step is a decode step of `n` sequences that fits the pool.
            b.iter_batched_ref(|| running(n), |s| step(s, 2), BatchSize::LargeInput)
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
