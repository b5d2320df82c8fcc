//! Hugging Face-format models against the GGUF path on the real models. The HF directories are
//! built from the cached GGUFs by `scripts/gguf-to-hf.py` (the PyPI `gguf`, `safetensors` and
//! `transformers` packages: an implementation independent of our loader), so the two loaders
//! must agree: configuration, tokenization, chat template, and greedy output (the weights are
//! the GGUF's dequantized values; in f32 they are exact, only the kernels differ: integer dot
//! products over 8-bit activations for the quantized GGUF, f32 dot products for safetensors).
//! Also: Hub resolution through a cache laid out like `huggingface_hub`'s, offline.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard_backend_cpu::CpuBackend;
use switchyard_core::{Architecture, Backend, ModelConfig, WeightSource};
use switchyard_http::template::{ChatTemplate, Message};
use switchyard_runtime::generate::Session;
use switchyard_runtime::hf::HfWeights;
use switchyard_runtime::safetensors::{serialize, Checkpoint, SafetensorsFile};
use switchyard_runtime::sampling::argmax;
use switchyard_runtime::tokenizer::Tokenizer;
use switchyard_runtime::{Model, Weights};

const GEMMA: &str = "gemma-3-270m";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct";

fn checkpoint_files(m: &Model) -> usize {
    match &m.weights {
        Weights::Hf(h) => h.checkpoint.files.len(),
        Weights::Gguf(_) => panic!("not an HF model"),
    }
}

#[test]
fn config_equals_gguf() {
    for alias in common::MODELS {
        let g = common::model(alias);
        for variant in ["f32", "bf16"] {
            let h = common::hf_model(alias, variant);
            assert_eq!(h.config, g.config, "{alias}-{variant}");
        }
    }
}

fn strings() -> Vec<String> {
    let p = common::root().join("tests/data/tokenize_strings.jsonl");
    std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<String>(l).unwrap())
        .collect()
}

/// Whether the HF tokenizer NFC-normalizes its input: Qwen's tokenizer.json does (as the
/// published one does), llama.cpp does not; the GGUF side then gets the NFC form.
fn normalizes_nfc(hf_dir: &Path) -> bool {
    let tj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf_dir.join("tokenizer.json")).unwrap())
            .unwrap();
    tj["normalizer"]["type"] == "NFC"
}

fn nfc(s: &str) -> String {
    use tokenizers::{NormalizedString, Normalizer};
    let mut n = NormalizedString::from(s);
    tokenizers::normalizers::unicode::NFC
        .normalize(&mut n)
        .unwrap();
    n.get().to_string()
}

fn check_tokenizer(alias: &str) {
    let g = common::model(alias).tokenizer;
    let dir = common::hf_dir(alias, "bf16");
    let h = common::hf_model(alias, "bf16").tokenizer;
    assert_eq!(
        (h.bos, h.add_bos, &h.eos_ids, h.vocab_size),
        (g.bos, g.add_bos, &g.eos_ids, g.vocab_size),
        "{alias}: special tokens"
    );
    let cases = strings();
    assert!(cases.len() >= 200);
    let (mut bad, mut normalized) = (Vec::new(), 0);
    let use_nfc = normalizes_nfc(&dir);
    for s in &cases {
        let gs = if use_nfc { nfc(s) } else { s.clone() };
        normalized += (gs != *s) as usize;
        let want = g.encode(&gs, true).unwrap();
        let got = h.encode(s, true).unwrap();
        if got != want {
            bad.push(format!("{s:?}\n  gguf {want:?}\n  hf   {got:?}"));
        }
        // Decoding agrees too, special tokens kept or skipped.
        for skip in [false, true] {
            assert_eq!(
                h.decode(&got, skip).unwrap(),
                g.decode(&want, skip).unwrap(),
                "{alias}: decode {s:?} skip_special={skip}"
            );
        }
    }
    assert!(
        bad.is_empty(),
        "{alias}: {} of {} strings tokenize differently:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
    eprintln!(
        "{alias}: {} strings tokenize identically ({normalized} compared in NFC form)",
        cases.len()
    );
}

#[test]
fn tokenizer_matches_gguf_gemma() {
    check_tokenizer(GEMMA);
}

#[test]
fn tokenizer_matches_gguf_qwen() {
    check_tokenizer(QWEN);
}

fn template(t: &Tokenizer) -> ChatTemplate {
    // As the HTTP server builds it (switchyard_http::AppState::new).
    let text = |id: Option<u32>| {
        id.and_then(|i| t.token_text(i))
            .unwrap_or_default()
            .to_string()
    };
    ChatTemplate::new(
        t.chat_template.as_deref().expect("a chat template"),
        &text(t.bos),
        &text(t.eos_ids.first().copied()),
    )
    .unwrap()
}

#[test]
fn chat_template_renders_like_gguf_qwen() {
    let g = template(&common::model(QWEN).tokenizer);
    let h = template(&common::hf_model(QWEN, "bf16").tokenizer);
    let m = |role: &str, content: &str| Message {
        role: role.into(),
        content: content.into(),
    };
    let convs = [
        vec![m("user", "Write a haiku about trains.")],
        vec![
            m("system", "You are terse."),
            m("user", "2+2?"),
            m("assistant", "4"),
            m("user", "And 3+3?"),
        ],
        vec![m("user", "")],
    ];
    for c in &convs {
        for gen in [true, false] {
            let want = g.render(c, gen).unwrap();
            assert!(want.contains("<|im_start|>"), "{want}");
            assert_eq!(h.render(c, gen).unwrap(), want);
        }
    }
    // Gemma's GGUF has no template, nor has its HF copy.
    assert!(common::model(GEMMA).tokenizer.chat_template.is_none());
    assert!(common::hf_model(GEMMA, "bf16")
        .tokenizer
        .chat_template
        .is_none());
}

const PROMPTS: [&str; 4] = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village by the sea,",
    "Switchyards sort freight cars by destination. The main parts of a switchyard are",
];

/// Greedy GGUF output, then the HF model teacher-forced on prompt + that output: the HF greedy
/// output equals the GGUF's up to its first different top-1, which must be a near-tie of the
/// GGUF logits. Bounds as in tests/golden.rs, from llama.cpp's disagreement with itself
/// (`reference_self_noise`): near-tie = 3x its mean |dlogit|, and the mean |dlogit| over the
/// whole vocabulary at most 1.25x it. (The difference is the kernels': 8-bit activations for the
/// quantized GGUF, f32 for safetensors; `hf_f32_equals_dequantized_gguf` shows the weights are
/// the same.)
fn check_greedy(alias: &str, variant: &str) {
    const N: usize = 32;
    let g = common::model(alias);
    let h = common::hf_model(alias, variant);
    let noise = common::golden(alias, "logits.json")["reference_self_noise"]["mean_abs_diff"]
        .as_f64()
        .unwrap();
    let (near_tie, max_mean_abs) = (3.0 * noise, 1.25 * noise);
    let mut gb = CpuBackend::load(&g.config, g.weights()).unwrap();
    let mut hb = CpuBackend::load(&h.config, h.weights()).unwrap();
    let (mut steps, mut flips, mut identical) = (0usize, Vec::new(), 0usize);
    let (mut sum_abs, mut n_abs, mut worst) = (0f64, 0usize, 0f64);
    for p in PROMPTS {
        let prompt = g.tokenizer.encode(p, true).unwrap();
        assert_eq!(h.tokenizer.encode(p, true).unwrap(), prompt);
        let n = prompt.len();
        // GGUF: greedy, keeping each step's logits.
        let mut glog: Vec<Vec<f32>> = Vec::new();
        let mut toks = Vec::new();
        {
            let b: &mut dyn Backend = &mut gb;
            let mut s = Session::new(b, n + N + 1).unwrap();
            let mut last = Vec::new();
            s.feed(&prompt, |i| i + 1 == n, |_, r| last = r.to_vec())
                .unwrap();
            for _ in 0..N {
                let t = argmax(&last) as u32;
                toks.push(t);
                glog.push(std::mem::take(&mut last));
                s.feed(&[t], |_| true, |_, r| last = r.to_vec()).unwrap();
            }
        }
        // HF: one teacher-forced pass over prompt + the GGUF tokens.
        let mut all = prompt.clone();
        all.extend(&toks[..N - 1]);
        let mut hlog: Vec<Vec<f32>> = Vec::new();
        {
            let b: &mut dyn Backend = &mut hb;
            let mut s = Session::new(b, all.len() + 1).unwrap();
            s.feed(&all, |i| i + 1 >= n, |_, r| hlog.push(r.to_vec()))
                .unwrap();
        }
        assert_eq!(hlog.len(), N);
        let mut first = None;
        for (step, (gl, hl)) in glog.iter().zip(&hlog).enumerate() {
            steps += 1;
            for (a, b) in gl.iter().zip(hl) {
                let d = (*a as f64 - *b as f64).abs();
                sum_abs += d;
                worst = worst.max(d);
            }
            n_abs += gl.len();
            let (want, got) = (toks[step], argmax(hl) as u32);
            if got != want {
                let mut sorted = gl.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let gap = (sorted[0] - sorted[1]) as f64;
                assert!(
                    gap < near_tie,
                    "{alias}-{variant} {p:?} step {step}: HF chose {got}, GGUF {want} with a top-2 gap of {gap:.3} (not a near-tie: < {near_tie:.3})"
                );
                flips.push(format!("{p:?} step {step} (gap {gap:.3})"));
                first.get_or_insert(step);
            }
        }
        identical += first.is_none() as usize;
    }
    let mean = sum_abs / n_abs as f64;
    eprintln!(
        "{alias}-{variant}: {} prompts x {N} steps; {identical} prompts identical for all {N} tokens; \
         top-1 differs at {} steps {flips:?}; |dlogit| mean {mean:.4}, max {worst:.3}",
        PROMPTS.len(),
        flips.len()
    );
    assert!(
        flips.len() * 10 <= steps,
        "{alias}-{variant}: {} of {steps} top-1 choices differ (more than 10%)",
        flips.len()
    );
    assert!(
        mean <= max_mean_abs,
        "{alias}-{variant}: mean |dlogit| {mean:.4} > {max_mean_abs:.4}"
    );
}

/// The GGUF's weights dequantized to f32 in memory, served under their own names.
struct DequantizedGguf<'a>(&'a dyn WeightSource);

impl WeightSource for DequantizedGguf<'_> {
    fn tensor(&self, name: &str) -> Option<switchyard_core::Tensor> {
        let t = self.0.tensor(name)?;
        let bytes: Vec<u8> = t.to_f32().iter().flat_map(|v| v.to_le_bytes()).collect();
        Some(switchyard_core::Tensor {
            dtype: switchyard_core::GgmlType::F32,
            data: switchyard_core::WeightBytes::from_vec(bytes),
            ..t
        })
    }
}

/// The f32 HF copy and the GGUF dequantized to f32 run the same kernels on what must be the same
/// numbers (up to the f32 rounding of Gemma's norm -1/+1 round trip), so their logits must be
/// near-identical: this pins the name mapping, shapes, norm offsets and config, with no
/// quantization noise to hide behind.
fn check_exact(alias: &str) {
    let g = common::model(alias);
    let h = common::hf_model(alias, "f32");
    let deq = DequantizedGguf(g.weights());
    let toks = g.tokenizer.encode(PROMPTS[3], true).unwrap();
    let run = |cfg: &ModelConfig, w: &dyn WeightSource| {
        let mut be = CpuBackend::load(cfg, w).unwrap();
        let b: &mut dyn Backend = &mut be;
        let mut s = Session::new(b, toks.len()).unwrap();
        let mut out = Vec::new();
        s.feed(&toks, |_| true, |_, r| out.push(r.to_vec()))
            .unwrap();
        out
    };
    let want = run(&g.config, &deq);
    let got = run(&h.config, h.weights());
    let d = max_diff(&want, &got);
    let scale = want.iter().flatten().map(|x| x.abs()).fold(0.0, f32::max);
    eprintln!(
        "{alias}: f32 HF vs dequantized GGUF over {} positions: max |dlogit| {d:.2e} (logit scale {scale:.1})",
        toks.len()
    );
    assert!(
        d < 1e-3 * scale,
        "{alias}: max |dlogit| {d} (scale {scale})"
    );
    for (a, b) in want.iter().zip(&got) {
        assert_eq!(argmax(a), argmax(b));
    }
}

#[test]
fn hf_f32_equals_dequantized_gguf_gemma() {
    check_exact(GEMMA);
}

#[test]
fn hf_f32_equals_dequantized_gguf_qwen() {
    check_exact(QWEN);
}

#[test]
fn greedy_matches_gguf_gemma_f32() {
    check_greedy(GEMMA, "f32");
}

#[test]
fn greedy_matches_gguf_qwen_f32_sharded() {
    assert!(checkpoint_files(&common::hf_model(QWEN, "f32")) > 1);
    check_greedy(QWEN, "f32");
}

#[test]
fn greedy_matches_gguf_gemma_bf16_sharded() {
    assert!(checkpoint_files(&common::hf_model(GEMMA, "bf16")) > 1);
    check_greedy(GEMMA, "bf16");
}

// ---- tiny random models: Llama Q/K permutation, F32/F16/BF16 storage ----

fn tiny_config(c: &ModelConfig) -> serde_json::Value {
    serde_json::json!({
        "architectures": [match c.arch { Architecture::Llama => "LlamaForCausalLM", _ => "Qwen2ForCausalLM" }],
        "hidden_size": c.hidden, "intermediate_size": c.ffn, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "max_position_embeddings": c.context_length, "vocab_size": c.vocab_size,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "hidden_act": "silu"
    })
}

/// Random weights of a tiny Llama-shaped model in HF layout, bf16-representable values (so
/// F32, F16 and BF16 files hold the same numbers).
fn tiny_weights(c: &ModelConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut state = seed;
    let mut rnd = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = ((state >> 40) as f32) / (1u64 << 24) as f32 - 0.5;
        half::bf16::from_f32(u * 0.6).to_f32()
    };
    let mut v = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, norm: bool| {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| if norm { 1.0 + rnd() * 0.2 } else { rnd() })
            .map(|x| half::bf16::from_f32(x).to_f32())
            .collect();
        v.push((name, shape, data));
    };
    let (h, q, kv) = (c.hidden, c.q_dim(), c.kv_dim());
    add(
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size, h],
        false,
    );
    add("lm_head.weight".into(), vec![c.vocab_size, h], false);
    add("model.norm.weight".into(), vec![h], true);
    for i in 0..c.n_layers {
        let l = |s: &str| format!("model.layers.{i}.{s}");
        add(l("input_layernorm.weight"), vec![h], true);
        add(l("post_attention_layernorm.weight"), vec![h], true);
        add(l("self_attn.q_proj.weight"), vec![q, h], false);
        add(l("self_attn.k_proj.weight"), vec![kv, h], false);
        add(l("self_attn.v_proj.weight"), vec![kv, h], false);
        add(l("self_attn.o_proj.weight"), vec![h, q], false);
        add(l("mlp.gate_proj.weight"), vec![c.ffn, h], false);
        add(l("mlp.up_proj.weight"), vec![c.ffn, h], false);
        add(l("mlp.down_proj.weight"), vec![h, c.ffn], false);
    }
    v
}

fn encode(dtype: &str, x: &[f32]) -> Vec<u8> {
    match dtype {
        "F32" => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "F16" => x
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => x
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
    }
}

fn tiny_logits(arch: &str, dtype: &str, tokens: &[u32]) -> Vec<Vec<f32>> {
    let cfg_json = {
        let mut base = ModelConfig::new(
            Architecture::Llama,
            switchyard_core::Dims {
                n_layers: 2,
                hidden: 64,
                ffn: 96,
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 16,
                vocab_size: 50,
                context_length: 64,
            },
        );
        base.rms_eps = 1e-5;
        base.query_scale = 0.25;
        if arch == "qwen2" {
            base.arch = Architecture::Qwen2;
        }
        tiny_config(&base)
    };
    let cfg = switchyard_runtime::hf::model_config(&cfg_json, Path::new("config.json")).unwrap();
    let w = tiny_weights(&cfg, 7);
    let enc: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(n, s, d)| (n.clone(), s.clone(), encode(dtype, d)))
        .collect();
    let refs: Vec<(&str, &str, &[usize], &[u8])> = enc
        .iter()
        .map(|(n, s, d)| (n.as_str(), dtype, s.as_slice(), d.as_slice()))
        .collect();
    let f = SafetensorsFile::from_bytes(Path::new("tiny.safetensors"), serialize(&refs)).unwrap();
    let hw = HfWeights::new(Checkpoint::from_files(vec![f]).unwrap(), &cfg).unwrap();
    assert!(hw.tensor("blk.1.attn_q.weight").is_some());
    let mut be = CpuBackend::load(&cfg, &hw).unwrap();
    let b: &mut dyn Backend = &mut be;
    let mut s = Session::new(b, tokens.len()).unwrap();
    let mut out = Vec::new();
    s.feed(tokens, |_| true, |_, r| out.push(r.to_vec()))
        .unwrap();
    out
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// HF Llama keeps Q/K for rotate_half (NEOX) RoPE; our backends run Llama with interleaved
/// RoPE on llama.cpp-permuted Q/K. So the same HF weights read as Llama (permuted, interleaved)
/// and read as Qwen2 (a NEOX-RoPE architecture that is otherwise the same with no biases) must
/// give the same logits; without the permutation they differ by whole units.
#[test]
fn llama_qk_permutation_matches_neox_rope() {
    let toks: Vec<u32> = (0..12).map(|i| (i * 7 + 3) % 50).collect();
    let llama = tiny_logits("llama", "F32", &toks);
    let neox = tiny_logits("qwen2", "F32", &toks);
    let scale = llama.iter().flatten().map(|x| x.abs()).fold(0.0, f32::max);
    let d = max_diff(&llama, &neox);
    assert!(scale > 0.1, "degenerate logits");
    assert!(
        d < 1e-3 * scale.max(1.0),
        "max |dlogit| {d} (scale {scale})"
    );
}

/// The same values stored as F32, F16 and BF16 give the same logits (the CPU kernels' three
/// unquantized paths), up to f32 rounding.
#[test]
fn f32_f16_bf16_checkpoints_agree() {
    let toks: Vec<u32> = (0..10).map(|i| (i * 11 + 5) % 50).collect();
    let f32s = tiny_logits("qwen2", "F32", &toks);
    for dt in ["F16", "BF16"] {
        let d = max_diff(&f32s, &tiny_logits("qwen2", dt, &toks));
        assert!(d < 1e-3, "{dt}: max |dlogit| {d}");
    }
}

// ---- Hub resolution (offline, through the binary) ----

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sy-hf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Lays `src` out as `huggingface_hub` caches a download: blobs, a snapshot of symlinks, and
/// `refs/main` naming the commit.
fn hub_cache(hf_home: &Path, repo: &str, src: &Path, commit: &str, skip: &[&str]) {
    let base = hf_home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let snap = base.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(base.join("blobs")).unwrap();
    std::fs::create_dir_all(base.join("refs")).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || skip.contains(&name.as_str()) {
            continue;
        }
        let blob = base.join("blobs").join(format!("blob-{name}"));
        std::os::unix::fs::symlink(e.path(), &blob).unwrap();
        std::os::unix::fs::symlink(&blob, snap.join(&name)).unwrap();
    }
    std::fs::write(base.join("refs/main"), commit).unwrap();
}

fn generate(model: &str, hf_home: &Path, offline: bool) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    c.args([
        "generate",
        "--device",
        "cpu",
        "--model",
        model,
        "--prompt",
        "def add(a, b):",
        "--max-tokens",
        "8",
        "--print-ids",
    ])
    .env("SWITCHYARD_LOG", "off")
    .env("HF_HOME", hf_home)
    .env_remove("HF_HUB_CACHE");
    if offline {
        c.env("HF_HUB_OFFLINE", "1");
    } else {
        c.env_remove("HF_HUB_OFFLINE");
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let ids = err
        .lines()
        .find(|l| l.starts_with("ids: "))
        .unwrap_or("")
        .to_string();
    (out.status.code().unwrap_or(-1), ids, err)
}

#[test]
fn hub_repo_loads_offline_from_cache() {
    let home = tmp("home");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let src = common::hf_dir(QWEN, "bf16");
    hub_cache(&home, "switchyard-test/qwen-coder", &src, commit, &[]);
    let (code, want, err) = generate(src.to_str().unwrap(), &home, true);
    assert_eq!(code, 0, "{err}");
    assert!(want.starts_with("ids: ["), "{err}");
    for m in [
        "switchyard-test/qwen-coder".to_string(),
        "switchyard-test/qwen-coder@main".to_string(),
        format!("switchyard-test/qwen-coder@{commit}"),
    ] {
        let (code, ids, err) = generate(&m, &home, true);
        assert_eq!(code, 0, "{m}: {err}");
        assert_eq!(ids, want, "{m}");
    }
    std::fs::remove_dir_all(&home).unwrap();
}

fn expect_one_error_line(err: &str, needles: &[&str]) {
    assert!(!err.contains("panicked"), "panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} does not mention {n:?}");
    }
}

#[test]
fn hub_offline_missing_repo_or_file_is_a_clear_error() {
    let home = tmp("missing");
    let cache = home.join("hub");
    let cache_s = cache.display().to_string();
    // No such repository in the cache.
    let (code, _, err) = generate("switchyard-test/no-such-model", &home, true);
    assert_ne!(code, 0);
    expect_one_error_line(
        &err,
        &[
            "switchyard-test/no-such-model",
            "config.json",
            &cache_s,
            "HF_HUB_OFFLINE",
        ],
    );
    // A snapshot without its tokenizer.
    let src = common::hf_dir(GEMMA, "bf16");
    hub_cache(
        &home,
        "switchyard-test/partial",
        &src,
        "c0ffee",
        &["tokenizer.json"],
    );
    let (code, _, err) = generate("switchyard-test/partial", &home, true);
    assert_ne!(code, 0);
    expect_one_error_line(
        &err,
        &["switchyard-test/partial", "tokenizer.json", &cache_s],
    );
    // A revision that is not cached.
    let (code, _, err) = generate("switchyard-test/partial@v2", &home, true);
    assert_ne!(code, 0);
    expect_one_error_line(&err, &["switchyard-test/partial@v2", "config.json"]);
    // --no-fetch also means cache only.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["info", "--no-fetch", "--model", "switchyard-test/nope"])
        .env("SWITCHYARD_LOG", "off")
        .env("HF_HOME", &home)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let err_line = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert!(
        err_line.contains("--no-fetch") && err_line.contains("switchyard-test/nope"),
        "{err}"
    );
    std::fs::remove_dir_all(&home).unwrap();
}
