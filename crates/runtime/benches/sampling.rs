//! Sampling over a Gemma-sized vocabulary (262,144): greedy, top-k/top-p with temperature,
//! penalties, and logprobs with 5 alternatives.
use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_core::SamplingParams;
use switchyard_runtime::sampling::{logprobs, Sampler};

fn logits(n: usize) -> Vec<f32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 * 20.0 - 10.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let v = logits(262_144);
    let prompt: Vec<u32> = (0..128).collect();
    let mut g = c.benchmark_group("sampling_262144");
    for (name, p) in [
        ("greedy", SamplingParams::default()),
        (
            "temp0.8_topk40_topp0.95",
            SamplingParams {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
                seed: Some(1),
                ..Default::default()
            },
        ),
        (
            "temp1_topp0.9_penalties",
            SamplingParams {
                temperature: 1.0,
                top_p: 0.9,
                presence_penalty: 0.5,
                frequency_penalty: 0.5,
                repetition_penalty: 1.1,
                seed: Some(1),
                ..Default::default()
            },
        ),
    ] {
        let mut s = Sampler::new(p, &prompt);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut l = v.clone();
                s.process(&mut l);
                s.sample(&l)
            })
        });
    }
    g.bench_function("logprobs_top5", |b| b.iter(|| logprobs(&v, 7, 5)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
