//! Architecture-level hyperparameters of a decoder-only transformer, independent of file format.

/// The model families we run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Google Gemma 3 (text).
    Gemma3,
    /// Qwen 2 / 2.5.
    Qwen2,
    /// Llama 2/3 style.
    Llama,
}

impl Architecture {
    /// The GGUF `general.architecture` string.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Gemma3 => "gemma3",
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
        }
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
    /// Whether the output projection reuses the token embedding.
    pub tied_embeddings: bool,
}

impl ModelConfig {
    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
