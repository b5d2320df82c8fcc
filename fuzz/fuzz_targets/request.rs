//! Request JSON → validated request: a body through the completions and the chat parsing
//! (both tokenizers, the chat one through its template), then the engine's own checks. Errors
//! are 400s, never panics; a body the HTTP layer accepts must not fail the engine's checks on
//! sampling values, `n`, logprobs or token ids (those must be caught, and named, earlier).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard_http::api::{validate_chat_body, validate_completion_body, ParseCtx};
use switchyard_http::template::ChatTemplate;
use switchyard_runtime::engine::{validate_request, EngineInfo, EngineRequest, SubmitError};
use switchyard_runtime::tokenizer::Tokenizer;

const MAX_MODEL_LEN: usize = 4096;

fn templates() -> &'static Vec<ChatTemplate> {
    static T: OnceLock<Vec<ChatTemplate>> = OnceLock::new();
    T.get_or_init(|| {
        switchyard_fuzz::tokenizers()
            .iter()
            .map(|t| {
                ChatTemplate::new(
                    t.chat_template.as_deref().expect("template"),
                    "<bos>",
                    "<eos>",
                )
                .expect("fuzz template compiles")
            })
            .collect()
    })
}

fn info(tok: &Tokenizer) -> EngineInfo {
    EngineInfo {
        block_size: 16,
        num_blocks: 1024,
        bytes_per_block: 1024,
        num_kv_groups: 1,
        blocks_per_seq: MAX_MODEL_LEN / 16,
        max_model_len: MAX_MODEL_LEN,
        vocab_size: tok.vocab_size,
        max_num_batched_tokens: 2048,
        max_num_seqs: 64,
        enable_prefix_caching: true,
        embeddings: true,
        hidden_size: 640,
        speculative: None,
        draft_num_blocks: 0,
        draft_bytes_per_block: 0,
    }
}

fn engine_check(r: &EngineRequest, tok: &Tokenizer, body: &[u8]) {
    match validate_request(r, &info(tok)) {
        Err(
            e @ (SubmitError::BadSampling { .. }
            | SubmitError::BadN { .. }
            | SubmitError::TooManyLogprobs { .. }
            | SubmitError::TokenOutOfRange { .. }),
        ) => panic!(
            "accepted by the HTTP layer but refused by the engine: {e} (body {:?})",
            String::from_utf8_lossy(body)
        ),
        _ => {}
    }
}

fn run(data: &[u8]) {
    switchyard_fuzz::allow_caught_panics();
    let served = ["model".to_string(), "gemma-3-270m".to_string()];
    let defaults = switchyard_runtime::GenerationDefaults::default().base_params();
    for (tok, tpl) in switchyard_fuzz::tokenizers().iter().zip(templates()) {
        let ctx = ParseCtx {
            tok,
            vocab: tok.vocab_size,
            max_model_len: MAX_MODEL_LEN,
            defaults: &defaults,
            priority_scheduling: true,
        };
        if let Ok(reqs) = validate_completion_body(data, &served, ctx) {
            for r in &reqs {
                engine_check(r, tok, data);
            }
        }
        if let Ok(r) = validate_chat_body(data, &served, tpl, ctx) {
            engine_check(&r, tok, data);
        }
    }
}

fuzz_target!(|data: &[u8]| run(data));
