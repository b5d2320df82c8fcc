//! Correctness against llama.cpp (the independent reference): tokenization, greedy continuation
//! and teacher-forced logits on the two real models. Golden files come from
//! `scripts/gen-reference.sh` (llama.cpp built from the pinned PyPI sdist).

mod common;

use switchyard_core::Backend;
use switchyard_runtime::generate::Session;
use switchyard_runtime::sampling::argmax;

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_tokenize(alias: &str) {
    let m = common::model(alias);
    let g = common::golden(alias, "tokenize.json");
    let cases = g.as_array().unwrap();
    assert!(
        cases.len() >= 200,
        "need >= 200 strings, golden has {}",
        cases.len()
    );
    let mut bad = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        let got = m.tokenizer.encode(text, true).unwrap();
        if got != want {
            bad.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{alias}: {} of {} strings differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn tokenize_matches_llamacpp_gemma() {
    check_tokenize("gemma-3-270m");
}

#[test]
fn tokenize_matches_llamacpp_qwen() {
    check_tokenize("qwen2.5-coder-0.5b-instruct");
}

/// A different greedy choice is accepted only at a near-tie: a reference top-1/top-2 gap below
/// three times the reference's own mean noise, and on at most 5% of the steps. The issue
/// suggested 0.05; measurement says that is below the noise of the reference itself: llama.cpp's
/// two CPU attention paths (flash attention on/off) disagree with each other by a mean |dlogit|
/// of 0.11 (Qwen) and 0.21 (Gemma) on the same text (`reference_self_noise` in logits.json), so
/// near-tie = 0.33 (Qwen), 0.63 (Gemma). That noise has a long tail (llama.cpp's max
/// self-disagreement is 0.7 / 2.1), so one divergence per model with a gap inside the tail is
/// allowed too (seen: Gemma, "La vie est belle, mais" step 28, gap 0.906, at the AVX-512 VNNI
/// level only). A real bug (wrong rope base, norm, window or activation) moves logits by whole
/// units at many decisive steps and fails this.
fn near_tie(alias: &str) -> f64 {
    3.0 * common::golden(alias, "logits.json")["reference_self_noise"]["mean_abs_diff"]
        .as_f64()
        .unwrap()
}

fn check_greedy(alias: &str) {
    let m = common::model(alias);
    let mut be = common::backend(&m);
    let g = common::golden(alias, "greedy.json");
    let cases = g.as_array().unwrap();
    assert!(cases.len() >= 8);
    let near_tie = near_tie(alias);
    let tail_max = common::golden(alias, "logits.json")["reference_self_noise"]["max_abs_diff"]
        .as_f64()
        .unwrap();
    let (mut steps, mut exact_prompts, mut report, mut tail) = (0, 0, Vec::new(), 0);
    for c in cases {
        let prompt = ids(&c["prompt_ids"]);
        assert_eq!(
            m.tokenizer
                .encode(c["prompt"].as_str().unwrap(), true)
                .unwrap(),
            prompt
        );
        let want = ids(&c["tokens"]);
        let gaps: Vec<f64> = c["top2_gap"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(want.len(), 64);
        let backend: &mut dyn Backend = be.as_mut();
        let mut s = Session::new(backend, prompt.len() + want.len() + 1).unwrap();
        let mut last = Vec::new();
        let n = prompt.len();
        s.feed(&prompt, |i| i + 1 == n, |_, r| last = r.to_vec())
            .unwrap();
        let mut first_divergence = None;
        for (step, &w) in want.iter().enumerate() {
            steps += 1;
            let got = argmax(&last);
            if got != w {
                // Beyond a near-tie but inside llama.cpp's own worst self-disagreement: the noise
                // tail, allowed once per model (a real bug diverges at many decisive steps).
                if gaps[step] >= near_tie {
                    tail += 1;
                }
                assert!(
                    gaps[step] < near_tie || (gaps[step] < tail_max && tail <= 1),
                    "{alias} prompt {:?}: step {step} chose {got}, llama.cpp {w} with a top-2 gap of {} \
                     (not a near-tie: < {near_tie:.3}; a tail divergence {tail} of at most 1, gap < {tail_max:.3})",
                    c["prompt"], gaps[step]
                );
                report.push(format!(
                    "{:?} step {step} (gap {:.3})",
                    c["prompt"].as_str().unwrap(),
                    gaps[step]
                ));
                first_divergence.get_or_insert(step);
            }
            // Teacher-force the reference token so every one of the 64 steps is compared.
            s.feed(&[w], |_| true, |_, r| last = r.to_vec()).unwrap();
        }
        if first_divergence.is_none() {
            exact_prompts += 1;
        }
    }
    assert!(
        report.len() * 20 <= steps,
        "{alias}: {} of {steps} greedy choices differ from llama.cpp (more than 5%)",
        report.len()
    );
    eprintln!(
        "{alias}: {} prompts x 64 steps = {steps} steps; {exact_prompts} prompts identical for all 64 tokens; \
         {} near-tie choices differ: {report:?}",
        cases.len(),
        report.len()
    );
}

#[test]
fn greedy_matches_llamacpp_gemma() {
    check_greedy("gemma-3-270m");
}

#[test]
fn greedy_matches_llamacpp_qwen() {
    check_greedy("qwen2.5-coder-0.5b-instruct");
}

/// Teacher-forced logits over a >= 512-token text, compared with llama.cpp's.
///
/// Bounds, from measurement (`reference_self_noise` in logits.json, written by
/// gen-reference.sh): llama.cpp disagrees with itself between its two CPU attention paths
/// (flash attention on/off) by a mean |dlogit| of 0.21 on Gemma and 0.11 on Qwen over the top-20
/// logits, and its top-1 agreement with itself is only 95.0% / 96.6%: these small models amplify
/// rounding, so 99% raw top-1 agreement with any single llama.cpp configuration is unattainable
/// even for llama.cpp. We therefore require:
/// - mean |dlogit| (top-20 + 16 probe ids per position) <= 1.25 x the reference's self-noise;
/// - top-1 agreement >= 99% at decisive positions (reference top-2 gap >= 0.5), where rounding
///   cannot flip the choice (llama.cpp vs itself: 100% / 99.8%);
/// - raw top-1 agreement no more than 2 points below the reference's agreement with itself.
fn check_logits(alias: &str) {
    let m = common::model(alias);
    let mut be = common::backend(&m);
    let g = common::golden(alias, "logits.json");
    let toks = ids(&g["tokens"]);
    assert!(toks.len() >= 512, "need a >= 512-token text");
    let probe = ids(&g["probe_ids"]);
    let pos = g["positions"].as_array().unwrap();
    let noise = &g["reference_self_noise"];
    let noise_mean = noise["mean_abs_diff"].as_f64().unwrap();
    let noise_agree = noise["agreement"].as_f64().unwrap();
    assert_eq!(pos.len(), toks.len());
    let backend: &mut dyn Backend = be.as_mut();
    let mut s = Session::new(backend, toks.len()).unwrap();
    let (mut agree, mut decisive, mut decisive_agree) = (0usize, 0usize, 0usize);
    let (mut sum_abs, mut count, mut worst) = (0f64, 0usize, 0f64);
    s.feed(
        &toks,
        |_| true,
        |i, row| {
            let p = &pos[i];
            let top = p["top"].as_array().unwrap();
            let ref_top1 = top[0][0].as_u64().unwrap() as u32;
            let gap = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
            let same = argmax(row) == ref_top1;
            agree += same as usize;
            if gap >= 0.5 {
                decisive += 1;
                decisive_agree += same as usize;
            }
            let pairs = common::golden_pairs(p, &probe);
            for (id, want) in pairs {
                let d = (row[id] as f64 - want).abs();
                sum_abs += d;
                count += 1;
                worst = worst.max(d);
            }
        },
    )
    .unwrap();
    let rate = agree as f64 / toks.len() as f64;
    let drate = decisive_agree as f64 / decisive as f64;
    let mean = sum_abs / count as f64;
    eprintln!(
        "{alias}: {} positions: top-1 agreement {:.2}% (llama.cpp vs itself {:.2}%), at {decisive} decisive positions {:.2}%; \
         mean |dlogit| {mean:.4} (llama.cpp vs itself {noise_mean:.4}), max {worst:.3}",
        toks.len(), rate * 100.0, noise_agree * 100.0, drate * 100.0
    );
    assert!(
        mean <= 1.25 * noise_mean,
        "{alias}: mean |dlogit| {mean:.4} > 1.25 x reference self-noise {noise_mean:.4}"
    );
    assert!(
        drate >= 0.99,
        "{alias}: top-1 agreement at decisive positions {drate:.4} < 0.99"
    );
    assert!(
        rate >= noise_agree - 0.02,
        "{alias}: top-1 agreement {rate:.4} more than 2 points below {noise_agree:.4}"
    );
}

#[test]
fn logits_match_llamacpp_gemma() {
    check_logits("gemma-3-270m");
}

#[test]
fn logits_match_llamacpp_qwen() {
    check_logits("qwen2.5-coder-0.5b-instruct");
}

// SmolLM2-135M-Instruct (Q4_1 weights, `smollm` pre-tokenizer): the registry's third model.

#[test]
fn tokenize_matches_llamacpp_smollm2() {
    check_tokenize("smollm2-135m-instruct");
}

#[test]
fn greedy_matches_llamacpp_smollm2() {
    check_greedy("smollm2-135m-instruct");
}

#[test]
fn logits_match_llamacpp_smollm2() {
    check_logits("smollm2-135m-instruct");
}
