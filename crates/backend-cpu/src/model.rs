//! The transformer forward pass on the CPU over a packed, paged batch.

use half::f16;
use rayon::prelude::*;
use switchyard_core::{
    Architecture, Backend, BackendCapabilities, BackendError, BlockId, ForwardBatch, GgmlType,
    KvCacheConfig, KvCacheInfo, LayerAttention, Logits, ModelConfig, Tensor, WeightSource,
};

use crate::kernels::{axpy_f16, dot_f16, glu, matmul, QMatrix};
use crate::ops;

struct Layer {
    attn_norm: Vec<f32>,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    wo: Tensor,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    post_ffn_norm: Option<Vec<f32>>,
    attention: LayerAttention,
}

struct KvCache {
    block_size: usize,
    num_blocks: usize,
    /// Per layer: `[num_blocks * block_size, kv_dim]` keys and values.
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
}

/// The CPU backend: owns the model weights (memory-mapped, in file encoding) and the KV cache.
pub struct CpuBackend {
    cfg: ModelConfig,
    embed: Tensor,
    output: Tensor,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq_global: Vec<f32>,
    inv_freq_local: Vec<f32>,
    kv: Option<KvCache>,
}

fn get(w: &dyn WeightSource, name: &str) -> Result<Tensor, BackendError> {
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

fn matrix(
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

fn add_bias(x: &mut [f32], b: &Option<Vec<f32>>) {
    if let Some(b) = b {
        for row in x.chunks_exact_mut(b.len()) {
            for (v, bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
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
            layers.push(Layer {
                attn_norm: vector(weights, &n("attn_norm.weight"), c.hidden)?,
                wq: matrix(weights, &n("attn_q.weight"), c.hidden, c.q_dim())?,
                wk: matrix(weights, &n("attn_k.weight"), c.hidden, c.kv_dim())?,
                wv: matrix(weights, &n("attn_v.weight"), c.hidden, c.kv_dim())?,
                bq: opt_vector(weights, &n("attn_q.bias"), c.q_dim())?,
                bk: opt_vector(weights, &n("attn_k.bias"), c.kv_dim())?,
                bv: opt_vector(weights, &n("attn_v.bias"), c.kv_dim())?,
                q_norm: qkn("attn_q_norm.weight")?,
                k_norm: qkn("attn_k_norm.weight")?,
                wo: matrix(weights, &n("attn_output.weight"), c.q_dim(), c.hidden)?,
                post_attn_norm: post("post_attention_norm.weight")?,
                ffn_norm: vector(weights, &n("ffn_norm.weight"), c.hidden)?,
                gate: matrix(weights, &n("ffn_gate.weight"), c.hidden, c.ffn)?,
                up: matrix(weights, &n("ffn_up.weight"), c.hidden, c.ffn)?,
                down: matrix(weights, &n("ffn_down.weight"), c.ffn, c.hidden)?,
                post_ffn_norm: post("post_ffw_norm.weight")?,
                attention: c.layers[i],
            });
        }
        Ok(Self {
            inv_freq_global: ops::inv_freq(c.rope_base, c.head_dim),
            inv_freq_local: ops::inv_freq(c.rope_base_local, c.head_dim),
            cfg: c.clone(),
            embed,
            output,
            output_norm,
            layers,
            kv: None,
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
        let (total, free) = crate::system_memory();
        BackendCapabilities {
            kind: "cpu",
            device_name: crate::cpu_name(),
            total_memory: total,
            free_memory: free,
            kv_dtypes: vec![GgmlType::F16],
            weight_dtypes: vec![
                GgmlType::F32,
                GgmlType::F16,
                GgmlType::BF16,
                GgmlType::Q4_0,
                GgmlType::Q5_0,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
            ],
            shape_buckets: None,
        }
    }

    fn kv_bytes_per_block(&self, block_size: usize) -> usize {
        2 * self.cfg.n_layers * block_size * self.cfg.kv_dim() * 2
    }

    fn init_kv_cache(&mut self, config: KvCacheConfig) -> Result<KvCacheInfo, BackendError> {
        if config.block_size == 0 || config.num_blocks == 0 {
            return Err(BackendError::InvalidBatch(
                "KV cache with zero blocks".into(),
            ));
        }
        self.kv = None;
        let n = config
            .num_blocks
            .checked_mul(config.block_size * self.cfg.kv_dim())
            .ok_or_else(|| BackendError::OutOfMemory("KV cache size overflows".into()))?;
        let mut k = Vec::with_capacity(self.cfg.n_layers);
        let mut v = Vec::with_capacity(self.cfg.n_layers);
        for _ in 0..self.cfg.n_layers {
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
        });
        Ok(KvCacheInfo {
            block_size: config.block_size,
            num_blocks: config.num_blocks,
            bytes_per_block: self.kv_bytes_per_block(config.block_size),
        })
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

    fn forward(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError> {
        // Run the whole pass on a worker of the current rayon pool: the many parallel loops
        // inside (a dozen per layer) then start from inside the pool, which is much cheaper
        // than waking it from an outside thread each time.
        if rayon::current_thread_index().is_some() {
            self.forward_in_pool(batch)
        } else {
            rayon::scope(|_| self.forward_in_pool(batch))
        }
    }
}

impl CpuBackend {
    fn forward_in_pool(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError> {
        let kv = self.kv.as_mut().ok_or(BackendError::NoKvCache)?;
        batch
            .validate(kv.block_size)
            .map_err(BackendError::InvalidBatch)?;
        for s in &batch.seqs {
            if let Some(b) = s.block_table.iter().find(|b| b.0 as usize >= kv.num_blocks) {
                return Err(BackendError::InvalidBatch(format!(
                    "block {} out of range",
                    b.0
                )));
            }
        }
        let c = &self.cfg;
        let n = batch.num_tokens();
        let (hd, qd, kvd) = (c.head_dim, c.q_dim(), c.kv_dim());
        let neox = c.arch != Architecture::Llama;
        let bs = kv.block_size;

        let mut x = Self::embed_rows_static(&self.embed, c, &batch.token_ids)?;
        let mut h = vec![0f32; n * c.hidden];
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut attn = vec![0f32; n * qd];
        let mut o = vec![0f32; n * c.hidden];
        let mut g = vec![0f32; n * c.ffn];
        let mut u = vec![0f32; n * c.ffn];

        for (li, l) in self.layers.iter().enumerate() {
            h.copy_from_slice(&x);
            ops::rmsnorm_rows(&mut h, &l.attn_norm, c.rms_eps);
            matmul(&qm(&l.wq), &h, n, &mut q);
            matmul(&qm(&l.wk), &h, n, &mut k);
            matmul(&qm(&l.wv), &h, n, &mut v);
            add_bias(&mut q, &l.bq);
            add_bias(&mut k, &l.bk);
            add_bias(&mut v, &l.bv);
            if let Some(w) = &l.q_norm {
                ops::rmsnorm_rows(&mut q, w, c.rms_eps);
            }
            if let Some(w) = &l.k_norm {
                ops::rmsnorm_rows(&mut k, w, c.rms_eps);
            }
            let (inv, window) = match l.attention {
                LayerAttention::Global => (&self.inv_freq_global, usize::MAX),
                LayerAttention::Sliding { window } => (&self.inv_freq_local, window),
            };
            for t in 0..n {
                let pos = batch.positions[t];
                for head in q[t * qd..(t + 1) * qd].chunks_exact_mut(hd) {
                    ops::rope(head, pos, inv, neox);
                    for e in head.iter_mut() {
                        *e *= c.query_scale;
                    }
                }
                for head in k[t * kvd..(t + 1) * kvd].chunks_exact_mut(hd) {
                    ops::rope(head, pos, inv, neox);
                }
            }
            // Write this step's K/V into the cache.
            let (kc, vc) = (&mut kv.k[li], &mut kv.v[li]);
            for s in &batch.seqs {
                for i in 0..s.len {
                    let t = s.start + i;
                    let sl = slot(&s.block_table, bs, s.context_before + i);
                    for (d, src) in kc[sl * kvd..(sl + 1) * kvd]
                        .iter_mut()
                        .zip(&k[t * kvd..(t + 1) * kvd])
                    {
                        *d = f16::from_f32(*src);
                    }
                    for (d, src) in vc[sl * kvd..(sl + 1) * kvd]
                        .iter_mut()
                        .zip(&v[t * kvd..(t + 1) * kvd])
                    {
                        *d = f16::from_f32(*src);
                    }
                }
            }
            // Attention: one task per (token, head).
            let (kc, vc) = (&kv.k[li], &kv.v[li]);
            let group = c.n_heads / c.n_kv_heads;
            let tasks: Vec<(usize, usize)> = batch
                .seqs
                .iter()
                .flat_map(|s| (0..s.len).map(move |i| (s.start + i, s.context_before + i)))
                .collect();
            let seq_of: Vec<&switchyard_core::SeqInBatch> = batch
                .seqs
                .iter()
                .flat_map(|s| std::iter::repeat_n(s, s.len))
                .collect();
            attn.par_chunks_mut(qd)
                .enumerate()
                .for_each(|(t, out_row)| {
                    let (_, pos) = tasks[t];
                    let s = seq_of[t];
                    let lo = if window == usize::MAX {
                        0
                    } else {
                        (pos + 1).saturating_sub(window)
                    };
                    let mut scores = vec![0f32; pos + 1 - lo];
                    for hh in 0..c.n_heads {
                        let kvh = hh / group;
                        let qh = &q[t * qd + hh * hd..t * qd + (hh + 1) * hd];
                        let mut mx = f32::NEG_INFINITY;
                        for (j, sc) in (lo..=pos).zip(scores.iter_mut()) {
                            let sl = slot(&s.block_table, bs, j);
                            let kr = &kc[sl * kvd + kvh * hd..sl * kvd + (kvh + 1) * hd];
                            let d = dot_f16(qh, kr);
                            *sc = d;
                            mx = mx.max(d);
                        }
                        let mut sum = 0f32;
                        for sc in scores.iter_mut() {
                            *sc = (*sc - mx).exp();
                            sum += *sc;
                        }
                        let orow = &mut out_row[hh * hd..(hh + 1) * hd];
                        orow.fill(0.0);
                        for (j, sc) in (lo..=pos).zip(scores.iter()) {
                            let sl = slot(&s.block_table, bs, j);
                            let vr = &vc[sl * kvd + kvh * hd..sl * kvd + (kvh + 1) * hd];
                            axpy_f16(orow, sc / sum, vr);
                        }
                    }
                });
            matmul(&qm(&l.wo), &attn, n, &mut o);
            if let Some(w) = &l.post_attn_norm {
                ops::rmsnorm_rows(&mut o, w, c.rms_eps);
            }
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b;
            }
            h.copy_from_slice(&x);
            ops::rmsnorm_rows(&mut h, &l.ffn_norm, c.rms_eps);
            matmul(&qm(&l.gate), &h, n, &mut g);
            matmul(&qm(&l.up), &h, n, &mut u);
            let act = c.activation;
            g.par_chunks_mut(4096)
                .zip(u.par_chunks(4096))
                .for_each(|(gg, uu)| glu(act, gg, uu));
            matmul(&qm(&l.down), &g, n, &mut o);
            if let Some(w) = &l.post_ffn_norm {
                ops::rmsnorm_rows(&mut o, w, c.rms_eps);
            }
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b;
            }
        }
        // Final norm and logits only for the rows asked for.
        let m = batch.logits_indices.len();
        let mut sel = vec![0f32; m * c.hidden];
        for (dst, &i) in sel.chunks_exact_mut(c.hidden).zip(&batch.logits_indices) {
            dst.copy_from_slice(&x[i * c.hidden..(i + 1) * c.hidden]);
        }
        ops::rmsnorm_rows(&mut sel, &self.output_norm, c.rms_eps);
        let mut logits = vec![0f32; m * c.vocab_size];
        if m > 0 {
            matmul(&qm(&self.output), &sel, m, &mut logits);
        }
        if let Some(cap) = c.final_logit_softcap {
            for v in logits.iter_mut() {
                *v = cap * (*v / cap).tanh();
            }
        }
        Ok(Logits {
            vocab: c.vocab_size,
            data: logits,
        })
    }
}

impl CpuBackend {
    fn embed_rows_static(
        embed: &Tensor,
        c: &ModelConfig,
        ids: &[u32],
    ) -> Result<Vec<f32>, BackendError> {
        let h = c.hidden;
        let m = qm(embed);
        let mut x = vec![0f32; ids.len() * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(ids) {
            if id as usize >= c.vocab_size {
                return Err(BackendError::InvalidBatch(format!(
                    "token id {id} out of range (vocab {})",
                    c.vocab_size
                )));
            }
            switchyard_core::dtype::dequantize(m.dtype, m.row(id as usize), row);
            for v in row.iter_mut() {
                *v *= c.embed_scale;
            }
        }
        Ok(x)
    }
}

/// `n` zero f16s from a zeroed allocation.
fn zeroed_f16(n: usize) -> Result<Vec<f16>, BackendError> {
    bytemuck::try_zeroed_vec(n)
        .map_err(|_| BackendError::OutOfMemory(format!("cannot allocate {n} f16 KV entries")))
}
