//! The transformer forward pass on the CPU over a packed, paged batch.

use half::f16;
use half::slice::HalfFloatSliceExt;
use switchyard_core::{
    kv_groups_for, Backend, BackendCapabilities, BackendError, BlockId, ForwardBatch, GgmlType,
    KvCacheConfig, KvCacheInfo, KvGroupKind, KvGroupSpec, LayerAttention, Logits, ModelConfig,
    Tensor, WeightSource,
};

use crate::kernels::{
    self, glu, matmul, matmul_packed, matmul_transposed_k, matmul_transposed_q0, Isa, PackedQ8,
    QMatrix, TransposedK, TransposedQ0,
};
use crate::moe::Moe;
use crate::ops;
use crate::step::{each_token, zeroed, Rows, StepScratch};
use crate::team;

struct Layer {
    attn_norm: Vec<f32>,
    wq: Mat,
    wk: Mat,
    wv: Mat,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Mat,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
    post_ffn_norm: Option<Vec<f32>>,
    attention: LayerAttention,
}

/// A layer's MLP.
#[expect(
    clippy::large_enum_variant,
    reason = "one per layer, built once; the dense variant, the common one, stays inline"
)]
enum Ffn {
    /// `down(act(gate(x)) * up(x))`.
    Dense { gate: Mat, up: Mat, down: Mat },
    /// Routed experts (Qwen3-MoE).
    Moe(Moe),
}

/// The paged KV cache: `num_blocks` blocks shared by the KV groups, each block holding the
/// keys and values of one group's layers for `block_size` positions. Stored as one array per
/// layer slot of a block (`k[j]`: `[num_blocks * block_size, kv_dim]`), so layer `l` of group
/// `g` (slot `j`) of block `b` at offset `o` is row `b * block_size + o` of `k[j]`.
struct KvCache {
    block_size: usize,
    num_blocks: usize,
    /// Per layer slot of a block: keys and values.
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
    /// Per model layer: (KV group, slot within that group's blocks).
    layer_slot: Vec<(usize, usize)>,
    /// Attention kind of each KV group: which positions of its table a step reads.
    groups: Vec<KvGroupKind>,
}

/// The CPU backend: owns the model weights (memory-mapped, in file encoding) and the KV cache.
pub struct CpuBackend {
    cfg: ModelConfig,
    embed: Tensor,
    /// `embed` is `output` (tied): its rows are then read from `output_packed` where there is
    /// one, so the file's table is not touched after load.
    tied: bool,
    output: Tensor,
    output_norm: Vec<f32>,
    /// `output` repacked for `matmul_packed` (Q8_0 at the AVX2 / AVX-512 levels; see `pack_output`).
    output_packed: Option<PackedQ8>,
    layers: Vec<Layer>,
    inv_freq_global: Vec<f32>,
    inv_freq_local: Vec<f32>,
    kv: Option<KvCache>,
    /// Logits handed back by the engine (`recycle_logits`), reused by the next step.
    spare_logits: Vec<f32>,
    /// The expert outputs of a mixture-of-experts layer (`Moe::forward`), reused by every
    /// layer and step (dropped when over `SPARE_LOGITS_MAX`).
    moe_scratch: Vec<f32>,
    /// A step's activation buffers, kept for the next step (`hidden_in_pool`).
    step_scratch: StepScratch,
}

/// Largest logits buffer kept for reuse (floats): 64 MiB, 64 rows of Gemma's vocabulary.
const SPARE_LOGITS_MAX: usize = 16 << 20;

/// The output projection repacked for `matmul_packed` when it is Q8_0 and the kernels run at
/// the AVX2 or AVX-512 VNNI level (the scalar reference takes the file layout), unless
/// `SWITCHYARD_PACK_OUTPUT=0`. Gemma 3 270M: 262,144 x 640, 189 MiB more memory, for faster
/// logits (`benches/README.md`).
fn pack_output(output: &Tensor) -> Option<PackedQ8> {
    if !Isa::current().layouts.packed_output
        || std::env::var("SWITCHYARD_PACK_OUTPUT").is_ok_and(|v| v.trim() == "0")
    {
        return None;
    }
    PackedQ8::new_releasing(&qm(output), |done| release_pages(output, done))
}

/// Drops `part` of `t`'s bytes from our resident memory where `t` is a view of the file map
/// (see `hugebuf::release_file_map`; what is read again is mapped again from the file).
fn release_pages(t: &Tensor, part: &[u8]) {
    if t.data.file_map().is_some() {
        crate::hugebuf::release_file_map(part);
    }
}

/// A layer's weight matrix: the tensor in its file encoding and, where a kernel wants another
/// layout, a copy in that layout, which the kernels then use: K-quants and IQ4_XS at the AVX2 /
/// AVX-512 VNNI levels as [`TransposedK`] (unless `SWITCHYARD_PACK_K=0`; Gemma 3 270M: 36
/// tensors, 22 MiB), Q4_0 / Q5_0 / Q8_0 / Q4_1 / Q5_1 / IQ4_NL at the AVX2 level as
/// [`TransposedQ0`] (unless
/// `SWITCHYARD_PACK_Q0=0`; Gemma: 90 tensors, 52 MiB with the padding of its 20-block rows). Both save the kernels their decoding
/// or transposes per row, token group and block.
pub(crate) struct Mat {
    t: Tensor,
    packed: Packed,
}

enum Packed {
    None,
    K(TransposedK),
    Q0(TransposedQ0),
}

fn env_off(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim() == "0")
}

impl Mat {
    pub(crate) fn new(t: Tensor) -> Self {
        let layouts = Isa::current().layouts;
        let packed = match t.dtype {
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_XS
                if layouts.transposed_k && !env_off("SWITCHYARD_PACK_K") =>
            {
                TransposedK::new(&qm(&t)).map_or(Packed::None, Packed::K)
            }
            GgmlType::Q4_0
            | GgmlType::Q5_0
            | GgmlType::Q8_0
            | GgmlType::Q4_1
            | GgmlType::Q5_1
            | GgmlType::IQ4_NL
                if layouts.transposed_q0 && !env_off("SWITCHYARD_PACK_Q0") =>
            {
                TransposedQ0::new(&qm(&t)).map_or(Packed::None, Packed::Q0)
            }
            _ => Packed::None,
        };
        // The kernels read the copy from now on: the file's pages go as each copy is made, so
        // that the load never holds the file and all the copies at once.
        if !matches!(packed, Packed::None) {
            release_pages(&t, t.data.as_slice());
        }
        Mat { t, packed }
    }

    pub(crate) fn matmul(&self, x: &[f32], n_tok: usize, out: &mut [f32]) {
        match &self.packed {
            Packed::K(w) => matmul_transposed_k(w, x, n_tok, out),
            Packed::Q0(w) => matmul_transposed_q0(w, x, n_tok, out),
            Packed::None => matmul(&qm(&self.t), x, n_tok, out),
        }
    }
}

pub(crate) fn get(w: &dyn WeightSource, name: &str) -> Result<Tensor, BackendError> {
    w.tensor(name)
        .ok_or_else(|| BackendError::MissingTensor(name.to_string()))
}

fn vector(w: &dyn WeightSource, name: &str, len: usize) -> Result<Vec<f32>, BackendError> {
    let t = get(w, name)?;
    if t.numel() != len {
        return Err(BackendError::BadTensor {
            name: name.into(),
            reason: format!("expected {len} elements, found shape {:?}", t.shape),
        });
    }
    Ok(t.to_f32())
}

fn opt_vector(
    w: &dyn WeightSource,
    name: &str,
    len: usize,
) -> Result<Option<Vec<f32>>, BackendError> {
    match w.tensor(name) {
        Some(_) => vector(w, name, len).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn matrix(
    w: &dyn WeightSource,
    name: &str,
    cols: usize,
    rows: usize,
) -> Result<Tensor, BackendError> {
    let t = get(w, name)?;
    if t.shape.len() != 2 || t.shape[0] != cols || t.shape[1] != rows {
        return Err(BackendError::BadTensor {
            name: name.into(),
            reason: format!("expected shape [{cols}, {rows}], found {:?}", t.shape),
        });
    }
    if t.dtype == GgmlType::Q8_K {
        return Err(BackendError::BadTensor {
            name: name.into(),
            reason: "Q8_K is an activation format, not a weight format".into(),
        });
    }
    Ok(t)
}

fn qm(t: &Tensor) -> QMatrix<'_> {
    QMatrix {
        dtype: t.dtype,
        rows: t.shape[1],
        cols: t.shape[0],
        data: t.data.as_slice(),
    }
}

/// Adds bias `b` (if any) to one row.
fn add_bias(row: &mut [f32], b: &Option<Vec<f32>>) {
    if let Some(b) = b {
        for (v, bb) in row.iter_mut().zip(b) {
            *v += bb;
        }
    }
}

impl CpuBackend {
    /// Builds the backend over `weights` (GGUF tensor names) for `config`.
    pub fn load(config: &ModelConfig, weights: &dyn WeightSource) -> Result<Self, BackendError> {
        let c = config;
        let embed = matrix(weights, "token_embd.weight", c.hidden, c.vocab_size)?;
        let output = if c.tied_embeddings {
            embed.clone()
        } else {
            matrix(weights, "output.weight", c.hidden, c.vocab_size)?
        };
        let output_norm = vector(weights, "output_norm.weight", c.hidden)?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let post = |s: &str| -> Result<Option<Vec<f32>>, BackendError> {
                if c.post_norms {
                    vector(weights, &n(s), c.hidden).map(Some)
                } else {
                    Ok(None)
                }
            };
            let qkn = |s: &str| -> Result<Option<Vec<f32>>, BackendError> {
                if c.qk_norm {
                    vector(weights, &n(s), c.head_dim).map(Some)
                } else {
                    Ok(None)
                }
            };
            let (qd, kvd) = (c.q_dim(), c.kv_dim());
            // Fused q/k/v (Phi-3, some converters): rows q, then k, then v.
            let (wq, wk, wv, bq, bk, bv) = if weights.tensor(&n("attn_qkv.weight")).is_some() {
                let name = n("attn_qkv.weight");
                let t = matrix(weights, &name, c.hidden, qd + 2 * kvd)?;
                let b = opt_vector(weights, &n("attn_qkv.bias"), qd + 2 * kvd)?;
                let bpart = |r0: usize, r1: usize| b.as_ref().map(|b| b[r0..r1].to_vec());
                (
                    t.rows(0, qd, format!("{name}[q]")),
                    t.rows(qd, qd + kvd, format!("{name}[k]")),
                    t.rows(qd + kvd, qd + 2 * kvd, format!("{name}[v]")),
                    bpart(0, qd),
                    bpart(qd, qd + kvd),
                    bpart(qd + kvd, qd + 2 * kvd),
                )
            } else {
                (
                    matrix(weights, &n("attn_q.weight"), c.hidden, qd)?,
                    matrix(weights, &n("attn_k.weight"), c.hidden, kvd)?,
                    matrix(weights, &n("attn_v.weight"), c.hidden, kvd)?,
                    opt_vector(weights, &n("attn_q.bias"), qd)?,
                    opt_vector(weights, &n("attn_k.bias"), kvd)?,
                    opt_vector(weights, &n("attn_v.bias"), kvd)?,
                )
            };
            let ffn = if let Some(moe) = c.moe {
                Ffn::Moe(Moe::load(c, &moe, weights, i)?)
            } else if weights.tensor(&n("ffn_gate.weight")).is_none()
                && weights.tensor(&n("ffn_up.weight")).is_some()
            {
                // Fused gate/up (Phi-3): rows gate, then up.
                let name = n("ffn_up.weight");
                let t = matrix(weights, &name, c.hidden, 2 * c.ffn)?;
                Ffn::Dense {
                    gate: Mat::new(t.rows(0, c.ffn, format!("{name}[gate]"))),
                    up: Mat::new(t.rows(c.ffn, 2 * c.ffn, format!("{name}[up]"))),
                    down: Mat::new(matrix(weights, &n("ffn_down.weight"), c.ffn, c.hidden)?),
                }
            } else {
                Ffn::Dense {
                    gate: Mat::new(matrix(weights, &n("ffn_gate.weight"), c.hidden, c.ffn)?),
                    up: Mat::new(matrix(weights, &n("ffn_up.weight"), c.hidden, c.ffn)?),
                    down: Mat::new(matrix(weights, &n("ffn_down.weight"), c.ffn, c.hidden)?),
                }
            };
            layers.push(Layer {
                attn_norm: vector(weights, &n("attn_norm.weight"), c.hidden)?,
                wq: Mat::new(wq),
                wk: Mat::new(wk),
                wv: Mat::new(wv),
                bq,
                bk,
                bv,
                q_norm: qkn("attn_q_norm.weight")?,
                k_norm: qkn("attn_k_norm.weight")?,
                wo: Mat::new(matrix(weights, &n("attn_output.weight"), qd, c.hidden)?),
                post_attn_norm: post("post_attention_norm.weight")?,
                ffn_norm: vector(weights, &n("ffn_norm.weight"), c.hidden)?,
                ffn,
                post_ffn_norm: post("post_ffw_norm.weight")?,
                attention: c.layers[i],
            });
        }
        let output_packed = pack_output(&output);
        // The model file's pages leave our resident memory: what the kernels read from now on
        // are the copies made above, the vectors converted to f32, and (read again, page by
        // page, from the file) the matrices without a copy and, unless the embedding is the
        // packed output projection, the embedding rows looked up.
        let mut maps: Vec<&[u8]> = Vec::new();
        let mats = layers.iter().flat_map(|l: &Layer| {
            let ffn: Vec<&Mat> = match &l.ffn {
                Ffn::Dense { gate, up, down } => vec![gate, up, down],
                Ffn::Moe(_) => Vec::new(),
            };
            [&l.wq, &l.wk, &l.wv, &l.wo].into_iter().chain(ffn)
        });
        for t in [&embed, &output].into_iter().chain(mats.map(|m| &m.t)) {
            if let Some(m) = t.data.file_map() {
                if !maps.iter().any(|o| std::ptr::eq(*o, m)) {
                    maps.push(m);
                }
            }
        }
        maps.into_iter().for_each(crate::hugebuf::release_file_map);
        crate::hugebuf::trim_heap();
        Ok(Self {
            inv_freq_global: c.inv_freq_global(),
            inv_freq_local: c.inv_freq_local(),
            tied: c.tied_embeddings,
            cfg: c.clone(),
            embed,
            output_norm,
            output_packed,
            output,
            layers,
            kv: None,
            spare_logits: Vec::new(),
            moe_scratch: Vec::new(),
            step_scratch: StepScratch::default(),
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
}

fn slot(block_table: &[BlockId], block_size: usize, pos: usize) -> usize {
    block_table[pos / block_size].0 as usize * block_size + pos % block_size
}

impl Backend for CpuBackend {
    fn capabilities(&self) -> BackendCapabilities {
        let (total, free) = switchyard_core::host::system_memory();
        BackendCapabilities {
            kind: "cpu",
            device_name: switchyard_core::host::cpu_name(),
            total_memory: total,
            free_memory: free,
            kv_dtypes: vec![GgmlType::F16],
            weight_dtypes: vec![
                GgmlType::F32,
                GgmlType::F16,
                GgmlType::BF16,
                GgmlType::Q4_0,
                GgmlType::Q4_1,
                GgmlType::Q5_0,
                GgmlType::Q5_1,
                GgmlType::Q8_0,
                GgmlType::Q2_K,
                GgmlType::Q3_K,
                GgmlType::Q4_K,
                GgmlType::Q5_K,
                GgmlType::Q6_K,
                GgmlType::IQ4_NL,
                GgmlType::IQ4_XS,
            ],
            shape_buckets: None,
        }
    }

    fn kv_bytes_per_block(&self, block_size: usize) -> usize {
        2 * self.cfg.n_layers * block_size * self.cfg.kv_dim() * 2
    }

    fn init_kv_cache(&mut self, config: KvCacheConfig) -> Result<KvCacheInfo, BackendError> {
        // One group of every layer; every position of its table is there, whatever the
        // layers' windows.
        let layer_slot = (0..self.cfg.n_layers).map(|l| (0, l)).collect();
        self.alloc_kv(config, layer_slot, vec![KvGroupKind::Full])
    }

    fn kv_groups(&self) -> Option<Vec<KvGroupSpec>> {
        Some(kv_groups_for(&self.cfg.layers))
    }

    fn init_kv_cache_groups(
        &mut self,
        config: KvCacheConfig,
        groups: &[KvGroupSpec],
    ) -> Result<KvCacheInfo, BackendError> {
        let bad = |m: String| Err(BackendError::InvalidBatch(format!("KV cache groups: {m}")));
        let Some(size) = groups.first().map(|g| g.layers.len()) else {
            return bad("no group".into());
        };
        let mut layer_slot = vec![None; self.cfg.n_layers];
        for (g, spec) in groups.iter().enumerate() {
            if spec.layers.len() != size {
                return bad(format!(
                    "group {g} has {} layers, not {size}",
                    spec.layers.len()
                ));
            }
            for (j, &l) in spec.layers.iter().enumerate() {
                match layer_slot.get_mut(l) {
                    Some(slot @ None) => *slot = Some((g, j)),
                    _ => return bad(format!("layer {l} is out of range or in two groups")),
                }
                if KvGroupKind::of(self.cfg.layers[l]) != spec.kind {
                    return bad(format!(
                        "layer {l} ({:?}) in a {:?} group",
                        self.cfg.layers[l], spec.kind
                    ));
                }
            }
        }
        let Some(layer_slot) = layer_slot.into_iter().collect::<Option<Vec<_>>>() else {
            return bad("a layer is in no group".into());
        };
        self.alloc_kv(config, layer_slot, groups.iter().map(|g| g.kind).collect())
    }

    fn copy_blocks(&mut self, pairs: &[(BlockId, BlockId)]) -> Result<(), BackendError> {
        let kv = self.kv.as_mut().ok_or(BackendError::NoKvCache)?;
        let w = kv.block_size * self.cfg.kv_dim();
        for &(s, d) in pairs {
            if s.0 as usize >= kv.num_blocks || d.0 as usize >= kv.num_blocks {
                return Err(BackendError::InvalidBatch(format!(
                    "block copy {s:?} -> {d:?} out of range"
                )));
            }
            for cache in kv.k.iter_mut().chain(kv.v.iter_mut()) {
                cache.copy_within(s.0 as usize * w..(s.0 as usize + 1) * w, d.0 as usize * w);
            }
        }
        Ok(())
    }

    fn recycle_logits(&mut self, logits: Logits) {
        if logits.data.capacity() <= SPARE_LOGITS_MAX {
            self.spare_logits = logits.data;
        }
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError> {
        self.in_pool(|be| be.forward_in_pool(batch))
    }

    /// The argmax of each logits row taken inside the lm_head kernel (no logits written or
    /// scanned again), where [`CpuBackend::greedy_path`] holds; `None` elsewhere.
    fn forward_greedy(
        &mut self,
        batch: &ForwardBatch,
        vocab_limit: usize,
    ) -> Option<Result<Vec<u32>, BackendError>> {
        // At the AVX-512 VNNI level, 8 rows or more: its logits kernel beats the AVX2 argmax
        // (the same values, so the same choice either way).
        if !self.greedy_path() || Isa::current().packed_vnni(batch.logits_indices.len()) {
            return None;
        }
        Some(self.in_pool(|be| be.greedy_in_pool(batch, vocab_limit)))
    }

    fn forward_hidden(
        &mut self,
        batch: &ForwardBatch,
        hidden_indices: &[usize],
    ) -> Option<Result<(Logits, Vec<f32>), BackendError>> {
        Some(self.in_pool(|be| {
            let mut sel = be.hidden_in_pool(batch, hidden_indices)?;
            let hidden = sel.split_off(batch.logits_indices.len() * be.cfg.hidden);
            Ok((be.logits_of(&sel), hidden))
        }))
    }

    fn supports_hidden(&self) -> bool {
        true
    }
}

impl CpuBackend {
    /// Allocates `config.num_blocks` blocks of `layer_slot`'s slots per block.
    fn alloc_kv(
        &mut self,
        config: KvCacheConfig,
        layer_slot: Vec<(usize, usize)>,
        groups: Vec<KvGroupKind>,
    ) -> Result<KvCacheInfo, BackendError> {
        if config.block_size == 0 || config.num_blocks == 0 {
            return Err(BackendError::InvalidBatch(
                "KV cache with zero blocks".into(),
            ));
        }
        self.kv = None;
        let slots = layer_slot.iter().map(|&(_, j)| j + 1).max().unwrap_or(0);
        let n = config
            .num_blocks
            .checked_mul(config.block_size * self.cfg.kv_dim())
            .ok_or_else(|| BackendError::OutOfMemory("KV cache size overflows".into()))?;
        let mut k = Vec::with_capacity(slots);
        let mut v = Vec::with_capacity(slots);
        for _ in 0..slots {
            // Zeroed allocations (calloc): the OS maps pages on first write, so a large pool
            // costs nothing until used and start-up does not wait for gigabytes of memset.
            k.push(zeroed_f16(n)?);
            v.push(zeroed_f16(n)?);
        }
        self.kv = Some(KvCache {
            block_size: config.block_size,
            num_blocks: config.num_blocks,
            k,
            v,
            layer_slot,
            groups,
        });
        Ok(KvCacheInfo {
            block_size: config.block_size,
            num_blocks: config.num_blocks,
            bytes_per_block: 2 * slots * config.block_size * self.cfg.kv_dim() * 2,
        })
    }

    /// Runs `f` (a whole pass) on a thread of the current rayon pool while the pool's other
    /// threads stay with the pass as its team (`team::with_team`): the many parallel loops
    /// inside (a dozen per layer) then start without waking a sleeping thread each time.
    fn in_pool<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        team::with_team(move || f(self))
    }

    fn forward_in_pool(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError> {
        let sel = self.hidden_in_pool(batch, &[])?;
        Ok(self.logits_of(&sel))
    }

    /// The output projection (and final soft-cap) of final-normed rows `sel`.
    fn logits_of(&mut self, sel: &[f32]) -> Logits {
        let c = &self.cfg;
        let m = sel.len() / c.hidden;
        // Every entry is written by the matmul: a recycled buffer is only resized (new entries
        // zeroed), not cleared.
        let mut logits = std::mem::take(&mut self.spare_logits);
        logits.resize(m * c.vocab_size, 0.0);
        if m > 0 {
            match &self.output_packed {
                Some(p) => matmul_packed(p, sel, m, &mut logits),
                None => matmul(&qm(&self.output), sel, m, &mut logits),
            }
        }
        if let Some(cap) = c.final_logit_softcap {
            for v in logits.iter_mut() {
                *v = cap * (*v / cap).tanh();
            }
        }
        Logits {
            vocab: c.vocab_size,
            data: logits,
        }
    }

    /// Whether [`Backend::forward_greedy`] has a path here: the packed output projection (whose
    /// argmax kernel compares the AVX2 packed kernel's values, the same bits as the VNNI one)
    /// and no final soft-cap (a `tanh` after the matmul could make new ties).
    fn greedy_path(&self) -> bool {
        self.output_packed.is_some()
            && self.cfg.final_logit_softcap.is_none()
            && Isa::current().layouts.greedy_argmax
    }

    fn greedy_in_pool(
        &mut self,
        batch: &ForwardBatch,
        vocab_limit: usize,
    ) -> Result<Vec<u32>, BackendError> {
        let sel = self.hidden_in_pool(batch, &[])?;
        let m = batch.logits_indices.len();
        let p = self
            .output_packed
            .as_ref()
            .expect("greedy_in_pool without a packed output projection");
        Ok(kernels::matmul_packed_argmax(p, &sel, m, vocab_limit))
    }

    /// The layers over the whole batch (K/V written to the cache), then the final norm of the
    /// rows that want logits followed by the rows of `extra`:
    /// `(logits_indices.len() + extra.len()) x hidden`.
    fn hidden_in_pool(
        &mut self,
        batch: &ForwardBatch,
        extra: &[usize],
    ) -> Result<Vec<f32>, BackendError> {
        let kv = self.kv.as_mut().ok_or(BackendError::NoKvCache)?;
        batch
            .validate(kv.block_size)
            .map_err(BackendError::InvalidBatch)?;
        if let Some(&bad) = extra.iter().find(|&&i| i >= batch.num_tokens()) {
            return Err(BackendError::InvalidBatch(format!(
                "hidden-state index {bad} out of range"
            )));
        }
        // Every block a step writes or reads must be a block of the pool: in a sliding
        // group, the blocks from the one holding the first key the step's first query sees
        // (entries before it may be NULL: those blocks went back to the pool).
        for (i, s) in batch.seqs.iter().enumerate() {
            if s.group_tables.len() + 1 != kv.groups.len() {
                return Err(BackendError::InvalidBatch(format!(
                    "sequence {i} has {} block tables for {} KV groups",
                    s.group_tables.len() + 1,
                    kv.groups.len()
                )));
            }
            let end_block = (s.context_before + s.len).div_ceil(kv.block_size);
            for (g, kind) in kv.groups.iter().enumerate() {
                let first = kind.first_read(s.context_before) / kv.block_size;
                let table = &s.table(g)[..end_block];
                if let Some(b) = table[first..]
                    .iter()
                    .find(|b| b.0 as usize >= kv.num_blocks)
                {
                    return Err(BackendError::InvalidBatch(format!(
                        "sequence {i}: block {} of KV group {g} out of range",
                        b.0
                    )));
                }
            }
        }
        let c = &self.cfg;
        let n = batch.num_tokens();
        let (hd, qd, kvd) = (c.head_dim, c.q_dim(), c.kv_dim());
        let neox = c.arch.rope_neox();
        let bs = kv.block_size;

        // A tied table is read from the packed output projection where there is one, else it
        // is the file's output projection, which every step reads whole anyway.
        let embed = match (&self.output_packed, self.tied) {
            (Some(p), true) => EmbedFrom::Packed(p),
            (None, true) => EmbedFrom::File { release: false },
            (_, false) => EmbedFrom::File { release: true },
        };
        let mut x = Self::embed_rows_static(&self.embed, embed, c, &batch.token_ids)?;
        let mut moe_scratch = std::mem::take(&mut self.moe_scratch);
        // RoPE angles of each token, once per step for all layers: global, then local.
        let half = hd / 2;
        let angles = |inv: &[f32]| {
            let mut cs = Vec::with_capacity(n * half);
            for &pos in &batch.positions {
                ops::rope_angles(pos, inv, c.rope_scaling.attn_factor, &mut cs);
            }
            cs
        };
        let cs_global = angles(&self.inv_freq_global);
        let cs_local = if c
            .layers
            .iter()
            .any(|l| matches!(l, LayerAttention::Sliding { .. }))
        {
            angles(&self.inv_freq_local)
        } else {
            Vec::new()
        };
        let sc = std::mem::take(&mut self.step_scratch);
        let mut h = zeroed(sc.h, n * c.hidden);
        let mut q = zeroed(sc.q, n * qd);
        let mut k = zeroed(sc.k, n * kvd);
        let mut v = zeroed(sc.v, n * kvd);
        let mut attn = zeroed(sc.attn, n * qd);
        let mut o = zeroed(sc.o, n * c.hidden);
        let dense_ffn = if c.moe.is_some() { 0 } else { c.ffn };
        let mut g = zeroed(sc.g, n * dense_ffn);
        let mut u = zeroed(sc.u, n * dense_ffn);
        // Per token of the step: its sequence and its position in it (the same for every
        // layer), and the cache row it writes in each KV group.
        let seq_of: Vec<&switchyard_core::SeqInBatch> = batch
            .seqs
            .iter()
            .flat_map(|s| std::iter::repeat_n(s, s.len))
            .collect();
        let pos_of: Vec<usize> = batch
            .seqs
            .iter()
            .flat_map(|s| (0..s.len).map(move |i| s.context_before + i))
            .collect();
        let kv_slots: Vec<Vec<usize>> = (0..kv.groups.len())
            .map(|grp| {
                (0..n)
                    .map(|t| slot(seq_of[t].table(grp), bs, pos_of[t]))
                    .collect()
            })
            .collect();
        let eps = c.rms_eps;

        for (li, l) in self.layers.iter().enumerate() {
            {
                let hr = Rows::new(&mut h, c.hidden);
                let x = &x;
                each_token(n, |t| {
                    // SAFETY: row `t` of `h`, for this token only (`each_token`).
                    let ht = unsafe { hr.row(t) };
                    ops::rmsnorm_into(&x[t * c.hidden..(t + 1) * c.hidden], ht, &l.attn_norm, eps);
                });
            }
            l.wq.matmul(&h, n, &mut q);
            l.wk.matmul(&h, n, &mut k);
            l.wv.matmul(&h, n, &mut v);
            let (cs_all, window) = match l.attention {
                LayerAttention::Global => (&cs_global, usize::MAX),
                LayerAttention::Sliding { window } => (&cs_local, window),
            };
            {
                let (qr, kr, vr) = (
                    Rows::new(&mut q, qd),
                    Rows::new(&mut k, kvd),
                    Rows::new(&mut v, kvd),
                );
                each_token(n, |t| {
                    // SAFETY: row `t` of each buffer, for this token only (`each_token`).
                    let (qt, kt, vt) = unsafe { (qr.row(t), kr.row(t), vr.row(t)) };
                    add_bias(qt, &l.bq);
                    add_bias(kt, &l.bk);
                    add_bias(vt, &l.bv);
                    if let Some(w) = &l.q_norm {
                        ops::rmsnorm_rows(qt, w, eps);
                    }
                    if let Some(w) = &l.k_norm {
                        ops::rmsnorm_rows(kt, w, eps);
                    }
                    let cs = &cs_all[t * half..(t + 1) * half];
                    for head in qt.chunks_exact_mut(hd) {
                        ops::rope_with(head, cs, neox);
                        for e in head.iter_mut() {
                            *e *= c.query_scale;
                        }
                    }
                    for head in kt.chunks_exact_mut(hd) {
                        ops::rope_with(head, cs, neox);
                    }
                });
            }
            // Write this step's K/V into the cache, through the table of the layer's group
            // (serial: two batch rows may name one cache row only through a bad batch, and then
            // the later one wins, as in order).
            let (kv_group, layer_slot) = kv.layer_slot[li];
            let (kc, vc) = (&mut kv.k[layer_slot], &mut kv.v[layer_slot]);
            for (t, &sl) in kv_slots[kv_group].iter().enumerate() {
                kc[sl * kvd..(sl + 1) * kvd].convert_from_f32_slice(&k[t * kvd..(t + 1) * kvd]);
                vc[sl * kvd..(sl + 1) * kvd].convert_from_f32_slice(&v[t * kvd..(t + 1) * kvd]);
            }
            // Attention: one task per (token, head). A sliding layer reads keys from
            // `pos + 1 - window` on: never a block before the group's first checked above.
            let (kc, vc) = (&kv.k[layer_slot], &kv.v[layer_slot]);
            let group = c.n_heads / c.n_kv_heads;
            // Runs of tokens, about eight per thread (later tokens of a prompt attend to more
            // keys, so runs are small enough to even out).
            let per = n.div_ceil(8 * rayon::current_num_threads()).max(1);
            let softcap = c.attn_logit_softcap;
            team::for_each_chunk_mut(&mut attn, per * qd, |c, run| {
                let (mut rows, mut scratch) = (Vec::new(), Vec::new());
                for (i, out_row) in run.chunks_exact_mut(qd).enumerate() {
                    let t = c * per + i;
                    let pos = pos_of[t];
                    let table = seq_of[t].table(kv_group);
                    let lo = if window == usize::MAX {
                        0
                    } else {
                        (pos + 1).saturating_sub(window)
                    };
                    rows.clear();
                    rows.extend((lo..=pos).map(|j| slot(table, bs, j) * kvd));
                    // The query heads of KV head `kvh` are `kvh * group ..`, adjacent.
                    let gd = group * hd;
                    for (kvh, out) in out_row.chunks_exact_mut(gd).enumerate() {
                        let a = kernels::Attend {
                            q: &q[t * qd + kvh * gd..t * qd + (kvh + 1) * gd],
                            hd,
                            kc: &kc[kvh * hd..],
                            vc: &vc[kvh * hd..],
                            rows: &rows,
                            softcap,
                        };
                        kernels::attend_f16(&a, &mut scratch, out);
                    }
                }
            });
            l.wo.matmul(&attn, n, &mut o);
            {
                let (xr, hr, or) = (
                    Rows::new(&mut x, c.hidden),
                    Rows::new(&mut h, c.hidden),
                    Rows::new(&mut o, c.hidden),
                );
                each_token(n, |t| {
                    // SAFETY: row `t` of each buffer, for this token only (`each_token`).
                    let (xt, ht, ot) = unsafe { (xr.row(t), hr.row(t), or.row(t)) };
                    if let Some(w) = &l.post_attn_norm {
                        ops::rmsnorm(ot, w, eps);
                    }
                    for (a, b) in xt.iter_mut().zip(ot.iter()) {
                        *a += b;
                    }
                    ops::rmsnorm_into(xt, ht, &l.ffn_norm, eps);
                });
            }
            match &l.ffn {
                Ffn::Dense { gate, up, down } => {
                    gate.matmul(&h, n, &mut g);
                    up.matmul(&h, n, &mut u);
                    let act = c.activation;
                    team::for_each_chunk_mut(&mut g, 4096, |i, gg| {
                        glu(act, gg, &u[4096 * i..4096 * i + gg.len()])
                    });
                    down.matmul(&g, n, &mut o);
                }
                Ffn::Moe(m) => m.forward(&h, n, &mut o, &mut moe_scratch),
            }
            {
                let (xr, or) = (Rows::new(&mut x, c.hidden), Rows::new(&mut o, c.hidden));
                each_token(n, |t| {
                    // SAFETY: row `t` of each buffer, for this token only (`each_token`).
                    let (xt, ot) = unsafe { (xr.row(t), or.row(t)) };
                    if let Some(w) = &l.post_ffn_norm {
                        ops::rmsnorm(ot, w, eps);
                    }
                    for (a, b) in xt.iter_mut().zip(ot.iter()) {
                        *a += b;
                    }
                });
            }
        }
        // Final norm and logits only for the rows asked for.
        let m = batch.logits_indices.len() + extra.len();
        let mut sel = vec![0f32; m * c.hidden];
        let rows = batch.logits_indices.iter().chain(extra);
        for (dst, &i) in sel.chunks_exact_mut(c.hidden).zip(rows) {
            dst.copy_from_slice(&x[i * c.hidden..(i + 1) * c.hidden]);
        }
        ops::rmsnorm_rows(&mut sel, &self.output_norm, c.rms_eps);
        if moe_scratch.capacity() <= SPARE_LOGITS_MAX {
            self.moe_scratch = moe_scratch;
        }
        self.step_scratch = StepScratch {
            h,
            q,
            k,
            v,
            attn,
            o,
            g,
            u,
        };
        Ok(sel)
    }
}

impl CpuBackend {
    /// The scaled embedding rows of `ids`, from `embed` or its packed copy (the same bits).
    fn embed_rows_static(
        embed: &Tensor,
        from: EmbedFrom<'_>,
        c: &ModelConfig,
        ids: &[u32],
    ) -> Result<Vec<f32>, BackendError> {
        let h = c.hidden;
        let m = qm(embed);
        let mut x = vec![0f32; ids.len() * h];
        // Rows read through the file map (an untied embedding) leave our resident memory again
        // every `RELEASE_ROWS` rows: each read maps the page-cache folio around it.
        let (packed, release) = match from {
            EmbedFrom::Packed(p) => (Some(p), false),
            EmbedFrom::File { release } => (None, release && embed.data.file_map().is_some()),
        };
        for (i, (row, &id)) in x.chunks_exact_mut(h).zip(ids).enumerate() {
            if release && i % RELEASE_ROWS == 0 && i > 0 {
                crate::hugebuf::release_file_map(embed.data.as_slice());
            }
            if id as usize >= c.vocab_size {
                return Err(BackendError::InvalidBatch(format!(
                    "token id {id} out of range (vocab {})",
                    c.vocab_size
                )));
            }
            match packed {
                Some(p) => p.dequantize_row(id as usize, row),
                None => switchyard_core::dtype::dequantize(m.dtype, m.row(id as usize), row),
            }
            for v in row.iter_mut() {
                *v *= c.embed_scale;
            }
        }
        if release && !ids.is_empty() {
            crate::hugebuf::release_file_map(embed.data.as_slice());
        }
        Ok(x)
    }
}

/// Where the embedding lookup reads rows.
#[derive(Clone, Copy)]
enum EmbedFrom<'a> {
    /// The packed output projection (a tied table).
    Packed(&'a PackedQ8),
    /// The file's table; `release`: its pages leave our resident memory after the lookup (no
    /// matmul reads it).
    File { release: bool },
}

/// Embedding rows read through the file map between two releases of its pages.
const RELEASE_ROWS: usize = 16;

/// `n` zero f16s from a zeroed allocation.
fn zeroed_f16(n: usize) -> Result<Vec<f16>, BackendError> {
    bytemuck::try_zeroed_vec(n)
        .map_err(|_| BackendError::OutOfMemory(format!("cannot allocate {n} f16 KV entries")))
}
