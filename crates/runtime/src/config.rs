//! Model configuration read from GGUF metadata.

use switchyard_core::{Architecture, Dims, LayerAttention, ModelConfig, MoeConfig, MAX_LAYERS};

use crate::gguf::{GgufFile, Value};

/// Errors turning GGUF metadata into a [`ModelConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The architecture is not one we run.
    #[error(
        "{path}: unsupported architecture '{arch}' (supported: {})",
        Architecture::supported_list()
    )]
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
    let arch = Architecture::from_gguf_name(&arch_s).ok_or_else(|| {
        ConfigError::UnsupportedArchitecture {
            path: path.clone(),
            arch: arch_s.clone(),
        }
    })?;
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
    let invalid = |what: String| ConfigError::Invalid {
        path: path.clone(),
        what,
    };

    let n_layers = req_u("block_count")?;
    let hidden = req_u("embedding_length")?;
    let n_heads = req_u("attention.head_count")?;
    let d = Dims {
        n_layers,
        hidden,
        // A MoE file may give only the experts' width.
        ffn: match arch {
            Architecture::Qwen3Moe => opt_u("feed_forward_length").unwrap_or(0),
            _ => req_u("feed_forward_length")?,
        },
        n_heads,
        n_kv_heads: opt_u("attention.head_count_kv").unwrap_or(n_heads),
        head_dim: opt_u("attention.key_length").unwrap_or(hidden / n_heads.max(1)),
        vocab_size: g
            .info("token_embd.weight")
            .map(|t| t.shape.get(1).copied().unwrap_or(0))
            .ok_or_else(|| invalid("tensor token_embd.weight missing".into()))?,
        context_length: req_u("context_length")?,
    };
    if d.n_layers == 0 || d.hidden == 0 || d.n_heads == 0 || d.n_kv_heads == 0 || d.head_dim == 0 {
        return Err(invalid("zero-sized dimension in metadata".into()));
    }
    if d.n_layers > MAX_LAYERS {
        return Err(invalid(format!(
            "block_count {n_layers} exceeds the supported maximum of {MAX_LAYERS} layers"
        )));
    }
    if !d.n_heads.is_multiple_of(d.n_kv_heads) {
        return Err(invalid(format!(
            "{} heads not divisible by {} KV heads",
            d.n_heads, d.n_kv_heads
        )));
    }
    if !d.head_dim.is_multiple_of(2) {
        return Err(invalid(format!("head dimension {} is odd", d.head_dim)));
    }
    if let Some(vl) = opt_u("attention.value_length") {
        if vl != d.head_dim {
            return Err(invalid(format!(
                "value_length {vl} differs from key_length {}",
                d.head_dim
            )));
        }
    }
    let mut c = ModelConfig::new(arch, d);
    c.rms_eps = opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-6);
    c.rope_base = opt_f("rope.freq_base").unwrap_or(10_000.0);
    c.rope_base_local = c.rope_base;
    c.tied_embeddings = g.info("output.weight").is_none();
    if let Some(n) = opt_u("rope.dimension_count") {
        if n != d.head_dim {
            return Err(invalid(format!(
                "partial RoPE ({n} of {} dimensions) is not supported",
                d.head_dim
            )));
        }
    }
    match g.get(&key("rope.scaling.type")).and_then(Value::as_str) {
        None | Some("none") => {}
        Some("linear") => {
            let f = opt_f("rope.scaling.factor").unwrap_or(1.0);
            if !(f.is_finite() && f > 0.0) {
                return Err(invalid(format!("RoPE scaling factor {f}")));
            }
            c.rope_freq_scale = 1.0 / f;
        }
        Some(t) => {
            return Err(invalid(format!(
                "RoPE scaling '{t}' is not supported (supported: none, linear, and Llama 3.1's \
                 rope_freqs.weight)"
            )))
        }
    }
    if let Some(t) = g.info("rope_freqs.weight") {
        c.rope_freq_factors = Some(rope_freqs(g, t, d.head_dim).map_err(invalid)?);
    }
    match arch {
        Architecture::Gemma3 => {
            let window = req_u("attention.sliding_window")?;
            for l in &mut c.layers {
                if let LayerAttention::Sliding { window: w } = l {
                    *w = window;
                }
            }
            c.rope_base_local = GEMMA3_LOCAL_ROPE_BASE;
            c.final_logit_softcap = opt_f("final_logit_softcapping");
        }
        Architecture::Gemma2 => {
            let window = opt_u("attention.sliding_window").unwrap_or(4096);
            for l in &mut c.layers {
                if let LayerAttention::Sliding { window: w } = l {
                    *w = window;
                }
            }
            c.final_logit_softcap = opt_f("final_logit_softcapping").or(c.final_logit_softcap);
            c.rope_freq_scale_local = c.rope_freq_scale;
            c.attn_logit_softcap = opt_f("attn_logit_softcapping").or(c.attn_logit_softcap);
            // llama.cpp (after gemma_pytorch): the 27B (46 layers) scales queries by
            // 1/sqrt(hidden / heads), the others by 1/sqrt(head_dim).
            if n_layers == 46 {
                c.query_scale = 1.0 / ((hidden / n_heads) as f32).sqrt();
            }
        }
        Architecture::Qwen3Moe => {
            let n_expert = req_u("expert_count")?;
            let n_expert_used = req_u("expert_used_count")?;
            let expert_ffn = req_u("expert_feed_forward_length")?;
            if n_expert == 0 || n_expert_used == 0 || n_expert_used > n_expert || expert_ffn == 0 {
                return Err(invalid(format!(
                    "{n_expert_used} of {n_expert} experts of width {expert_ffn}"
                )));
            }
            c.moe = Some(MoeConfig {
                n_expert,
                n_expert_used,
                expert_ffn,
                norm_topk_prob: true,
            });
        }
        Architecture::Phi3 => {
            if g.info("rope_factors_long.weight").is_some() {
                return Err(invalid(
                    "Phi-3 LongRoPE (rope_factors_long/short) is not supported (supported: \
                     Phi-3 models without long-context RoPE factors, e.g. the 4k ones)"
                        .into(),
                ));
            }
            // llama.cpp ignores Phi-3's sliding window (its converters set it wrongly): so do
            // we, to give the same results.
        }
        Architecture::Qwen2 | Architecture::Llama | Architecture::Qwen3 => {}
    }
    Ok(c)
}

/// The `head_dim / 2` f32 RoPE frequency divisors of `rope_freqs.weight`.
fn rope_freqs(
    g: &GgufFile,
    t: &crate::gguf::TensorInfo,
    head_dim: usize,
) -> Result<Vec<f32>, String> {
    use switchyard_core::{GgmlType, WeightSource};
    if t.dtype != GgmlType::F32 || t.shape.iter().product::<usize>() != head_dim / 2 {
        return Err(format!(
            "rope_freqs.weight: expected {} F32 values, found {:?} {:?}",
            head_dim / 2,
            t.dtype,
            t.shape
        ));
    }
    let w = g
        .tensor("rope_freqs.weight")
        .ok_or("rope_freqs.weight: data out of range")?;
    let v = w.to_f32();
    if v.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err("rope_freqs.weight: a factor is not a positive number".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A GGUF with the given u32 metadata (plus `general.architecture`) and one F32 tensor
    /// `token_embd.weight` of shape [8, 4].
    fn gguf(arch: &str, kv: &[(&str, u32)]) -> GgufFile {
        let mut w = crate::gguf_write::GgufWriter::new();
        w.kv("general.architecture", Value::Str(arch.into()));
        for (k, x) in kv {
            w.kv(&format!("{arch}.{k}"), Value::U64(u64::from(*x)));
        }
        w.tensor("token_embd.weight", 0, &[8, 4], vec![0u8; 8 * 4 * 4]);
        GgufFile::from_bytes(Path::new("t.gguf"), w.to_bytes()).unwrap()
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
