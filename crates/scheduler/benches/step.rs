//! One scheduler step (schedule + update) with many running sequences: the engine's
//! per-step bookkeeping cost outside the model.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard_core::RequestId;
use switchyard_scheduler::{Request, SampledToken, Scheduler, SchedulerConfig};

fn running(n: usize) -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig {
        block_size: 16,
        num_blocks: 64 * 1024,
        max_num_batched_tokens: 8192,
        max_num_seqs: n,
        enable_prefix_caching: true,
    })
    .unwrap();
    for i in 0..n {
        let prompt: Vec<u32> = (0..128).map(|t| (t * 7 + i as u32 * 13) % 50_000).collect();
        s.add_request(Request::new(RequestId(i as u64), prompt, 1 << 20))
            .unwrap();
    }
    // Prefill everything once so that the measured steps are pure decode steps.
    let plan = s.schedule();
    let out: Vec<_> = plan
        .seqs
        .iter()
        .filter(|q| q.samples)
        .map(|q| {
            (
                q.id,
                SampledToken {
                    token: 1,
                    stop: false,
                },
            )
        })
        .collect();
    s.update(&plan, &out).unwrap();
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler_step");
    for n in [1, 16, 64, 256] {
        let mut s = running(n);
        g.bench_function(BenchmarkId::new("decode", n), |b| {
            b.iter(|| {
                let plan = s.schedule();
                let out: Vec<_> = plan
                    .seqs
                    .iter()
                    .filter(|q| q.samples)
                    .map(|q| {
                        (
                            q.id,
                            SampledToken {
                                token: 2,
                                stop: false,
                            },
                        )
                    })
                    .collect();
                s.update(&plan, &out).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
