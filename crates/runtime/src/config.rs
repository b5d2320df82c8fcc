//! Model configuration read from GGUF metadata.

use switchyard_core::config::yarn_get_mscale;
use switchyard_core::{
    Architecture, Dims, LayerAttention, LongRope, ModelConfig, MoeConfig, YarnRamp, MAX_LAYERS,
};

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
    rope_scaling(g, &mut c, &arch_s).map_err(invalid)?;
    if let Some(t) = g.info("rope_freqs.weight") {
        c.rope_freq_factors =
            Some(rope_freqs(g, t, "rope_freqs.weight", d.head_dim).map_err(invalid)?);
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
            // LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini): both factor sets, the long one in
            // use when the context exceeds the pre-training one (llama.cpp: `n_ctx_seq >
            // n_ctx_orig_yarn`); its attention factor is `rope.scaling.attn_factor` (read above).
            match (
                g.info("rope_factors_long.weight"),
                g.info("rope_factors_short.weight"),
            ) {
                (None, None) => {}
                (Some(l), Some(s)) => {
                    if c.rope_freq_factors.is_some() || c.rope_scaling.yarn.is_some() {
                        return Err(invalid(
                            "LongRoPE factors together with rope_freqs.weight or YaRN are not supported"
                                .into(),
                        ));
                    }
                    c.rope_scaling.longrope = Some(LongRope {
                        long: rope_freqs(g, l, "rope_factors_long.weight", d.head_dim)
                            .map_err(invalid)?,
                        short: rope_freqs(g, s, "rope_factors_short.weight", d.head_dim)
                            .map_err(invalid)?,
                        original_context: opt_u("rope.scaling.original_context_length")
                            .unwrap_or(d.context_length),
                    });
                    c.select_rope_factors(d.context_length);
                }
                _ => return Err(invalid(
                    "LongRoPE needs both rope_factors_long.weight and rope_factors_short.weight"
                        .into(),
                )),
            }
            // llama.cpp ignores Phi-3's sliding window (its converters set it wrongly): so do
            // we, to give the same results.
        }
        Architecture::Qwen2 | Architecture::Llama | Architecture::Qwen3 => {}
    }
    Ok(c)
}

/// Reads `{arch}.rope.scaling.*` into `c`: linear (a position scale), YaRN (llama.cpp's: the
/// scale, a ramp back to the original frequencies below `original_context_length`, and the
/// magnitude `0.1 ln(factor) + 1`), LongRoPE (the type only: the factors are tensors, read
/// with the architecture); and `rope.scaling.attn_factor`, a factor on cos/sin whatever the
/// type (llama.cpp `hparams.rope_attn_factor`).
///
/// llama.cpp reads `yarn_beta_fast` / `yarn_beta_slow` / `yarn_attn_factor` only for a few
/// architectures (not ours) and takes 32 / 1 / `0.1 ln(factor) + 1`; convert_hf_to_gguf
/// writes them from Hugging Face's `beta_fast` / `beta_slow` / `attention_factor`, which
/// transformers uses. We use them as transformers does (the model's definition); a file that
/// has them differs from llama.cpp's output there. `yarn_log_multiplier` (DeepSeek's
/// `mscale_all_dim`) and a `yarn_ext_factor` other than 1 are refused.
fn rope_scaling(g: &GgufFile, c: &mut ModelConfig, arch: &str) -> Result<(), String> {
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let f = |k: &str| g.get(&key(k)).and_then(Value::as_f64).map(|v| v as f32);
    let factor = || -> Result<f32, String> {
        let f = f("factor").unwrap_or(1.0);
        if f.is_finite() && f > 0.0 {
            Ok(f)
        } else {
            Err(format!("RoPE scaling factor {f}"))
        }
    };
    let sliding = c
        .layers
        .iter()
        .any(|l| matches!(l, LayerAttention::Sliding { .. }));
    match g.get(&key("type")).and_then(Value::as_str) {
        None | Some("none") => {}
        Some("linear") => c.rope_freq_scale = 1.0 / factor()?,
        Some("yarn") => {
            if sliding {
                return Err(format!(
                    "RoPE scaling 'yarn' on {arch}'s sliding-window layers is not supported"
                ));
            }
            let factor = factor()?;
            for k in ["yarn_log_multiplier", "yarn_ext_factor"] {
                match f(k) {
                    None => {}
                    Some(v) if k == "yarn_ext_factor" && v == 1.0 => {}
                    Some(v) => {
                        return Err(format!(
                            "RoPE scaling yarn with {} = {v} is not supported (supported: factor, \
                             original_context_length, yarn_beta_fast, yarn_beta_slow, \
                             yarn_attn_factor, attn_factor)",
                            key(k)
                        ))
                    }
                }
            }
            let original_context = g
                .get(&key("original_context_length"))
                .and_then(Value::as_u64)
                .map_or(c.context_length, |v| v as usize);
            let y = YarnRamp {
                original_context,
                beta_fast: f("yarn_beta_fast").unwrap_or(32.0),
                beta_slow: f("yarn_beta_slow").unwrap_or(1.0),
            };
            if original_context == 0 || !(y.beta_fast > 0.0 && y.beta_slow > 0.0) {
                return Err(format!(
                    "RoPE scaling yarn: original context {original_context}, beta_fast {}, \
                     beta_slow {}",
                    y.beta_fast, y.beta_slow
                ));
            }
            c.rope_freq_scale = 1.0 / factor;
            c.rope_scaling.yarn = Some(y);
            c.rope_scaling.attn_factor =
                f("yarn_attn_factor").unwrap_or_else(|| yarn_get_mscale(factor, 1.0));
        }
        // The factors are tensors (Phi-3); without them this is plain RoPE, as in llama.cpp.
        Some("longrope") => {}
        Some(t) => {
            return Err(format!(
                "RoPE scaling '{t}' is not supported (supported: none, linear, yarn, longrope \
                 (Phi-3's rope_factors_long/short), and Llama 3.1's rope_freqs.weight)"
            ))
        }
    }
    if let Some(a) = f("attn_factor") {
        if !(a.is_finite() && a > 0.0) {
            return Err(format!("RoPE attention factor {a}"));
        }
        c.rope_scaling.attn_factor *= a;
    }
    Ok(())
}

/// The `head_dim / 2` f32 RoPE frequency divisors of tensor `name` (`rope_freqs.weight`,
/// `rope_factors_long.weight`, `rope_factors_short.weight`).
fn rope_freqs(
    g: &GgufFile,
    t: &crate::gguf::TensorInfo,
    name: &str,
    head_dim: usize,
) -> Result<Vec<f32>, String> {
    use switchyard_core::{GgmlType, WeightSource};
    if t.dtype != GgmlType::F32 || t.shape.iter().product::<usize>() != head_dim / 2 {
        return Err(format!(
            "{name}: expected {} F32 values, found {:?} {:?}",
            head_dim / 2,
            t.dtype,
            t.shape
        ));
    }
    let w = g
        .tensor(name)
        .ok_or_else(|| format!("{name}: data out of range"))?;
    let v = w.to_f32();
    if v.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(format!("{name}: a factor is not a positive number"));
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

    /// A llama-shaped GGUF (8 wide, 2 heads: head_dim 4, 2 rotated pairs) with extra metadata
    /// and F32 tensors.
    fn gguf_with(arch: &str, extra: &[(&str, Value)], tensors: &[(&str, Vec<f32>)]) -> GgufFile {
        let mut w = crate::gguf_write::GgufWriter::new();
        w.kv("general.architecture", Value::Str(arch.into()));
        for (k, x) in dims(2) {
            w.kv(&format!("{arch}.{k}"), Value::U64(u64::from(x)));
        }
        for (k, v) in extra {
            w.kv(&format!("{arch}.{k}"), v.clone());
        }
        w.tensor("token_embd.weight", 0, &[8, 4], vec![0u8; 8 * 4 * 4]);
        for (name, v) in tensors {
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            w.tensor(name, 0, &[v.len()], bytes);
        }
        GgufFile::from_bytes(Path::new("t.gguf"), w.to_bytes()).unwrap()
    }

    /// YaRN: llama.cpp's defaults (beta 32 / 1, attention factor 0.1 ln(factor) + 1); the
    /// original context from its key, else the context length.
    #[test]
    fn reads_yarn() {
        let yarn = |orig: Option<u64>| {
            let mut kv = vec![
                ("rope.scaling.type", Value::Str("yarn".into())),
                ("rope.scaling.factor", Value::F64(4.0)),
            ];
            if let Some(o) = orig {
                kv.push(("rope.scaling.original_context_length", Value::U64(o)));
            }
            model_config(&gguf_with("qwen3", &kv, &[])).unwrap()
        };
        let c = yarn(Some(16));
        let y = c.rope_scaling.yarn.unwrap();
        assert_eq!(
            (y.original_context, y.beta_fast, y.beta_slow),
            (16, 32.0, 1.0)
        );
        assert_eq!(c.rope_freq_scale, 0.25);
        assert!((c.rope_scaling.attn_factor - (1.0 + 0.1 * 4f32.ln())).abs() < 1e-6);
        assert_eq!(yarn(None).rope_scaling.yarn.unwrap().original_context, 64);
        let e = model_config(&gguf_with(
            "qwen3",
            &[
                ("rope.scaling.type", Value::Str("yarn".into())),
                ("rope.scaling.yarn_log_multiplier", Value::F64(0.1)),
            ],
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("yarn_log_multiplier = 0.1 is not supported"),
            "{e}"
        );
        let e = model_config(&gguf_with(
            "gemma2",
            &[("rope.scaling.type", Value::Str("yarn".into()))],
            &[],
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("sliding-window layers is not supported"), "{e}");
    }

    /// Phi-3 LongRoPE: the long factors for a context above the original one, the short ones
    /// otherwise; the attention factor from `rope.scaling.attn_factor`; one set alone refused.
    #[test]
    fn reads_phi3_longrope() {
        let (long, short) = (vec![1.0, 8.0], vec![1.0, 1.5]);
        let file = |orig: u64, tensors: &[(&str, Vec<f32>)]| {
            gguf_with(
                "phi3",
                &[
                    ("rope.scaling.original_context_length", Value::U64(orig)),
                    ("rope.scaling.attn_factor", Value::F64(1.25)),
                ],
                tensors,
            )
        };
        let both = [
            ("rope_factors_long.weight", long.clone()),
            ("rope_factors_short.weight", short.clone()),
        ];
        let mut c = model_config(&file(16, &both)).unwrap();
        assert_eq!(c.rope_freq_factors.as_deref(), Some(&long[..]));
        assert_eq!(c.rope_scaling.attn_factor, 1.25);
        c.select_rope_factors(16);
        assert_eq!(c.rope_freq_factors.as_deref(), Some(&short[..]));
        let c = model_config(&file(64, &both)).unwrap();
        assert_eq!(c.rope_freq_factors.as_deref(), Some(&short[..]));
        let e = model_config(&file(16, &both[..1])).unwrap_err().to_string();
        assert!(
            e.contains("needs both rope_factors_long.weight and rope_factors_short.weight"),
            "{e}"
        );
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
