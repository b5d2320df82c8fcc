//! The Hugging Face-format loader on the architectures it accepts beyond Gemma 3 / Qwen 2, against
//! PyPI `transformers` on the CPU (the independent reference): the random-weight models of
//! tests/arch.rs (Llama 3 with `rope_scaling` llama3, Llama 2 style with linear RoPE scaling,
//! Qwen 3 with q/k norms, Qwen 3 with YaRN, Phi-3 with fused projections, Phi-3 with LongRoPE and
//! a sliding window) converted to safetensors + config.json by `scripts/gguf-to-hf.py`
//! (`scripts/build-hf-test-models.sh`), loaded by `Model::open_hf_dir` and run on the CPU backend,
//! compared with transformers' float32 logits of the same 400-token teacher-forced sequence
//! (`tests/golden/arch-hf/*.json`, from `scripts/gen-hf-arch-golden.sh`). Both sides run f32
//! weights in f32 arithmetic; our CPU backend's KV cache is f16, so the golden's reference run
//! rounds transformers' keys and values to f16 where our cache stores them (and also keeps the
//! plain run's logits): only the order of accumulation differs, and the bound is tight (see
//! [`bound`]). Each model's check is shown to see its feature (switched off, the logits move
//! thousands of times the bound). Also: our RoPE frequencies equal transformers' (`rope_scaling`).

mod common;

use sha2::{Digest, Sha256};
use switchyard_backend_cpu::CpuBackend;
use switchyard_core::{Backend, ModelConfig};
use switchyard_runtime::generate::Session;
use switchyard_runtime::sampling::argmax;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The golden of `name` and the configuration `Model::open_hf_dir` made of its model, after
/// `mutate`; and the CPU backend loaded with them. The model directory must be the one the golden
/// was made from (sha256 of its safetensors).
fn load_with(
    name: &str,
    mutate: impl FnOnce(&mut ModelConfig),
) -> (serde_json::Value, ModelConfig, CpuBackend) {
    let g = common::golden("arch-hf", &format!("{name}.json"));
    let dir = common::hf_dir(&format!("arch-{name}"), "f32");
    assert_eq!(g["model_dir"].as_str(), dir.file_name().unwrap().to_str());
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/build-hf-test-models.sh first (scripts/test.sh does)",
            st.display()
        )
    });
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        g["safetensors_sha256"].as_str().unwrap(),
        "{} is not the model tests/golden/arch-hf/{name}.json was made from: rerun \
         scripts/build-hf-test-models.sh, or scripts/gen-hf-arch-golden.sh if the converter changed",
        st.display()
    );
    drop(bytes);
    let m = switchyard_runtime::Model::open_hf_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut cfg = m.config.clone();
    mutate(&mut cfg);
    let be = CpuBackend::load(&cfg, m.weights()).unwrap_or_else(|e| panic!("{name}: {e}"));
    (g, cfg, be)
}

/// How our logits compare with the golden over its recorded ids (top-20 and probes) at every
/// position.
#[derive(Debug, Default)]
struct Diff {
    /// Max and mean |dlogit| against the f16-KV run (`top`, `probe`).
    max: f64,
    mean: f64,
    /// Max |dlogit| against the plain run (`plain`).
    max_plain: f64,
    /// Positions whose argmax is not the f16-KV run's top-1, with that run's top-2 gap there.
    top1_differ: Vec<(usize, f64)>,
}

fn compare(g: &serde_json::Value, be: &mut CpuBackend) -> Diff {
    let toks = ids(&g["tokens"]);
    let probe = ids(&g["probe_ids"]);
    let pos = g["positions"].as_array().unwrap();
    assert_eq!(pos.len(), toks.len());
    let (mut d, mut sum, mut n) = (Diff::default(), 0f64, 0usize);
    let backend: &mut dyn Backend = be;
    let mut s = Session::new(backend, toks.len()).unwrap();
    s.feed(
        &toks,
        |_| true,
        |i, row| {
            let top = pos[i]["top"].as_array().unwrap();
            if argmax(row) != top[0][0].as_u64().unwrap() as u32 {
                let gap = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
                d.top1_differ.push((i, gap));
            }
            let plain = pos[i]["plain"].as_array().unwrap();
            let pairs = common::golden_pairs(&pos[i], &probe);
            assert_eq!(plain.len(), top.len() + probe.len());
            for ((id, want), p) in pairs.zip(plain) {
                let got = row[id] as f64;
                d.max = d.max.max((got - want).abs());
                d.max_plain = d.max_plain.max((got - p.as_f64().unwrap()).abs());
                sum += (got - want).abs();
                n += 1;
            }
        },
    )
    .unwrap();
    d.mean = sum / n as f64;
    d
}

/// The largest |dlogit| allowed against transformers with an f16 KV cache (the golden's
/// positions): f32 weights and f32 arithmetic on both sides and K/V rounded to f16 at the same
/// point, so what is left is rounding in another order of accumulation, and the f16 roundings of
/// K/V elements that it tips over (one f16 step is ~5e-4 relative). The golden measures exactly
/// that within transformers: its f16-KV run in float64 against float32 (`kv_f16_f32_vs_f64`;
/// max 4e-4..2.8e-3, mean 4e-5..2.4e-4 on logits of magnitude ~20-30, while plain float32 against
/// float64 is ~2e-5; max 8e-3 for phi3-longrope, whose attention factor sqrt(2) doubles every
/// `q . k` and whose logits an f16 KV alone moves by 6e-2, 2-5x the others). Our kernels are one
/// more float32 order; but that float64 run still takes transformers' float32 RoPE angles (its
/// rotary embedding always computes in float32), a part of float32 rounding it does not measure
/// and we do not share. Measured against us: 1.0-1.6x that max and 0.8-1.7x that mean (see the
/// test output); allowed: 3x, for the max and for the mean. Still 1/1000 of what switching any
/// feature off does (`check_sees`).
fn bound(g: &serde_json::Value) -> (f64, f64) {
    let n = &g["reference_noise"]["kv_f16_f32_vs_f64"];
    (
        3.0 * n["max_abs_diff"].as_f64().unwrap(),
        3.0 * n["mean_abs_diff"].as_f64().unwrap(),
    )
}

fn noise(g: &serde_json::Value, which: &str) -> f64 {
    g["reference_noise"][which]["max_abs_diff"]
        .as_f64()
        .unwrap()
}

fn check(name: &str, want_arch: &str) {
    let (g, cfg, mut be) = load_with(name, |_| {});
    assert_eq!(g["architecture"].as_str(), Some(want_arch));
    // Our reading of config.json gives transformers' RoPE frequencies (rope_scaling applied).
    let want: Vec<f64> = g["config"]["inv_freq"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got = cfg.inv_freq_global();
    assert_eq!(got.len(), want.len(), "{name}: rotated pairs");
    for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a as f64 - b).abs() <= 1e-5 * b.abs(),
            "{name}: RoPE frequency of pair {i}: ours {a}, transformers {b} ({})",
            g["config"]["rope_scaling"]
        );
    }
    // ... and its magnitude on cos/sin (YaRN's / LongRoPE's attention factor; 1 otherwise).
    let want = g["config"]["attention_scaling"].as_f64().unwrap();
    let got = cfg.rope_scaling.attn_factor as f64;
    assert!(
        (got - want).abs() <= 1e-6 * want,
        "{name}: RoPE attention factor: ours {got}, transformers {want}"
    );
    let (bound, bound_mean) = bound(&g);
    let f32_noise = noise(&g, "f32_vs_f64");
    assert!(
        bound < 3e-2 && f32_noise < bound / 10.0,
        "{name}: transformers' own f32 noise (max |dlogit| {f32_noise:.3e} plain, {:.3e} with an f16 KV) is not \
         the tight reference this test assumes",
        bound / 3.0
    );
    let kv_effect = noise(&g, "kv_f16_vs_plain");
    let d = compare(&g, &mut be);
    eprintln!(
        "{name}: {} positions vs transformers with an f16 KV: max |dlogit| {:.3e}, mean {:.3e} (transformers f32 vs f64: \
         max {f32_noise:.3e}, with an f16 KV {:.3e}); top-1 differs at {:?} (position, reference top-2 gap); \
         vs plain transformers: max |dlogit| {:.3e} (the f16 KV alone moves transformers by {kv_effect:.3e})",
        g["tokens"].as_array().unwrap().len(),
        d.max,
        d.mean,
        bound / 3.0,
        d.top1_differ,
        d.max_plain,
    );
    assert!(
        d.max <= bound && d.mean <= bound_mean,
        "{name}: |dlogit| against transformers (f16 KV) max {:.3e} mean {:.3e} exceeds max {bound:.3e} mean {bound_mean:.3e}",
        d.max,
        d.mean
    );
    // Top-1 must agree wherever the reference's top-2 gap exceeds what the bound allows to swap.
    let real: Vec<_> = d
        .top1_differ
        .iter()
        .filter(|(_, gap)| *gap > 2.0 * bound)
        .collect();
    assert!(
        real.is_empty(),
        "{name}: top-1 differs from transformers at (position, top-2 gap) {real:?}"
    );
    // Against unmodified transformers, the difference is the f16 KV cache's (measured in the
    // golden) plus at most the bound above.
    assert!(
        d.max_plain <= kv_effect + bound,
        "{name}: max |dlogit| {:.3e} against plain transformers exceeds the f16 KV effect {kv_effect:.3e} + {bound:.3e}",
        d.max_plain
    );
}

/// With `mutate` switching a feature off, the logits are far from transformers': the check of
/// `name` sees that feature, far beyond the bound and beyond what the f16 KV cache alone does.
fn check_sees(name: &str, what: &str, mutate: impl FnOnce(&mut ModelConfig)) {
    let (g, _, mut be) = load_with(name, mutate);
    let d = compare(&g, &mut be);
    let floor = (100.0 * bound(&g).0).max(10.0 * noise(&g, "kv_f16_vs_plain"));
    eprintln!(
        "{name} without {what}: max |dlogit| {:.3}, mean {:.4}, top-1 differs at {} positions",
        d.max,
        d.mean,
        d.top1_differ.len()
    );
    assert!(
        d.max > floor,
        "{name} without {what}: max |dlogit| {:.3e}, not above {floor:.1e}: the check would not see this feature",
        d.max
    );
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    check("llama3", "LlamaForCausalLM");
    check_sees("llama3", "the llama3 frequency factors", |c| {
        c.rope_freq_factors = None
    });
}

#[test]
fn llama2_linear_rope_scaling_matches_transformers() {
    check("llama2-linear", "LlamaForCausalLM");
    check_sees("llama2-linear", "linear RoPE scaling", |c| {
        c.rope_freq_scale = 1.0
    });
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3", "Qwen3ForCausalLM");
    check_sees("qwen3", "q/k norms", |c| c.qk_norm = false);
}

#[test]
fn qwen3_yarn_matches_transformers() {
    check("qwen3-yarn", "Qwen3ForCausalLM");
    check_sees("qwen3-yarn", "the YaRN ramp (plain linear scaling)", |c| {
        c.rope_scaling.yarn = None
    });
    check_sees("qwen3-yarn", "YaRN's attention factor", |c| {
        c.rope_scaling.attn_factor = 1.0
    });
}

#[test]
fn phi3_fused_projections_match_transformers() {
    check("phi3", "Phi3ForCausalLM");
}

/// Phi-3 LongRoPE (`rope_scaling {type: longrope}`, original_max_position_embeddings 64): the
/// 400-token sequence is longer than 64, so transformers takes the long factors, as we do for a
/// context of 4096; and its `sliding_window` 256, which transformers applies to every layer.
#[test]
fn phi3_longrope_and_sliding_window_match_transformers() {
    check("phi3-longrope", "Phi3ForCausalLM");
    check_sees("phi3-longrope", "the long factors (the short ones)", |c| {
        c.select_rope_factors(64)
    });
    check_sees("phi3-longrope", "LongRoPE's attention factor", |c| {
        c.rope_scaling.attn_factor = 1.0
    });
    check_sees("phi3-longrope", "the sliding window", |c| {
        c.layers = vec![switchyard_core::LayerAttention::Global; c.n_layers]
    });
}
