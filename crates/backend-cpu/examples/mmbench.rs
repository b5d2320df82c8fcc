//! Ad-hoc matmul timing: `cargo run --release -p switchyard-backend-cpu --example mmbench`.
use std::time::Instant;
use switchyard_backend_cpu::kernels::{
    detected_level, Isa, PackedQ8, QMatrix, SimdLevel, TransposedK, TransposedQ0,
};
use switchyard_core::GgmlType;

/// Seconds on the clock `MMBENCH_CLOCK` names: `cpu`, the process's CPU time (on a loaded
/// machine, one thread: time spent waiting for a core does not count), else wall-clock.
fn now(start: Instant) -> f64 {
    #[cfg(target_os = "linux")]
    if std::env::var("MMBENCH_CLOCK").is_ok_and(|c| c == "cpu") {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call's duration.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        return ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
    }
    start.elapsed().as_secs_f64()
}

/// Best of 15 runs of 5 calls of `f` on `pool`, in seconds per call (`reps` = 0: not run;
/// `MMBENCH_REPS=1`: one run, for instruction counts under callgrind).
fn best_of(pool: &rayon::ThreadPool, reps: usize, mut f: impl FnMut() + Send) -> f64 {
    let reps = std::env::var("MMBENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .map_or(reps, |r: usize| r.min(reps));
    let start = Instant::now();
    pool.install(|| {
        let mut best = f64::MAX;
        for _ in 0..reps {
            let s = now(start);
            for _ in 0..5 {
                f();
            }
            best = best.min((now(start) - s) / 5.0);
        }
        best
    })
}

fn main() {
    // `MMBENCH_THREADS=2`: time on that many threads (default 1).
    let threads = std::env::var("MMBENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    // Optional filters: `mmbench [TYPE] [N_TOK]`, e.g. `mmbench Q8_0 16`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want_ty = args.first().cloned();
    let want_nt: Option<usize> = args.get(1).and_then(|a| a.parse().ok());
    // `MMBENCH_SHAPE=2048x8192`: only matrices of that shape (rows x columns).
    let want_shape = std::env::var("MMBENCH_SHAPE").ok();
    // `MMBENCH_Q8_ROWS=512`: a Q8_0 matrix that stays in L2, to tell compute from memory.
    let q8_rows = std::env::var("MMBENCH_Q8_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(32768);
    for (ty, rows, cols) in [
        (GgmlType::Q8_0, q8_rows, 640),
        (GgmlType::Q5_0, 2048, 640),
        (GgmlType::Q5_0, 640, 2048),
        (GgmlType::Q4_K, 2048, 768),
        (GgmlType::Q4_K, 640, 2048),
        (GgmlType::Q6_K, 2048, 768),
        // Q5_K_M / Q3_K_M / Q2_K files: the K-quants side by side at one size.
        (GgmlType::Q4_K, 2048, 2048),
        (GgmlType::Q5_K, 2048, 2048),
        // Llama 3.2 1B's FFN shapes: gate / up, and down (8,192 columns: column chunks).
        (GgmlType::Q5_K, 8192, 2048),
        (GgmlType::Q5_K, 2048, 8192),
        (GgmlType::Q3_K, 2048, 2048),
        (GgmlType::Q2_K, 2048, 2048),
        (GgmlType::Q6_K, 2048, 2048),
        // The 32-element block types with mins or a table (Q4_1 / Q5_1 stand in for Q4_K / Q5_K
        // in rows of 640 or 896 columns) next to Q4_0 / Q5_0, and IQ4_XS next to Q4_K above.
        (GgmlType::IQ4_XS, 2048, 2048),
        (GgmlType::Q4_0, 2048, 2048),
        (GgmlType::Q4_1, 2048, 2048),
        (GgmlType::Q5_1, 2048, 2048),
        (GgmlType::IQ4_NL, 2048, 2048),
        (GgmlType::Q4_0, 2048, 640),
        (GgmlType::Q4_1, 2048, 640),
        (GgmlType::Q5_1, 2048, 640),
        (GgmlType::IQ4_NL, 2048, 640),
    ] {
        if want_ty.as_ref().is_some_and(|t| *t != format!("{ty:?}"))
            || want_shape
                .as_ref()
                .is_some_and(|s| *s != format!("{rows}x{cols}"))
        {
            continue;
        }
        let mut data = vec![0u8; rows * ty.bytes_for(cols)];
        for c in data.chunks_mut(8) {
            let v = next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        let at: &[usize] = match ty {
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q4_1 | GgmlType::Q5_1 => &[0, 2],
            GgmlType::Q6_K => &[208],
            GgmlType::Q3_K => &[108],
            GgmlType::Q2_K => &[80, 82],
            _ => &[0],
        };
        for b in data.chunks_exact_mut(ty.block_bytes()) {
            for &a in at {
                let v = half::f16::from_f32((next() >> 40) as f32 / (1u64 << 24) as f32 * 0.01);
                b[a..a + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        let w = QMatrix {
            dtype: ty,
            rows,
            cols,
            data: &data,
        };
        for n_tok in [1usize, 4, 8, 16, 64] {
            if want_nt.is_some_and(|n| n != n_tok) {
                continue;
            }
            let x: Vec<f32> = (0..n_tok * cols)
                .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                .collect();
            let mut out = vec![0f32; rows * n_tok];
            // `MMBENCH_LAYOUT=transposed` times only the transposed K-quant layout (for
            // instruction counts under callgrind), `file` only the file layout.
            let only = std::env::var("MMBENCH_LAYOUT").unwrap_or_default();
            let best = best_of(&pool, if only == "transposed" { 0 } else { 15 }, || {
                Isa::get(detected_level()).matmul(&w, &x, n_tok, &mut out)
            });
            println!(
                "{ty:?} {rows}x{cols} n_tok={n_tok:2}: {:8.1} us  {:6.2} us/tok",
                best * 1e6,
                best * 1e6 / n_tok as f64
            );
            // K-quants in the transposed layout made at load.
            let t = (only != "file").then(|| TransposedK::new(&w)).flatten();
            if let Some(t) = t {
                let best = best_of(&pool, 15, || {
                    Isa::get(detected_level()).matmul_transposed_k(&t, &x, n_tok, &mut out)
                });
                println!(
                    "{ty:?} {rows}x{cols} n_tok={n_tok:2} transposed: {:8.1} us  {:6.2} us/tok",
                    best * 1e6,
                    best * 1e6 / n_tok as f64
                );
            }
            // The 32-element block types in the transposed layout, at each level that has it.
            let t = (only != "file").then(|| TransposedQ0::new(&w)).flatten();
            for level in [SimdLevel::Avx2, SimdLevel::Avx512Vnni] {
                let Some(t) = t.as_ref().filter(|_| level <= detected_level()) else {
                    continue;
                };
                let best = best_of(&pool, 15, || {
                    Isa::get(level).matmul_transposed_q0(t, &x, n_tok, &mut out)
                });
                println!(
                    "{ty:?} {rows}x{cols} n_tok={n_tok:2} transposed-q0 {level}: {:8.1} us  {:6.2} us/tok",
                    best * 1e6,
                    best * 1e6 / n_tok as f64
                );
            }
            // The packed layout of the output projection, at each level that has it.
            let Some(p) = PackedQ8::new(&w) else { continue };
            for level in [SimdLevel::Avx2, SimdLevel::Avx512Vnni] {
                if level > detected_level() {
                    continue;
                }
                let best = best_of(&pool, 15, || {
                    Isa::get(level).matmul_packed(&p, &x, n_tok, &mut out)
                });
                println!(
                    "{ty:?} {rows}x{cols} n_tok={n_tok:2} packed {level}: {:8.1} us  {:6.2} us/tok",
                    best * 1e6,
                    best * 1e6 / n_tok as f64
                );
            }
        }
    }
}
