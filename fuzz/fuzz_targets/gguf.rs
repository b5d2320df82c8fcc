//! GGUF parser: arbitrary and mutated real headers. Parsing, then everything the loader reads
//! from a parsed file (model config, tokenizer, chat template, small tensors dequantized) must
//! return errors, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchyard_core::WeightSource;
use switchyard_runtime::gguf::GgufFile;
use switchyard_runtime::tokenizer::{IncrementalDecoder, Tokenizer};

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::allow_caught_panics();
    let Ok(g) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    let _ = g.architecture();
    let _ = format!("{g:?}");
    for v in g.metadata.values() {
        let _ = (
            v.as_u64(),
            v.as_f64(),
            v.as_str(),
            v.as_bool(),
            v.as_array(),
        );
    }
    for t in &g.tensors {
        assert!(
            t.offset + t.len <= g.file_size(),
            "tensor {} out of the file",
            t.name
        );
        let tensor = g.tensor(&t.name).expect("listed tensor is found");
        if t.len <= 1 << 16 {
            let _ = tensor.to_f32();
        }
    }
    let _ = switchyard_runtime::config::model_config(&g);
    if let Ok(tok) = Tokenizer::from_gguf(&g) {
        if let Ok(ids) = tok.encode("Hello <start_of_turn>wörld 日本 👋\n\n", true) {
            let _ = tok.decode(&ids, false);
            let mut d = IncrementalDecoder::new(true);
            for &id in &ids {
                let _ = d.push(&tok, id);
            }
            let _ = d.flush(&tok);
        }
        if let Some(src) = &tok.chat_template {
            if let Ok(t) = switchyard_http::template::ChatTemplate::new(src, "<bos>", "<eos>") {
                let m = switchyard_http::template::Message {
                    role: "user".into(),
                    content: "hi".into(),
                };
                let _ = t.render(&[m], true);
            }
        }
    }
});
