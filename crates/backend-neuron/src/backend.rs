//! [`NeuronBackend`]: the [`Backend`] over one NEFF graph per shape bucket.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use switchyard_core::{
    Backend, BackendCapabilities, BackendError, BlockId, ForwardBatch, KvCacheConfig, KvCacheInfo,
    Logits,
};

use crate::ffi::{NrtError, NrtLib};
use crate::manifest::{pick_bucket, Manifest};
use crate::runtime::{Model, Runtime, Tensor, TensorSet};

/// Padding counters (cumulative since load).
#[derive(Debug, Default)]
pub struct PaddingStats {
    steps: AtomicU64,
    real_tokens: AtomicU64,
    padded_tokens: AtomicU64,
    padded_rows: AtomicU64,
}

/// A snapshot of [`PaddingStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PaddingSnapshot {
    /// Forward calls.
    pub steps: u64,
    /// Tokens of real sequences.
    pub real_tokens: u64,
    /// Token slots filled with padding.
    pub padded_tokens: u64,
    /// Batch rows filled with padding.
    pub padded_rows: u64,
}

impl PaddingSnapshot {
    /// Fraction of executed token slots that were padding.
    pub fn waste(&self) -> f64 {
        let total = self.real_tokens + self.padded_tokens;
        if total == 0 {
            0.0
        } else {
            self.padded_tokens as f64 / total as f64
        }
    }
}

impl PaddingStats {
    /// Current values.
    pub fn snapshot(&self) -> PaddingSnapshot {
        PaddingSnapshot {
            steps: self.steps.load(Ordering::Relaxed),
            real_tokens: self.real_tokens.load(Ordering::Relaxed),
            padded_tokens: self.padded_tokens.load(Ordering::Relaxed),
            padded_rows: self.padded_rows.load(Ordering::Relaxed),
        }
    }
}

pub(crate) fn to_backend_error(e: NrtError) -> BackendError {
    match &e {
        NrtError::LibraryMissing(_) | NrtError::MissingSymbol { .. } => BackendError::Unavailable {
            backend: "neuron",
            reason: e.to_string(),
        },
        NrtError::Status { status, .. } if status.is_out_of_memory() => {
            BackendError::OutOfMemory(e.to_string())
        }
        _ => BackendError::Device(e.to_string()),
    }
}

type Shared = Arc<Mutex<Tensor>>;

struct Inputs {
    input_ids: Shared,
    position_ids: Shared,
    seq_ids: Shared,
    slot_mapping: Shared,
    context_lens: Shared,
    block_tables: Shared,
}

/// One loaded bucket. Field order is drop order: sets, then tensors, then the model.
struct Graph {
    sets: Option<(TensorSet, TensorSet)>,
    inputs: Inputs,
    logits: Shared,
    batch: usize,
    seq_len: usize,
    model: Model,
}

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Tensor> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Neuron backend: runs a step on the smallest compiled bucket that holds it, padding the
/// rest (padding tokens write no KV and their logits rows are dropped).
pub struct NeuronBackend {
    graphs: Vec<Graph>,
    kv: Option<Shared>,
    manifest: Manifest,
    dir: PathBuf,
    padding: Arc<PaddingStats>,
    rt: Arc<Runtime>,
}

impl NeuronBackend {
    /// Loads libnrt (see [`crate::ffi::library_candidates`]), initializes the runtime and loads
    /// every NEFF of the artifact directory `dir`, checking each graph's tensors against the
    /// manifest.
    pub fn load(dir: &Path) -> Result<NeuronBackend, BackendError> {
        let manifest = Manifest::load(dir).map_err(|e| BackendError::BadTensor {
            name: crate::manifest::MANIFEST_FILE.into(),
            reason: e,
        })?;
        let lib = NrtLib::load().map_err(to_backend_error)?;
        let visible = lib.visible_cores().map_err(to_backend_error)?;
        if visible == 0 {
            return Err(crate::no_cores_error());
        }
        let rt = Runtime::init(Arc::new(lib)).map_err(to_backend_error)?;
        let mut graphs = Vec::new();
        for b in &manifest.buckets {
            graphs.push(load_graph(&rt, &manifest, dir, b).map_err(|e| match e {
                BackendError::Device(m) => {
                    BackendError::Device(format!("{}: {m}", b.neff.display()))
                }
                other => other,
            })?);
        }
        tracing::info!(
            model = %manifest.model,
            buckets = ?graphs.iter().map(|g| (g.batch, g.seq_len)).collect::<Vec<_>>(),
            "loaded Neuron artifacts from {}",
            dir.display()
        );
        Ok(NeuronBackend {
            graphs,
            kv: None,
            manifest,
            dir: dir.to_path_buf(),
            padding: Arc::new(PaddingStats::default()),
            rt,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The artifact directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Padding counters; the handle stays valid after the backend moves into the engine.
    pub fn padding_stats(&self) -> Arc<PaddingStats> {
        self.padding.clone()
    }

    fn kv_pool_bytes(&self) -> usize {
        let kv = &self.manifest.kv;
        kv.num_blocks * kv.block_size * kv.bytes_per_token
    }

    fn bucket_shapes(&self) -> Vec<(usize, usize)> {
        self.graphs.iter().map(|g| (g.batch, g.seq_len)).collect()
    }

    fn write_inputs(&self, g: &Graph, b: &ForwardBatch) -> Result<(), BackendError> {
        let (t, rows) = (g.seq_len, g.batch);
        let bs = self.manifest.kv.block_size;
        let width = self.manifest.kv.max_blocks_per_seq;
        let mut ids = vec![0i32; t];
        let mut pos = vec![0i32; t];
        let mut seq = vec![-1i32; t];
        let mut slot = vec![-1i32; t];
        let mut ctx = vec![0i32; rows];
        let mut bt = vec![0i32; rows * width];
        for (r, s) in b.seqs.iter().enumerate() {
            let len = s.context_before + s.len;
            let blocks = len.div_ceil(bs);
            if blocks > width {
                return Err(BackendError::InvalidBatch(format!(
                    "sequence {r} has {len} tokens; the graphs hold at most {}",
                    width * bs
                )));
            }
            for (k, id) in s.block_table.iter().take(blocks).enumerate() {
                bt[r * width + k] = id.0 as i32;
            }
            ctx[r] = len as i32;
            for i in s.start..s.start + s.len {
                let p = b.positions[i] as usize;
                ids[i] = b.token_ids[i] as i32;
                pos[i] = p as i32;
                seq[i] = r as i32;
                slot[i] = (s.block_table[p / bs].0 as usize * bs + p % bs) as i32;
            }
        }
        let w = |t: &Shared, v: &[i32]| lock(t).write_i32(v).map_err(to_backend_error);
        w(&g.inputs.input_ids, &ids)?;
        w(&g.inputs.position_ids, &pos)?;
        w(&g.inputs.seq_ids, &seq)?;
        w(&g.inputs.slot_mapping, &slot)?;
        w(&g.inputs.context_lens, &ctx)?;
        w(&g.inputs.block_tables, &bt)
    }
}

fn load_graph(
    rt: &Arc<Runtime>,
    m: &Manifest,
    dir: &Path,
    b: &crate::manifest::Bucket,
) -> Result<Graph, BackendError> {
    let path = dir.join(&b.neff);
    let neff = std::fs::read(&path).map_err(|e| BackendError::BadTensor {
        name: path.display().to_string(),
        reason: format!("reading the NEFF: {e}"),
    })?;
    let model = rt.load(&neff).map_err(to_backend_error)?;
    let info = model.tensor_info().map_err(to_backend_error)?;
    let names = &m.tensors;
    let kv = &m.kv;
    let (t, rows) = (b.seq_len, b.batch_size);
    let expect = |name: &str, input: bool, bytes: usize| -> Result<(), BackendError> {
        let found = info.iter().find(|i| i.name == name && i.input == input);
        match found {
            Some(i) if i.size == bytes => Ok(()),
            Some(i) => Err(BackendError::BadTensor {
                name: format!("{}:{name}", b.neff.display()),
                reason: format!(
                    "{} bytes (shape {:?}), the manifest implies {bytes}",
                    i.size, i.shape
                ),
            }),
            None => Err(BackendError::BadTensor {
                name: format!("{}:{name}", b.neff.display()),
                reason: format!(
                    "the graph has no {} tensor of this name (it has: {})",
                    if input { "input" } else { "output" },
                    info.iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    };
    let kv_bytes = kv.num_blocks * kv.block_size * kv.bytes_per_token;
    expect(&names.input_ids, true, t * 4)?;
    expect(&names.position_ids, true, t * 4)?;
    expect(&names.seq_ids, true, t * 4)?;
    expect(&names.slot_mapping, true, t * 4)?;
    expect(&names.context_lens, true, rows * 4)?;
    expect(&names.block_tables, true, rows * kv.max_blocks_per_seq * 4)?;
    expect(&names.kv_cache, true, kv_bytes)?;
    expect(&names.kv_cache, false, kv_bytes)?;
    expect(&names.logits, false, t * m.vocab_size * 4)?;
    let alloc = |name: &str, bytes: usize| -> Result<Shared, BackendError> {
        Ok(Arc::new(Mutex::new(
            rt.allocate_tensor(name, bytes, -1)
                .map_err(to_backend_error)?,
        )))
    };
    Ok(Graph {
        inputs: Inputs {
            input_ids: alloc(&names.input_ids, t * 4)?,
            position_ids: alloc(&names.position_ids, t * 4)?,
            seq_ids: alloc(&names.seq_ids, t * 4)?,
            slot_mapping: alloc(&names.slot_mapping, t * 4)?,
            context_lens: alloc(&names.context_lens, rows * 4)?,
            block_tables: alloc(&names.block_tables, rows * kv.max_blocks_per_seq * 4)?,
        },
        logits: alloc(&names.logits, t * m.vocab_size * 4)?,
        sets: None,
        batch: rows,
        seq_len: t,
        model,
    })
}

impl Backend for NeuronBackend {
    fn padding_tokens(&self) -> u64 {
        self.padding.snapshot().padded_tokens
    }

    fn capabilities(&self) -> BackendCapabilities {
        BackendCapabilities {
            kind: "neuron",
            device_name: format!("AWS Neuron ({})", self.rt.lib().path.display()),
            total_memory: None,
            // The KV pool is compiled into the graphs: that is all the KV memory there is.
            free_memory: Some(self.kv_pool_bytes() as u64),
            kv_dtypes: Vec::new(),
            weight_dtypes: Vec::new(),
            shape_buckets: Some(self.bucket_shapes()),
        }
    }

    fn kv_bytes_per_block(&self, block_size: usize) -> usize {
        block_size * self.manifest.kv.bytes_per_token
    }

    fn init_kv_cache(&mut self, config: KvCacheConfig) -> Result<KvCacheInfo, BackendError> {
        let kv = self.manifest.kv;
        if config.block_size != kv.block_size {
            return Err(BackendError::InvalidBatch(format!(
                "the Neuron graphs were compiled for KV blocks of {} tokens, not {}",
                kv.block_size, config.block_size
            )));
        }
        if config.num_blocks > kv.num_blocks {
            return Err(BackendError::OutOfMemory(format!(
                "{} KV blocks asked for; the graphs hold {}",
                config.num_blocks, kv.num_blocks
            )));
        }
        for g in &mut self.graphs {
            g.sets = None;
        }
        self.kv = None;
        let bytes = self.kv_pool_bytes();
        let mut tensor = self
            .rt
            .allocate_tensor(&self.manifest.tensors.kv_cache, bytes, -1)
            .map_err(to_backend_error)?;
        tensor
            .write(0, &vec![0u8; bytes])
            .map_err(to_backend_error)?;
        let kv_t: Shared = Arc::new(Mutex::new(tensor));
        let names = self.manifest.tensors.clone();
        for g in &mut self.graphs {
            let mut ins = self.rt.tensor_set().map_err(to_backend_error)?;
            let mut outs = self.rt.tensor_set().map_err(to_backend_error)?;
            let i = &g.inputs;
            for (name, t) in [
                (&names.input_ids, &i.input_ids),
                (&names.position_ids, &i.position_ids),
                (&names.seq_ids, &i.seq_ids),
                (&names.slot_mapping, &i.slot_mapping),
                (&names.context_lens, &i.context_lens),
                (&names.block_tables, &i.block_tables),
                (&names.kv_cache, &kv_t),
            ] {
                ins.add(name, t.clone()).map_err(to_backend_error)?;
            }
            outs.add(&names.logits, g.logits.clone())
                .map_err(to_backend_error)?;
            outs.add(&names.kv_cache, kv_t.clone())
                .map_err(to_backend_error)?;
            g.sets = Some((ins, outs));
        }
        self.kv = Some(kv_t);
        Ok(KvCacheInfo {
            block_size: config.block_size,
            num_blocks: config.num_blocks,
            bytes_per_block: self.kv_bytes_per_block(config.block_size),
        })
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError> {
        if self.kv.is_none() {
            return Err(BackendError::NoKvCache);
        }
        batch
            .validate(self.manifest.kv.block_size)
            .map_err(BackendError::InvalidBatch)?;
        let (s, t) = (batch.seqs.len(), batch.num_tokens());
        let shapes = self.bucket_shapes();
        let gi = pick_bucket(&shapes, s, t).ok_or_else(|| {
            BackendError::InvalidBatch(format!(
                "a step of {s} sequences and {t} tokens fits no compiled bucket \
                 (batch size, seq_len): {shapes:?}"
            ))
        })?;
        let g = &self.graphs[gi];
        self.write_inputs(g, batch)?;
        let g = &mut self.graphs[gi];
        let (ins, outs) = g.sets.as_mut().ok_or(BackendError::NoKvCache)?;
        g.model.execute(ins, outs).map_err(to_backend_error)?;
        let all = lock(&g.logits).read_f32().map_err(to_backend_error)?;
        let vocab = self.manifest.vocab_size;
        let mut data = Vec::with_capacity(batch.logits_indices.len() * vocab);
        for &i in &batch.logits_indices {
            data.extend_from_slice(&all[i * vocab..(i + 1) * vocab]);
        }
        let p = &self.padding;
        p.steps.fetch_add(1, Ordering::Relaxed);
        p.real_tokens.fetch_add(t as u64, Ordering::Relaxed);
        p.padded_tokens
            .fetch_add((g.seq_len - t) as u64, Ordering::Relaxed);
        p.padded_rows
            .fetch_add((g.batch - s) as u64, Ordering::Relaxed);
        Ok(Logits { vocab, data })
    }

    fn copy_blocks(&mut self, pairs: &[(BlockId, BlockId)]) -> Result<(), BackendError> {
        let kv = self.kv.as_ref().ok_or(BackendError::NoKvCache)?;
        let block_bytes = self.kv_bytes_per_block(self.manifest.kv.block_size);
        let mut t = lock(kv);
        let mut buf = vec![0u8; block_bytes];
        for &(src, dst) in pairs {
            t.read(src.0 as usize * block_bytes, &mut buf)
                .map_err(to_backend_error)?;
            t.write(dst.0 as usize * block_bytes, &buf)
                .map_err(to_backend_error)?;
        }
        Ok(())
    }
}
