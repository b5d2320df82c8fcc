//! safetensors loader: a file's bytes (header, tensor directory, the tensors served under GGUF
//! names for each architecture), or JSON text as a shard index (`open_index` over two real
//! shards in a temporary directory) and as a `config.json`. Errors, never panics.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard_core::{ModelConfig, WeightSource};
use switchyard_runtime::hf::{self, HfWeights};
use switchyard_runtime::safetensors::{serialize, Checkpoint, SafetensorsFile};

/// Tiny configurations of the three architectures (vocabulary 16, hidden 8, 2 layers).
fn configs() -> &'static [ModelConfig] {
    static C: OnceLock<Vec<ModelConfig>> = OnceLock::new();
    C.get_or_init(|| {
        ["LlamaForCausalLM", "Qwen2ForCausalLM", "Gemma3ForCausalLM"]
            .iter()
            .map(|a| {
                let v = serde_json::json!({
                    "architectures": [a], "num_hidden_layers": 2, "hidden_size": 8,
                    "intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
                    "head_dim": 4, "vocab_size": 16, "max_position_embeddings": 64,
                    "tie_word_embeddings": false
                });
                hf::model_config(&v, Path::new("config.json")).expect("fuzz config")
            })
            .collect()
    })
}

/// A directory with two shards: `a` in the first, `b` and `c` in the second.
fn shard_dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("switchyard-fuzz-st-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let one = serialize(&[("a", "F32", &[2], &f32s(&[1.0, 2.0]))]);
        let two = serialize(&[
            ("b", "F32", &[1], &f32s(&[3.0])),
            ("c", "BF16", &[2], &[0, 0x3f, 0, 0x40]),
        ]);
        std::fs::write(d.join("model-00001-of-00002.safetensors"), one).expect("write");
        std::fs::write(d.join("model-00002-of-00002.safetensors"), two).expect("write");
        d
    })
}

const GGUF_NAMES: &[&str] = &[
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_q.bias",
    "attn_k.bias",
    "attn_v.bias",
    "attn_output.weight",
    "attn_q_norm.weight",
    "attn_k_norm.weight",
    "post_attention_norm.weight",
    "ffn_norm.weight",
    "post_ffw_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];

fn tensors_of(w: &HfWeights) {
    let mut names: Vec<String> = ["token_embd.weight", "output_norm.weight", "output.weight"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for i in 0..3 {
        names.extend(GGUF_NAMES.iter().map(|n| format!("blk.{i}.{n}")));
    }
    for n in names {
        if let Some(t) = w.tensor(&n) {
            if t.data.as_slice().len() <= 1 << 16 {
                let _ = t.to_f32();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.safetensors");
    if data.first() == Some(&b'{') {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let dir = shard_dir();
        let _ = Checkpoint::open_index(dir, &dir.join("model.safetensors.index.json"), text);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            let _ = hf::model_config(&v, Path::new("config.json"));
        }
        return;
    }
    let Ok(f) = SafetensorsFile::from_bytes(p, data.to_vec()) else {
        return;
    };
    for t in &f.tensors {
        assert!(
            t.offset + t.len <= f.file_size(),
            "tensor {} out of the file",
            t.name
        );
        let tensor = f.tensor_as(&t.name, "x").expect("listed tensor is found");
        if t.len <= 1 << 16 {
            let _ = tensor.to_f32();
        }
    }
    for cfg in configs() {
        let Ok(f) = SafetensorsFile::from_bytes(p, data.to_vec()) else {
            return;
        };
        let Ok(ck) = Checkpoint::from_files(vec![f]) else {
            return;
        };
        let _ = ck.total_size();
        if let Ok(w) = HfWeights::new(ck, cfg) {
            tensors_of(&w);
        }
    }
});
