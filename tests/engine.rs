//! The continuous-batching engine end to end on the real models (CPU backend): batch
//! invariance, preemption, prefix caching, cancellation, stop conditions and seeded sampling.

mod common;

use std::sync::Arc;
use std::time::Instant;

use switchyard_core::SamplingParams;
use switchyard_runtime::engine::{
    Completion, EngineConfig, EngineHandle, EngineRequest, FinishReason, KvCacheSize, StopReason,
};
use switchyard_runtime::tokenizer::Tokenizer;

const TEXT: &str = "The history of the railway begins with wagonways in the sixteenth century. \
Horses pulled carts along wooden rails, and later iron plates made the tracks last longer. \
In 1804 Richard Trevithick ran the first steam locomotive on rails at an ironworks in Wales. \
George Stephenson's Locomotion No. 1 hauled the first public passenger train in 1825, and \
his Rocket won the Rainhill trials four years later. Within decades, networks spread across \
Europe and North America, connecting ports, mines and growing cities. Switchyards, where \
cars are sorted onto tracks by destination, became the heart of freight operations. fn \
main() { let mut totals = vec![0u64; 16]; for (i, x) in data.iter().enumerate() { totals[i \
% 16] += x; } println!(\"{totals:?}\"); } 日本の鉄道は一八七二年に新橋と横浜の間で開業した。";

/// Starts an engine on `alias` with `config`. `KvCacheSize::Blocks(n)` here means the memory
/// of `n` blocks of all layers (see [`config`]).
fn engine(alias: &str, mut config: EngineConfig) -> EngineHandle {
    let m = common::model(alias);
    let backend = common::backend(&m);
    if let KvCacheSize::Blocks(n) = config.kv_cache {
        let bytes = n * backend.kv_bytes_per_block(config.block_size);
        config.kv_cache = KvCacheSize::Bytes(bytes as u64);
    }
    EngineHandle::start(backend, Arc::new(m.tokenizer), &m.config, config).unwrap()
}

/// The KV memory of `num_blocks` blocks of all layers: that many blocks without KV groups;
/// with Gemma's sliding-window savings, 6 times as many blocks of 3 layers.
fn config(num_blocks: usize) -> EngineConfig {
    EngineConfig {
        kv_cache: KvCacheSize::Blocks(num_blocks),
        ..EngineConfig::default()
    }
}

/// [`config`] without sliding-window savings.
fn full_kv(num_blocks: usize) -> EngineConfig {
    EngineConfig {
        sliding_window_kv: false,
        ..config(num_blocks)
    }
}

/// A prompt of `len` tokens of `TEXT` repeated, starting `skip` tokens in.
fn long_prompt(tok: &Tokenizer, skip: usize, len: usize) -> Vec<u32> {
    let text = tok.encode(TEXT, false).unwrap();
    let mut p: Vec<u32> = tok.bos.filter(|_| tok.add_bos).into_iter().collect();
    p.extend(text.iter().cycle().skip(skip).take(len - p.len()));
    p
}

/// Runs `reqs` at once on `e`; their completions in order.
fn all_at_once(e: &EngineHandle, reqs: &[EngineRequest]) -> Vec<Completion> {
    let streams: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
    streams
        .into_iter()
        .map(|s| s.collect_blocking().unwrap().pop().unwrap())
        .collect()
}

/// Sixteen prompts of mixed lengths (2 to ~140 tokens), cut from `TEXT` at varied places.
fn mixed_prompts(tok: &Tokenizer) -> Vec<Vec<u32>> {
    let all = tok.encode(TEXT, false).unwrap();
    (0..16)
        .map(|i| {
            let start = (i * 37) % 60;
            let len = 1 + (i * i * 5 + i * 3) % 140;
            let mut p: Vec<u32> = tok.bos.filter(|_| tok.add_bos).into_iter().collect();
            p.extend(&all[start..(start + len).min(all.len())]);
            p
        })
        .collect()
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> EngineRequest {
    EngineRequest {
        ignore_eos: true,
        ..EngineRequest::new(prompt, max_tokens)
    }
}

fn one(e: &EngineHandle, r: EngineRequest) -> Completion {
    let mut v = e.submit(r).unwrap().collect_blocking().unwrap();
    assert_eq!(v.len(), 1);
    v.pop().unwrap()
}

/// Runs `reqs` together, then each alone, and requires identical tokens.
fn together_equals_alone(e: &EngineHandle, reqs: &[EngineRequest]) {
    let t0 = Instant::now();
    let streams: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
    let together: Vec<Completion> = streams
        .into_iter()
        .map(|s| s.collect_blocking().unwrap().pop().unwrap())
        .collect();
    let t1 = Instant::now();
    for (i, (r, t)) in reqs.iter().zip(&together).enumerate() {
        let alone = one(e, r.clone());
        assert_eq!(
            alone.token_ids,
            t.token_ids,
            "request {i} (prompt {} tokens): batched output differs from alone\nalone:   {:?}\nbatched: {:?}",
            r.prompt.len(),
            alone.text,
            t.text
        );
        assert_eq!(alone.text, t.text);
    }
    eprintln!(
        "together {:.1} s, alone {:.1} s",
        (t1 - t0).as_secs_f64(),
        t1.elapsed().as_secs_f64()
    );
}

fn batch_invariance(alias: &str) {
    let e = engine(alias, config(512));
    let prompts = mixed_prompts(e.tokenizer());
    let reqs: Vec<EngineRequest> = prompts
        .into_iter()
        .enumerate()
        .map(|(i, p)| greedy(p, 16 + i % 3 * 4))
        .collect();
    together_equals_alone(&e, &reqs);
    let st = e.stats_blocking().unwrap();
    assert_eq!(st.num_free_blocks, st.num_blocks);
}

#[test]
fn batch_invariance_gemma() {
    batch_invariance("gemma-3-270m");
}

#[test]
fn batch_invariance_qwen() {
    batch_invariance("qwen2.5-coder-0.5b-instruct");
}

#[test]
fn preemption_keeps_outputs_gemma() {
    // Each request needs 4 blocks of 16 (about 40 prompt + 20 generated tokens); the pool has
    // 6, so running five at once forces preemption and recomputation.
    let e = engine("gemma-3-270m", config(6));
    let tok = e.tokenizer().clone();
    let all = tok.encode(TEXT, true).unwrap();
    let reqs: Vec<EngineRequest> = (0..5)
        .map(|i| greedy(all[..36 + 2 * i].to_vec(), 20))
        .collect();
    let streams: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
    let constrained: Vec<Completion> = streams
        .into_iter()
        .map(|s| s.collect_blocking().unwrap().pop().unwrap())
        .collect();
    let st = e.stats_blocking().unwrap();
    assert!(st.num_preemptions > 0, "no preemption happened: {st:?}");
    assert_eq!(st.num_free_blocks, st.num_blocks);
    drop(e);
    let free = engine("gemma-3-270m", config(256));
    for (i, (r, c)) in reqs.iter().zip(&constrained).enumerate() {
        let alone = one(&free, r.clone());
        assert_eq!(alone.token_ids, c.token_ids, "request {i}");
    }
    eprintln!("{} preemptions", st.num_preemptions);
}

#[test]
fn prefix_cache_reuses_a_512_token_prefix_gemma() {
    let warm = engine("gemma-3-270m", config(256));
    let tok = warm.tokenizer().clone();
    let mut prefix = Vec::new();
    while prefix.len() < 512 {
        prefix.extend(tok.encode(TEXT, prefix.is_empty()).unwrap());
    }
    prefix.truncate(512);
    let with = |q: &str| {
        let mut p = prefix.clone();
        p.extend(tok.encode(q, false).unwrap());
        greedy(p, 12)
    };
    let a = one(
        &warm,
        with(" Question: when did the first public train run? Answer:"),
    );
    assert_eq!(a.usage.cached_tokens, 0);
    let b_req = with(" Question: who built the first steam locomotive? Answer:");
    let b = one(&warm, b_req.clone());
    let bs = warm.info().block_size;
    assert!(
        b.usage.cached_tokens >= 512 - bs,
        "only {} cached tokens",
        b.usage.cached_tokens
    );
    let cold = engine(
        "gemma-3-270m",
        EngineConfig {
            enable_prefix_caching: false,
            ..config(256)
        },
    );
    let c = one(&cold, b_req);
    assert_eq!(c.usage.cached_tokens, 0);
    assert_eq!(
        b.token_ids, c.token_ids,
        "warm {:?} vs cold {:?}",
        b.text, c.text
    );
}

#[test]
fn cancel_and_drop_free_all_blocks_gemma() {
    let e = engine("gemma-3-270m", config(64));
    let all = e.tokenizer().encode(TEXT, true).unwrap();
    let mut streams: Vec<_> = (0..4)
        .map(|i| e.submit(greedy(all[..20 + 10 * i].to_vec(), 200)).unwrap())
        .collect();
    for s in &mut streams {
        s.blocking_recv().unwrap().unwrap();
    }
    let busy = e.stats_blocking().unwrap();
    assert!(
        busy.num_free_blocks < busy.num_blocks && busy.num_requests == 4,
        "{busy:?}"
    );
    // Cancel two by id, drop the other two mid-generation.
    e.cancel(streams[0].id());
    e.cancel(streams[1].id());
    streams.truncate(2);
    let st = e.stats_blocking().unwrap();
    assert_eq!(st.num_free_blocks, st.num_blocks, "{st:?}");
    assert_eq!((st.num_running, st.num_waiting, st.num_requests), (0, 0, 0));
    for mut s in streams {
        let mut last = None;
        while let Some(item) = s.blocking_recv() {
            last = Some(item.unwrap());
        }
        assert_eq!(last.unwrap().finish, Some(FinishReason::Cancelled));
    }
}

#[test]
fn stop_strings_and_stop_token_ids_gemma() {
    let e = engine("gemma-3-270m", config(64));
    let tok = e.tokenizer().clone();
    let prompt = tok.encode("The railway station in the town", true).unwrap();
    let full = one(&e, greedy(prompt.clone(), 24));
    let upto = |n: usize| tok.decode(&full.token_ids[..n], true).unwrap();
    // A stop string spanning a token boundary: the last character of the text of tokens
    // ..k and the first character added by token k.
    let k = (3..20)
        .find(|&k| {
            let (a, b) = (upto(k), upto(k + 1));
            b.len() > a.len()
                && b.starts_with(&a)
                && !a.trim_end().is_empty()
                && !b[a.len()..].starts_with(' ')
        })
        .expect("a token boundary inside a word");
    let (a, b) = (upto(k), upto(k + 1));
    let stop = format!(
        "{}{}",
        a.chars().last().unwrap(),
        b[a.len()..].chars().next().unwrap()
    );
    let cut = full.text.find(&stop).unwrap();
    let c = one(
        &e,
        EngineRequest {
            stop: vec![stop.clone()],
            ..greedy(prompt.clone(), 24)
        },
    );
    assert_eq!(c.text, full.text[..cut], "stop {stop:?}");
    assert_eq!(
        c.finish,
        FinishReason::Stop(StopReason::StopString(stop.clone()))
    );
    assert!(c.token_ids.len() <= k + 1);

    // Stop token id: reported in the ids, not in the text.
    let t = full.token_ids[5];
    let first = full.token_ids.iter().position(|&x| x == t).unwrap();
    let c = one(
        &e,
        EngineRequest {
            stop_token_ids: vec![t],
            ..greedy(prompt.clone(), 24)
        },
    );
    assert_eq!(c.token_ids, full.token_ids[..=first]);
    assert_eq!(c.text, upto(first));
    assert_eq!(c.finish, FinishReason::Stop(StopReason::StopToken(t)));

    // min_tokens: the stop token cannot end the output before 8 tokens, nor can the stop
    // string be matched before then.
    let c = one(
        &e,
        EngineRequest {
            stop_token_ids: vec![full.token_ids[0]],
            min_tokens: 8,
            ..greedy(prompt.clone(), 10)
        },
    );
    assert!(c.token_ids.len() >= 8, "{c:?}");
    assert!(!c.token_ids[..8].contains(&full.token_ids[0]));
    let c = one(
        &e,
        EngineRequest {
            stop: vec![stop.clone()],
            min_tokens: k + 4,
            ..greedy(prompt.clone(), 24)
        },
    );
    assert!(c.token_ids.len() >= k + 4, "{c:?}");
}

#[test]
fn eos_and_min_tokens_qwen() {
    let e = engine("qwen2.5-coder-0.5b-instruct", config(64));
    let tok = e.tokenizer().clone();
    let prompt = tok
        .encode(
            "<|im_start|>user\nReply with the single word OK.<|im_end|>\n<|im_start|>assistant\n",
            false,
        )
        .unwrap();
    let c = one(&e, EngineRequest::new(prompt.clone(), 32));
    let eos = *c.token_ids.last().unwrap();
    assert!(tok.eos_ids.contains(&eos), "{c:?}");
    assert_eq!(c.finish, FinishReason::Stop(StopReason::Eos(eos)));
    assert!(!c.text.contains("<|im_end|>"));
    let n = c.token_ids.len();
    let longer = one(
        &e,
        EngineRequest {
            min_tokens: n + 3,
            ..EngineRequest::new(prompt, n + 6)
        },
    );
    assert!(longer.token_ids.len() >= n + 3, "{longer:?}");
    assert!(!longer.token_ids[..n + 3]
        .iter()
        .any(|t| tok.eos_ids.contains(t)));
}

#[test]
fn seeded_sampling_is_reproducible_when_batched_gemma() {
    let e = engine("gemma-3-270m", config(256));
    let tok = e.tokenizer().clone();
    let req = EngineRequest {
        sampling: SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            top_k: 40,
            seed: Some(7),
            ..Default::default()
        },
        ..greedy(tok.encode("Once upon a time", true).unwrap(), 16)
    };
    let alone = one(&e, req.clone());
    let others: Vec<_> = mixed_prompts(&tok)
        .into_iter()
        .take(5)
        .map(|p| e.submit(greedy(p, 24)).unwrap())
        .collect();
    let batched = one(&e, req.clone());
    drop(others);
    assert_eq!(alone.text, batched.text);
    assert_eq!(alone.token_ids, batched.token_ids);
    // n = 2: choice 0 uses seed 7 (the same text), choice 1 seed 8.
    let two = e
        .submit(EngineRequest {
            n: 2,
            ..req.clone()
        })
        .unwrap()
        .collect_blocking()
        .unwrap();
    assert_eq!(two[0].token_ids, alone.token_ids);
    let seed8 = one(
        &e,
        EngineRequest {
            sampling: SamplingParams {
                seed: Some(8),
                ..req.sampling.clone()
            },
            ..req
        },
    );
    assert_eq!(two[1].token_ids, seed8.token_ids);
}

#[test]
fn logprobs_match_the_greedy_choice_gemma() {
    let e = engine("gemma-3-270m", config(64));
    let tok = e.tokenizer().clone();
    let prompt = tok.encode("Paris is the capital of", true).unwrap();
    let c = one(
        &e,
        EngineRequest {
            logprobs: Some(5),
            prompt_logprobs: Some(1),
            ..greedy(prompt.clone(), 6)
        },
    );
    let lps = c.logprobs.as_ref().unwrap();
    assert_eq!(lps.len(), 6);
    for (lp, &t) in lps.iter().zip(&c.token_ids) {
        assert_eq!(lp.token, t);
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0].0, t);
        assert!(lp.logprob <= 0.0 && (lp.logprob - lp.top[0].1).abs() < 1e-6);
    }
    let plp = c.prompt_logprobs.unwrap();
    assert_eq!(plp.len(), prompt.len());
    assert!(plp[0].is_none());
    assert!(plp[1..]
        .iter()
        .all(|x| x.as_ref().is_some_and(|l| l.logprob <= 0.0)));
}

// Sliding-window KV savings (Gemma 3 270M: 15 sliding layers of window 512, 3 global ones).
// With them the pool holds blocks of 3 layers in 6 KV groups and a sliding group keeps only
// the blocks of its last 512 positions; without them every block holds all 18 layers.

#[test]
fn sliding_window_kv_gives_the_same_tokens_past_the_window_gemma() {
    let on = engine("gemma-3-270m", config(512));
    let off = engine("gemma-3-270m", full_kv(512));
    assert_eq!(on.info().num_kv_groups, 6);
    assert_eq!(off.info().num_kv_groups, 1);
    let tok = on.tokenizer().clone();
    // Output crossing the window (496 + 40), prompts longer than it, chunked by the 512-token
    // step budget, decoding with blocks of the sliding groups given back.
    let reqs = [
        greedy(long_prompt(&tok, 0, 496), 40),
        greedy(long_prompt(&tok, 7, 730), 12),
        greedy(long_prompt(&tok, 3, 1500), 10),
    ];
    let a = all_at_once(&on, &reqs);
    let b = all_at_once(&off, &reqs);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            x.token_ids, y.token_ids,
            "request {i}: savings on {:?} vs off {:?}",
            x.text, y.text
        );
    }
    let st = on.stats_blocking().unwrap();
    assert_eq!(st.num_free_blocks, st.num_blocks, "{st:?}");
    assert_eq!(st.num_preemptions, 0);
}

#[test]
fn prefix_cache_hit_past_the_window_with_sliding_window_kv_gemma() {
    let warm = engine("gemma-3-270m", config(256));
    let tok = warm.tokenizer().clone();
    let prefix = long_prompt(&tok, 0, 1100);
    let with = |q: &str| {
        let mut p = prefix.clone();
        p.extend(tok.encode(q, false).unwrap());
        greedy(p, 12)
    };
    let a = one(
        &warm,
        with(" Question: when did the first public train run? Answer:"),
    );
    assert_eq!(a.usage.cached_tokens, 0);
    // The sliding groups gave back their blocks before position ~590 while `a` ran; the
    // hit needs only the last 512 positions' blocks there (and all of the full group's).
    let b_req = with(" Question: who built the first steam locomotive? Answer:");
    let b = one(&warm, b_req.clone());
    let bs = warm.info().block_size;
    assert!(
        b.usage.cached_tokens >= 1100 - bs,
        "only {} cached tokens",
        b.usage.cached_tokens
    );
    let cold = engine(
        "gemma-3-270m",
        EngineConfig {
            enable_prefix_caching: false,
            ..full_kv(256)
        },
    );
    let c = one(&cold, b_req);
    assert_eq!(c.usage.cached_tokens, 0);
    assert_eq!(
        b.token_ids, c.token_ids,
        "warm {:?} vs cold {:?}",
        b.text, c.text
    );
}

#[test]
fn preemption_and_cancel_with_sliding_window_kv_gemma() {
    // Budget 128: a sliding group holds at most ceil((511 + 128) / 16) + 1 = 41 blocks, so
    // one 816-token sequence needs 51 + 5 * 41 = 256 blocks of 3 layers; 400 hold one and a
    // half, so three at once must preempt.
    // Gemma 270M: K and V of 3 layers of 256 f16 values for 16 positions.
    let block_bytes = 2 * 3 * 16 * 256 * 2;
    let tight = engine(
        "gemma-3-270m",
        EngineConfig {
            kv_cache: KvCacheSize::Bytes(400 * block_bytes),
            max_num_batched_tokens: 128,
            ..EngineConfig::default()
        },
    );
    assert_eq!(tight.info().num_blocks, 400);
    let tok = tight.tokenizer().clone();
    let reqs: Vec<EngineRequest> = (0..3)
        .map(|i| greedy(long_prompt(&tok, 11 * i, 800), 16))
        .collect();
    let constrained = all_at_once(&tight, &reqs);
    let st = tight.stats_blocking().unwrap();
    assert!(st.num_preemptions > 0, "no preemption happened: {st:?}");
    assert_eq!(st.num_free_blocks, st.num_blocks);

    // Cancelling long sequences mid-generation frees every block of every group.
    let mut streams: Vec<_> = reqs
        .iter()
        .take(2)
        .map(|r| {
            tight
                .submit(EngineRequest {
                    max_tokens: 200,
                    ..r.clone()
                })
                .unwrap()
        })
        .collect();
    streams[0].blocking_recv().unwrap().unwrap();
    let busy = tight.stats_blocking().unwrap();
    assert!(busy.num_free_blocks < busy.num_blocks, "{busy:?}");
    tight.cancel(streams[0].id());
    streams.truncate(1);
    drop(streams);
    let st = tight.stats_blocking().unwrap();
    assert_eq!(st.num_free_blocks, st.num_blocks, "{st:?}");
    assert_eq!((st.num_running, st.num_waiting, st.num_requests), (0, 0, 0));
    drop(tight);

    let free = engine("gemma-3-270m", full_kv(512));
    for (i, (r, c)) in reqs.iter().zip(&constrained).enumerate() {
        let alone = one(&free, r.clone());
        assert_eq!(alone.token_ids, c.token_ids, "request {i}");
    }
}

#[test]
fn sliding_window_kv_runs_more_long_sequences_at_once_gemma() {
    // Four sequences of 1092 + 48 tokens (72 blocks of 16). Without the savings each needs 72
    // blocks of all layers, and the memory of 270 does not hold four; with them each needs
    // at most 72 + 5 * 65 = 397 blocks of 3 layers (the window plus a 512-token chunk per
    // sliding group), and 270 * 6 = 1620 hold four: all four run together.
    let limits = |c: EngineConfig| EngineConfig {
        max_num_seqs: 4,
        max_model_len: Some(1140),
        ..c
    };
    let on = engine("gemma-3-270m", limits(config(270)));
    let tok = on.tokenizer().clone();
    let reqs: Vec<EngineRequest> = (0..4)
        .map(|i| greedy(long_prompt(&tok, 13 * i, 1092), 48))
        .collect();
    assert_eq!(on.info().blocks_per_seq, 397);
    assert!(on.info().max_concurrency() >= 4.0, "{:?}", on.info());
    let a = all_at_once(&on, &reqs);
    let st_on = on.stats_blocking().unwrap();
    drop(on);
    let off = engine("gemma-3-270m", limits(full_kv(270)));
    assert!(off.info().max_concurrency() < 4.0, "{:?}", off.info());
    let b = all_at_once(&off, &reqs);
    let st_off = off.stats_blocking().unwrap();
    eprintln!("savings on: {st_on:?}\nsavings off: {st_off:?}");
    assert_eq!(st_on.num_preemptions, 0, "{st_on:?}");
    assert_eq!(st_on.peak_running, 4, "{st_on:?}");
    assert!(
        st_off.num_preemptions > 0 || st_off.peak_running < 4,
        "{st_off:?}"
    );
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.token_ids, y.token_ids, "request {i}");
    }
}

/// A prompt past the sliding window (1,100 tokens and a question) gives the same greedy tokens
/// whether its prefill is chunked by a 512- or a 128-token step budget or runs as one
/// 2,048-token step; each engine runs alone (the one before it is dropped).
#[test]
fn long_prompt_chunking_gives_the_same_tokens_gemma() {
    let m = common::model("gemma-3-270m");
    let mut p = long_prompt(&m.tokenizer, 0, 1100);
    p.extend(
        m.tokenizer
            .encode(
                " Question: who built the first steam locomotive? Answer:",
                false,
            )
            .unwrap(),
    );
    drop(m);
    let mut outs = Vec::new();
    for budget in [2048, 512, 128] {
        let e = engine(
            "gemma-3-270m",
            EngineConfig {
                max_num_batched_tokens: budget,
                enable_prefix_caching: false,
                ..full_kv(256)
            },
        );
        let c = one(&e, greedy(p.clone(), 12));
        eprintln!("budget {budget}: {:?}", c.text);
        outs.push((budget, c.token_ids, c.text));
    }
    for (budget, ids, text) in &outs[1..] {
        assert_eq!(
            ids, &outs[0].1,
            "budget {budget}: {text:?} vs one step: {:?}",
            outs[0].2
        );
    }
}
