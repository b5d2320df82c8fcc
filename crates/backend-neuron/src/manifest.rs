//! The artifact manifest: `manifest.toml` in the artifact directory.
//!
//! ```toml
//! model = "qwen2.5-0.5b"
//! vocab_size = 151936
//!
//! [kv]
//! block_size = 16          # tokens per KV block (the engine must use the same)
//! num_blocks = 2048        # blocks in the kv_cache state tensor compiled into the graphs
//! bytes_per_token = 24576  # KV bytes of one token across all layers
//! max_blocks_per_seq = 128 # width of the block_tables input
//!
//! [[buckets]]
//! batch_size = 1           # most sequences in a step
//! seq_len = 128            # most tokens in a step, and the longest sequence served
//! neff = "b1_s128.neff"    # relative to the manifest
//!
//! [tensors]                # optional: the graphs' tensor names, if not the defaults
//! input_ids = "input_ids"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// File name of the manifest inside an artifact directory.
pub const MANIFEST_FILE: &str = "manifest.toml";

/// The parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name (informational).
    pub model: String,
    /// Rows of the logits output.
    pub vocab_size: usize,
    /// KV cache layout.
    pub kv: KvLayout,
    /// One graph per static shape.
    pub buckets: Vec<Bucket>,
    /// Tensor names of the graphs.
    #[serde(default)]
    pub tensors: TensorNames,
}

/// KV cache layout compiled into the graphs. The `kv_cache` tensor is
/// `[num_blocks * block_size, bytes_per_token]` bytes, block-major: block `b` is the contiguous
/// bytes `b * block_size * bytes_per_token ..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvLayout {
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks in the state tensor.
    pub num_blocks: usize,
    /// Bytes of one token's K and V across all layers.
    pub bytes_per_token: usize,
    /// Width of `block_tables`.
    pub max_blocks_per_seq: usize,
}

/// One compiled graph.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Most sequences per step.
    pub batch_size: usize,
    /// Most tokens per step (also the longest sequence the backend serves, for the largest).
    pub seq_len: usize,
    /// NEFF file, relative to the manifest.
    pub neff: PathBuf,
}

/// Names of the graph tensors (see the crate docs for their shapes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TensorNames {
    /// `int32 [seq_len]` token ids (padding 0).
    pub input_ids: String,
    /// `int32 [seq_len]` positions (padding 0).
    pub position_ids: String,
    /// `int32 [seq_len]` row of each token, -1 for padding.
    pub seq_ids: String,
    /// `int32 [seq_len]` KV slot of each token, -1 for padding (not written).
    pub slot_mapping: String,
    /// `int32 [batch_size]` tokens in the KV after the step (0 for padding rows).
    pub context_lens: String,
    /// `int32 [batch_size, max_blocks_per_seq]` block tables (padding 0).
    pub block_tables: String,
    /// The KV state, input and output.
    pub kv_cache: String,
    /// `float32 [seq_len, vocab_size]` output.
    pub logits: String,
}

impl Default for TensorNames {
    fn default() -> Self {
        Self {
            input_ids: "input_ids".into(),
            position_ids: "position_ids".into(),
            seq_ids: "seq_ids".into(),
            slot_mapping: "slot_mapping".into(),
            context_lens: "context_lens".into(),
            block_tables: "block_tables".into(),
            kv_cache: "kv_cache".into(),
            logits: "logits".into(),
        }
    }
}

impl Manifest {
    /// Reads and checks `dir/manifest.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text, &path)
    }

    /// Parses and checks manifest `text` (read from `path`, named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, String> {
        let m: Manifest =
            toml::from_str(text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
        m.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(m)
    }

    /// Checks sizes: positive, a largest bucket that covers every other, a block table wide
    /// enough for the longest sequence.
    pub fn validate(&self) -> Result<(), String> {
        let kv = &self.kv;
        if self.vocab_size == 0
            || kv.block_size == 0
            || kv.num_blocks == 0
            || kv.bytes_per_token == 0
            || kv.max_blocks_per_seq == 0
        {
            return Err("vocab_size and every [kv] size must be at least 1".into());
        }
        if self.buckets.is_empty() {
            return Err("no [[buckets]]".into());
        }
        if let Some(b) = self
            .buckets
            .iter()
            .find(|b| b.batch_size == 0 || b.seq_len == 0)
        {
            return Err(format!("bucket {} has a zero size", b.neff.display()));
        }
        let (b, s) = self.largest();
        if !self
            .buckets
            .iter()
            .any(|x| x.batch_size == b && x.seq_len == s)
        {
            return Err(format!(
                "no bucket has both the largest batch size ({b}) and the largest seq_len ({s}): \
                 a step the engine may schedule would fit no graph"
            ));
        }
        // The sizes the backend computes from these (KV state bytes, block table bytes) must
        // not overflow.
        let kv_bytes = kv
            .num_blocks
            .checked_mul(kv.block_size)
            .and_then(|n| n.checked_mul(kv.bytes_per_token));
        let table_bytes = b
            .checked_mul(kv.max_blocks_per_seq)
            .and_then(|n| n.checked_mul(4));
        if kv_bytes.is_none() || table_bytes.is_none() || self.vocab_size.checked_mul(s).is_none() {
            return Err(
                "[kv] sizes, batch sizes or vocab_size too large (their product overflows)".into(),
            );
        }
        let covered = kv.max_blocks_per_seq.saturating_mul(kv.block_size);
        if covered < s {
            return Err(format!(
                "max_blocks_per_seq × block_size = {covered} is less than the largest seq_len {s}"
            ));
        }
        Ok(())
    }

    /// (largest batch size, largest seq_len).
    pub fn largest(&self) -> (usize, usize) {
        let b = self.buckets.iter().map(|x| x.batch_size).max().unwrap_or(0);
        let s = self.buckets.iter().map(|x| x.seq_len).max().unwrap_or(0);
        (b, s)
    }
}

/// Index of the smallest bucket that holds `seqs` sequences and `tokens` tokens: fewest token
/// slots (`seq_len`), then fewest rows. `None` if none does.
pub fn pick_bucket(buckets: &[(usize, usize)], seqs: usize, tokens: usize) -> Option<usize> {
    buckets
        .iter()
        .enumerate()
        .filter(|(_, &(b, s))| b >= seqs && s >= tokens)
        .min_by_key(|(_, &(b, s))| (s, b))
        .map(|(i, _)| i)
}
