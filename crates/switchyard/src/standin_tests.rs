//! The engine on the stand-in: every request runs its full length with the stand-in's tokens,
//! one step per token, through the device argmax or the host's choice as the CUDA backend
//! would lead it, and each step takes at least the stand-in's device time.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_core::{Architecture, Dims, FinishReason, ModelConfig};
use switchyard_runtime::engine::{EngineConfig, EngineHandle, EngineRequest, KvCacheSize};
use switchyard_runtime::gguf::{GgufFile, Value};
use switchyard_runtime::gguf_write::GgufWriter;
use switchyard_runtime::tokenizer::Tokenizer;

use super::*;

/// A SentencePiece vocabulary of 59 tokens: `<unk>`, `<s>`, `</s>` (EOS), "▁", letters,
/// punctuation, "▁x" pairs.
fn tiny_tokenizer() -> Arc<Tokenizer> {
    let mut v = vec![
        ("<unk>".to_string(), 2),
        ("<s>".into(), 3),
        ("</s>".into(), 3),
        ("▁".into(), 1),
    ];
    v.extend(('a'..='z').map(|c| (c.to_string(), 1)));
    v.extend([".", ",", "\n"].map(|p| (p.to_string(), 1)));
    v.extend(('a'..='z').map(|c| (format!("▁{c}"), 1)));
    let mut w = GgufWriter::new();
    w.sentencepiece_vocab(&v)
        .kv("tokenizer.ggml.bos_token_id", Value::U64(1))
        .kv("tokenizer.ggml.eos_token_id", Value::U64(2))
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(true));
    let g = GgufFile::from_bytes(Path::new("tiny.gguf"), w.to_bytes()).unwrap();
    Arc::new(Tokenizer::from_gguf(&g).unwrap())
}

fn config(vocab_size: usize) -> ModelConfig {
    ModelConfig::new(
        Architecture::Llama,
        Dims {
            n_layers: 2,
            hidden: 8,
            ffn: 8,
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 8,
            vocab_size,
            context_length: 256,
        },
    )
}

/// What one run of the engine on a stand-in gave.
struct Run {
    /// Each request's tokens and finish reason, in submission order.
    outputs: Vec<(Vec<u32>, FinishReason)>,
    /// Steps the engine counted.
    engine_steps: u64,
    /// Steps the stand-in answered with ids, and with logits.
    greedy_steps: u64,
    logits_steps: u64,
    /// The stand-in's time inside forward calls.
    busy: Duration,
    wall: Duration,
}

/// Submits `requests` (prompt length, max tokens) all at once and waits for them.
fn run(
    backend: StandIn,
    tok: &Arc<Tokenizer>,
    cfg: &ModelConfig,
    requests: &[(usize, usize)],
) -> Run {
    let stats = backend.stats();
    let config = EngineConfig {
        kv_cache: KvCacheSize::Blocks(64),
        max_num_seqs: 8,
        max_model_len: Some(64),
        ..EngineConfig::default()
    };
    let engine = EngineHandle::start(Box::new(backend), tok.clone(), cfg, config).unwrap();
    let t0 = Instant::now();
    let streams: Vec<_> = requests
        .iter()
        .enumerate()
        .map(|(r, &(prompt, max_tokens))| {
            // Letters, a different prompt per request.
            let prompt = (0..prompt).map(|i| 4 + ((r + i) % 26) as u32).collect();
            engine
                .submit(EngineRequest::new(prompt, max_tokens))
                .unwrap()
        })
        .collect();
    let outputs = streams
        .into_iter()
        .map(|s| {
            let mut c = s.collect_blocking().unwrap();
            assert_eq!(c.len(), 1);
            let c = c.remove(0);
            (c.token_ids, c.finish)
        })
        .collect();
    let wall = t0.elapsed();
    let engine_steps = engine.stats_blocking().unwrap().num_steps;
    engine.shutdown();
    Run {
        outputs,
        engine_steps,
        greedy_steps: stats.greedy_steps.load(Ordering::Relaxed),
        logits_steps: stats.logits_steps.load(Ordering::Relaxed),
        busy: Duration::from_nanos(stats.busy_ns.load(Ordering::Relaxed)),
        wall,
    }
}

/// The tokens a request of `prompt` tokens gets from `s`: the stand-in's token at each position
/// from the prompt's last on.
fn expected(s: &StandIn, prompt: usize, max_tokens: usize) -> Vec<u32> {
    (prompt - 1..prompt - 1 + max_tokens)
        .map(|p| s.token_at(p as u32))
        .collect()
}

#[test]
fn ordinary_tokens_are_neither_special_nor_eos() {
    let tok = tiny_tokenizer();
    let ids = ordinary_tokens(&tok, tok.vocab_size);
    // Everything but <unk>, <s> and </s>.
    assert_eq!(ids, (3..tok.vocab_size as u32).collect::<Vec<_>>());
    // A model vocabulary shorter than the tokenizer's bounds them.
    assert_eq!(ordinary_tokens(&tok, 10), (3..10).collect::<Vec<_>>());
}

#[test]
fn one_request_takes_one_step_of_device_time_per_token() {
    let tok = tiny_tokenizer();
    let cfg = config(tok.vocab_size);
    let step = Duration::from_millis(2);
    let s = StandIn::new(
        &cfg,
        ordinary_tokens(&tok, cfg.vocab_size),
        step,
        Wait::Spin,
    )
    .unwrap();
    let want = expected(&s, 5, 7);
    let r = run(s, &tok, &cfg, &[(5, 7)]);
    assert_eq!(r.outputs, vec![(want, FinishReason::Length)]);
    // The prefill step gives the first token, then one decode step per token.
    assert_eq!(r.engine_steps, 7);
    assert_eq!((r.greedy_steps, r.logits_steps), (7, 0));
    assert!(
        r.busy >= 7 * step,
        "{:?} inside 7 steps of {step:?}",
        r.busy
    );
    assert!(r.wall >= r.busy, "wall {:?} < busy {:?}", r.wall, r.busy);
}

#[test]
fn every_request_runs_its_full_length_on_either_path() {
    let tok = tiny_tokenizer();
    let requests = [(3, 9), (8, 4), (1, 12), (17, 6), (5, 1), (2, 10)];
    let longest = requests.iter().map(|r| r.1).max().unwrap() as u64;
    let total = requests.iter().map(|r| r.1).sum::<usize>() as u64;
    let step = Duration::from_millis(1);
    // (model vocabulary, device argmax offered, wait): the CUDA path; a model vocabulary
    // padded past the tokenizer's (Qwen's), where the CUDA backend leaves the choice to the
    // host; no device argmax at all.
    let cases = [
        (tok.vocab_size, true, Wait::Sleep),
        (tok.vocab_size + 5, true, Wait::Spin),
        (tok.vocab_size, false, Wait::Sleep),
    ];
    for (vocab, device_greedy, wait) in cases {
        let cfg = config(vocab);
        let mut s = StandIn::new(&cfg, ordinary_tokens(&tok, vocab), step, wait).unwrap();
        if !device_greedy {
            s = s.without_device_greedy();
        }
        let want: Vec<_> = requests
            .iter()
            .map(|&(p, n)| (expected(&s, p, n), FinishReason::Length))
            .collect();
        let r = run(s, &tok, &cfg, &requests);
        let case = format!("vocab {vocab}, device greedy {device_greedy}, {wait:?}");
        assert_eq!(r.outputs, want, "{case}");
        let steps = r.greedy_steps + r.logits_steps;
        assert_eq!(r.engine_steps, steps, "{case}");
        let on_device = device_greedy && vocab == tok.vocab_size;
        assert_eq!(
            if on_device {
                r.logits_steps
            } else {
                r.greedy_steps
            },
            0,
            "{case}"
        );
        // Batched: at least the longest request's steps, never a step per token of all.
        assert!((longest..total).contains(&steps), "{case}: {steps} steps");
        assert!(r.busy >= steps as u32 * step, "{case}: {:?}", r.busy);
    }
}
