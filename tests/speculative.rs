//! Speculative decoding (n-gram drafts, and a draft model's) never changes the answer: on the
//! real models (CPU backend), greedy output with speculation equals greedy output without it,
//! token for token, on 52 prompts, one stream at a time and 16 at once with preemption forced;
//! seeded sampling gives the same tokens too (each emitted token draws the sequence's random
//! stream exactly as without speculation, so equality is the strongest form of "same
//! distribution"); stop strings, `max_tokens`, logprobs and a JSON-schema constraint keep
//! working. A draft model that is the target itself has nearly all its drafts accepted; one
//! with the same vocabulary and random weights has nearly all rejected and rolled back; one
//! with another vocabulary is refused at start-up.

mod common;

use std::sync::Arc;

use switchyard_runtime::constraint::{ConstraintSpec, Grammars};
use switchyard_runtime::engine::{
    Completion, DraftModel, EngineConfig, EngineHandle, EngineRequest, EngineStats, KvCacheSize,
    SpeculativeConfig, StartError,
};
use switchyard_runtime::gguf::GgufFile;
use switchyard_runtime::gguf_write::GgufWriter;
use switchyard_runtime::tokenizer::Tokenizer;
use switchyard_runtime::Model;

/// Text with repeats (as code edits and quotes have), so n-gram drafts are often right.
const TEXT: &str =
    "fn add(a: i32, b: i32) -> i32 { a + b }\nfn sub(a: i32, b: i32) -> i32 { a - b }\n\
fn mul(a: i32, b: i32) -> i32 { a * b }\nThe quick brown fox jumps over the lazy dog. The quick \
brown fox jumps over the lazy dog again. Switchyards sort railway cars onto tracks by \
destination; a switchyard is the heart of freight operations. Repeat after me: the heart of \
freight operations is the switchyard.";

fn spec(k: usize, batch: usize) -> Option<SpeculativeConfig> {
    Some(SpeculativeConfig::ngram(k, batch))
}

fn engine(alias: &str, blocks: usize, speculative: Option<SpeculativeConfig>) -> EngineHandle {
    engine_with_draft(alias, blocks, speculative, None).unwrap()
}

/// The engine on `alias` with a KV budget of `blocks` of its all-layer blocks of 16 tokens
/// (a draft model's cache takes its share of it).
fn engine_with_draft(
    alias: &str,
    blocks: usize,
    speculative: Option<SpeculativeConfig>,
    draft: Option<DraftModel>,
) -> Result<EngineHandle, StartError> {
    let m = common::model(alias);
    let backend = common::backend(&m);
    let bytes = blocks * backend.kv_bytes_per_block(16);
    let config = EngineConfig {
        kv_cache: KvCacheSize::Bytes(bytes as u64),
        max_num_seqs: 16,
        speculative,
        ..EngineConfig::default()
    };
    EngineHandle::start_with_draft(backend, Arc::new(m.tokenizer), &m.config, config, draft)
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

/// `alias` (or a GGUF path) loaded as a draft model on the test device.
fn draft(alias: &str) -> DraftModel {
    let m = if alias.ends_with(".gguf") {
        Model::load(alias, false).unwrap()
    } else {
        common::model(alias)
    };
    DraftModel {
        name: alias.to_string(),
        backend: common::backend(&m),
        tokenizer: m.tokenizer,
        config: m.config,
    }
}

fn acceptance(st: &EngineStats) -> f64 {
    st.spec_num_accepted_tokens as f64 / st.spec_num_draft_tokens.max(1) as f64
}

/// The target's greedy outputs on `reqs` without speculation, then with `draft_alias` as the
/// draft model: the first `serial` one stream at a time (returns its stats), and all at once in
/// a KV budget of `small` blocks, small enough to preempt.
fn unchanged_with_draft(
    alias: &str,
    draft_alias: &str,
    reqs: &[EngineRequest],
    serial: usize,
    small: usize,
) -> EngineStats {
    let plain = engine(alias, 1024, None);
    let want = run_all(&plain, reqs, true);
    drop(plain);
    let k4 = |batch| Some(SpeculativeConfig::draft_model(draft_alias, 4, batch));

    let e = engine_with_draft(alias, 1024, k4(16), Some(draft(draft_alias))).unwrap();
    assert!(e.info().draft_num_blocks > 0);
    let got = run_all(&e, &reqs[..serial], false);
    same("draft model, 1 stream", &want[..serial], &got);
    let one = e.stats_blocking().unwrap();
    eprintln!(
        "{alias} drafted by {draft_alias}, 1 stream: {} drafts, {} draft tokens, {} accepted \
         ({:.0}%), {} steps for {} tokens",
        one.spec_num_drafts,
        one.spec_num_draft_tokens,
        one.spec_num_accepted_tokens,
        100.0 * acceptance(&one),
        one.num_steps,
        one.generation_tokens_total
    );
    assert_eq!(
        one.spec_draft_blocks_held, 0,
        "draft blocks leaked: {one:?}"
    );
    drop(e);

    let e = engine_with_draft(alias, small, k4(64), Some(draft(draft_alias))).unwrap();
    let got = run_all(&e, reqs, true);
    same("draft model, all at once, preempting", &want, &got);
    let st = e.stats_blocking().unwrap();
    assert!(st.num_preemptions > 0, "no preemption: {st:?}");
    assert!(st.spec_num_draft_tokens > 0, "no drafts: {st:?}");
    assert_eq!(st.num_free_blocks, st.num_blocks, "blocks leaked");
    assert_eq!(st.spec_draft_blocks_held, 0, "draft blocks leaked: {st:?}");
    eprintln!(
        "{alias} drafted by {draft_alias}, {} streams: {} preemptions, {} draft tokens, {} \
         accepted",
        reqs.len(),
        st.num_preemptions,
        st.spec_num_draft_tokens,
        st.spec_num_accepted_tokens
    );
    one
}

#[test]
fn greedy_output_is_unchanged_by_a_draft_model_gemma_drafting_itself() {
    let tok = common::model("gemma-3-270m").tokenizer;
    let mut reqs = requests(&tok, None);
    reqs.truncate(16);
    let st = unchanged_with_draft("gemma-3-270m", "gemma-3-270m", &reqs, 8, 40);
    // The same weights and batch-invariant kernels: the draft is the target's own choice,
    // except where a draft token is EOS or a stop (verified, then the sequence ends).
    assert!(
        acceptance(&st) > 0.9,
        "acceptance {:.3}: {st:?}",
        acceptance(&st)
    );
}

/// The qwen3 architecture test model (random weights, scripts/build-arch-models.sh) with the
/// tokenizer of Qwen2.5-Coder (whose 151,936 token slots it has): a draft model with the
/// target's vocabulary whose drafts are nearly always wrong.
fn random_qwen_draft() -> String {
    let cache = switchyard_runtime::registry::cache_dir();
    let arch = GgufFile::open(&cache.join("arch-models/qwen3.gguf")).unwrap_or_else(|e| {
        panic!("{e}: run scripts/build-arch-models.sh first (scripts/test.sh does)")
    });
    let target = GgufFile::open(&common::model("qwen2.5-coder-0.5b-instruct").path).unwrap();
    let mut w = GgufWriter::from_file(&arch);
    for (k, v) in target.metadata_entries() {
        if k.starts_with("tokenizer.") {
            w.kv(k, v.clone());
        }
    }
    let dir = std::env::temp_dir().join(format!("switchyard-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("random-qwen-draft.gguf");
    std::fs::write(&p, w.to_bytes()).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn greedy_output_is_unchanged_by_a_draft_model_that_is_always_wrong_qwen() {
    let path = random_qwen_draft();
    let tok = common::model("qwen2.5-coder-0.5b-instruct").tokenizer;
    let mut reqs = requests(&tok, None);
    reqs.truncate(8);
    let st = unchanged_with_draft("qwen2.5-coder-0.5b-instruct", &path, &reqs, 4, 20);
    let _ = std::fs::remove_dir_all(std::path::Path::new(&path).parent().unwrap());
    // Rejected drafts were rolled back (and drafting backed off to one token).
    assert!(
        acceptance(&st) < 0.3,
        "acceptance {:.3}: {st:?}",
        acceptance(&st)
    );
    assert!(st.spec_num_drafts > 50, "{st:?}");
}

#[test]
fn a_draft_model_with_another_vocabulary_is_refused_at_start_up() {
    let name = "qwen2.5-coder-0.5b-instruct";
    let e = engine_with_draft(
        "gemma-3-270m",
        64,
        Some(SpeculativeConfig::draft_model(name, 4, 4)),
        Some(draft(name)),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("draft model qwen2.5-coder-0.5b-instruct") && e.contains("tokenizer"),
        "{e}"
    );
    // The command line names both models, before loading either's weights.
    let spec =
        format!(r#"{{"method": "draft_model", "model": "{name}", "num_speculative_tokens": 4}}"#);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--no-fetch", "--device", "cpu", "--port", "0"])
        .args(["--model", "gemma-3-270m", "--speculative-config", &spec])
        .env("SWITCHYARD_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.starts_with("error: ")
            && err.contains("the draft model qwen2.5-coder-0.5b-instruct")
            && err.contains("tokenizer of the model gemma-3-270m")
            && err.contains("vocabularies of 262144 and 151"),
        "{err}"
    );
}

/// Sampling with speculation follows the target's distribution: 800 seeds at temperature 1.5
/// over a small slice of the vocabulary (`top_k` 8) with n-gram drafts on (the second token of
/// each run is verified against a draft whenever the first occurs earlier in the prompt). For
/// each first token that came at least 100 times, the second token's counts are checked against
/// the target's own distribution after it (the softmax of its top-8 logprobs at that
/// temperature, from an engine without speculation): Pearson's chi-squared summed over those
/// groups, over the cells expected at least 5 times (the rest of a group pooled), below the
/// 0.001 point of its degrees of freedom (Wilson-Hilferty). A right distribution fails once in
/// a thousand seed sets (the seeds are fixed); a skewed one (a draft accepted more often than
/// the target would choose it, a wrong temperature) fails.
#[test]
fn sampling_with_speculation_follows_the_target_distribution_gemma() {
    const N: u64 = 800;
    const K: usize = 8;
    const T: f64 = 1.5;
    let e = engine("gemma-3-270m", 1024, spec(4, 64));
    let tok = e.tokenizer().clone();
    let mut prompt: Vec<u32> = tok.bos.filter(|_| tok.add_bos).into_iter().collect();
    prompt.extend(tok.encode(TEXT, false).unwrap());
    prompt.extend(
        tok.encode("\n\nIn a few words, this text is about", false)
            .unwrap(),
    );
    let reqs: Vec<EngineRequest> = (0..N)
        .map(|seed| {
            let mut r = EngineRequest::new(prompt.clone(), 6);
            r.ignore_eos = true;
            r.sampling.temperature = T as f32;
            r.sampling.top_k = K;
            r.sampling.seed = Some(seed);
            r
        })
        .collect();
    let got = run_all(&e, &reqs, true);
    let st = e.stats_blocking().unwrap();
    drop(e);
    let mut by_first: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for c in &got {
        by_first
            .entry(c.token_ids[0])
            .or_default()
            .push(c.token_ids[1]);
    }
    let plain = engine("gemma-3-270m", 1024, None);
    let (mut chi2, mut df, mut runs) = (0.0f64, 0usize, 0usize);
    for (&t1, seconds) in by_first.iter().filter(|(_, v)| v.len() >= 100) {
        // The target's distribution of the second token after `t1`, without speculation.
        let mut p = prompt.clone();
        p.push(t1);
        let mut r = EngineRequest::new(p, 1);
        r.logprobs = Some(K);
        let c = run_all(&plain, &[r], false);
        let top = &c[0].logprobs.as_ref().unwrap()[0].top;
        assert_eq!(top.len(), K);
        let z: f64 = top.iter().map(|&(_, l)| (l as f64 / T).exp()).sum();
        let n = seconds.len() as f64;
        let count = |id: u32| seconds.iter().filter(|&&t| t == id).count() as f64;
        for t in seconds {
            assert!(
                top.iter().any(|p| p.0 == *t),
                "token {t} is outside the top {K}"
            );
        }
        let (mut cells, mut pooled_e, mut pooled_o) = (Vec::new(), 0.0, 0.0);
        for &(id, l) in top {
            let e = n * (l as f64 / T).exp() / z;
            if e >= 5.0 {
                cells.push((count(id), e));
            } else {
                pooled_e += e;
                pooled_o += count(id);
            }
        }
        if pooled_e >= 5.0 {
            cells.push((pooled_o, pooled_e));
        }
        if cells.len() < 2 {
            continue;
        }
        chi2 += cells
            .iter()
            .map(|(o, e)| (o - e) * (o - e) / e)
            .sum::<f64>();
        df += cells.len() - 1;
        runs += seconds.len();
    }
    assert!(
        df >= 2,
        "too little spread to test: {df} degrees of freedom"
    );
    assert!(st.spec_num_drafts >= N / 4, "too few drafts: {st:?}");
    // The 0.001 point of chi-squared with `df` degrees of freedom (Wilson-Hilferty; within 1% of
    // the tables from 2 degrees up).
    let d = df as f64;
    let crit = d * (1.0 - 2.0 / (9.0 * d) + 3.0902 * (2.0 / (9.0 * d)).sqrt()).powi(3);
    eprintln!(
        "{runs} runs in {} first-token groups, chi-squared {chi2:.2} with {df} degrees of freedom \
         (bound {crit:.2}); {} drafts, {} of {} tokens accepted",
        by_first.values().filter(|v| v.len() >= 100).count(),
        st.spec_num_drafts,
        st.spec_num_accepted_tokens,
        st.spec_num_draft_tokens
    );
    assert!(
        chi2 < crit,
        "chi-squared {chi2} >= {crit} ({df} degrees of freedom)"
    );
}
