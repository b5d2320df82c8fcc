//! The attention inner loops over an f16 KV cache: one query head (256 dims, Gemma 3) against
//! 512 cached positions (scores with `dot_f16`, then the weighted sum with `axpy_f16`), at each
//! SIMD level this CPU has.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use half::f16;
use switchyard_backend_cpu::kernels::{available_levels, Isa};

fn bench(c: &mut Criterion) {
    let (dim, ctx) = (256, 512);
    let q: Vec<f32> = (0..dim)
        .map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.5)
        .collect();
    let kv: Vec<f16> = (0..dim * ctx)
        .map(|i| f16::from_f32(((i * 53) % 29) as f32 / 29.0 - 0.5))
        .collect();
    let mut g = c.benchmark_group("attention_head256_ctx512");
    for level in available_levels() {
        g.bench_function(BenchmarkId::new("scores+values", level), |b| {
            b.iter(|| {
                let mut scores = vec![0f32; ctx];
                for (t, s) in scores.iter_mut().enumerate() {
                    *s = Isa::get(level).dot_f16(&q, &kv[t * dim..(t + 1) * dim]);
                }
                let mut out = vec![0f32; dim];
                for (t, &w) in scores.iter().enumerate() {
                    Isa::get(level).axpy_f16(&mut out, w * 1e-3, &kv[t * dim..(t + 1) * dim]);
                }
                out
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
