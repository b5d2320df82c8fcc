//! Architecture-level hyperparameters of a decoder-only transformer, independent of file format.

/// The model families we run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Google Gemma 3 (text).
    Gemma3,
    /// Google Gemma 2: attention and final logit soft-capping, alternating sliding window.
    Gemma2,
    /// Qwen 2 / 2.5.
    Qwen2,
    /// Llama 2/3 style (also Mistral, TinyLlama, SmolLM2).
    Llama,
    /// Qwen 3: q/k RMSNorm per head, no qkv bias.
    Qwen3,
    /// Qwen 3 mixture of experts: Qwen 3 attention, a routed expert MLP.
    Qwen3Moe,
    /// Microsoft Phi-3 / 3.5: fused qkv and gate/up projections.
    Phi3,
}

impl Architecture {
    /// The GGUF `general.architecture` string.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Gemma3 => "gemma3",
            Self::Gemma2 => "gemma2",
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
            Self::Qwen3 => "qwen3",
            Self::Qwen3Moe => "qwen3moe",
            Self::Phi3 => "phi3",
        }
    }

    /// Every architecture we run, by GGUF name (for "supported: ..." messages).
    pub const ALL: [Architecture; 7] = [
        Self::Gemma3,
        Self::Gemma2,
        Self::Qwen2,
        Self::Llama,
        Self::Qwen3,
        Self::Qwen3Moe,
        Self::Phi3,
    ];

    /// The architecture named `name` in GGUF's `general.architecture`.
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.gguf_name() == name)
    }

    /// The supported GGUF names, comma-separated.
    pub fn supported_list() -> String {
        Self::ALL.map(Self::gguf_name).join(", ")
    }

    /// RoPE rotates the two halves of a head (GPT-NeoX style) rather than adjacent pairs
    /// (GGML's "normal" mode, which Llama uses on its permuted q/k weights).
    pub fn rope_neox(self) -> bool {
        self != Self::Llama
    }
}

/// Activation used in the gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// GELU with the tanh approximation (Gemma).
    GeluTanh,
    /// SiLU (Llama, Qwen).
    Silu,
}

/// The most layers a model may declare: llama.cpp's `LLAMA_MAX_LAYERS` (the largest released
/// checkpoints have about 130). A header's layer count is checked against it before anything is
/// sized by it (fuzz find: a GGUF `block_count` of 2^32 - 1 asked for a 64 GiB layer table).
pub const MAX_LAYERS: usize = 512;

/// Attention kind of one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerAttention {
    /// Full causal attention with the global RoPE base.
    Global,
    /// Sliding-window causal attention: a query at position p sees keys p-window+1 ..= p.
    Sliding {
        /// Window length in tokens.
        window: usize,
    },
}

/// The routed expert MLP of a mixture-of-experts model (Qwen3-MoE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeConfig {
    /// Experts per layer.
    pub n_expert: usize,
    /// Experts each token uses (top-k).
    pub n_expert_used: usize,
    /// Inner width of one expert.
    pub expert_ffn: usize,
    /// Whether the top-k routing weights are renormalised to sum to 1.
    pub norm_topk_prob: bool,
}

/// The dimensions every architecture has; [`ModelConfig::new`] adds the architecture's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Residual stream width.
    pub hidden: usize,
    /// MLP inner width.
    pub ffn: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
}

/// Hyperparameters of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Model family.
    pub arch: Architecture,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Residual stream width.
    pub hidden: usize,
    /// MLP inner width.
    pub ffn: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base of global layers.
    pub rope_base: f32,
    /// RoPE base of sliding-window layers.
    pub rope_base_local: f32,
    /// Per-layer attention kind.
    pub layers: Vec<LayerAttention>,
    /// MLP activation.
    pub activation: Activation,
    /// RMSNorm on q and k per head (Gemma 3).
    pub qk_norm: bool,
    /// Extra norms after attention and after the MLP (Gemma 3).
    pub post_norms: bool,
    /// Factor applied to the input embedding (Gemma: sqrt(hidden)).
    pub embed_scale: f32,
    /// Factor applied to q before the dot product with k.
    pub query_scale: f32,
    /// Soft-capping of final logits (`cap * tanh(x / cap)`), if any.
    pub final_logit_softcap: Option<f32>,
    /// Soft-capping of attention scores (of the scaled `q . k`), if any (Gemma 2).
    pub attn_logit_softcap: Option<f32>,
    /// Whether the output projection reuses the token embedding.
    pub tied_embeddings: bool,
    /// RoPE frequency divisors per rotated pair (`head_dim / 2`): Llama 3.1+ frequency scaling
    /// (GGUF `rope_freqs.weight`, or computed from Hugging Face's `rope_scaling`), or LongRoPE's
    /// set in use ([`RopeScaling::longrope`]).
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Linear RoPE scaling of global layers: positions are multiplied by this (1 / the scaling
    /// factor).
    pub rope_freq_scale: f32,
    /// The same for sliding-window layers (llama.cpp: 1 unless the architecture says, Gemma 2
    /// scales both, Gemma 3 only its global layers).
    pub rope_freq_scale_local: f32,
    /// The routed expert MLP, for mixture-of-experts models.
    pub moe: Option<MoeConfig>,
    /// YaRN and LongRoPE: what RoPE scaling adds beyond factors and a linear scale.
    pub rope_scaling: RopeScaling,
}

/// RoPE scaling beyond per-pair factors ([`ModelConfig::rope_freq_factors`]) and a linear
/// position scale ([`ModelConfig::rope_freq_scale`]): YaRN's ramp between interpolated and
/// original frequencies, LongRoPE's two factor sets, and the magnitude both put on cos/sin.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeScaling {
    /// YaRN: per pair, a mix of the interpolated frequency (`rope_freq_scale` applied) and the
    /// original one (global layers only; the readers refuse YaRN on models with sliding layers).
    pub yarn: Option<YarnRamp>,
    /// LongRoPE (Phi-3 `su` / `longrope`): both factor sets; [`ModelConfig::rope_freq_factors`]
    /// holds the one in use ([`ModelConfig::select_rope_factors`]).
    pub longrope: Option<LongRope>,
    /// Factor on cos and sin (so `q . k` scales by its square): YaRN's mscale / attention factor,
    /// LongRoPE's attention factor, GGUF `rope.scaling.attn_factor`; 1 otherwise.
    pub attn_factor: f32,
}

impl Default for RopeScaling {
    fn default() -> Self {
        Self {
            yarn: None,
            longrope: None,
            attn_factor: 1.0,
        }
    }
}

/// YaRN's frequency ramp (llama.cpp `ggml_rope_yarn_corr_dims` / `rope_yarn_ramp`,
/// transformers `_compute_yarn_parameters`), with the extrapolation factor 1 both use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnRamp {
    /// Context length the model was pre-trained for (`n_ctx_orig`).
    pub original_context: usize,
    /// Rotations at which the ramp starts (pairs rotating more keep their frequency): 32.
    pub beta_fast: f32,
    /// Rotations at which it ends (pairs rotating less are fully interpolated): 1.
    pub beta_slow: f32,
}

/// LongRoPE's frequency divisors (Phi-3 128k, Phi-3.5, Phi-4-mini).
#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    /// Divisors for contexts longer than `original_context`.
    pub long: Vec<f32>,
    /// Divisors otherwise.
    pub short: Vec<f32>,
    /// Context length the model was pre-trained for.
    pub original_context: usize,
}

impl YarnRamp {
    /// Pairs `[low, high]` between which YaRN ramps from the original frequency (below `low`)
    /// to the interpolated one (above `high`), for a head of `dims` rotated dimensions and RoPE
    /// base `base`: llama.cpp's `ggml_rope_yarn_corr_dims` (f32, floor / ceil, clamped).
    pub fn corr_dims(&self, dims: usize, base: f32) -> (f32, f32) {
        let corr = |rot: f32| {
            dims as f32 * (self.original_context as f32 / (rot * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        let lo = corr(self.beta_fast).floor().max(0.0);
        let hi = corr(self.beta_slow).ceil().min(dims as f32 - 1.0);
        (lo, hi)
    }

    /// The share of the original (extrapolated) frequency in pair `i`: 1 below `low`, 0 above
    /// `high`, linear between (llama.cpp `rope_yarn_ramp` with ext_factor 1).
    pub fn extrapolation(lo: f32, hi: f32, i: usize) -> f32 {
        let y = (i as f32 - lo) / (hi - lo).max(0.001);
        1.0 - y.clamp(0.0, 1.0)
    }
}

/// YaRN's magnitude correction `0.1 * mscale * ln(scale) + 1` (1 for `scale <= 1`), as
/// transformers' and llama.cpp's `get_mscale`.
pub fn yarn_get_mscale(scale: f32, mscale: f32) -> f32 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// `base^(-2i/d)`: the unscaled RoPE frequency of rotated pair `i` of a head of `d` dimensions.
fn base_freq(base: f32, i: usize, d: usize) -> f32 {
    1.0 / (base as f64).powf(2.0 * i as f64 / d as f64) as f32
}

impl ModelConfig {
    /// The configuration of `arch` with dimensions `d` and the architecture's defaults (what a
    /// file that only gives the dimensions means): every layer global, RoPE base 10000, RMSNorm
    /// eps 1e-6, query scale `1/sqrt(head_dim)`, untied embeddings; Gemma 3's sliding pattern
    /// (every 6th layer global, window 512), GELU, q/k norms, post norms and embedding scale;
    /// Gemma 2's (every 2nd layer global, window 4096, no q/k norms, soft-capping 50 / 30);
    /// Qwen 3's q/k norms. The GGUF and Hugging Face readers both start here and set what their
    /// file says.
    pub fn new(arch: Architecture, d: Dims) -> Self {
        let gemma = matches!(arch, Architecture::Gemma3 | Architecture::Gemma2);
        let gemma2 = arch == Architecture::Gemma2;
        // llama.cpp's sliding-window pattern: layer i slides if i % pattern < pattern - 1.
        let (pattern, window) = match arch {
            Architecture::Gemma3 => (6, 512),
            Architecture::Gemma2 => (2, 4096),
            _ => (1, 0),
        };
        let layers = (0..d.n_layers)
            .map(|i| {
                if i % pattern < pattern - 1 {
                    LayerAttention::Sliding { window }
                } else {
                    LayerAttention::Global
                }
            })
            .collect();
        ModelConfig {
            arch,
            n_layers: d.n_layers,
            hidden: d.hidden,
            ffn: d.ffn,
            n_heads: d.n_heads,
            n_kv_heads: d.n_kv_heads,
            head_dim: d.head_dim,
            vocab_size: d.vocab_size,
            context_length: d.context_length,
            rms_eps: 1e-6,
            rope_base: 10_000.0,
            rope_base_local: 10_000.0,
            layers,
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            qk_norm: matches!(
                arch,
                Architecture::Gemma3 | Architecture::Qwen3 | Architecture::Qwen3Moe
            ),
            post_norms: gemma,
            embed_scale: if gemma { (d.hidden as f32).sqrt() } else { 1.0 },
            query_scale: 1.0 / (d.head_dim as f32).sqrt(),
            final_logit_softcap: gemma2.then_some(30.0),
            attn_logit_softcap: gemma2.then_some(50.0),
            tied_embeddings: false,
            rope_freq_factors: None,
            rope_freq_scale: 1.0,
            rope_freq_scale_local: 1.0,
            moe: None,
            rope_scaling: RopeScaling::default(),
        }
    }

    /// The RoPE angle per position of each rotated pair of global layers.
    pub fn inv_freq_global(&self) -> Vec<f32> {
        self.inv_freq(self.rope_base, self.rope_freq_scale, self.rope_scaling.yarn)
    }

    /// The RoPE angle per position of each rotated pair of sliding-window layers.
    pub fn inv_freq_local(&self) -> Vec<f32> {
        self.inv_freq(self.rope_base_local, self.rope_freq_scale_local, None)
    }

    /// The RoPE angle per position of each rotated pair `i < head_dim / 2` for RoPE base
    /// `base`: `freq_scale * base^(-2i/d) / freq_factor[i]` (as llama.cpp's `ggml_rope_ext`);
    /// with YaRN, pair `i` takes `freq_scale` only in the share `1 - extrapolation(i)` (llama.cpp
    /// `rope_yarn`: `theta_interp * (1 - mix) + theta_extrap * mix`).
    fn inv_freq(&self, base: f32, freq_scale: f32, yarn: Option<YarnRamp>) -> Vec<f32> {
        let d = self.head_dim;
        let corr = yarn.map(|y| y.corr_dims(d, base));
        (0..d / 2)
            .map(|i| {
                let f = base_freq(base, i, d);
                let ff = self
                    .rope_freq_factors
                    .as_ref()
                    .and_then(|v| v.get(i).copied())
                    .unwrap_or(1.0);
                let extrap = f / ff;
                match corr {
                    None => freq_scale * extrap,
                    Some((lo, hi)) => {
                        let mix = YarnRamp::extrapolation(lo, hi, i);
                        freq_scale * extrap * (1.0 - mix) + extrap * mix
                    }
                }
            })
            .collect()
    }

    /// LongRoPE: uses the long factors when sequences may be longer than the pre-training
    /// context (`max_context > original_context`), else the short ones; as llama.cpp does with
    /// its context size (`llama_model::get_rope_factors`: `n_ctx_seq > n_ctx_orig_yarn`). The
    /// readers call it with the model's context length; a server with a shorter
    /// `--max-model-len` calls it again. No effect without LongRoPE.
    pub fn select_rope_factors(&mut self, max_context: usize) {
        if let Some(lr) = &self.rope_scaling.longrope {
            self.rope_freq_factors = Some(if max_context > lr.original_context {
                lr.long.clone()
            } else {
                lr.short.clone()
            });
        }
    }

    /// Llama 3.1's RoPE frequency divisors (`rope_type: llama3` in Hugging Face configs; what
    /// llama.cpp's converter stores as `rope_freqs.weight`): wavelengths shorter than
    /// `original_context / high_freq_factor` keep their frequency, longer than
    /// `original_context / low_freq_factor` are divided by `factor`, and those between are
    /// interpolated.
    pub fn llama3_freq_factors(
        base: f32,
        head_dim: usize,
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_context: f32,
    ) -> Vec<f32> {
        let low_wavelen = original_context / low_freq_factor;
        let high_wavelen = original_context / high_freq_factor;
        (0..head_dim / 2)
            .map(|i| {
                let freq = base_freq(base, i, head_dim);
                let wavelen = 2.0 * std::f32::consts::PI / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (original_context / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }
            })
            .collect()
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
