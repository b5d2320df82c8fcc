//! A loaded model: its weights (a memory-mapped GGUF file or a Hugging Face safetensors
//! checkpoint), its configuration and its tokenizer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_core::{BackendError, GgmlType, ModelConfig, WeightSource};

use crate::config::{model_config, ConfigError};
use crate::generation::GenerationDefaults;
use crate::gguf::{GgufError, GgufFile};
use crate::hf::{HfError, HfWeights};
use crate::hub::HubError;
use crate::registry::{ModelRef, RegistryError};
use crate::safetensors::Checkpoint;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Anything that can go wrong between `--model` and a ready model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Resolving or fetching the model.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Resolving a Hugging Face Hub repository.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Reading the GGUF file.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Reading a Hugging Face checkpoint.
    #[error(transparent)]
    Hf(#[from] HfError),
    /// Interpreting its metadata.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Building the tokenizer.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Building the backend.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<crate::safetensors::SafetensorsError> for LoadError {
    fn from(e: crate::safetensors::SafetensorsError) -> Self {
        Self::Hf(e.into())
    }
}

/// Where a model's weights come from.
#[derive(Debug, Clone)]
pub enum Weights {
    /// A GGUF file.
    Gguf(Arc<GgufFile>),
    /// A Hugging Face directory (safetensors, one file or shards).
    Hf(Arc<HfWeights>),
}

/// A model ready to hand to a backend.
pub struct Model {
    /// Where it was loaded from (the GGUF file or the model directory).
    pub path: PathBuf,
    /// The weights, served under GGUF tensor names (a GGUF file's metadata without the
    /// tokenizer's tables, which `tokenizer` holds: `GgufFile::drop_tokenizer_tables`).
    pub weights: Weights,
    /// Hyperparameters.
    pub config: ModelConfig,
    /// Tokenizer and special tokens.
    pub tokenizer: Tokenizer,
    /// The model's own sampling defaults (`generation_config.json`, GGUF `general.sampling.*`).
    pub generation: GenerationDefaults,
    /// What the model declares about embeddings (pooling, Matryoshka truncation).
    pub embedding: crate::pooling::EmbeddingDefaults,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("arch", &self.config.arch)
            .finish()
    }
}

impl Model {
    /// Opens a GGUF file and builds the configuration and tokenizer.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let t0 = std::time::Instant::now();
        let mut gguf = GgufFile::open(path)?;
        let config = model_config(&gguf)?;
        let t1 = std::time::Instant::now();
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        tracing::info!(
            gguf_ms = (t1 - t0).as_millis() as u64,
            tokenizer_ms = t1.elapsed().as_millis() as u64,
            "model opened"
        );
        let generation = GenerationDefaults::from_gguf(&gguf);
        let embedding = crate::pooling::EmbeddingDefaults::from_gguf(&gguf);
        gguf.drop_tokenizer_tables();
        Ok(Self {
            embedding,
            path: path.to_path_buf(),
            weights: Weights::Gguf(Arc::new(gguf)),
            config,
            tokenizer,
            generation,
        })
    }

    /// Opens a Hugging Face-format directory: `config.json`, `tokenizer.json` (+
    /// `tokenizer_config.json`, `generation_config.json`) and `model.safetensors` or the shards
    /// of `model.safetensors.index.json`.
    pub fn open_hf_dir(dir: &Path) -> Result<Self, LoadError> {
        let t0 = std::time::Instant::now();
        let cfg_path = dir.join("config.json");
        let config = crate::hf::model_config(&crate::hf::read_json(&cfg_path)?, &cfg_path)?;
        let weights = HfWeights::new(Checkpoint::open_dir(dir)?, &config)?;
        let t1 = std::time::Instant::now();
        let tokenizer = Tokenizer::from_hf_dir(dir, config.vocab_size)?;
        tracing::info!(
            safetensors_ms = (t1 - t0).as_millis() as u64,
            tokenizer_ms = t1.elapsed().as_millis() as u64,
            "model opened"
        );
        Ok(Self {
            path: dir.to_path_buf(),
            weights: Weights::Hf(Arc::new(weights)),
            config,
            tokenizer,
            generation: GenerationDefaults::from_hf_dir(dir),
            embedding: crate::pooling::EmbeddingDefaults::from_hf_dir(dir),
        })
    }

    /// Resolves `--model` (alias, .gguf path, manifest, Hugging Face directory or Hub
    /// repository id), fetching when allowed, and opens it.
    pub fn load(name: &str, allow_fetch: bool) -> Result<Self, LoadError> {
        match crate::registry::resolve(name)? {
            ModelRef::Path(p) => Self::open(&p),
            ModelRef::Manifest(m) => Self::open(&crate::registry::locate_manifest(m, allow_fetch)?),
            ModelRef::HfDir(d) => Self::open_hf_dir(&d),
            ModelRef::HfRepo { repo, revision } => {
                let dir = crate::hub::snapshot(&repo, revision.as_deref(), allow_fetch)?;
                Self::open_hf_dir(&dir)
            }
        }
    }

    /// The weights as a backend sees them (GGUF tensor names).
    pub fn weights(&self) -> &dyn WeightSource {
        match &self.weights {
            Weights::Gguf(g) => g.as_ref(),
            Weights::Hf(h) => h.as_ref(),
        }
    }

    /// Bytes of the weight files.
    pub fn file_size(&self) -> usize {
        match &self.weights {
            Weights::Gguf(g) => g.file_size(),
            Weights::Hf(h) => h.checkpoint.total_size(),
        }
    }

    fn tensor_shapes(&self) -> Vec<(GgmlType, usize)> {
        match &self.weights {
            Weights::Gguf(g) => g
                .tensors
                .iter()
                .map(|t| (t.dtype, t.shape.iter().product()))
                .collect(),
            Weights::Hf(h) => h
                .checkpoint
                .tensors()
                .map(|t| (t.dtype, t.shape.iter().product()))
                .collect(),
        }
    }

    /// Count of tensors per element type, sorted by count (for `info`).
    pub fn quant_types(&self) -> Vec<(GgmlType, usize)> {
        let mut m: std::collections::HashMap<GgmlType, usize> = Default::default();
        for (t, _) in self.tensor_shapes() {
            *m.entry(t).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.id().cmp(&b.0.id())));
        v
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.tensor_shapes().iter().map(|(_, n)| n).sum()
    }
}
