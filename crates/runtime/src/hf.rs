//! Hugging Face-format model directories: `config.json` → [`ModelConfig`], safetensors weights
//! served under the GGUF tensor names the backends look up.
//!
//! llama.cpp's `convert_hf_to_gguf` conventions are applied here so that a backend sees the same
//! tensors either way: Gemma's RMSNorm weights get +1 (HF Gemma computes `x * (1 + w)`, GGUF
//! stores `1 + w`), Llama's Q/K rows are permuted for interleaved RoPE (HF uses `rotate_half`;
//! Qwen2 and Gemma 3 use NEOX-style RoPE in both formats, so no permutation), shapes are
//! reversed to GGML order (`[out, in]` → `[in, out]`, the same bytes). Everything else is the
//! stored tensor, memory-mapped, never copied.

use std::path::{Path, PathBuf};

use serde_json::Value;
use switchyard_core::config::yarn_get_mscale;
use switchyard_core::{
    Architecture, Dims, GgmlType, LayerAttention, LongRope, ModelConfig, Tensor, WeightBytes,
    WeightSource, YarnRamp, MAX_LAYERS,
};

use crate::config::ConfigError;
use crate::safetensors::{Checkpoint, SafetensorsError};

/// Reads a JSON file of a model directory.
pub fn read_json(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        path: path.display().to_string(),
        what: format!("cannot read: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.display().to_string(),
        what: format!("not valid JSON: {e}"),
    })
}

/// The architecture named by a `config.json`.
fn architecture(c: &Value, path: &str) -> Result<Architecture, ConfigError> {
    let archs: Vec<&str> = c
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let model_type = c.get("model_type").and_then(Value::as_str).unwrap_or("");
    let by_arch = archs.iter().find_map(|a| match *a {
        "Gemma3ForCausalLM" => Some(Architecture::Gemma3),
        "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
        "LlamaForCausalLM" | "MistralForCausalLM" => Some(Architecture::Llama),
        "Qwen3ForCausalLM" => Some(Architecture::Qwen3),
        "Phi3ForCausalLM" => Some(Architecture::Phi3),
        _ => None,
    });
    let by_type = match model_type {
        "gemma3_text" => Some(Architecture::Gemma3),
        "qwen2" => Some(Architecture::Qwen2),
        "llama" | "mistral" => Some(Architecture::Llama),
        "qwen3" => Some(Architecture::Qwen3),
        "phi3" => Some(Architecture::Phi3),
        _ => None,
    };
    by_arch.or(by_type).ok_or_else(|| {
        let found = if archs.is_empty() {
            format!("model_type {model_type:?}")
        } else {
            format!("{} (model_type {model_type:?})", archs.join(", "))
        };
        let hint = if model_type == "gemma3" {
            "; multimodal Gemma 3 checkpoints (Gemma3ForConditionalGeneration) are not supported, use a text-only one"
        } else {
            ""
        };
        ConfigError::UnsupportedArchitecture {
            path: path.to_string(),
            arch: format!(
                "{found}; supported: Gemma3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM, MistralForCausalLM, Phi3ForCausalLM{hint}"
            ),
        }
    })
}

/// Builds the [`ModelConfig`] of a Hugging Face `config.json` (`c`, read from `path`).
pub fn model_config(c: &Value, path: &Path) -> Result<ModelConfig, ConfigError> {
    let ps = path.display().to_string();
    let arch = architecture(c, &ps)?;
    let missing = |k: &str| ConfigError::MissingKey {
        path: ps.clone(),
        key: k.to_string(),
    };
    let invalid = |what: String| ConfigError::Invalid {
        path: ps.clone(),
        what,
    };
    let present = |k: &str| c.get(k).filter(|v| !v.is_null());
    let req_u = |k: &str| -> Result<usize, ConfigError> {
        present(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| missing(k))
    };
    let opt_u = |k: &str| -> Result<Option<usize>, ConfigError> {
        match present(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|v| Some(v as usize))
                .ok_or_else(|| invalid(format!("{k} is not a non-negative integer"))),
        }
    };
    let opt_f = |k: &str| -> Result<Option<f32>, ConfigError> {
        match present(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|v| Some(v as f32))
                .ok_or_else(|| invalid(format!("{k} is not a number"))),
        }
    };
    let opt_s = |k: &str| present(k).and_then(Value::as_str);

    let n_layers = req_u("num_hidden_layers")?;
    let hidden = req_u("hidden_size")?;
    let ffn = req_u("intermediate_size")?;
    let n_heads = req_u("num_attention_heads")?;
    let n_kv_heads = opt_u("num_key_value_heads")?.unwrap_or(n_heads);
    let vocab_size = req_u("vocab_size")?;
    let context_length = req_u("max_position_embeddings")?;
    // Transformers' per-architecture defaults where a key may be omitted.
    let (def_head_dim, def_theta, def_tied) = match arch {
        Architecture::Gemma3 => (Some(256), 1_000_000.0, true),
        Architecture::Qwen2 => (None, 10_000.0, false),
        Architecture::Llama => (None, 10_000.0, false),
        Architecture::Qwen3 => (None, 1_000_000.0, false),
        Architecture::Phi3 => (None, 10_000.0, false),
        Architecture::Qwen3Moe | Architecture::Gemma2 => {
            return Err(ConfigError::UnsupportedArchitecture {
                path: ps.clone(),
                arch: format!(
                    "{} in Hugging Face format (use its GGUF; Hugging Face format supports \
                     Gemma3ForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM, \
                     Phi3ForCausalLM)",
                    arch.gguf_name()
                ),
            })
        }
    };
    let head_dim = opt_u("head_dim")?
        .or(def_head_dim)
        .unwrap_or(hidden / n_heads.max(1));
    let rms_eps = opt_f("rms_norm_eps")?.unwrap_or(1e-6);
    let rope_base = opt_f("rope_theta")?.unwrap_or(def_theta);
    let tied_embeddings = match present("tie_word_embeddings") {
        None => def_tied,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid("tie_word_embeddings is not a boolean".into()))?,
    };
    if n_layers == 0 || hidden == 0 || n_heads == 0 || n_kv_heads == 0 || head_dim == 0 {
        return Err(invalid("zero-sized dimension".into()));
    }
    if n_layers > MAX_LAYERS {
        return Err(invalid(format!(
            "num_hidden_layers {n_layers} exceeds the supported maximum of {MAX_LAYERS} layers"
        )));
    }
    if vocab_size == 0 {
        return Err(invalid("vocab_size is 0".into()));
    }
    if n_heads % n_kv_heads != 0 {
        return Err(invalid(format!(
            "{n_heads} heads not divisible by {n_kv_heads} KV heads"
        )));
    }
    if head_dim % 2 != 0 {
        return Err(invalid(format!("head_dim {head_dim} is odd")));
    }
    let d = Dims {
        n_layers,
        hidden,
        ffn,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size,
        context_length,
    };
    let mut cfg = ModelConfig::new(arch, d);
    cfg.rms_eps = rms_eps;
    cfg.rope_base = rope_base;
    cfg.rope_base_local = rope_base;
    cfg.tied_embeddings = tied_embeddings;
    if let Some(p) = opt_f("partial_rotary_factor")? {
        if p != 1.0 {
            return Err(invalid(format!(
                "partial_rotary_factor {p} (partial RoPE) is not supported"
            )));
        }
    }
    if let Some(rs) = present("rope_scaling") {
        rope_scaling(c, rs, &mut cfg).map_err(invalid)?;
    }
    let act = opt_s("hidden_activation").or(opt_s("hidden_act"));
    match arch {
        Architecture::Gemma3 => {
            if let Some(a) = act {
                if a != "gelu_pytorch_tanh" {
                    return Err(invalid(format!(
                        "Gemma 3 activation '{a}' is not supported (gelu_pytorch_tanh)"
                    )));
                }
            }
            if present("attn_logit_softcapping").is_some() {
                return Err(invalid(
                    "attn_logit_softcapping is not supported (Gemma 2 style)".into(),
                ));
            }
            let window = opt_u("sliding_window")?.unwrap_or(4096);
            let layers = match present("layer_types") {
                Some(v) => {
                    let a = v
                        .as_array()
                        .filter(|a| a.len() == n_layers)
                        .ok_or_else(|| {
                            invalid(format!("layer_types is not a list of {n_layers} strings"))
                        })?;
                    a.iter()
                        .map(|t| match t.as_str() {
                            Some("sliding_attention") => Ok(LayerAttention::Sliding { window }),
                            Some("full_attention") => Ok(LayerAttention::Global),
                            _ => Err(invalid(format!("unknown layer type {t}"))),
                        })
                        .collect::<Result<Vec<_>, _>>()?
                }
                None => {
                    let pattern = opt_u("sliding_window_pattern")?
                        .or(opt_u("_sliding_window_pattern")?)
                        .unwrap_or(6);
                    if pattern == 0 {
                        return Err(invalid("sliding_window_pattern is 0".into()));
                    }
                    (0..n_layers)
                        .map(|i| {
                            if (i + 1) % pattern == 0 {
                                LayerAttention::Global
                            } else {
                                LayerAttention::Sliding { window }
                            }
                        })
                        .collect()
                }
            };
            let qpas = opt_f("query_pre_attn_scalar")?.unwrap_or(256.0);
            if qpas <= 0.0 {
                return Err(invalid(format!("query_pre_attn_scalar {qpas}")));
            }
            cfg.layers = layers;
            cfg.rope_base_local = opt_f("rope_local_base_freq")?.unwrap_or(10_000.0);
            cfg.query_scale = 1.0 / qpas.sqrt();
            cfg.final_logit_softcap = opt_f("final_logit_softcapping")?;
        }
        Architecture::Qwen3Moe | Architecture::Gemma2 => {} // refused above
        Architecture::Qwen2 | Architecture::Llama | Architecture::Qwen3 | Architecture::Phi3 => {
            if let Some(a) = act {
                if a != "silu" {
                    return Err(invalid(format!("activation '{a}' is not supported (silu)")));
                }
            }
            if arch == Architecture::Phi3 {
                // transformers masks every layer to `sliding_window` keys when it is set (llama.cpp
                // ignores Phi-3's; a GGUF of it runs without): so do we, here.
                if let Some(window) = opt_u("sliding_window")? {
                    if window == 0 {
                        return Err(invalid("sliding_window is 0".into()));
                    }
                    if window < context_length {
                        cfg.layers = vec![LayerAttention::Sliding { window }; n_layers];
                    }
                }
            } else if present("use_sliding_window").and_then(Value::as_bool) == Some(true) {
                return Err(invalid(
                    "use_sliding_window=true is not supported for Qwen2".into(),
                ));
            }
            if present("mlp_bias").and_then(Value::as_bool) == Some(true) {
                return Err(invalid("mlp_bias=true is not supported".into()));
            }
        }
    }
    Ok(cfg)
}

/// Applies a `config.json` `rope_scaling` object (`rs`) to `cfg`, as transformers 4.57
/// (`modeling_rope_utils`) reads it: `default`, `linear`, `llama3` (frequency factors), `yarn`
/// (a ramp between interpolated and original frequencies, and an attention factor on cos/sin)
/// and `longrope` (Phi-3's `su` / `yarn` / `longrope`: two factor sets and an attention factor).
///
/// LongRoPE's factor set: transformers picks it per forward call by the longest position seen
/// (`seq_len > original_max_position_embeddings`: long), so a sequence starts with the short
/// factors and switches when it grows (the keys already cached keep their old rotation);
/// llama.cpp picks once by its context size. We pick once, as llama.cpp, by the context we serve
/// ([`ModelConfig::select_rope_factors`]): both agree for any sequence longer than the original
/// context when serving a longer context, and for every sequence otherwise.
fn rope_scaling(c: &Value, rs: &Value, cfg: &mut ModelConfig) -> Result<(), String> {
    let mut t = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    // Phi3Config renames its legacy `su` / `yarn` types to `longrope`.
    if cfg.arch == Architecture::Phi3 && matches!(t, "su" | "yarn") {
        t = "longrope";
    }
    let num = |k: &str| -> Result<Option<f32>, String> {
        match rs.get(k).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|v| Some(v as f32))
                .ok_or_else(|| format!("rope_scaling {k} is not a number")),
        }
    };
    let f = |k: &str, def: f32| -> Result<f32, String> { Ok(num(k)?.unwrap_or(def)) };
    let positive = |k: &str, v: f32| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(format!("rope_scaling {t}: {k} {v}"))
        }
    };
    let sliding = cfg
        .layers
        .iter()
        .any(|l| matches!(l, LayerAttention::Sliding { .. }));
    let max_pos = cfg.context_length;
    match t {
        "default" => {}
        "linear" => cfg.rope_freq_scale = 1.0 / positive("factor", f("factor", 1.0)?)?,
        "llama3" => {
            let factor = positive("factor", f("factor", 1.0)?)?;
            let (lo, hi) = (f("low_freq_factor", 1.0)?, f("high_freq_factor", 4.0)?);
            let orig = f("original_max_position_embeddings", 8192.0)?;
            if !(lo > 0.0 && hi > lo && orig > 0.0) {
                return Err(format!(
                    "rope_scaling llama3: low_freq_factor {lo}, high_freq_factor {hi}, \
                     original_max_position_embeddings {orig}"
                ));
            }
            cfg.rope_freq_factors = Some(ModelConfig::llama3_freq_factors(
                cfg.rope_base,
                cfg.head_dim,
                factor,
                lo,
                hi,
                orig,
            ));
        }
        "yarn" => {
            if sliding {
                return Err("rope_scaling yarn on sliding-window layers is not supported".into());
            }
            let factor = positive(
                "factor",
                num("factor")?.ok_or("rope_scaling yarn: no factor")?,
            )?;
            if rs.get("truncate").and_then(Value::as_bool) == Some(false) {
                return Err("rope_scaling yarn with truncate=false is not supported".into());
            }
            // transformers: `x or default`, so 0 / null take the default.
            let or = |k: &str, def: f32| -> Result<f32, String> {
                Ok(num(k)?.filter(|v| *v != 0.0).unwrap_or(def))
            };
            let original_context = match num("original_max_position_embeddings")? {
                Some(v) if v > 0.0 => v as usize,
                _ => max_pos,
            };
            let y = YarnRamp {
                original_context,
                beta_fast: positive("beta_fast", or("beta_fast", 32.0)?)?,
                beta_slow: positive("beta_slow", or("beta_slow", 1.0)?)?,
            };
            let (mscale, mscale_all) = (or("mscale", 0.0)?, or("mscale_all_dim", 0.0)?);
            let attn = match num("attention_factor")? {
                Some(a) => positive("attention_factor", a)?,
                None if mscale != 0.0 && mscale_all != 0.0 => {
                    yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all)
                }
                None => yarn_get_mscale(factor, 1.0),
            };
            cfg.rope_freq_scale = 1.0 / factor;
            cfg.rope_scaling.yarn = Some(y);
            cfg.rope_scaling.attn_factor = attn;
        }
        "longrope" => {
            let list = |k: &str| -> Result<Vec<f32>, String> {
                let a = rs
                    .get(k)
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == cfg.head_dim / 2)
                    .ok_or_else(|| {
                        format!(
                            "rope_scaling longrope: {k} is not a list of {} numbers",
                            cfg.head_dim / 2
                        )
                    })?;
                a.iter()
                    .map(|v| {
                        v.as_f64()
                            .map(|v| v as f32)
                            .filter(|v| v.is_finite() && *v > 0.0)
                            .ok_or_else(|| format!("rope_scaling longrope: {k} has {v}"))
                    })
                    .collect()
            };
            // transformers: the top-level original_max_position_embeddings (Phi3Config's
            // default 4096) makes factor = max_position_embeddings / it.
            let orig = match c
                .get("original_max_position_embeddings")
                .filter(|v| !v.is_null())
            {
                Some(v) => Some(
                    v.as_u64()
                        .filter(|v| *v > 0)
                        .ok_or("original_max_position_embeddings is not a positive integer")?
                        as usize,
                ),
                None => (cfg.arch == Architecture::Phi3).then_some(4096),
            };
            let (original_context, factor) = match orig {
                Some(o) => (o, max_pos as f32 / o as f32),
                None => (max_pos, f("factor", 1.0)?),
            };
            let attn = match num("attention_factor")? {
                Some(a) => positive("attention_factor", a)?,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (original_context as f32).ln()).sqrt(),
            };
            cfg.rope_scaling.longrope = Some(LongRope {
                long: list("long_factor")?,
                short: list("short_factor")?,
                original_context,
            });
            cfg.rope_scaling.attn_factor = attn;
            cfg.select_rope_factors(max_pos);
        }
        _ => {
            return Err(format!(
                "RoPE scaling '{t}' is not supported (supported: default, linear, llama3, yarn, \
                 longrope)"
            ))
        }
    }
    Ok(())
}

/// How a GGUF-named tensor is derived from a checkpoint tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    /// The stored bytes, shape reversed.
    None,
    /// Gemma RMSNorm: `1 + w`, as f32.
    PlusOne,
    /// Llama Q/K: rows permuted for interleaved RoPE, this many heads.
    Permute(usize),
}

/// The checkpoint name and transform of a GGUF tensor name, for `cfg`.
fn hf_source(cfg: &ModelConfig, gguf: &str) -> Option<(String, Transform)> {
    let gemma = cfg.arch == Architecture::Gemma3;
    let norm = if gemma {
        Transform::PlusOne
    } else {
        Transform::None
    };
    match gguf {
        "token_embd.weight" => return Some(("model.embed_tokens.weight".into(), Transform::None)),
        "output_norm.weight" => return Some(("model.norm.weight".into(), norm)),
        "output.weight" if !cfg.tied_embeddings => {
            return Some(("lm_head.weight".into(), Transform::None))
        }
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (i, rest) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    if i >= cfg.n_layers {
        return None;
    }
    let llama = cfg.arch == Architecture::Llama;
    let (q, k) = if llama {
        (
            Transform::Permute(cfg.n_heads),
            Transform::Permute(cfg.n_kv_heads),
        )
    } else {
        (Transform::None, Transform::None)
    };
    let phi3 = cfg.arch == Architecture::Phi3;
    let (name, t) = match rest {
        "attn_qkv.weight" if phi3 => ("self_attn.qkv_proj.weight", Transform::None),
        "ffn_up.weight" if phi3 => ("mlp.gate_up_proj.weight", Transform::None),
        "attn_q.weight" | "attn_k.weight" | "attn_v.weight" | "ffn_gate.weight" if phi3 => {
            return None
        }
        "attn_norm.weight" => ("input_layernorm.weight", norm),
        "attn_q.weight" => ("self_attn.q_proj.weight", q),
        "attn_k.weight" => ("self_attn.k_proj.weight", k),
        "attn_v.weight" => ("self_attn.v_proj.weight", Transform::None),
        "attn_q.bias" => ("self_attn.q_proj.bias", q),
        "attn_k.bias" => ("self_attn.k_proj.bias", k),
        "attn_v.bias" => ("self_attn.v_proj.bias", Transform::None),
        "attn_output.weight" => ("self_attn.o_proj.weight", Transform::None),
        "attn_q_norm.weight" if gemma => ("self_attn.q_norm.weight", norm),
        "attn_k_norm.weight" if gemma => ("self_attn.k_norm.weight", norm),
        "attn_q_norm.weight" if cfg.qk_norm => ("self_attn.q_norm.weight", Transform::None),
        "attn_k_norm.weight" if cfg.qk_norm => ("self_attn.k_norm.weight", Transform::None),
        "post_attention_norm.weight" if gemma => ("post_attention_layernorm.weight", norm),
        "ffn_norm.weight" if gemma => ("pre_feedforward_layernorm.weight", norm),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", Transform::None),
        "post_ffw_norm.weight" if gemma => ("post_feedforward_layernorm.weight", norm),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", Transform::None),
        "ffn_up.weight" => ("mlp.up_proj.weight", Transform::None),
        "ffn_down.weight" => ("mlp.down_proj.weight", Transform::None),
        _ => return None,
    };
    Some((format!("model.layers.{i}.{name}"), t))
}

/// Row order llama.cpp's `convert_hf_to_gguf` gives Llama Q/K (`LlamaModel.permute`): within
/// each head of `head_rows` rows, output row `2 i + j` is input row `j * head_rows / 2 + i`.
pub fn llama_permuted_row(out_row: usize, head_rows: usize) -> usize {
    let (h, r) = (out_row / head_rows, out_row % head_rows);
    let (i, j) = (r / 2, r % 2);
    h * head_rows + j * (head_rows / 2) + i
}

/// A Hugging Face checkpoint served under GGUF tensor names.
#[derive(Debug)]
pub struct HfWeights {
    /// The safetensors files.
    pub checkpoint: Checkpoint,
    cfg: ModelConfig,
}

impl HfWeights {
    /// Wraps `checkpoint` for `cfg`, checking the embedding against the configuration.
    pub fn new(checkpoint: Checkpoint, cfg: &ModelConfig) -> Result<Self, HfError> {
        let w = Self {
            checkpoint,
            cfg: cfg.clone(),
        };
        let name = "model.embed_tokens.weight";
        let (f, e) = w
            .checkpoint
            .info(name)
            .ok_or_else(|| HfError::MissingTensor {
                tensor: name.into(),
                dir: w.dir(),
            })?;
        if e.shape != [cfg.vocab_size, cfg.hidden] {
            return Err(HfError::Shape {
                path: f.path.clone(),
                tensor: name.into(),
                shape: e.shape.clone(),
                want: vec![cfg.vocab_size, cfg.hidden],
            });
        }
        Ok(w)
    }

    fn dir(&self) -> PathBuf {
        self.checkpoint
            .files
            .first()
            .and_then(|f| f.path.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// Errors loading a Hugging Face checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// Reading safetensors.
    #[error(transparent)]
    Safetensors(#[from] SafetensorsError),
    /// A tensor the model needs is absent.
    #[error("{dir}: checkpoint has no tensor {tensor}", dir = dir.display())]
    MissingTensor {
        /// Tensor.
        tensor: String,
        /// Model directory.
        dir: PathBuf,
    },
    /// A tensor's shape contradicts config.json.
    #[error("{path}: tensor {tensor} has shape {shape:?}, config.json implies {want:?}", path = path.display())]
    Shape {
        /// File.
        path: PathBuf,
        /// Tensor.
        tensor: String,
        /// Found.
        shape: Vec<usize>,
        /// Expected.
        want: Vec<usize>,
    },
}

impl WeightSource for HfWeights {
    fn tensor(&self, name: &str) -> Option<Tensor> {
        let (src, transform) = hf_source(&self.cfg, name)?;
        let (file, info) = self.checkpoint.info(&src)?;
        let t = file.tensor_as(&src, name)?;
        Some(match transform {
            Transform::None => t,
            Transform::PlusOne => {
                let v: Vec<u8> = t
                    .to_f32()
                    .into_iter()
                    .flat_map(|x| (1.0 + x).to_le_bytes())
                    .collect();
                Tensor {
                    dtype: GgmlType::F32,
                    data: WeightBytes::from_vec(v),
                    ..t
                }
            }
            Transform::Permute(n_head) => {
                let rows = info.shape.first().copied().unwrap_or(0);
                if n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0 {
                    return None;
                }
                let head_rows = rows / n_head;
                let row_bytes = t.data.as_slice().len() / rows.max(1);
                let src = t.data.as_slice();
                let mut out = Vec::with_capacity(src.len());
                for r in 0..rows {
                    let s = llama_permuted_row(r, head_rows) * row_bytes;
                    out.extend_from_slice(&src[s..s + row_bytes]);
                }
                Tensor {
                    data: WeightBytes::from_vec(out),
                    ..t
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p() -> &'static Path {
        Path::new("config.json")
    }

    fn gemma() -> Value {
        json!({
            "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
            "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
            "rope_local_base_freq": 10000.0, "sliding_window": 512, "vocab_size": 262144,
            "query_pre_attn_scalar": 256, "hidden_activation": "gelu_pytorch_tanh",
            "rope_scaling": null, "final_logit_softcapping": null, "attn_logit_softcapping": null
        })
    }

    #[test]
    fn gemma_layer_pattern_forms_agree() {
        let a = model_config(&gemma(), p()).unwrap();
        let mut c = gemma();
        c["sliding_window_pattern"] = json!(6);
        c["layer_types"] = json!((0..18)
            .map(|i| if i % 6 == 5 {
                "full_attention"
            } else {
                "sliding_attention"
            })
            .collect::<Vec<_>>());
        let b = model_config(&c, p()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.layers[5], LayerAttention::Global);
        assert_eq!(a.layers[4], LayerAttention::Sliding { window: 512 });
        assert!(a.tied_embeddings, "Gemma ties by default");
        assert_eq!(a.query_scale, 1.0 / 16.0);
        c["query_pre_attn_scalar"] = json!(64);
        assert_eq!(model_config(&c, p()).unwrap().query_scale, 1.0 / 8.0);
    }

    /// Gemma 3's linear scaling (the 4B and larger) applies to its global layers only, as in
    /// transformers and llama.cpp; Llama 3.1's `llama3` scaling becomes frequency factors.
    #[test]
    fn rope_scaling_linear_and_llama3() {
        let mut c = gemma();
        c["rope_scaling"] = json!({"rope_type": "linear", "factor": 8.0});
        let m = model_config(&c, p()).unwrap();
        assert_eq!((m.rope_freq_scale, m.rope_freq_scale_local), (0.125, 1.0));
        let llama = json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 131072, "vocab_size": 100, "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let m = model_config(&llama, p()).unwrap();
        let f = m.rope_freq_factors.unwrap();
        // head_dim 16: wavelengths 2 pi 500000^(i/8): i = 0..3 short (factor 1), i = 4 (4967)
        // between 2048 and 8192 (interpolated), i >= 5 long (factor 8).
        assert_eq!(f.len(), 8);
        assert_eq!(&f[..4], &[1.0; 4]);
        assert!(f[4] > 1.0 && f[4] < 8.0, "{f:?}");
        assert_eq!(&f[5..], &[8.0; 3]);
    }

    fn qwen3(rope_scaling: Value) -> Value {
        json!({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 16,
            "max_position_embeddings": 4096, "vocab_size": 100, "rope_scaling": rope_scaling})
    }

    /// transformers' yarn: `original_max_position_embeddings` (else max_position_embeddings),
    /// beta 32 / 1 (`or`: 0 takes the default), attention factor from `attention_factor`, else
    /// from `mscale` / `mscale_all_dim` when both are set, else `0.1 ln(factor) + 1`.
    #[test]
    fn rope_scaling_yarn() {
        let m = model_config(&qwen3(json!({"rope_type": "yarn", "factor": 4.0})), p()).unwrap();
        let y = m.rope_scaling.yarn.unwrap();
        assert_eq!(
            (y.original_context, y.beta_fast, y.beta_slow),
            (4096, 32.0, 1.0)
        );
        assert_eq!(m.rope_freq_scale, 0.25);
        assert!((m.rope_scaling.attn_factor - (1.0 + 0.1 * 4f32.ln())).abs() < 1e-6);
        let m = model_config(
            &qwen3(
                json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
                "beta_fast": 0, "beta_slow": 2.0, "mscale": 0.5, "mscale_all_dim": 1.0}),
            ),
            p(),
        )
        .unwrap();
        let y = m.rope_scaling.yarn.unwrap();
        assert_eq!(
            (y.original_context, y.beta_fast, y.beta_slow),
            (1024, 32.0, 2.0)
        );
        let want = (1.0 + 0.05 * 4f32.ln()) / (1.0 + 0.1 * 4f32.ln());
        assert!((m.rope_scaling.attn_factor - want).abs() < 1e-6);
        let m = model_config(
            &qwen3(json!({"rope_type": "yarn", "factor": 4.0, "attention_factor": 1.5})),
            p(),
        )
        .unwrap();
        assert_eq!(m.rope_scaling.attn_factor, 1.5);
        let e = model_config(
            &qwen3(json!({"rope_type": "yarn", "factor": 4.0, "truncate": false})),
            p(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("truncate=false is not supported"), "{e}");
    }

    /// Phi-3: `su` is LongRoPE, the original context defaults to Phi3Config's 4096, the
    /// attention factor is sqrt(1 + ln(max / orig) / ln(orig)); `sliding_window` below the
    /// context makes every layer slide.
    #[test]
    fn phi3_longrope_and_sliding_window() {
        let (long, short) = (vec![1.0, 2.0, 4.0, 8.0], vec![1.0, 1.0, 1.5, 2.0]);
        let c = json!({"architectures": ["Phi3ForCausalLM"], "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 131072, "vocab_size": 100, "sliding_window": 262144,
            "rope_scaling": {"type": "su", "long_factor": long, "short_factor": short}});
        let mut m = model_config(&c, p()).unwrap();
        assert_eq!(m.layers, vec![LayerAttention::Global; 2]);
        let lr = m.rope_scaling.longrope.clone().unwrap();
        assert_eq!(lr.original_context, 4096);
        assert_eq!(m.rope_freq_factors.as_deref(), Some(&long[..]));
        let want = (1.0 + 32f32.ln() / 4096f32.ln()).sqrt();
        assert!((m.rope_scaling.attn_factor - want).abs() < 1e-6);
        m.select_rope_factors(4096);
        assert_eq!(m.rope_freq_factors.as_deref(), Some(&short[..]));
        let mut c2 = c.clone();
        c2["sliding_window"] = json!(2047);
        c2["original_max_position_embeddings"] = json!(8192);
        let m = model_config(&c2, p()).unwrap();
        assert_eq!(m.layers[1], LayerAttention::Sliding { window: 2047 });
        assert_eq!(m.rope_scaling.longrope.unwrap().original_context, 8192);
        c2["rope_scaling"]["long_factor"] = json!([1.0]);
        let e = model_config(&c2, p()).unwrap_err().to_string();
        assert!(e.contains("long_factor is not a list of 4 numbers"), "{e}");
    }

    #[test]
    fn unsupported_configs_are_named() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"architectures": ["MambaForCausalLM"]}),
                "MambaForCausalLM",
            ),
            (
                json!({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"}),
                "multimodal",
            ),
            (
                {
                    let mut c = gemma();
                    c["rope_scaling"] = json!({"rope_type": "dynamic", "factor": 4.0});
                    c
                },
                "RoPE scaling 'dynamic' is not supported (supported: default, linear, llama3, yarn, longrope)",
            ),
            (
                {
                    let mut c = gemma();
                    c.as_object_mut().unwrap().remove("hidden_size");
                    c
                },
                "hidden_size",
            ),
            (
                {
                    let mut c = gemma();
                    c["num_key_value_heads"] = json!(3);
                    c
                },
                "not divisible",
            ),
            (
                {
                    let mut c = gemma();
                    c["layer_types"] = json!(["full_attention"]);
                    c
                },
                "layer_types",
            ),
            (
                // Would size a 64 GiB layer table (the GGUF fuzz find, in config.json form).
                {
                    let mut c = gemma();
                    c["num_hidden_layers"] = json!(u32::MAX);
                    c
                },
                "exceeds the supported maximum of 512 layers",
            ),
            (
                {
                    let mut c = gemma();
                    c["hidden_size"] = json!("640");
                    c
                },
                "hidden_size",
            ),
            (
                {
                    let mut c = gemma();
                    c["attn_logit_softcapping"] = json!(50.0);
                    c
                },
                "attn_logit_softcapping",
            ),
        ];
        for (c, want) in cases {
            let e = model_config(&c, p()).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("config.json"),
                "want {want:?}: {e}"
            );
        }
    }

    #[test]
    fn permutation_matches_convert_hf_to_gguf() {
        // numpy: w.reshape(n_head, 2, hr // 2, cols).swapaxes(1, 2).reshape(rows, cols) with
        // hr = 4: rows of one head go [0, 2, 1, 3] (first half and second half interleaved).
        let got: Vec<usize> = (0..8).map(|r| llama_permuted_row(r, 4)).collect();
        assert_eq!(got, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        let got: Vec<usize> = (0..6).map(|r| llama_permuted_row(r, 6)).collect();
        assert_eq!(got, vec![0, 3, 1, 4, 2, 5]);
    }
}
