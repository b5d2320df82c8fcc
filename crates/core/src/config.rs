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
    /// (GGUF `rope_freqs.weight`, or computed from Hugging Face's `rope_scaling`).
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Linear RoPE scaling of global layers: positions are multiplied by this (1 / the scaling
    /// factor).
    pub rope_freq_scale: f32,
    /// The same for sliding-window layers (llama.cpp: 1 unless the architecture says, Gemma 2
    /// scales both, Gemma 3 only its global layers).
    pub rope_freq_scale_local: f32,
    /// The routed expert MLP, for mixture-of-experts models.
    pub moe: Option<MoeConfig>,
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
        }
    }

    /// The RoPE angle per position of each rotated pair of global layers.
    pub fn inv_freq_global(&self) -> Vec<f32> {
        self.inv_freq(self.rope_base, self.rope_freq_scale)
    }

    /// The RoPE angle per position of each rotated pair of sliding-window layers.
    pub fn inv_freq_local(&self) -> Vec<f32> {
        self.inv_freq(self.rope_base_local, self.rope_freq_scale_local)
    }

    /// The RoPE angle per position of each rotated pair `i < head_dim / 2` for RoPE base
    /// `base`: `freq_scale * base^(-2i/d) / freq_factor[i]` (as llama.cpp's `ggml_rope_ext`).
    fn inv_freq(&self, base: f32, freq_scale: f32) -> Vec<f32> {
        let d = self.head_dim;
        (0..d / 2)
            .map(|i| {
                let f = base_freq(base, i, d);
                let ff = self
                    .rope_freq_factors
                    .as_ref()
                    .and_then(|v| v.get(i).copied())
                    .unwrap_or(1.0);
                freq_scale * f / ff
            })
            .collect()
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
