//! The real FFI path (dlopen, symbols, status codes, handle lifetimes) against the fake libnrt
//! (`switchyard-neuron-fake`, a dev-dependency whose `cdylib` cargo builds next to this test),
//! then a full generate through the engine with bucket padding.
//!
//! libnrt state is per process and these tests steer the fake through environment variables,
//! so every test holds `LOCK`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use switchyard_backend_neuron::ffi::NrtLib;
use switchyard_backend_neuron::runtime::Runtime;
use switchyard_backend_neuron::{probe, NeuronBackend, NrtError, NrtStatus};
use switchyard_core::{
    Activation, Architecture, Backend, BackendError, BlockId, ForwardBatch, KvCacheConfig,
    LayerAttention, ModelConfig, SeqInBatch,
};
use switchyard_runtime::engine::{
    EngineConfig, EngineHandle, EngineRequest, KvCacheSize, SubmitError,
};
use switchyard_runtime::gguf::{GgufFile, Value};
use switchyard_runtime::gguf_write::GgufWriter;
use switchyard_runtime::tokenizer::Tokenizer;

static LOCK: Mutex<()> = Mutex::new(());

const VOCAB: usize = 64;
const BLOCK: usize = 4;
const NUM_BLOCKS: usize = 64;
const MAX_BLOCKS: usize = 8;

/// The fake's shared library: cargo puts the `cdylib` of a dependency in `target/<profile>/deps`,
/// where this test binary also lives.
fn fake_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join("libswitchyard_neuron_fake.so");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "libswitchyard_neuron_fake.so not found next to {}",
        exe.display()
    );
}

/// Holds the lock with the fake selected and `FAKE_NRT_FAIL` set to `fail`.
fn setup(fail: &str) -> MutexGuard<'static, ()> {
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("NEURON_RT_LIB", fake_lib());
    std::env::set_var("FAKE_NRT_FAIL", fail);
    std::env::remove_var("FAKE_NRT_VISIBLE_CORES");
    g
}

/// The fake's test hooks, through a second handle on the same library.
fn hooks() -> (u64, i32) {
    // SAFETY: the fake library has no initializers; the symbols have these signatures.
    unsafe {
        let lib = libloading::Library::new(fake_lib()).unwrap();
        let live: libloading::Symbol<unsafe extern "C" fn() -> u64> =
            lib.get(b"fake_nrt_live_objects\0").unwrap();
        let init: libloading::Symbol<unsafe extern "C" fn() -> i32> =
            lib.get(b"fake_nrt_initialized\0").unwrap();
        (live(), init())
    }
}

fn assert_all_released() {
    assert_eq!(hooks(), (0, 0), "(live objects, initialized) after drop");
}

fn fake_neff(batch: usize, tokens: usize) -> String {
    format!(
        "FAKE-NEFF 1\nbatch={batch}\ntokens={tokens}\nvocab={VOCAB}\nblock_size={BLOCK}\n\
         num_blocks={NUM_BLOCKS}\nmax_blocks={MAX_BLOCKS}\n"
    )
}

/// An artifact directory with the given (batch, seq_len) buckets.
fn artifacts(name: &str, buckets: &[(usize, usize)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-neuron-test-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut m = format!(
        "model = \"fake\"\nvocab_size = {VOCAB}\n[kv]\nblock_size = {BLOCK}\n\
         num_blocks = {NUM_BLOCKS}\nbytes_per_token = 8\nmax_blocks_per_seq = {MAX_BLOCKS}\n"
    );
    for &(b, s) in buckets {
        let f = format!("b{b}_s{s}.neff");
        std::fs::write(dir.join(&f), fake_neff(b, s)).unwrap();
        m += &format!("[[buckets]]\nbatch_size = {b}\nseq_len = {s}\nneff = \"{f}\"\n");
    }
    std::fs::write(dir.join("manifest.toml"), m).unwrap();
    dir
}

const BUCKETS: [(usize, usize); 3] = [(1, 8), (2, 8), (4, 32)];

fn load(name: &str) -> Result<NeuronBackend, BackendError> {
    NeuronBackend::load(&artifacts(name, &BUCKETS))
}

fn with_kv(mut b: NeuronBackend) -> NeuronBackend {
    b.init_kv_cache(KvCacheConfig {
        block_size: BLOCK,
        num_blocks: NUM_BLOCKS,
    })
    .unwrap();
    b
}

/// One sequence of `tokens` from position 0 in blocks 0, 1, …
fn prefill(tokens: &[u32]) -> ForwardBatch {
    ForwardBatch {
        token_ids: tokens.to_vec(),
        positions: (0..tokens.len() as u32).collect(),
        seqs: vec![SeqInBatch {
            start: 0,
            len: tokens.len(),
            context_before: 0,
            block_table: (0..tokens.len().div_ceil(BLOCK) as u32)
                .map(BlockId)
                .collect(),
            group_tables: Vec::new(),
        }],
        logits_indices: vec![tokens.len() - 1],
    }
}

#[test]
fn probe_reports_cores_or_why_not() {
    let _g = setup("");
    let info = probe().unwrap();
    assert_eq!((info.total_cores, info.visible_cores), (2, 2));
    assert_eq!(info.library, fake_lib());

    std::env::set_var("FAKE_NRT_VISIBLE_CORES", "0");
    let e = probe().unwrap_err().to_string();
    assert!(e.contains("no NeuronCore"), "{e}");
    let e = load("nocores").err().unwrap().to_string();
    assert!(e.contains("no NeuronCore"), "{e}");
    std::env::remove_var("FAKE_NRT_VISIBLE_CORES");

    std::env::set_var("FAKE_NRT_FAIL", "nrt_get_visible_vnc_count=5");
    let e = probe().unwrap_err().to_string();
    assert!(e.contains("NRT_TIMEOUT (5)"), "{e}");

    std::env::set_var("NEURON_RT_LIB", "/nonexistent/libnrt.so");
    match probe().unwrap_err() {
        BackendError::Unavailable { reason, .. } => assert!(reason.contains("NEURON_RT_LIB")),
        e => panic!("{e:?}"),
    }
    // A library without the symbols (this test binary's libc would do; use the fake's path
    // with a wrong name is not possible, so check a real but unrelated library).
    std::env::set_var("NEURON_RT_LIB", "libc.so.6");
    let e = probe().unwrap_err().to_string();
    assert!(e.contains("lacks the symbol nrt_init"), "{e}");
}

#[test]
fn raw_ffi_end_to_end() {
    let _g = setup("");
    {
        let lib = Arc::new(NrtLib::load_from(&fake_lib()).unwrap());
        assert_eq!(lib.visible_cores().unwrap(), 2);
        let rt = Runtime::init(lib).unwrap();
        // One runtime per process: a second init shares it.
        let again = Runtime::init(Arc::new(NrtLib::load_from(&fake_lib()).unwrap())).unwrap();
        assert!(Arc::ptr_eq(&rt, &again));
        drop(again);
        assert_eq!(hooks().1, 1);

        let err = rt.load(b"not a neff").err().unwrap();
        assert_eq!(err.status(), Some(NrtStatus::Invalid));

        let model = rt.load(fake_neff(1, 4).as_bytes()).unwrap();
        let info = model.tensor_info().unwrap();
        let names: Vec<_> = info.iter().map(|i| (i.name.as_str(), i.input)).collect();
        assert!(names.contains(&("input_ids", true)));
        assert!(names.contains(&("kv_cache", false)));
        let logits_info = info.iter().find(|i| i.name == "logits").unwrap();
        assert_eq!(logits_info.shape, vec![4, VOCAB as u32]);
        assert_eq!(logits_info.size, 4 * VOCAB * 4);

        let t = |name: &str, vals: &[i32]| {
            let mut t = rt.allocate_tensor(name, vals.len() * 4, -1).unwrap();
            t.write_i32(vals).unwrap();
            Arc::new(Mutex::new(t))
        };
        let toks = [5u32, 9, 7];
        let mut ins = rt.tensor_set().unwrap();
        ins.add("input_ids", t("input_ids", &[5, 9, 7, 0])).unwrap();
        ins.add("position_ids", t("p", &[0, 1, 2, 0])).unwrap();
        ins.add("seq_ids", t("s", &[0, 0, 0, -1])).unwrap();
        ins.add("slot_mapping", t("m", &[0, 1, 2, -1])).unwrap();
        ins.add("context_lens", t("c", &[3])).unwrap();
        ins.add("block_tables", t("b", &[0; MAX_BLOCKS])).unwrap();
        let kv = t("kv", &vec![0; NUM_BLOCKS * BLOCK * 2]);
        ins.add("kv_cache", kv.clone()).unwrap();
        let mut outs = rt.tensor_set().unwrap();
        let logits = t("logits", &vec![0; 4 * VOCAB]);
        outs.add("logits", logits.clone()).unwrap();
        // Missing the KV output: the runtime refuses the input.
        assert_eq!(
            model.execute(&ins, &mut outs).unwrap_err().status(),
            Some(NrtStatus::ExecBadInput)
        );
        outs.add("kv_cache", kv.clone()).unwrap();
        model.execute(&ins, &mut outs).unwrap();
        let l = logits.lock().unwrap().read_f32().unwrap();
        for i in 0..3 {
            let want = switchyard_neuron_fake::reference_logits(&toks[..=i], VOCAB);
            assert_eq!(&l[i * VOCAB..(i + 1) * VOCAB], &want[..]);
        }
        assert!(l[3 * VOCAB..].iter().all(|v| v.is_nan()), "padding row");
        // Reads and writes out of range are caught before the FFI call.
        let mut buf = [0u8; 8];
        assert!(matches!(
            logits.lock().unwrap().read(4 * VOCAB * 4 - 4, &mut buf),
            Err(NrtError::Invalid(_))
        ));
        assert!(hooks().0 > 0);
    }
    assert_all_released();
}

#[test]
fn every_setup_failure_is_typed_and_leaks_nothing() {
    for (spec, call) in [
        ("nrt_init=4", "nrt_init"),
        ("nrt_load:2=9", "nrt_load"),
        ("nrt_load=10", "nrt_load"),
        ("nrt_get_model_tensor_info:3", "nrt_get_model_tensor_info"),
        ("nrt_tensor_allocate:5=4", "nrt_tensor_allocate"),
    ] {
        let _g = setup(spec);
        let e = load(spec).err().unwrap();
        let raw: i32 = spec.rsplit('=').next().unwrap().parse().unwrap_or(1);
        let status = NrtStatus::from_raw(raw);
        assert!(
            e.to_string().contains(call) && e.to_string().contains(&status.to_string()),
            "{spec}: {e}"
        );
        if status.is_out_of_memory() {
            assert!(matches!(e, BackendError::OutOfMemory(_)), "{spec}: {e:?}");
        } else {
            assert!(matches!(e, BackendError::Device(_)), "{spec}: {e:?}");
        }
        assert_all_released();
    }
    for spec in [
        "nrt_allocate_tensor_set:2=2",
        "nrt_add_tensor_to_tensor_set:9=3",
        "nrt_tensor_write:1=1",
    ] {
        let _g = setup(spec);
        let mut b = load(spec).unwrap();
        let e = b
            .init_kv_cache(KvCacheConfig {
                block_size: BLOCK,
                num_blocks: NUM_BLOCKS,
            })
            .unwrap_err();
        let call = spec.split(':').next().unwrap();
        assert!(e.to_string().contains(call), "{spec}: {e}");
        drop(b);
        assert_all_released();
    }
    // Manifest/graph mismatches are reported before anything runs.
    let _g = setup("");
    let dir = artifacts("mismatch", &BUCKETS);
    std::fs::write(dir.join("b2_s8.neff"), fake_neff(2, 16)).unwrap();
    let e = NeuronBackend::load(&dir).err().unwrap().to_string();
    assert!(e.contains("b2_s8.neff:input_ids"), "{e}");
    let mut b = load("kv").unwrap();
    let e = b
        .init_kv_cache(KvCacheConfig {
            block_size: 16,
            num_blocks: 4,
        })
        .unwrap_err();
    assert!(e.to_string().contains("blocks of 4 tokens"), "{e}");
    let e = b
        .init_kv_cache(KvCacheConfig {
            block_size: BLOCK,
            num_blocks: NUM_BLOCKS + 1,
        })
        .unwrap_err();
    assert!(matches!(e, BackendError::OutOfMemory(_)), "{e:?}");
    assert!(matches!(
        b.forward(&prefill(&[5])),
        Err(BackendError::NoKvCache)
    ));
    drop(b);
    assert_all_released();
}

#[test]
fn every_execute_status_is_typed_and_the_backend_recovers() {
    for status in NrtStatus::ALL {
        let _g = setup(&format!("nrt_execute:2={}", status.as_raw()));
        let mut b = with_kv(load("exec").unwrap());
        b.forward(&prefill(&[5, 6])).unwrap();
        let e = b.forward(&prefill(&[5, 6, 7])).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("nrt_execute failed: {status}")),
            "{e}"
        );
        assert_eq!(
            matches!(e, BackendError::OutOfMemory(_)),
            status.is_out_of_memory()
        );
        // The third call succeeds again.
        let l = b.forward(&prefill(&[5, 6, 7])).unwrap();
        assert_eq!(
            l.row(0),
            &switchyard_neuron_fake::reference_logits(&[5, 6, 7], VOCAB)[..]
        );
        drop(b);
        assert_all_released();
    }
    let _g = setup("nrt_tensor_read:2=6");
    let mut b = with_kv(load("read").unwrap());
    b.forward(&prefill(&[5])).unwrap();
    let e = b.forward(&prefill(&[5])).unwrap_err().to_string();
    assert!(
        e.contains("nrt_tensor_read failed: NRT_HW_ERROR (6)"),
        "{e}"
    );
    drop(b);
    assert_all_released();
}

#[test]
fn forward_pads_to_the_smallest_bucket_and_copies_blocks() {
    let _g = setup("");
    let mut b = with_kv(load("pad").unwrap());
    assert_eq!(b.capabilities().shape_buckets, Some(BUCKETS.to_vec()));
    assert_eq!(b.capabilities().kind, "neuron");
    let stats = b.padding_stats();
    // 3 tokens, 1 sequence: bucket (1, 8), 5 padded tokens.
    b.forward(&prefill(&[5, 6, 7])).unwrap();
    let s = stats.snapshot();
    assert_eq!(
        (s.steps, s.real_tokens, s.padded_tokens, s.padded_rows),
        (1, 3, 5, 0)
    );
    // 9 tokens: bucket (4, 32).
    b.forward(&prefill(&[1, 2, 3, 4, 5, 6, 7, 8, 9])).unwrap();
    let s = stats.snapshot();
    assert_eq!((s.padded_tokens, s.padded_rows), (5 + 23, 3));
    assert!(s.waste() > 0.5);
    // Too many tokens for any bucket.
    let e = b.forward(&prefill(&[5; 33])).unwrap_err().to_string();
    assert!(e.contains("fits no compiled bucket"), "{e}");
    // Copy-on-write: copy block 0 (now tokens 1,2,3,4 at positions 0..4) to block 9 and continue a
    // sequence whose first block is 9.
    b.copy_blocks(&[(BlockId(0), BlockId(9))]).unwrap();
    let batch = ForwardBatch {
        token_ids: vec![8],
        positions: vec![3],
        seqs: vec![SeqInBatch {
            start: 0,
            len: 1,
            context_before: 3,
            block_table: vec![BlockId(9)],
            group_tables: Vec::new(),
        }],
        logits_indices: vec![0],
    };
    let l = b.forward(&batch).unwrap();
    assert_eq!(
        l.row(0),
        &switchyard_neuron_fake::reference_logits(&[1, 2, 3, 8], VOCAB)[..]
    );
}

// ---- the engine over the fake runtime ----

/// Tiny SentencePiece-style vocabulary (as in the engine's unit tests).
fn vocab_tokens() -> Vec<(String, i32)> {
    let mut v = vec![
        ("<unk>".to_string(), 2),
        ("<s>".into(), 3),
        ("</s>".into(), 3),
    ];
    v.push(("▁".into(), 1));
    for c in 'a'..='z' {
        v.push((c.to_string(), 1));
    }
    v
}

fn tiny_tokenizer() -> Arc<Tokenizer> {
    let mut w = GgufWriter::new();
    w.sentencepiece_vocab(&vocab_tokens())
        .kv("tokenizer.ggml.bos_token_id", Value::U64(1))
        .kv("tokenizer.ggml.eos_token_id", Value::U64(2))
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(true));
    let g = GgufFile::from_bytes(Path::new("tiny.gguf"), w.to_bytes()).unwrap();
    Arc::new(Tokenizer::from_gguf(&g).unwrap())
}

fn model_config() -> ModelConfig {
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

/// Greedy continuation of the fake graph, computed without the engine or the FFI (the engine
/// masks ids beyond the tokenizer's vocabulary).
fn reference(p: &[u32], n: usize, n_tok: usize) -> Vec<u32> {
    let mut seq = p.to_vec();
    for _ in 0..n {
        let row = switchyard_neuron_fake::reference_logits(&seq, VOCAB);
        let best = (0..n_tok)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
            .unwrap();
        seq.push(best as u32);
    }
    seq[p.len()..].to_vec()
}

#[test]
fn engine_generates_through_the_ffi_with_bucket_padding() {
    let _g = setup("");
    let backend = load("engine").unwrap();
    let stats = backend.padding_stats();
    let tok = tiny_tokenizer();
    let n_tok = tok.vocab_size;
    let h = EngineHandle::start(
        Box::new(backend),
        tok,
        &model_config(),
        EngineConfig {
            block_size: BLOCK,
            kv_cache: KvCacheSize::Blocks(NUM_BLOCKS),
            ..EngineConfig::default()
        },
    )
    .unwrap();
    // Bounded by the largest bucket (4 sequences, 32 tokens).
    assert_eq!(h.info().max_num_seqs, 4);
    assert_eq!(h.info().max_num_batched_tokens, 32);
    assert_eq!(h.info().max_model_len, 32);
    let e = h.submit(EngineRequest::new(vec![1; 20], 13)).unwrap_err();
    assert!(matches!(e, SubmitError::ContextTooLong { .. }), "{e:?}");
    assert!(e.to_string().contains("32"), "{e}");

    let prompts: Vec<Vec<u32>> = (0..7u32)
        .map(|i| {
            std::iter::once(1)
                .chain((0..3 + (i * 5) % 19).map(|k| 4 + (i * 7 + k * 3) % 26))
                .collect()
        })
        .collect();
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            let n = (31 - p.len()).min(12);
            let r = EngineRequest {
                ignore_eos: true,
                ..EngineRequest::new(p.clone(), n)
            };
            (p, n, h.submit(r).unwrap())
        })
        .collect();
    for (p, n, s) in streams {
        let c = s.collect_blocking().unwrap().pop().unwrap();
        assert_eq!(c.token_ids, reference(p, n, n_tok), "prompt {p:?}");
    }
    let s = stats.snapshot();
    assert!(s.steps > 0 && s.real_tokens > 0);
    assert!(s.padded_tokens > 0, "{s:?}");
    // The engine reports the same padding (it becomes switchyard:padding_tokens_total).
    assert_eq!(
        h.stats_blocking().unwrap().padding_tokens_total,
        s.padded_tokens
    );
    h.shutdown();
    drop(h);
    assert_all_released();
}
