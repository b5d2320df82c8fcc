//! The drafter over the engine tests' fake backend (whose logits hash the whole sequence read
//! back from its paged KV slots, so a wrong block table or a stale position is an error or a
//! different token): its prefix bookkeeping after accepted and rejected drafts, batching and
//! chunking, a full pool, the context limit; and the engine with a draft model.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::*;
use crate::engine::tests::{
    config, fake_logits_salted, greedy, id_of, model_config, one, prompt, reference,
    tiny_tokenizer, vocab_tokens, Fake, Log, VOCAB,
};
use crate::engine::{EngineHandle, EngineRequest, SpeculativeConfig, StartError};
use crate::gguf::{GgufFile, Value};
use crate::gguf_write::GgufWriter;

fn drafter(blocks: usize, budget: usize, greedy: bool) -> (Drafter, Arc<Mutex<Log>>) {
    let (f, log) = Fake::new(greedy, 0);
    let (d, kv) = Drafter::new(Box::new(f), 4, blocks, budget, VOCAB, 2048).unwrap();
    assert_eq!(kv.num_blocks, blocks);
    (d, log)
}

/// The fake model's (salt 0) greedy continuation of `tokens`: `k` tokens.
fn continuation(tokens: &[u32], k: usize) -> Vec<u32> {
    let mut seq = tokens.to_vec();
    let mut row = vec![0f32; VOCAB];
    for _ in 0..k {
        fake_logits_salted(&seq, &mut row, 0);
        seq.push(crate::sampling::argmax(&row));
    }
    seq[tokens.len()..].to_vec()
}

/// Tokens run by each forward call since the last look.
fn batches(log: &Mutex<Log>) -> Vec<(usize, usize)> {
    std::mem::take(&mut log.lock().unwrap().batches)
}

fn cat(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().chain(b).copied().collect()
}

#[test]
fn drafts_continue_greedily_from_the_prefix_the_cache_still_holds() {
    for greedy in [false, true] {
        let (mut d, log) = drafter(64, 64, greedy);
        let s = SeqId(1);
        let p = prompt(1, 9);
        // Fresh: the whole sequence, then two one-token steps.
        let d1 = d.propose(&[(s, &p, 3)]).pop().unwrap();
        assert_eq!(d1, continuation(&p, 3));
        assert_eq!(batches(&log), [(1, 10), (1, 1), (1, 1)]);
        assert_eq!(d.seqs[&s].written, cat(&p, &d1[..2]));

        // All three accepted, then the target's own token: the cache lacks the last draft
        // token and the new one.
        let t2 = cat(&cat(&p, &d1), &continuation(&cat(&p, &d1), 1));
        let d2 = d.propose(&[(s, &t2, 3)]).pop().unwrap();
        assert_eq!(d2, continuation(&t2, 3));
        assert_eq!(batches(&log), [(1, 2), (1, 1), (1, 1)]);
        assert_eq!(d.seqs[&s].written, cat(&t2, &d2[..2]));

        // The first draft token accepted, the second rejected: from the wrong position on.
        let wrong = (d2[1] + 1) % vocab_tokens().len() as u32;
        let t3 = cat(&t2, &[d2[0], wrong]);
        let d3 = d.propose(&[(s, &t3, 3)]).pop().unwrap();
        assert_eq!(d3, continuation(&t3, 3));
        assert_eq!(batches(&log), [(1, 1), (1, 1), (1, 1)]);

        // The first rejected, and a shorter draft (backed off): one token, nothing drafted
        // is written.
        let t4 = cat(&t3, &[(d3[0] + 1) % vocab_tokens().len() as u32]);
        let d4 = d.propose(&[(s, &t4, 1)]).pop().unwrap();
        assert_eq!(d4, continuation(&t4, 1));
        assert_eq!(batches(&log), [(1, 1)]);
        assert_eq!(d.seqs[&s].written, t4);

        // Accepted again: only the new token runs.
        let t5 = cat(&t4, &d4);
        assert_eq!(d.propose(&[(s, &t5, 2)]), [continuation(&t5, 2)]);
        assert_eq!(batches(&log), [(1, 1), (1, 1)]);

        // Nothing new (the same tokens proposed again): the last token runs again, since its
        // choice is what is wanted.
        assert_eq!(d.propose(&[(s, &t5, 2)]), [continuation(&t5, 2)]);
        assert_eq!(batches(&log), [(1, 1), (1, 1)]);

        // At most 16 tokens + 2 drafted so far: 18 positions, 5 blocks of 4.
        assert_eq!(t5.len(), 18);
        assert_eq!(d.blocks_held(), 5);
        d.release(s);
        assert_eq!(d.blocks_held(), 0);
        // Released: computed from scratch.
        assert_eq!(d.propose(&[(s, &t5, 2)]), [continuation(&t5, 2)]);
        assert_eq!(batches(&log), [(1, 18), (1, 1)]);
    }
}

#[test]
fn sequences_share_batches_and_long_catch_ups_are_split() {
    let (mut d, log) = drafter(64, 8, false);
    let (a, b, c) = (prompt(2, 20), prompt(3, 3), prompt(4, 5));
    let got = d.propose(&[(SeqId(1), &a, 2), (SeqId(2), &b, 3), (SeqId(3), &c, 1)]);
    assert_eq!(
        got,
        [
            continuation(&a, 2),
            continuation(&b, 3),
            continuation(&c, 1)
        ]
    );
    // 21 + 4 + 6 tokens in batches of at most 8 (a split in two places), then the second
    // draft tokens of the first two, then the third of the second.
    assert_eq!(
        batches(&log),
        [(1, 8), (1, 8), (2, 8), (2, 7), (2, 2), (1, 1)]
    );
}

#[test]
fn a_full_pool_skips_a_sequence_and_release_gives_its_blocks_back() {
    let (mut d, _) = drafter(3, 64, false);
    let (p, q) = (prompt(5, 5), prompt(6, 5));
    // 6 tokens + 2 drafted positions: 2 blocks each; the pool has 3.
    let got = d.propose(&[(SeqId(1), &p, 3), (SeqId(2), &q, 3)]);
    assert_eq!(got, [continuation(&p, 3), Vec::new()]);
    assert_eq!(d.blocks_held(), 2);
    d.release(SeqId(1));
    d.release(SeqId(7)); // unknown: nothing happens
    assert_eq!(d.blocks_held(), 0);
    assert_eq!(d.propose(&[(SeqId(2), &q, 3)]), [continuation(&q, 3)]);
}

#[test]
fn drafts_stop_at_the_draft_models_context_and_backend_errors_cost_only_drafts() {
    let (f, _) = Fake::new(false, 0);
    let (mut d, _) = Drafter::new(Box::new(f), 4, 64, 64, VOCAB, 12).unwrap();
    let p = prompt(8, 9); // 10 tokens: positions 10 and 11 are left
    assert_eq!(d.propose(&[(SeqId(1), &p, 5)]), [continuation(&p, 3)]);
    let p = prompt(8, 12); // 13 tokens: no room for any
    assert_eq!(d.propose(&[(SeqId(2), &p, 5)]), [Vec::<u32>::new()]);

    // The fake fails on ",": no drafts, and what the cache holds is still right afterwards.
    let (mut d, _) = drafter(64, 64, false);
    let good = prompt(9, 6);
    let bad = cat(&good, &[id_of(",")]);
    assert_eq!(d.propose(&[(SeqId(1), &good, 2)]), [continuation(&good, 2)]);
    let got = d.propose(&[(SeqId(1), &good, 2), (SeqId(2), &bad, 2)]);
    assert_eq!(got, [Vec::<u32>::new(), Vec::new()]);
    assert_eq!(d.propose(&[(SeqId(1), &good, 2)]), [continuation(&good, 2)]);
}

/// The engine over the fake model with a fake draft model of `salt` (0: the same model, so
/// every draft is right).
fn start_draft(num_blocks: usize, salt: u64, k: usize) -> EngineHandle {
    start_draft_slow(num_blocks, salt, k, std::time::Duration::ZERO)
}

fn start_draft_slow(
    num_blocks: usize,
    salt: u64,
    k: usize,
    delay: std::time::Duration,
) -> EngineHandle {
    let (target, _) = Fake::new(false, 0);
    let target = target.with_delay(delay);
    let (draft, _) = Fake::new(true, salt);
    let mut c = config(num_blocks, 64);
    c.speculative = Some(SpeculativeConfig::draft_model("fake-draft", k, 64));
    EngineHandle::start_with_draft(
        Box::new(target),
        tiny_tokenizer(),
        &model_config(),
        c,
        Some(DraftModel {
            name: "fake-draft".into(),
            backend: Box::new(draft),
            tokenizer: Arc::try_unwrap(tiny_tokenizer()).unwrap(),
            config: model_config(),
        }),
    )
    .unwrap()
}

fn run(h: &EngineHandle, reqs: &[EngineRequest]) -> Vec<Vec<u32>> {
    let streams: Vec<_> = reqs.iter().map(|r| h.submit(r.clone()).unwrap()).collect();
    streams
        .into_iter()
        .map(|s| s.collect_blocking().unwrap().pop().unwrap().token_ids)
        .collect()
}

#[test]
fn the_engine_with_a_draft_model_generates_what_it_would_without() {
    let reqs: Vec<_> = (0..6).map(|i| greedy(prompt(20 + i, 16), 15)).collect();
    for (salt, blocks) in [(0, 256), (7, 256), (0, 12), (7, 12)] {
        let h = start_draft(blocks, salt, 4);
        assert_eq!(h.info().draft_num_blocks, blocks);
        for (r, got) in reqs.iter().zip(run(&h, &reqs)) {
            assert_eq!(got, reference(&r.prompt, r.max_tokens), "salt {salt}");
        }
        let st = h.stats_blocking().unwrap();
        assert!(st.spec_num_draft_tokens > 0, "{st:?}");
        if salt == 0 {
            // The same model, and EOS ignored: every draft token is right.
            assert_eq!(
                st.spec_num_accepted_tokens, st.spec_num_draft_tokens,
                "{st:?}"
            );
        } else {
            // Another model: nearly every draft is wrong (and rolled back).
            assert!(
                st.spec_num_accepted_tokens * 5 < st.spec_num_draft_tokens,
                "{st:?}"
            );
        }
        if blocks == 12 {
            assert!(st.num_preemptions > 0, "{st:?}");
        }
        assert_eq!(st.num_free_blocks, st.num_blocks, "{st:?}");
        assert_eq!(st.spec_draft_blocks_held, 0, "{st:?}");
    }
    // A cancelled request gives its draft blocks back too (5 ms steps: it is still running).
    let h = start_draft_slow(256, 0, 4, std::time::Duration::from_millis(5));
    let mut s = h.submit(greedy(prompt(3, 20), 200)).unwrap();
    s.blocking_recv().unwrap().unwrap();
    s.blocking_recv().unwrap().unwrap();
    let st = h.stats_blocking().unwrap();
    assert!(st.spec_draft_blocks_held > 0, "{st:?}");
    drop(s);
    let _ = one(&h, greedy(prompt(4, 4), 2));
    let st = h.stats_blocking().unwrap();
    assert_eq!(st.spec_draft_blocks_held, 0, "{st:?}");
}

#[test]
fn seeded_sampling_is_unchanged_by_a_draft_model() {
    let reqs: Vec<_> = (0..6)
        .map(|i| {
            let mut r = greedy(prompt(40 + i, 10), 20);
            r.sampling.temperature = 0.8;
            r.sampling.seed = Some(i);
            r
        })
        .collect();
    let (plain, _) = Fake::new(false, 0);
    let plain = EngineHandle::start(
        Box::new(plain),
        tiny_tokenizer(),
        &model_config(),
        config(256, 64),
    )
    .unwrap();
    let want = run(&plain, &reqs);
    let h = start_draft(256, 0, 3);
    assert_eq!(run(&h, &reqs), want);
    assert!(h.stats_blocking().unwrap().spec_num_accepted_tokens > 0);
}

#[test]
fn a_draft_model_must_be_given_and_share_the_vocabulary() {
    let draft = |tokenizer| {
        let (f, _) = Fake::new(false, 0);
        DraftModel {
            name: "the-draft".into(),
            backend: Box::new(f),
            tokenizer,
            config: model_config(),
        }
    };
    let start = |spec: Option<SpeculativeConfig>, d: Option<DraftModel>| {
        let (f, _) = Fake::new(false, 0);
        let mut c = config(64, 64);
        c.speculative = spec;
        EngineHandle::start_with_draft(Box::new(f), tiny_tokenizer(), &model_config(), c, d)
            .map(|_| ())
    };
    let err = |r: Result<(), StartError>| r.unwrap_err().to_string();
    let e = err(start(
        Some(SpeculativeConfig::draft_model("the-draft", 3, 4)),
        None,
    ));
    assert!(
        e.contains("draft model the-draft") && e.contains("no draft model"),
        "{e}"
    );
    let own = || Arc::try_unwrap(tiny_tokenizer()).unwrap();
    let e = err(start(
        Some(SpeculativeConfig::ngram(3, 4)),
        Some(draft(own())),
    ));
    assert!(e.contains("not draft_model"), "{e}");
    // One token spelled differently.
    let mut toks = vocab_tokens();
    toks[10].0 = "zz".into();
    let mut w = GgufWriter::new();
    w.sentencepiece_vocab(&toks)
        .kv("tokenizer.ggml.bos_token_id", Value::U64(1))
        .kv("tokenizer.ggml.eos_token_id", Value::U64(2));
    let g = GgufFile::from_bytes(Path::new("other.gguf"), w.to_bytes()).unwrap();
    let other = Tokenizer::from_gguf(&g).unwrap();
    let e = err(start(
        Some(SpeculativeConfig::draft_model("the-draft", 3, 4)),
        Some(draft(other)),
    ));
    assert!(
        e.contains("draft model the-draft") && e.contains("differ at id 10") && e.contains("zz"),
        "{e}"
    );
    assert!(check_draft_vocabulary(&own(), &own()).is_ok());
    // Sizes may differ by padding: the ids both have must agree, and BOS.
    let tokenizer = |toks: &[(String, i32)], bos: u64| {
        let mut w = GgufWriter::new();
        w.sentencepiece_vocab(toks)
            .kv("tokenizer.ggml.bos_token_id", Value::U64(bos))
            .kv("tokenizer.ggml.eos_token_id", Value::U64(2));
        let g = GgufFile::from_bytes(Path::new("v.gguf"), w.to_bytes()).unwrap();
        Tokenizer::from_gguf(&g).unwrap()
    };
    let mut padded = vocab_tokens();
    padded.extend((0..5).map(|i| (format!("[PAD{i}]"), 5)));
    let padded = tokenizer(&padded, 1);
    assert_eq!(padded.vocab_size, own().vocab_size + 5);
    assert!(check_draft_vocabulary(&own(), &padded).is_ok());
    assert!(check_draft_vocabulary(&padded, &own()).is_ok());
    let e = check_draft_vocabulary(&own(), &tokenizer(&vocab_tokens(), 2)).unwrap_err();
    assert!(e.contains("BOS"), "{e}");
    start(
        Some(SpeculativeConfig::draft_model("the-draft", 3, 4)),
        Some(draft(own())),
    )
    .unwrap();
}
