//! A loaded model: the memory-mapped GGUF file, its configuration and its tokenizer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_core::{BackendError, GgmlType, ModelConfig};

use crate::config::{model_config, ConfigError};
use crate::gguf::{GgufError, GgufFile};
use crate::registry::RegistryError;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Anything that can go wrong between `--model` and a ready model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Resolving or fetching the model.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Reading the GGUF file.
    #[error(transparent)]
    Gguf(#[from] GgufError),
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

/// A model ready to hand to a backend.
pub struct Model {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The parsed file (also the [`switchyard_core::WeightSource`]).
    pub gguf: Arc<GgufFile>,
    /// Hyperparameters.
    pub config: ModelConfig,
    /// Tokenizer and special tokens.
    pub tokenizer: Tokenizer,
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
        let gguf = GgufFile::open(path)?;
        let config = model_config(&gguf)?;
        let t1 = std::time::Instant::now();
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        tracing::info!(
            gguf_ms = (t1 - t0).as_millis() as u64,
            tokenizer_ms = t1.elapsed().as_millis() as u64,
            "model opened"
        );
        Ok(Self {
            path: path.to_path_buf(),
            gguf: Arc::new(gguf),
            config,
            tokenizer,
        })
    }

    /// Resolves `--model` (alias, .gguf path or manifest), fetching when allowed, and opens it.
    pub fn load(name: &str, allow_fetch: bool) -> Result<Self, LoadError> {
        let path = crate::registry::locate(name, allow_fetch)?;
        Self::open(&path)
    }

    /// Count of tensors per element type, sorted by count (for `info`).
    pub fn quant_types(&self) -> Vec<(GgmlType, usize)> {
        let mut m: std::collections::HashMap<GgmlType, usize> = Default::default();
        for t in &self.gguf.tensors {
            *m.entry(t.dtype).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.id().cmp(&b.0.id())));
        v
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.gguf
            .tensors
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }
}
