//! Every architecture we claim, against llama.cpp (the independent reference): small
//! random-weight models around real vocabularies (`scripts/build-arch-models.sh`: Llama 3 with
//! `rope_freqs`, Llama 2 style with linear RoPE scaling, Qwen 3, Qwen 3 MoE, Phi-3, Gemma 2, Qwen 3
//! with YaRN, Phi-3 with LongRoPE), compared
//! with llama.cpp's teacher-forced logits and greedy choices (`tests/golden/arch/*.json`, from
//! `scripts/gen-arch-golden.sh`). Bounds as in tests/golden.rs, scaled by llama.cpp's own
//! disagreement with itself on the same model. Also: the MoE model's outputs do not depend on
//! the batch (a token's experts see only that token).

mod common;

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use switchyard_backend_cpu::CpuBackend;
use switchyard_core::{Backend, BlockId, ForwardBatch, KvCacheConfig, ModelConfig, SeqInBatch};
use switchyard_runtime::generate::Session;
use switchyard_runtime::gguf::GgufFile;
use switchyard_runtime::sampling::argmax;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn models_dir() -> PathBuf {
    switchyard_runtime::registry::cache_dir().join("arch-models")
}

/// The golden file of `name` and its model, checked to be the file the golden was made from.
fn load(name: &str) -> (serde_json::Value, CpuBackend) {
    load_with(name, |_| {})
}

/// [`load`] with the configuration changed by `mutate` (to show a check sees a feature).
fn load_with(name: &str, mutate: impl FnOnce(&mut ModelConfig)) -> (serde_json::Value, CpuBackend) {
    let g = common::golden("arch", &format!("{name}.json"));
    let path = models_dir().join(g["model"].as_str().unwrap());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/build-arch-models.sh first (scripts/test.sh does)",
            path.display()
        )
    });
    let sha = format!("{:x}", Sha256::digest(&bytes));
    assert_eq!(
        sha,
        g["sha256"].as_str().unwrap(),
        "{} is not the model tests/golden/arch/{name}.json was made from: \
         rerun scripts/build-arch-models.sh, or scripts/gen-arch-golden.sh if the generator changed",
        path.display()
    );
    drop(bytes);
    let f = GgufFile::open(&path).unwrap();
    let mut cfg = switchyard_runtime::config::model_config(&f).unwrap();
    mutate(&mut cfg);
    let be = CpuBackend::load(&cfg, &f).unwrap_or_else(|e| panic!("{name}: {e}"));
    (g, be)
}

/// Teacher-forced logits of the golden's token sequence against llama.cpp's: (mean |dlogit|
/// over the top-20 and probe ids, top-1 agreement, decisive positions, agreement there).
fn logits_vs_reference(g: &serde_json::Value, be: &mut CpuBackend) -> (f64, f64, usize, usize) {
    let noise_max = g["reference_self_noise"]["max_abs_diff"].as_f64().unwrap();
    let toks = ids(&g["tokens"]);
    let probe = ids(&g["probe_ids"]);
    let pos = g["positions"].as_array().unwrap();
    let (mut agree, mut decisive, mut decisive_agree) = (0usize, 0usize, 0usize);
    let (mut sum_abs, mut count) = (0f64, 0usize);
    let backend: &mut dyn Backend = be;
    let mut s = Session::new(backend, toks.len()).unwrap();
    s.feed(
        &toks,
        |_| true,
        |i, row| {
            let top = pos[i]["top"].as_array().unwrap();
            let ref_top1 = top[0][0].as_u64().unwrap() as u32;
            let gap = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
            let same = argmax(row) == ref_top1;
            agree += same as usize;
            if gap >= noise_max {
                decisive += 1;
                decisive_agree += same as usize;
            }
            let pairs = common::golden_pairs(&pos[i], &probe);
            for (id, want) in pairs {
                sum_abs += (row[id] as f64 - want).abs();
                count += 1;
            }
        },
    )
    .unwrap();
    (
        sum_abs / count as f64,
        agree as f64 / toks.len() as f64,
        decisive,
        decisive_agree,
    )
}

/// The model `name` with its configuration changed by `mutate` (a feature switched off) is far
/// from llama.cpp: the check of `name` sees that feature.
fn check_sees(name: &str, what: &str, mutate: impl FnOnce(&mut ModelConfig)) {
    let (g, mut be) = load_with(name, mutate);
    let noise_mean = g["reference_self_noise"]["mean_abs_diff"].as_f64().unwrap();
    let (mean, ..) = logits_vs_reference(&g, &mut be);
    eprintln!("{name} without {what}: mean |dlogit| {mean:.4}");
    assert!(
        mean > 3.0 * noise_mean,
        "{name} without {what}: mean |dlogit| {mean:.4}, not clearly above llama.cpp's self-noise {noise_mean:.4}: \
         the check would not see this feature"
    );
}

fn check(name: &str) {
    let (g, mut be) = load(name);
    let noise = &g["reference_self_noise"];
    let noise_mean = noise["mean_abs_diff"].as_f64().unwrap();
    let noise_max = noise["max_abs_diff"].as_f64().unwrap();
    let noise_agree = noise["agreement"].as_f64().unwrap();
    let toks = ids(&g["tokens"]);
    let (mean, rate, decisive, decisive_agree) = logits_vs_reference(&g, &mut be);
    eprintln!(
        "{name}: {} positions, top-1 agreement {:.2}% (llama.cpp vs itself {:.2}%), {decisive_agree}/{decisive} at decisive positions; \
         mean |dlogit| {mean:.5} (llama.cpp vs itself {noise_mean:.5})",
        toks.len(),
        rate * 100.0,
        noise_agree * 100.0
    );
    assert!(
        mean <= 1.25 * noise_mean,
        "{name}: mean |dlogit| {mean:.5} > 1.25 x llama.cpp's self-noise {noise_mean:.5}"
    );
    assert_eq!(
        decisive, decisive_agree,
        "{name}: top-1 differs at a position whose reference top-2 gap exceeds llama.cpp's own worst disagreement"
    );
    assert!(
        rate >= noise_agree - 0.02,
        "{name}: top-1 agreement {rate:.4} more than 2 points below llama.cpp's with itself {noise_agree:.4}"
    );

    // Greedy choices, teacher-forced with the reference's tokens so every step is compared.
    let (mut steps, mut differ) = (0, 0);
    for c in g["greedy"].as_array().unwrap() {
        let prompt = ids(&c["prompt_ids"]);
        let want = ids(&c["tokens"]);
        let gaps = c["top2_gap"].as_array().unwrap();
        let backend: &mut dyn Backend = &mut be;
        let mut s = Session::new(backend, prompt.len() + want.len() + 1).unwrap();
        let mut last = Vec::new();
        let n = prompt.len();
        s.feed(&prompt, |i| i + 1 == n, |_, r| last = r.to_vec())
            .unwrap();
        for (step, &w) in want.iter().enumerate() {
            steps += 1;
            let got = argmax(&last);
            if got != w {
                differ += 1;
                let gap = gaps[step].as_f64().unwrap();
                assert!(
                    gap < noise_max,
                    "{name}: prompt {prompt:?} step {step}: chose {got}, llama.cpp {w} with a top-2 gap of {gap} \
                     (llama.cpp's worst self-disagreement is {noise_max})"
                );
            }
            s.feed(&[w], |_| true, |_, r| last = r.to_vec()).unwrap();
        }
    }
    assert!(
        differ * 10 <= steps,
        "{name}: {differ} of {steps} greedy choices differ from llama.cpp"
    );
    eprintln!("{name}: {steps} greedy steps, {differ} near-tie choices differ");
}

#[test]
fn llama3_rope_freqs_matches_llamacpp() {
    check("llama3");
    check_sees("llama3", "rope_freqs", |c| c.rope_freq_factors = None);
}

#[test]
fn llama2_linear_rope_scaling_matches_llamacpp() {
    check("llama2-linear");
    check_sees("llama2-linear", "linear RoPE scaling", |c| {
        c.rope_freq_scale = 1.0
    });
}

#[test]
fn qwen3_matches_llamacpp() {
    check("qwen3");
    check_sees("qwen3", "q/k norms", |c| c.qk_norm = false);
}

#[test]
fn qwen3moe_matches_llamacpp() {
    check("qwen3moe");
    check_sees("qwen3moe", "top-k renormalisation", |c| {
        if let Some(m) = &mut c.moe {
            m.norm_topk_prob = false;
        }
    });
}

#[test]
fn gemma2_softcaps_and_sliding_window_match_llamacpp() {
    check("gemma2");
    check_sees("gemma2", "attention soft-capping", |c| {
        c.attn_logit_softcap = None
    });
    check_sees("gemma2", "final soft-capping", |c| {
        c.final_logit_softcap = None
    });
    check_sees("gemma2", "the sliding window", |c| {
        c.layers = vec![switchyard_core::LayerAttention::Global; c.n_layers]
    });
}

#[test]
fn phi3_fused_projections_match_llamacpp() {
    check("phi3");
}

/// YaRN (`rope.scaling.type yarn`, factor 4, original context 64): the ramp between original and
/// interpolated frequencies, and the magnitude `0.1 ln 4 + 1` on cos/sin, each seen.
#[test]
fn qwen3_yarn_matches_llamacpp() {
    check("qwen3-yarn");
    check_sees("qwen3-yarn", "the YaRN ramp (plain linear scaling)", |c| {
        c.rope_scaling.yarn = None
    });
    check_sees("qwen3-yarn", "YaRN's attention factor", |c| {
        c.rope_scaling.attn_factor = 1.0
    });
}

/// Phi-3 LongRoPE (`rope_factors_long/short`, original context 64, attention factor sqrt(2)):
/// llama.cpp runs a context above 64, so the long factors; the short ones, or no attention
/// factor, are seen.
#[test]
fn phi3_longrope_matches_llamacpp() {
    check("phi3-longrope");
    check_sees("phi3-longrope", "the long factors (the short ones)", |c| {
        c.select_rope_factors(64)
    });
    check_sees("phi3-longrope", "LongRoPE's attention factor", |c| {
        c.rope_scaling.attn_factor = 1.0
    });
}

/// One forward call over sequences of different lengths gives each the logits it gets alone,
/// bit for bit: on the MoE model a step's tokens share experts' matmuls, and must not see each
/// other through them.
#[test]
fn qwen3moe_batch_equals_alone() {
    let (g, mut be) = load("qwen3moe");
    let toks = ids(&g["tokens"]);
    let seqs: Vec<&[u32]> = vec![&toks[..1], &toks[10..47], &toks[50..53], &toks[60..160]];
    const BS: usize = 16;
    be.init_kv_cache(KvCacheConfig {
        block_size: BS,
        num_blocks: 64,
    })
    .unwrap();
    let table = |s: usize, len: usize| -> Vec<BlockId> {
        (0..len.div_ceil(BS))
            .map(|k| BlockId((s + 4 * k) as u32))
            .collect()
    };
    let seq = |b: &mut ForwardBatch, s: usize, t: &[u32]| {
        let start = b.token_ids.len();
        b.token_ids.extend(t);
        b.positions.extend(0..t.len() as u32);
        b.seqs.push(SeqInBatch {
            start,
            len: t.len(),
            context_before: 0,
            block_table: table(s, t.len()),
            group_tables: Vec::new(),
        });
        b.logits_indices.extend(start..start + t.len());
    };
    let mut b = ForwardBatch::default();
    for (s, t) in seqs.iter().enumerate() {
        seq(&mut b, s, t);
    }
    let together = be.forward(&b).unwrap();
    let mut row = 0;
    for (s, t) in seqs.iter().enumerate() {
        let mut b = ForwardBatch::default();
        seq(&mut b, s, t);
        let alone = be.forward(&b).unwrap();
        for i in 0..t.len() {
            assert!(
                alone.row(i) == together.row(row + i),
                "sequence {s} token {i}: logits differ alone and in the batch"
            );
        }
        row += t.len();
    }
}
