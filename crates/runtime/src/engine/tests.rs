//! Engine tests over a fake backend and a tiny tokenizer: the fake model's logits are a hash of
//! the whole token sequence read back from its paged KV slots, so a wrong block table, a bad
//! prefix-cache hit or a lost preemption shows up as different tokens or a backend error.

use std::path::Path;
use std::sync::{Arc, Mutex};

use switchyard_core::{
    Activation, Architecture, Backend, BackendCapabilities, BackendError, BlockId, ForwardBatch,
    KvCacheConfig, KvCacheInfo, LayerAttention, Logits, ModelConfig, SamplingParams,
};

use super::*;
use crate::gguf::{GgufFile, Value};
use crate::gguf_write::GgufWriter;

/// Model vocabulary: larger than the tokenizer's, like Qwen's padded embedding.
pub(super) const VOCAB: usize = 64;
const UNK: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;

/// Tiny SentencePiece-style vocabulary: specials, "▁", letters, punctuation, "▁x" pairs.
pub(super) fn vocab_tokens() -> Vec<(String, i32)> {
    let mut v = vec![
        ("<unk>".to_string(), 2),
        ("<s>".into(), 3),
        ("</s>".into(), 3),
    ];
    v.push(("▁".into(), 1));
    for c in 'a'..='z' {
        v.push((c.to_string(), 1));
    }
    for p in [".", ",", "\n"] {
        v.push((p.into(), 1));
    }
    for c in 'a'..='z' {
        v.push((format!("▁{c}"), 1));
    }
    v
}

pub(super) fn id_of(t: &str) -> u32 {
    vocab_tokens().iter().position(|(s, _)| s == t).unwrap() as u32
}

pub(super) fn tiny_tokenizer() -> Arc<Tokenizer> {
    let toks = vocab_tokens();
    let mut w = GgufWriter::new();
    w.sentencepiece_vocab(&toks)
        .kv("tokenizer.ggml.bos_token_id", Value::U64(BOS.into()))
        .kv("tokenizer.ggml.eos_token_id", Value::U64(EOS.into()))
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(true));
    let g = GgufFile::from_bytes(Path::new("tiny.gguf"), w.to_bytes()).unwrap();
    let t = Tokenizer::from_gguf(&g).unwrap();
    assert_eq!(t.vocab_size, toks.len());
    Arc::new(t)
}

pub(super) fn model_config() -> ModelConfig {
    ModelConfig {
        arch: Architecture::Llama,
        n_layers: 1,
        hidden: 8,
        ffn: 8,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 8,
        vocab_size: VOCAB,
        context_length: 2048,
        rms_eps: 1e-6,
        rope_base: 1e4,
        rope_base_local: 1e4,
        layers: vec![LayerAttention::Global],
        activation: Activation::Silu,
        qk_norm: false,
        post_norms: false,
        embed_scale: 1.0,
        query_scale: 1.0,
        final_logit_softcap: None,
        attn_logit_softcap: None,
        tied_embeddings: true,
        rope_freq_factors: None,
        rope_freq_scale: 1.0,
        rope_freq_scale_local: 1.0,
        moe: None,
        rope_scaling: Default::default(),
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The fake model: logits of the next token after `tokens`.
pub(super) fn fake_logits(tokens: &[u32], row: &mut [f32]) {
    fake_logits_salted(tokens, row, 0);
}

/// Another fake model for each `salt` (0 is [`fake_logits`]'s): a draft model with the same
/// vocabulary and other weights.
pub(super) fn fake_logits_salted(tokens: &[u32], row: &mut [f32], salt: u64) {
    let h = tokens
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64 ^ salt, |h, &t| {
            splitmix(h ^ u64::from(t))
        });
    for (j, v) in row.iter_mut().enumerate() {
        *v = (splitmix(h ^ ((j as u64) << 20)) >> 40) as f32 / (1u64 << 24) as f32 * 4.0;
    }
    row[UNK as usize] = -5.0;
    row[BOS as usize] = -5.0;
    row[id_of(",") as usize] = -5.0; // "," only appears in prompts (it makes the fake fail).
    row[EOS as usize] = if tokens.last() == Some(&id_of(".")) {
        10.0
    } else {
        -5.0
    };
}

#[derive(Debug, Default)]
pub(super) struct Log {
    /// (sequences, tokens) of every forward call.
    pub(super) batches: Vec<(usize, usize)>,
    /// Steps answered by `forward_greedy`.
    greedy_steps: usize,
}

/// A backend whose KV cache stores (position, token) per slot.
pub(super) struct Fake {
    block_size: usize,
    slots: Vec<Option<(usize, u32)>>,
    log: Arc<Mutex<Log>>,
    /// Time each forward call takes.
    delay: std::time::Duration,
    /// Static shapes reported, if any.
    buckets: Option<Vec<(usize, usize)>>,
    /// Answer `forward_greedy` (as a GPU backend does), else leave it to the host.
    greedy: bool,
    /// A broken `forward_greedy`: 1 answers one id too few, 2 an id past `vocab_limit`.
    greedy_fault: u8,
    /// Which fake model ([`fake_logits_salted`]).
    salt: u64,
}

impl Fake {
    /// The fake model of `salt` (0: [`fake_logits`]), answering `forward_greedy` or not.
    pub(super) fn new(greedy: bool, salt: u64) -> (Self, Arc<Mutex<Log>>) {
        let log = Arc::new(Mutex::new(Log::default()));
        let fake = Fake {
            block_size: 0,
            slots: Vec::new(),
            log: log.clone(),
            delay: std::time::Duration::ZERO,
            buckets: None,
            greedy,
            greedy_fault: 0,
            salt,
        };
        (fake, log)
    }

    /// Each forward call takes `delay`.
    pub(super) fn with_delay(mut self, delay: std::time::Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl Backend for Fake {
    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            kind: "fake",
            device_name: "fake".into(),
            total_memory: None,
            free_memory: None,
            kv_dtypes: Vec::new(),
            weight_dtypes: Vec::new(),
            shape_buckets: self.buckets.clone(),
        }
    }

    fn kv_bytes_per_block(&self, block_size: usize) -> usize {
        block_size * 8
    }

    fn init_kv_cache(&mut self, c: KvCacheConfig) -> Result<KvCacheInfo, BackendError> {
        self.block_size = c.block_size;
        self.slots = vec![None; c.block_size * c.num_blocks];
        Ok(KvCacheInfo {
            block_size: c.block_size,
            num_blocks: c.num_blocks,
            bytes_per_block: self.kv_bytes_per_block(c.block_size),
        })
    }

    fn forward(&mut self, b: &ForwardBatch) -> Result<Logits, BackendError> {
        b.validate(self.block_size)
            .map_err(BackendError::InvalidBatch)?;
        std::thread::sleep(self.delay);
        if b.token_ids.contains(&id_of(",")) {
            return Err(BackendError::Device("fake failure on ','".into()));
        }
        self.log
            .lock()
            .unwrap()
            .batches
            .push((b.seqs.len(), b.num_tokens()));
        let bs = self.block_size;
        let slot = |t: &[BlockId], p: usize| t[p / bs].0 as usize * bs + p % bs;
        let mut owner = vec![usize::MAX; b.num_tokens()];
        for (si, s) in b.seqs.iter().enumerate() {
            for i in 0..s.len {
                let pos = s.context_before + i;
                self.slots[slot(&s.block_table, pos)] = Some((pos, b.token_ids[s.start + i]));
                owner[s.start + i] = si;
            }
        }
        let mut data = vec![0f32; b.logits_indices.len() * VOCAB];
        for (row, &i) in data.chunks_exact_mut(VOCAB).zip(&b.logits_indices) {
            let s = &b.seqs[owner[i]];
            let pos = b.positions[i] as usize;
            let mut seq = Vec::with_capacity(pos + 1);
            for p in 0..=pos {
                match self.slots[slot(&s.block_table, p)] {
                    Some((q, t)) if q == p => seq.push(t),
                    other => {
                        return Err(BackendError::InvalidBatch(format!(
                            "stale KV slot for position {p}: {other:?}"
                        )))
                    }
                }
            }
            fake_logits_salted(&seq, row, self.salt);
        }
        Ok(Logits { vocab: VOCAB, data })
    }

    fn forward_greedy(
        &mut self,
        b: &ForwardBatch,
        vocab_limit: usize,
    ) -> Option<Result<Vec<u32>, BackendError>> {
        if !self.greedy {
            return None;
        }
        let fault = self.greedy_fault;
        let r = self.forward(b).map(|l| {
            let mut ids: Vec<u32> = l
                .data
                .chunks_exact(l.vocab)
                .map(|row| crate::sampling::argmax(&row[..vocab_limit]))
                .collect();
            match fault {
                1 => {
                    ids.pop();
                }
                2 => ids[0] = vocab_limit as u32,
                _ => {}
            }
            ids
        });
        self.log.lock().unwrap().greedy_steps += 1;
        Some(r)
    }

    fn copy_blocks(&mut self, _: &[(BlockId, BlockId)]) -> Result<(), BackendError> {
        Ok(())
    }
}

fn start(config: EngineConfig) -> (EngineHandle, Arc<Mutex<Log>>) {
    start_slow(config, std::time::Duration::ZERO)
}

fn start_slow(config: EngineConfig, delay: std::time::Duration) -> (EngineHandle, Arc<Mutex<Log>>) {
    start_fake(config, delay, false)
}

fn start_fake(
    config: EngineConfig,
    delay: std::time::Duration,
    greedy: bool,
) -> (EngineHandle, Arc<Mutex<Log>>) {
    start_fake_fault(config, delay, greedy, 0)
}

fn start_fake_fault(
    config: EngineConfig,
    delay: std::time::Duration,
    greedy: bool,
    greedy_fault: u8,
) -> (EngineHandle, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let fake = Fake {
        block_size: 0,
        slots: Vec::new(),
        log: log.clone(),
        delay,
        buckets: None,
        greedy,
        greedy_fault,
        salt: 0,
    };
    let h = EngineHandle::start(Box::new(fake), tiny_tokenizer(), &model_config(), config).unwrap();
    (h, log)
}

pub(super) fn config(num_blocks: usize, budget: usize) -> EngineConfig {
    EngineConfig {
        block_size: 4,
        kv_cache: KvCacheSize::Blocks(num_blocks),
        max_num_batched_tokens: budget,
        max_num_seqs: 16,
        enable_prefix_caching: true,
        max_model_len: None,
        sliding_window_kv: true,
        speculative: None,
    }
}

/// A prompt of `len` random letter tokens (after BOS) from `seed`.
pub(super) fn prompt(seed: u64, len: usize) -> Vec<u32> {
    let first = id_of("a");
    std::iter::once(BOS)
        .chain((0..len as u64).map(|i| first + (splitmix(seed * 1000 + i) % 26) as u32))
        .collect()
}

pub(super) fn greedy(p: Vec<u32>, max_tokens: usize) -> EngineRequest {
    EngineRequest {
        ignore_eos: true,
        ..EngineRequest::new(p, max_tokens)
    }
}

pub(super) fn one(h: &EngineHandle, r: EngineRequest) -> Completion {
    let mut v = h.submit(r).unwrap().collect_blocking().unwrap();
    assert_eq!(v.len(), 1);
    v.pop().unwrap()
}

/// What the fake model generates greedily, computed without the engine.
pub(super) fn reference(p: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut seq = p.to_vec();
    let mut row = vec![0f32; VOCAB];
    let n_tok = vocab_tokens().len();
    for _ in 0..max_tokens {
        fake_logits(&seq, &mut row);
        row[n_tok..].fill(f32::NEG_INFINITY);
        seq.push(crate::sampling::argmax(&row));
    }
    seq[p.len()..].to_vec()
}

#[test]
fn batched_chunked_and_prefix_shared_requests_match_the_model() {
    let (h, log) = start(config(256, 16));
    let shared = prompt(7, 21);
    let mut reqs = Vec::new();
    for i in 0..12u64 {
        let mut p = if i % 3 == 0 {
            shared.clone()
        } else {
            prompt(i, 3 + 5 * i as usize)
        };
        p.extend(prompt(100 + i, (i % 4) as usize).into_iter().skip(1));
        reqs.push(greedy(p, 6 + i as usize));
    }
    let streams: Vec<_> = reqs.iter().map(|r| h.submit(r.clone()).unwrap()).collect();
    for (r, s) in reqs.iter().zip(streams) {
        let c = s.collect_blocking().unwrap().pop().unwrap();
        assert_eq!(c.token_ids, reference(&r.prompt, r.max_tokens));
        assert_eq!(c.finish, FinishReason::Length);
        assert_eq!(c.usage.completion_tokens, r.max_tokens);
        assert_eq!(c.text, h.tokenizer().decode(&c.token_ids, true).unwrap());
    }
    let log = log.lock().unwrap();
    assert!(
        log.batches.iter().any(|&(seqs, _)| seqs > 4),
        "{:?}",
        log.batches
    );
    assert!(log.batches.iter().all(|&(_, tokens)| tokens <= 16));
    let st = h.stats_blocking().unwrap();
    assert_eq!(st.num_free_blocks, st.num_blocks);
    assert_eq!((st.num_running, st.num_waiting, st.num_requests), (0, 0, 0));
    assert!(st.generation_tokens_total > 0 && st.num_steps > 0);
}

#[test]
fn later_request_reuses_the_cached_prefix() {
    let (h, _) = start(config(64, 64));
    let p = prompt(1, 30);
    let a = one(&h, greedy(p.clone(), 5));
    assert_eq!(a.usage.cached_tokens, 0);
    let b = one(&h, greedy(p.clone(), 5));
    // 31 tokens: 7 full blocks of 4 may be reused (never the block holding the last token).
    assert_eq!(b.usage.cached_tokens, 28);
    assert_eq!(a.token_ids, b.token_ids);
    let st = h.stats_blocking().unwrap();
    assert_eq!(st.prefix_cache_hits, 28);
}

#[test]
fn preemption_under_a_tiny_pool_keeps_outputs() {
    // Each request needs up to 8 blocks (prompt 17 + 14 generated); the pool has 12.
    let (h, _) = start(config(12, 64));
    let reqs: Vec<_> = (0..6).map(|i| greedy(prompt(20 + i, 16), 15)).collect();
    let streams: Vec<_> = reqs.iter().map(|r| h.submit(r.clone()).unwrap()).collect();
    for (r, s) in reqs.iter().zip(streams) {
        let c = s.collect_blocking().unwrap().pop().unwrap();
        assert_eq!(c.token_ids, reference(&r.prompt, r.max_tokens));
    }
    let st = h.stats_blocking().unwrap();
    assert!(st.num_preemptions > 0, "{st:?}");
    assert_eq!(st.num_free_blocks, st.num_blocks);
}

#[test]
fn dropping_or_cancelling_a_stream_frees_its_blocks() {
    // Slow steps (5 ms): the 200-token requests must still be running when cancelled.
    let (h, _) = start_slow(config(64, 64), std::time::Duration::from_millis(5));
    let mut s = h.submit(greedy(prompt(3, 20), 200)).unwrap();
    let first = s.blocking_recv().unwrap().unwrap();
    assert_eq!(first.token_ids.len(), 1);
    assert!(h.stats_blocking().unwrap().num_free_blocks < 64);
    drop(s);
    let st = h.stats_blocking().unwrap();
    assert_eq!(
        (st.num_free_blocks, st.num_running, st.num_requests),
        (64, 0, 0)
    );

    let mut s = h.submit(greedy(prompt(4, 20), 200)).unwrap();
    s.blocking_recv().unwrap().unwrap();
    h.cancel(s.id());
    let mut last = None;
    while let Some(item) = s.blocking_recv() {
        last = Some(item.unwrap());
    }
    assert_eq!(last.unwrap().finish, Some(FinishReason::Cancelled));
    assert_eq!(h.stats_blocking().unwrap().num_free_blocks, 64);
}

#[test]
fn backend_error_fails_the_step_and_the_engine_goes_on() {
    let (h, _) = start(config(64, 64));
    let mut bad = prompt(5, 8);
    bad[3] = id_of(",");
    let e = h
        .submit(greedy(bad, 4))
        .unwrap()
        .collect_blocking()
        .unwrap_err();
    assert!(
        matches!(e, EngineError::Backend(ref m) if m.contains("fake failure")),
        "{e}"
    );
    let p = prompt(6, 8);
    assert_eq!(one(&h, greedy(p.clone(), 4)).token_ids, reference(&p, 4));
    assert_eq!(h.stats_blocking().unwrap().num_free_blocks, 64);
}

#[test]
fn a_panic_fails_only_its_request() {
    let (h, _) = start(config(64, 64));
    let mut bad = greedy(prompt(8, 8), 4);
    bad.sampling.logit_bias = vec![(u32::MAX, 42.0)];
    let good = greedy(prompt(9, 8), 4);
    let sb = h.submit(bad).unwrap();
    let sg = h.submit(good.clone()).unwrap();
    let e = sb.collect_blocking().unwrap_err();
    assert!(
        matches!(e, EngineError::Internal(ref m) if m.contains("injected")),
        "{e}"
    );
    let c = sg.collect_blocking().unwrap().pop().unwrap();
    assert_eq!(c.token_ids, reference(&good.prompt, 4));
}

#[test]
fn eos_ends_a_choice_and_is_not_text() {
    let (h, _) = start(config(64, 64));
    // Find a prompt whose greedy continuation reaches "." (then EOS) within 40 tokens.
    let (p, refs) = (0..200)
        .map(|i| prompt(300 + i, 6))
        .map(|p| {
            let r = reference(&p, 40);
            (p, r)
        })
        .find(|(_, r)| r.contains(&EOS))
        .expect("some prompt reaches EOS");
    let end = refs.iter().position(|&t| t == EOS).unwrap();
    let c = one(&h, EngineRequest::new(p.clone(), 40));
    assert_eq!(c.token_ids, refs[..=end]);
    assert_eq!(c.finish, FinishReason::Stop(StopReason::Eos(EOS)));
    assert_eq!(c.text, h.tokenizer().decode(&refs[..end], true).unwrap());
    // min_tokens masks EOS: the choice goes on past it.
    let c = one(
        &h,
        EngineRequest {
            min_tokens: end + 2,
            ..EngineRequest::new(p, end + 2)
        },
    );
    assert_eq!(c.finish, FinishReason::Length);
    assert!(!c.token_ids.contains(&EOS));
    assert_eq!(c.token_ids[..end], refs[..end]);
}

#[test]
fn stop_strings_and_stop_tokens() {
    let (h, _) = start(config(64, 64));
    let p = prompt(11, 5);
    let full = one(&h, greedy(p.clone(), 30));
    let tok = h.tokenizer();
    // Pick a stop string that spans a token boundary: the last char of token 4's text and
    // the first of token 5's.
    let upto = |n: usize| tok.decode(&full.token_ids[..n], true).unwrap();
    let (a, b) = (upto(4), upto(5));
    let stop: String = a
        .chars()
        .last()
        .into_iter()
        .chain(b[a.len()..].chars().take(1))
        .collect();
    assert_eq!(stop.chars().count(), 2, "{a:?} {b:?}");
    let cut = full.text.find(&stop).unwrap();
    let c = one(
        &h,
        EngineRequest {
            stop: vec!["NEVER".into(), stop.clone()],
            ..greedy(p.clone(), 30)
        },
    );
    assert_eq!(c.text, full.text[..cut]);
    assert_eq!(c.finish, FinishReason::Stop(StopReason::StopString(stop)));
    // Stop token id: the token is reported, its text is not.
    let t = full.token_ids[6];
    let first = full.token_ids.iter().position(|&x| x == t).unwrap();
    let c = one(
        &h,
        EngineRequest {
            stop_token_ids: vec![t],
            ..greedy(p.clone(), 30)
        },
    );
    assert_eq!(c.token_ids, full.token_ids[..=first]);
    assert_eq!(c.finish, FinishReason::Stop(StopReason::StopToken(t)));
    assert_eq!(c.text, upto(first));
}

#[test]
fn n_choices_share_the_prompt_and_use_derived_seeds() {
    let (h, _) = start(config(128, 64));
    let p = prompt(12, 26);
    let sampled = |seed: u64, n: usize| EngineRequest {
        n,
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..Default::default()
        },
        ..greedy(p.clone(), 12)
    };
    let many = h
        .submit(sampled(99, 4))
        .unwrap()
        .collect_blocking()
        .unwrap();
    assert_eq!(many.len(), 4);
    for (i, c) in many.iter().enumerate() {
        assert_eq!(c.index, i);
        // 27 prompt tokens: choices 1.. find its 6 full blocks in the cache.
        if i > 0 {
            assert_eq!(c.usage.cached_tokens, 24, "choice {i}");
        }
        let alone = one(&h, sampled(99 + i as u64, 1));
        assert_eq!(alone.token_ids, c.token_ids, "choice {i}");
    }
    assert_ne!(many[0].token_ids, many[1].token_ids);
}

#[test]
fn seeded_sampling_is_reproducible_in_any_batch() {
    let (h, _) = start(config(256, 32));
    let req = EngineRequest {
        sampling: SamplingParams {
            temperature: 0.8,
            top_p: 0.9,
            top_k: 20,
            presence_penalty: 0.5,
            seed: Some(1234),
            ..Default::default()
        },
        ..greedy(prompt(13, 9), 20)
    };
    let alone = one(&h, req.clone());
    let others: Vec<_> = (0..6)
        .map(|i| {
            h.submit(greedy(prompt(40 + i, 7 + i as usize), 25))
                .unwrap()
        })
        .collect();
    let again = one(&h, req);
    drop(others);
    assert_eq!(alone.token_ids, again.token_ids);
    assert_eq!(alone.text, again.text);
}

#[test]
fn logprobs_and_prompt_logprobs() {
    let (h, _) = start(EngineConfig {
        enable_prefix_caching: false,
        ..config(64, 8)
    });
    let p = prompt(14, 12);
    let c = one(
        &h,
        EngineRequest {
            logprobs: Some(3),
            prompt_logprobs: Some(2),
            ..greedy(p.clone(), 5)
        },
    );
    let lps = c.logprobs.unwrap();
    assert_eq!(lps.len(), 5);
    let mut row = vec![0f32; VOCAB];
    let n_tok = vocab_tokens().len();
    let mut seq = p.clone();
    for (lp, &t) in lps.iter().zip(&c.token_ids) {
        fake_logits(&seq, &mut row);
        row[n_tok..].fill(f32::NEG_INFINITY);
        let (want, top) = crate::sampling::logprobs(&row, t, 3);
        assert_eq!((lp.token, lp.logprob, &lp.top), (t, want, &top));
        assert_eq!(top[0].0, t, "greedy picks the top token");
        seq.push(t);
    }
    // Prompt logprobs span several 8-token steps (chunked prefill).
    let plp = c.prompt_logprobs.unwrap();
    assert_eq!(plp.len(), p.len());
    assert!(plp[0].is_none());
    for pos in 1..p.len() {
        fake_logits(&p[..pos], &mut row);
        let (want, top) = crate::sampling::logprobs(&row, p[pos], 2);
        let got = plp[pos].as_ref().unwrap();
        assert_eq!(
            (got.token, got.logprob, &got.top),
            (p[pos], want, &top),
            "{pos}"
        );
    }
}

#[test]
fn submit_validation_and_shutdown() {
    let (h, _) = start_slow(config(16, 64), std::time::Duration::from_millis(5));
    let e = |r: EngineRequest| h.submit(r).unwrap_err();
    assert_eq!(e(EngineRequest::new(vec![], 4)), SubmitError::EmptyPrompt);
    assert_eq!(
        e(EngineRequest::new(vec![BOS, 99], 4)),
        SubmitError::TokenOutOfRange {
            token: 99,
            vocab: VOCAB
        }
    );
    assert_eq!(
        e(EngineRequest::new(vec![BOS], 0)),
        SubmitError::ZeroMaxTokens
    );
    // 16 blocks of 4 tokens: at most 65 tokens per sequence.
    assert_eq!(h.info().max_model_len, 65);
    assert!(matches!(
        e(EngineRequest::new(vec![BOS; 10], 56)),
        SubmitError::ContextTooLong { .. }
    ));
    let bad_t = EngineRequest {
        sampling: SamplingParams {
            temperature: -1.0,
            ..Default::default()
        },
        ..EngineRequest::new(vec![BOS], 4)
    };
    assert!(matches!(
        e(bad_t),
        SubmitError::BadSampling {
            param: "temperature",
            ..
        }
    ));
    let msg = e(EngineRequest {
        n: 0,
        ..EngineRequest::new(vec![BOS], 4)
    })
    .to_string();
    assert!(msg.contains("n must be between 1 and"), "{msg}");

    let mut s = h.submit(greedy(prompt(15, 4), 60)).unwrap();
    s.blocking_recv().unwrap().unwrap();
    h.shutdown();
    let mut last = None;
    while let Some(item) = s.blocking_recv() {
        last = Some(item);
    }
    assert_eq!(last, Some(Err(EngineError::Stopped)));
    assert_eq!(
        h.submit(greedy(prompt(16, 4), 4)).unwrap_err(),
        SubmitError::Stopped
    );
    assert_eq!(h.stats_blocking().unwrap_err(), EngineError::Stopped);
}

#[test]
fn stream_impl_polls_to_the_end() {
    use futures_core::Stream;
    use std::task::{Context, Poll, Waker};
    let (h, _) = start(config(64, 64));
    let p = prompt(17, 5);
    let mut s = h.submit(greedy(p.clone(), 6)).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut tokens = Vec::new();
    loop {
        match std::pin::Pin::new(&mut s).poll_next(&mut cx) {
            Poll::Ready(Some(item)) => tokens.extend(item.unwrap().token_ids),
            Poll::Ready(None) => break,
            Poll::Pending => std::thread::yield_now(),
        }
    }
    assert_eq!(tokens, reference(&p, 6));
}

#[test]
fn handles_and_streams_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<EngineHandle>();
    send::<RequestStream>();
    send_sync::<EngineError>();
}

#[test]
fn shape_buckets_bound_steps_and_sequences() {
    let buckets = vec![(1, 8), (2, 8), (4, 24)];
    let (mut fake, log) = Fake::new(false, 0);
    fake.buckets = Some(buckets.clone());
    let h = EngineHandle::start(
        Box::new(fake),
        tiny_tokenizer(),
        &model_config(),
        config(256, 512),
    )
    .unwrap();
    assert_eq!(h.info().max_num_seqs, 4);
    assert_eq!(h.info().max_num_batched_tokens, 24);
    assert_eq!(h.info().max_model_len, 24);
    // Too long for the largest bucket: refused with a clear error.
    let e = h.submit(greedy(prompt(1, 15), 10)).unwrap_err();
    assert!(matches!(e, SubmitError::ContextTooLong { .. }), "{e:?}");
    assert!(e.to_string().contains("24"), "{e}");
    // Many requests at once, longer prompts than one step: every step fits a bucket.
    let reqs: Vec<_> = (0..9u64)
        .map(|i| {
            let p = prompt(i, 3 + (i as usize * 5) % 17);
            let n = 23 - p.len();
            (p.clone(), n, h.submit(greedy(p, n)).unwrap())
        })
        .collect();
    for (p, n, stream) in reqs {
        let c = stream.collect_blocking().unwrap().pop().unwrap();
        assert_eq!(c.token_ids, reference(&p, n));
    }
    let log = log.lock().unwrap();
    assert!(!log.batches.is_empty());
    for &(s, t) in &log.batches {
        assert!(
            buckets.iter().any(|&(b, l)| s <= b && t <= l),
            "step of {s} sequences, {t} tokens fits no bucket"
        );
    }
}

/// Greedy steps let the backend choose (`forward_greedy`, the GPU's device argmax): the same
/// tokens as choosing on the host, with preemption and prefix hits in the mix; any step with a
/// row that needs the logits (sampling, logprobs, penalties, bias, EOS masking before
/// `min_tokens`) takes the host path.
#[test]
fn device_greedy_steps_give_the_host_tokens() {
    // 10 blocks of 4 for six ~20-token requests: preemption; shared prompts: prefix hits.
    let reqs: Vec<EngineRequest> = (0..6)
        .map(|i| greedy(prompt(40 + i % 3, 9 + i as usize), 12))
        .collect();
    let mut outs = Vec::new();
    for device in [false, true] {
        let (h, log) = start_fake(config(10, 16), std::time::Duration::ZERO, device);
        let streams: Vec<_> = reqs.iter().map(|r| h.submit(r.clone()).unwrap()).collect();
        let got: Vec<Vec<u32>> = streams
            .into_iter()
            .map(|s| s.collect_blocking().unwrap().pop().unwrap().token_ids)
            .collect();
        let st = h.stats_blocking().unwrap();
        assert!(st.num_preemptions > 0, "{st:?}");
        let steps = log.lock().unwrap().greedy_steps;
        if device {
            assert!(steps > 0, "no step used forward_greedy");
        } else {
            assert_eq!(steps, 0);
        }
        for (r, g) in reqs.iter().zip(&got) {
            assert_eq!(g, &reference(&r.prompt, 12));
        }
        outs.push(got);
    }
    assert_eq!(outs[0], outs[1]);

    // Rows that need the logits: no device step while such a row is in the batch. Prompt
    // logprobs need only the prefill's rows: the 5 decode steps after it may be device steps.
    let p = prompt(50, 10);
    let needs_logits = [
        (
            EngineRequest {
                sampling: SamplingParams {
                    temperature: 0.8,
                    seed: Some(1),
                    ..Default::default()
                },
                ..greedy(p.clone(), 6)
            },
            0,
        ),
        (
            EngineRequest {
                logprobs: Some(2),
                ..greedy(p.clone(), 6)
            },
            0,
        ),
        (
            EngineRequest {
                prompt_logprobs: Some(1),
                ..greedy(p.clone(), 6)
            },
            5,
        ),
        (
            EngineRequest {
                sampling: SamplingParams {
                    repetition_penalty: 1.3,
                    ..Default::default()
                },
                ..greedy(p.clone(), 6)
            },
            0,
        ),
        (
            EngineRequest {
                sampling: SamplingParams {
                    logit_bias: vec![(id_of("a"), 5.0)],
                    ..Default::default()
                },
                ..greedy(p.clone(), 6)
            },
            0,
        ),
        (
            EngineRequest {
                ignore_eos: false,
                min_tokens: 6,
                ..greedy(p.clone(), 6)
            },
            0,
        ),
    ];
    for (i, (r, device_steps)) in needs_logits.iter().enumerate() {
        let (h, log) = start_fake(config(64, 64), std::time::Duration::ZERO, true);
        let (h2, _) = start(config(64, 64));
        let on = one(&h, r.clone());
        let off = one(&h2, r.clone());
        assert_eq!(on.token_ids, off.token_ids, "request {i}");
        assert_eq!(on.logprobs, off.logprobs, "request {i}");
        assert_eq!(on.prompt_logprobs, off.prompt_logprobs, "request {i}");
        assert_eq!(
            log.lock().unwrap().greedy_steps,
            *device_steps,
            "request {i}"
        );
    }
}

/// A backend whose greedy answer is malformed (one id short, or an id outside the vocabulary)
/// fails that step's requests with a backend error, frees their blocks, and the engine goes on
/// (a request that needs the logits still runs).
#[test]
fn a_malformed_device_greedy_answer_fails_the_step_only() {
    for (fault, what) in [(1u8, "greedy tokens for"), (2, "outside the vocabulary")] {
        let (h, _) = start_fake_fault(config(64, 64), std::time::Duration::ZERO, true, fault);
        let e = h
            .submit(greedy(prompt(7, 8), 4))
            .unwrap()
            .collect_blocking()
            .unwrap_err();
        assert!(
            matches!(e, EngineError::Backend(ref m) if m.contains(what)),
            "fault {fault}: {e}"
        );
        let p = prompt(8, 8);
        let r = EngineRequest {
            logprobs: Some(1),
            ..greedy(p.clone(), 4)
        };
        assert_eq!(one(&h, r).token_ids, reference(&p, 4));
        assert_eq!(h.stats_blocking().unwrap().num_free_blocks, 64);
    }
}
