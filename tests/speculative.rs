//! Speculative decoding (n-gram drafts) never changes the answer: on the real models (CPU
//! backend), greedy output with speculation equals greedy output without it, token for token,
//! on 52 prompts, one stream at a time and 16 at once with preemption forced; seeded sampling
//! gives the same tokens too (each emitted token draws the sequence's random stream exactly as
//! without speculation, so equality is the strongest form of "same distribution"); stop
//! strings, `max_tokens`, logprobs and a JSON-schema constraint keep working.

mod common;

use std::sync::Arc;

use switchyard_runtime::constraint::{ConstraintSpec, Grammars};
use switchyard_runtime::engine::{
    Completion, EngineConfig, EngineHandle, EngineRequest, KvCacheSize, SpeculativeConfig,
};
use switchyard_runtime::tokenizer::Tokenizer;

/// Text with repeats (as code edits and quotes have), so n-gram drafts are often right.
const TEXT: &str =
    "fn add(a: i32, b: i32) -> i32 { a + b }\nfn sub(a: i32, b: i32) -> i32 { a - b }\n\
fn mul(a: i32, b: i32) -> i32 { a * b }\nThe quick brown fox jumps over the lazy dog. The quick \
brown fox jumps over the lazy dog again. Switchyards sort railway cars onto tracks by \
destination; a switchyard is the heart of freight operations. Repeat after me: the heart of \
freight operations is the switchyard.";

fn spec(k: usize, batch: usize) -> Option<SpeculativeConfig> {
    Some(SpeculativeConfig {
        num_speculative_tokens: k,
        prompt_lookup_min: 1,
        prompt_lookup_max: 4,
        disable_by_batch_size: batch,
    })
}

fn engine(alias: &str, blocks: usize, speculative: Option<SpeculativeConfig>) -> EngineHandle {
    let m = common::model(alias);
    let backend = common::backend(&m);
    let bytes = blocks * backend.kv_bytes_per_block(16);
    let config = EngineConfig {
        kv_cache: KvCacheSize::Bytes(bytes as u64),
        max_num_seqs: 16,
        speculative,
        ..EngineConfig::default()
    };
    EngineHandle::start(backend, Arc::new(m.tokenizer), &m.config, config).unwrap()
}

/// 52 prompts: windows of `TEXT` at varied offsets and lengths, some asking to repeat it.
fn prompts(tok: &Tokenizer) -> Vec<Vec<u32>> {
    let all = tok.encode(TEXT, false).unwrap();
    (0..52)
        .map(|i| {
            let start = (i * 7) % 40;
            let len = 6 + (i * 13) % 70;
            let mut p: Vec<u32> = tok.bos.filter(|_| tok.add_bos).into_iter().collect();
            if i % 4 == 0 {
                p.extend(tok.encode("Copy this text exactly: ", false).unwrap());
            }
            p.extend(&all[start..(start + len).min(all.len())]);
            p
        })
        .collect()
}

fn run_all(e: &EngineHandle, reqs: &[EngineRequest], at_once: bool) -> Vec<Completion> {
    if at_once {
        let streams: Vec<_> = reqs.iter().map(|r| e.submit(r.clone()).unwrap()).collect();
        streams
            .into_iter()
            .map(|s| s.collect_blocking().unwrap().pop().unwrap())
            .collect()
    } else {
        reqs.iter()
            .map(|r| {
                e.submit(r.clone())
                    .unwrap()
                    .collect_blocking()
                    .unwrap()
                    .pop()
                    .unwrap()
            })
            .collect()
    }
}

fn same(what: &str, a: &[Completion], b: &[Completion]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(
            x.token_ids, y.token_ids,
            "{what}: request {i} differs\nwithout: {:?}\nwith:    {:?}",
            x.text, y.text
        );
        assert_eq!(x.text, y.text, "{what}: request {i}");
        assert_eq!(x.finish, y.finish, "{what}: request {i}");
        assert_eq!(x.logprobs, y.logprobs, "{what}: request {i}");
        assert_eq!(x.usage.completion_tokens, y.usage.completion_tokens);
    }
}

/// The requests: greedy, 24 to 40 tokens, every fifth with a stop string, every seventh with
/// logprobs, every third ignoring EOS.
fn requests(tok: &Tokenizer, sampling: Option<f32>) -> Vec<EngineRequest> {
    prompts(tok)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut r = EngineRequest::new(p, 24 + i % 5 * 4);
            r.ignore_eos = i % 3 == 0;
            if i % 5 == 0 {
                r.stop = vec!["fox".into(), "\n\n".into()];
            }
            if i % 7 == 0 {
                r.logprobs = Some(2);
            }
            if let Some(t) = sampling {
                r.sampling.temperature = t;
                r.sampling.top_p = 0.95;
                r.sampling.seed = Some(1000 + i as u64);
            }
            r
        })
        .collect()
}

fn unchanged(alias: &str) {
    let plain = engine(alias, 1024, None);
    let tok = plain.tokenizer().clone();
    let reqs = requests(&tok, None);
    let want = run_all(&plain, &reqs, true);
    drop(plain);

    // One stream at a time.
    let e = engine(alias, 1024, spec(5, 16));
    let got = run_all(&e, &reqs, false);
    same("1 stream", &want, &got);
    let st = e.stats_blocking().unwrap();
    assert!(st.spec_num_accepted_tokens > 0, "nothing accepted: {st:?}");
    eprintln!(
        "{alias}, 1 stream: {} drafts, {} draft tokens, {} accepted ({:.0}%), {} steps for {} tokens",
        st.spec_num_drafts,
        st.spec_num_draft_tokens,
        st.spec_num_accepted_tokens,
        100.0 * st.spec_num_accepted_tokens as f64 / st.spec_num_draft_tokens.max(1) as f64,
        st.num_steps,
        st.generation_tokens_total
    );
    drop(e);

    // 16 at once, drafting at any batch size, in a KV pool small enough to preempt.
    let e = engine(alias, 40, spec(5, 64));
    let got = run_all(&e, &reqs, true);
    same("16 streams, preempting", &want, &got);
    let st = e.stats_blocking().unwrap();
    assert!(st.num_preemptions > 0, "no preemption: {st:?}");
    assert!(st.spec_num_accepted_tokens > 0, "nothing accepted: {st:?}");
    assert_eq!(st.num_free_blocks, st.num_blocks, "blocks leaked");
    eprintln!(
        "{alias}, 16 streams: {} preemptions, {} draft tokens, {} accepted",
        st.num_preemptions, st.spec_num_draft_tokens, st.spec_num_accepted_tokens
    );
}

#[test]
fn greedy_output_is_unchanged_by_speculation_gemma() {
    unchanged("gemma-3-270m");
}

#[test]
fn greedy_output_is_unchanged_by_speculation_qwen() {
    unchanged("qwen2.5-coder-0.5b-instruct");
}

#[test]
fn seeded_sampling_is_unchanged_by_speculation_gemma() {
    let plain = engine("gemma-3-270m", 1024, None);
    let tok = plain.tokenizer().clone();
    let mut reqs = requests(&tok, Some(0.7));
    reqs.truncate(24);
    let want = run_all(&plain, &reqs, true);
    drop(plain);
    let e = engine("gemma-3-270m", 1024, spec(4, 64));
    let got = run_all(&e, &reqs, true);
    same("seeded sampling", &want, &got);
    let st = e.stats_blocking().unwrap();
    assert!(st.spec_num_accepted_tokens > 0, "nothing accepted: {st:?}");
    // Opting out: no drafts at all.
    let before = st.spec_num_draft_tokens;
    let mut r = reqs[0].clone();
    r.speculative = false;
    let c = run_all(&e, &[r], false);
    same("opted out", &want[..1], &c);
    assert_eq!(e.stats_blocking().unwrap().spec_num_draft_tokens, before);
}

#[test]
fn constrained_output_is_unchanged_by_speculation_qwen() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20},
                       "tags": {"type": "array", "items": {"enum": ["a", "bb", "ccc"]}, "maxItems": 6}},
        "required": ["name", "tags"]
    });
    let plain = engine("qwen2.5-coder-0.5b-instruct", 1024, None);
    let tok = plain.tokenizer().clone();
    let g = Grammars::new(&tok).unwrap();
    let c = g.compile(&ConstraintSpec::JsonSchema(schema)).unwrap();
    let reqs: Vec<EngineRequest> = prompts(&tok)
        .into_iter()
        .take(8)
        .enumerate()
        .map(|(i, p)| {
            let mut r = EngineRequest::new(p, 48);
            r.constraint = Some(c.clone());
            if i % 2 == 1 {
                r.sampling.temperature = 1.0;
                r.sampling.seed = Some(i as u64);
            }
            r
        })
        .collect();
    let want = run_all(&plain, &reqs, true);
    drop(plain);
    let e = engine("qwen2.5-coder-0.5b-instruct", 1024, spec(5, 64));
    let got = run_all(&e, &reqs, true);
    same("constrained", &want, &got);
}
