//! Matmul kernels per weight type, scalar against the best SIMD level, on a 2-thread pool
//! (`SWITCHYARD_BENCH_THREADS` changes it). Throughput is in bytes of weights. Shapes are
//! rows x cols: 2048 x 640 (2048 x 768 for the K-quants) and 640 x 2048.
//!
//! `cargo bench -p switchyard-backend-cpu --bench matmul -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard_backend_cpu::kernels::{detected_level, Isa, QMatrix, SimdLevel};
use switchyard_core::GgmlType;

/// Deterministic pseudo-random bytes (xorshift64*).
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    /// A value in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A random matrix of `ty` with sane f16 scales.
fn matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Bytes) -> Vec<u8> {
    let mut data = vec![0u8; rows * ty.bytes_for(cols)];
    rng.fill(&mut data);
    let scale_at: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[],
    };
    for b in data.chunks_exact_mut(ty.block_bytes()) {
        for &at in scale_at {
            let v = half::f16::from_f32(rng.unit().abs() * 0.01);
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    data
}

fn pool() -> rayon::ThreadPool {
    let threads = std::env::var("SWITCHYARD_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// Runs `f` `iters` times on a thread of `pool` (as a forward pass run inside the pool would,
/// so that a call does not pay for waking the pool from outside) and returns the time taken.
fn timed(pool: &rayon::ThreadPool, iters: u64, mut f: impl FnMut() + Send) -> Duration {
    pool.install(|| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed()
    })
}

fn levels() -> Vec<SimdLevel> {
    let best = detected_level();
    if best == SimdLevel::Scalar {
        vec![best]
    } else {
        vec![SimdLevel::Scalar, best]
    }
}

fn bench_types(c: &mut Criterion) {
    let pool = pool();
    let mut rng = Bytes(0x9e37_79b9_7f4a_7c15);
    let mut g = c.benchmark_group("matmul");
    g.sample_size(20);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        // K-quant rows are whole 256-blocks: 768 columns instead of 640 for them.
        let k = matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K);
        for (rows, cols) in [(2048, if k { 768 } else { 640 }), (640, 2048)] {
            let data = matrix(ty, rows, cols, &mut rng);
            let w = QMatrix {
                dtype: ty,
                rows,
                cols,
                data: &data,
            };
            for n_tok in [1, 16] {
                let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.unit()).collect();
                let mut out = vec![0f32; n_tok * rows];
                g.throughput(Throughput::Bytes(data.len() as u64));
                for level in levels() {
                    let id = BenchmarkId::new(format!("{ty}/{rows}x{cols}/n{n_tok}"), level);
                    g.bench_function(id, |b| {
                        b.iter_custom(|iters| {
                            timed(&pool, iters, || {
                                Isa::get(level).matmul(&w, black_box(&x), n_tok, &mut out)
                            })
                        })
                    });
                }
            }
        }
    }
    g.finish();
}

/// Gemma 3's output projection: Q8_0, 262144 x 640, one token (memory bound).
fn bench_large(c: &mut Criterion) {
    let pool = pool();
    let mut rng = Bytes(0x2545_f491_4f6c_dd1d);
    let (rows, cols) = (262_144, 640);
    let data = matrix(GgmlType::Q8_0, rows, cols, &mut rng);
    let w = QMatrix {
        dtype: GgmlType::Q8_0,
        rows,
        cols,
        data: &data,
    };
    let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
    let mut out = vec![0f32; rows];
    let mut g = c.benchmark_group("gemma_output");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    let level = detected_level();
    g.bench_function(BenchmarkId::new("Q8_0/262144x640/n1", level), |b| {
        b.iter_custom(|iters| {
            timed(&pool, iters, || {
                Isa::get(level).matmul(&w, black_box(&x), 1, &mut out)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench_types, bench_large);
criterion_main!(benches);
