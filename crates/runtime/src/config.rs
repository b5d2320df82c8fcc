//! Model configuration read from GGUF metadata.

use switchyard_core::{Activation, Architecture, LayerAttention, ModelConfig, MAX_LAYERS};

use crate::gguf::{GgufFile, Value};

/// Errors turning GGUF metadata into a [`ModelConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The architecture is not one we run.
    #[error("{path}: unsupported architecture '{arch}' (supported: gemma3, qwen2, llama)")]
    UnsupportedArchitecture {
        /// File.
        path: String,
        /// Architecture found.
        arch: String,
    },
    /// A required metadata key is missing or has the wrong type.
    #[error("{path}: metadata key {key} missing or invalid")]
    MissingKey {
        /// File.
        path: String,
        /// Key.
        key: String,
    },
    /// Values are inconsistent.
    #[error("{path}: {what}")]
    Invalid {
        /// File.
        path: String,
        /// What is wrong.
        what: String,
    },
}

/// RoPE base of Gemma 3's sliding-window layers: not stored in GGUF; llama.cpp uses 10000.
pub const GEMMA3_LOCAL_ROPE_BASE: f32 = 10_000.0;

/// Reads the model configuration of `g`.
pub fn model_config(g: &GgufFile) -> Result<ModelConfig, ConfigError> {
    let path = g.path.display().to_string();
    let arch_s = g
        .architecture()
        .ok_or_else(|| ConfigError::MissingKey {
            path: path.clone(),
            key: "general.architecture".into(),
        })?
        .to_string();
    let arch = match arch_s.as_str() {
        "gemma3" => Architecture::Gemma3,
        "qwen2" => Architecture::Qwen2,
        "llama" => Architecture::Llama,
        other => {
            return Err(ConfigError::UnsupportedArchitecture {
                path,
                arch: other.to_string(),
            })
        }
    };
    let key = |k: &str| format!("{arch_s}.{k}");
    let req_u = |k: &str| -> Result<usize, ConfigError> {
        g.get(&key(k))
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| ConfigError::MissingKey {
                path: path.clone(),
                key: key(k),
            })
    };
    let opt_u = |k: &str| g.get(&key(k)).and_then(Value::as_u64).map(|v| v as usize);
    let opt_f = |k: &str| g.get(&key(k)).and_then(Value::as_f64).map(|v| v as f32);

    let n_layers = req_u("block_count")?;
    let hidden = req_u("embedding_length")?;
    let ffn = req_u("feed_forward_length")?;
    let n_heads = req_u("attention.head_count")?;
    let n_kv_heads = opt_u("attention.head_count_kv").unwrap_or(n_heads);
    let head_dim = opt_u("attention.key_length").unwrap_or(hidden / n_heads.max(1));
    let context_length = req_u("context_length")?;
    let rms_eps = opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-6);
    let rope_base = opt_f("rope.freq_base").unwrap_or(10_000.0);
    let invalid = |what: String| ConfigError::Invalid {
        path: path.clone(),
        what,
    };
    if n_layers == 0 || hidden == 0 || n_heads == 0 || n_kv_heads == 0 || head_dim == 0 {
        return Err(invalid("zero-sized dimension in metadata".into()));
    }
    if n_layers > MAX_LAYERS {
        return Err(invalid(format!(
            "block_count {n_layers} exceeds the supported maximum of {MAX_LAYERS} layers"
        )));
    }
    if n_heads % n_kv_heads != 0 {
        return Err(invalid(format!(
            "{n_heads} heads not divisible by {n_kv_heads} KV heads"
        )));
    }
    if let Some(vl) = opt_u("attention.value_length") {
        if vl != head_dim {
            return Err(invalid(format!(
                "value_length {vl} differs from key_length {head_dim}"
            )));
        }
    }
    if let Some(t) = g.get(&key("rope.scaling.type")).and_then(Value::as_str) {
        if t != "none" {
            return Err(invalid(format!("RoPE scaling '{t}' is not supported yet")));
        }
    }
    let vocab_size = g
        .info("token_embd.weight")
        .map(|t| t.shape.get(1).copied().unwrap_or(0))
        .ok_or_else(|| invalid("tensor token_embd.weight missing".into()))?;
    let tied_embeddings = g.info("output.weight").is_none();

    let cfg = match arch {
        Architecture::Gemma3 => {
            let window = req_u("attention.sliding_window")?;
            // llama.cpp: every 6th layer is global (swa pattern 6): layers 5, 11, 17, ...
            let layers = (0..n_layers)
                .map(|i| {
                    if i % 6 < 5 {
                        LayerAttention::Sliding { window }
                    } else {
                        LayerAttention::Global
                    }
                })
                .collect();
            ModelConfig {
                arch,
                n_layers,
                hidden,
                ffn,
                n_heads,
                n_kv_heads,
                head_dim,
                vocab_size,
                context_length,
                rms_eps,
                rope_base,
                rope_base_local: GEMMA3_LOCAL_ROPE_BASE,
                layers,
                activation: Activation::GeluTanh,
                qk_norm: true,
                post_norms: true,
                embed_scale: (hidden as f32).sqrt(),
                query_scale: 1.0 / (head_dim as f32).sqrt(),
                final_logit_softcap: opt_f("final_logit_softcapping"),
                tied_embeddings,
            }
        }
        Architecture::Qwen2 | Architecture::Llama => ModelConfig {
            arch,
            n_layers,
            hidden,
            ffn,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length,
            rms_eps,
            rope_base,
            rope_base_local: rope_base,
            layers: vec![LayerAttention::Global; n_layers],
            activation: Activation::Silu,
            qk_norm: false,
            post_norms: false,
            embed_scale: 1.0,
            query_scale: 1.0 / (head_dim as f32).sqrt(),
            final_logit_softcap: None,
            tied_embeddings,
        },
    };
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A GGUF with the given u32 metadata (plus `general.architecture`) and one F32 tensor
    /// `token_embd.weight` of shape [8, 4].
    fn gguf(arch: &str, kv: &[(&str, u32)]) -> GgufFile {
        let push_str = |v: &mut Vec<u8>, s: &str| {
            v.extend((s.len() as u64).to_le_bytes());
            v.extend(s.as_bytes());
        };
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend(1u64.to_le_bytes());
        v.extend((kv.len() as u64 + 1).to_le_bytes());
        push_str(&mut v, "general.architecture");
        v.extend(8u32.to_le_bytes());
        push_str(&mut v, arch);
        for (k, x) in kv {
            push_str(&mut v, &format!("{arch}.{k}"));
            v.extend(4u32.to_le_bytes());
            v.extend(x.to_le_bytes());
        }
        push_str(&mut v, "token_embd.weight");
        v.extend(2u32.to_le_bytes());
        v.extend(8u64.to_le_bytes());
        v.extend(4u64.to_le_bytes());
        v.extend(0u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        while !v.len().is_multiple_of(32) {
            v.push(0);
        }
        v.extend([0u8; 8 * 4 * 4]);
        GgufFile::from_bytes(Path::new("t.gguf"), v).unwrap()
    }

    fn dims(block_count: u32) -> Vec<(&'static str, u32)> {
        vec![
            ("block_count", block_count),
            ("embedding_length", 8),
            ("feed_forward_length", 16),
            ("attention.head_count", 2),
            ("context_length", 64),
            ("attention.sliding_window", 4),
        ]
    }

    #[test]
    fn reads_dimensions_and_gemma3_layer_pattern() {
        let c = model_config(&gguf("gemma3", &dims(7))).unwrap();
        assert_eq!(
            (c.n_layers, c.hidden, c.head_dim, c.vocab_size),
            (7, 8, 4, 4)
        );
        assert_eq!(c.layers[5], LayerAttention::Global);
        assert_eq!(c.layers[6], LayerAttention::Sliding { window: 4 });
        let c = model_config(&gguf("qwen2", &dims(MAX_LAYERS as u32))).unwrap();
        assert_eq!(c.layers.len(), MAX_LAYERS);
    }

    /// Fuzz find (gguf, CI): `block_count` 2^32 - 1 sized a layer table of 64 GiB before any
    /// tensor was looked at, and the allocation aborted the process.
    #[test]
    fn huge_layer_count_is_an_error() {
        for arch in ["gemma3", "qwen2", "llama"] {
            for n in [MAX_LAYERS as u32 + 1, u32::MAX] {
                let e = model_config(&gguf(arch, &dims(n))).unwrap_err().to_string();
                assert!(e.contains("exceeds the supported maximum of 512"), "{e}");
            }
        }
    }
}
