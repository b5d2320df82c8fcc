//! The transformer forward pass on a CUDA device over a packed, paged batch.
//!
//! Per layer (each line one launch): RMSNorm → bf16 · fused QKV GEMM · bias · per-head norm +
//! RoPE + query scale · KV-cache write · paged attention → bf16 · output GEMM · residual (+ post
//! norm) and FFN norm → bf16 · fused gate/up GEMM · activation × up → bf16 · down GEMM · residual
//! (+ post norm) and the next layer's attention norm. Then the final norm of the rows that want
//! logits, the output GEMM and the soft-cap.
//!
//! Decode-only batches replay that same sequence of launches from a CUDA graph per batch bucket
//! (see [`CudaBackend::set_cuda_graphs`]); the graphs point at the activation buffers and the KV
//! cache, so growing the former or re-creating the latter drops them (captured again on demand).

use std::time::Instant;

use cudarc::driver::{CudaGraph, CudaSlice, PinnedHostSlice};
use switchyard_core::{
    Activation, Backend, BackendCapabilities, BackendError, BlockId, ForwardBatch, GgmlType,
    KvCacheConfig, KvCacheInfo, LayerAttention, Logits, ModelConfig, WeightSource,
};

use crate::gpu::{
    AttentionArgs, DBuf, DeviceCounters, GemmArgs, Gpu, HeadNormRopeArgs, KvWriteArgs, Out,
    ResidualArgs, RmsNormArgs,
};
use crate::step::{pack_meta, trace_shape, trace_step, trace_steps, upload_meta, StepLayout};
use crate::weights::{check_config, matrix, opt_vector, stacked_bf16, vector};
use crate::{CudaDeviceInfo, KernelBuild};

struct Layer {
    attn_norm: CudaSlice<f32>,
    /// `[q_dim + 2 kv_dim, hidden]` bf16: Wq, Wk, Wv stacked.
    qkv: CudaSlice<u16>,
    qkv_bias: Option<CudaSlice<f32>>,
    q_norm: Option<CudaSlice<f32>>,
    k_norm: Option<CudaSlice<f32>>,
    /// `[hidden, q_dim]` bf16.
    wo: CudaSlice<u16>,
    post_attn_norm: Option<CudaSlice<f32>>,
    ffn_norm: CudaSlice<f32>,
    /// `[2 ffn, hidden]` bf16: gate then up.
    gate_up: CudaSlice<u16>,
    /// `[hidden, ffn]` bf16.
    down: CudaSlice<u16>,
    post_ffn_norm: Option<CudaSlice<f32>>,
    attention: LayerAttention,
}

struct KvCache {
    block_size: usize,
    /// Blocks the scheduler may use (`0..num_blocks`).
    num_blocks: usize,
    /// `num_blocks + 1`: block `num_blocks` is reserved for the padding rows of graph replays
    /// (their K/V writes land there and nothing real ever reads it).
    total_blocks: usize,
    /// Per layer: `[total_blocks * block_size, kv_dim]` f16 bits.
    k: Vec<CudaSlice<u16>>,
    v: Vec<CudaSlice<u16>>,
}

/// Activation buffers, grown on demand and reused across steps.
struct Scratch {
    tokens: usize,
    rows: usize,
    meta_len: usize,
    x: CudaSlice<f32>,
    h: CudaSlice<u16>,
    qkv: CudaSlice<f32>,
    attn: CudaSlice<u16>,
    o: CudaSlice<f32>,
    gu: CudaSlice<f32>,
    act: CudaSlice<u16>,
    final_h: CudaSlice<u16>,
    logits: CudaSlice<f32>,
    argmax: CudaSlice<u32>,
    meta: CudaSlice<u32>,
}

impl Scratch {
    fn new(gpu: &Gpu) -> Result<Self, BackendError> {
        Ok(Self {
            tokens: 0,
            rows: 0,
            meta_len: 0,
            x: gpu.zeros(1)?,
            h: gpu.zeros(1)?,
            qkv: gpu.zeros(1)?,
            attn: gpu.zeros(1)?,
            o: gpu.zeros(1)?,
            gu: gpu.zeros(1)?,
            act: gpu.zeros(1)?,
            final_h: gpu.zeros(1)?,
            logits: gpu.zeros(1)?,
            argmax: gpu.zeros(1)?,
            meta: gpu.zeros(1)?,
        })
    }

    fn ensure(
        &mut self,
        gpu: &Gpu,
        c: &ModelConfig,
        (n, m, meta): (usize, usize, usize),
    ) -> Result<bool, BackendError> {
        let before = (self.tokens, self.rows, self.meta_len);
        if n > self.tokens {
            let cap = n.next_multiple_of(64);
            self.x = gpu.zeros(cap * c.hidden)?;
            self.h = gpu.zeros(cap * c.hidden)?;
            self.qkv = gpu.zeros(cap * (c.q_dim() + 2 * c.kv_dim()))?;
            self.attn = gpu.zeros(cap * c.q_dim())?;
            self.o = gpu.zeros(cap * c.hidden)?;
            self.gu = gpu.zeros(cap * 2 * c.ffn)?;
            self.act = gpu.zeros(cap * c.ffn)?;
            self.tokens = cap;
        }
        if m > self.rows {
            let cap = m.next_multiple_of(16);
            self.final_h = gpu.zeros(cap * c.hidden)?;
            self.logits = gpu.zeros(cap * c.vocab_size)?;
            self.argmax = gpu.zeros(cap)?;
            self.rows = cap;
        }
        if meta > self.meta_len {
            let cap = meta.next_multiple_of(1024);
            self.meta = gpu.zeros(cap)?;
            self.meta_len = cap;
        }
        Ok(before != (self.tokens, self.rows, self.meta_len))
    }
}

/// Decode batches of up to this many sequences replay CUDA graphs (batch padded to a power of 2).
/// Measured on the H100 (`cuda_bench`, 2026-12-06): graphs win up to 64 (1.05-1.10x) and lose
/// at 256 (0.86x Gemma, 0.92x Qwen), where launch overhead no longer matters.
pub const MAX_GRAPH_BATCH: usize = 64;

/// One captured decode step for `bucket` sequences of one token each.
struct DecodeGraph {
    /// Block-table entries the captured launches allow.
    table_cap: usize,
    /// The step's metadata, read by the captured launches: `[ids | positions | slots | tok_seq |
    /// bt_off | logits rows]` (`bucket` each) then `table_cap` block-table entries.
    meta: CudaSlice<u32>,
    graph: SendGraph,
}

/// A [`CudaGraph`] owned by one backend.
struct SendGraph(CudaGraph);
// SAFETY: a graph is only touched through `&mut CudaBackend` (never shared between threads at
// once: no `Sync`), and the CUDA objects it names are usable from any thread of the process.
unsafe impl Send for SendGraph {}

/// CUDA graph state of a backend.
struct Graphs {
    enabled: bool,
    /// Why graphs are off, when they are.
    off_reason: Option<String>,
    /// By `log2(bucket)`.
    by_bucket: Vec<Option<DecodeGraph>>,
}

impl Graphs {
    fn clear(&mut self) {
        self.by_bucket.iter_mut().for_each(|g| *g = None);
    }
}

/// What the last forward step did (see [`CudaBackend::last_step`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    /// Whether it replayed a CUDA graph.
    pub graph: bool,
    /// Rows it ran (the padded bucket for a graph replay).
    pub rows_launched: usize,
    /// Driver activity of the step, including its read-back.
    pub counters: DeviceCounters,
    /// Host time from the call until all work was enqueued (before the read-back wait), in
    /// seconds.
    pub host_enqueue_s: f64,
    /// Host time of the whole call, in seconds.
    pub wall_s: f64,
    /// Device time between events around the step's work (only with
    /// [`CudaBackend::set_profiling`]), in milliseconds.
    pub gpu_ms: Option<f32>,
}

/// The CUDA backend: owns the model weights (bf16 on the device), the paged f16 KV cache and the
/// activation buffers of one GPU.
pub struct CudaBackend {
    gpu: Gpu,
    cfg: ModelConfig,
    embed: CudaSlice<u16>,
    /// `None` when the output projection is the (tied) embedding.
    output: Option<CudaSlice<u16>>,
    output_norm: CudaSlice<f32>,
    layers: Vec<Layer>,
    inv_freq_global: CudaSlice<f32>,
    inv_freq_local: CudaSlice<f32>,
    kv: Option<KvCache>,
    scratch: Scratch,
    weight_bytes: u64,
    step_weight_bytes: u64,
    graphs: Graphs,
    /// Host copy of the step's metadata (reused, so a step allocates nothing on the host).
    meta_host: Vec<u32>,
    /// Page-locked staging buffer of the metadata upload.
    staging: Option<PinnedHostSlice<u32>>,
    /// Logits handed back by the engine (`recycle_logits`), reused by the next `forward` so that
    /// a step does not allocate and zero-fill a fresh vocabulary-sized buffer per row.
    spare_logits: Vec<f32>,
    profiling: bool,
    last: StepStats,
}

impl CudaBackend {
    /// Opens CUDA device `ordinal`, compiles the kernels and uploads the weights of `config` from
    /// `weights` (GGUF tensor names; any supported [`GgmlType`], dequantized to bf16 on the host).
    ///
    /// Fails with [`BackendError::Unavailable`] when there is no usable GPU or CUDA library.
    pub fn load(
        ordinal: usize,
        config: &ModelConfig,
        weights: &dyn WeightSource,
    ) -> Result<Self, BackendError> {
        check_config(config)?;
        let gpu = Gpu::open(ordinal)?;
        let c = config;
        let mut weight_bytes = 0u64;
        let mut step_weight_bytes = 0u64;
        let mut up_mat =
            |gpu: &Gpu, host: Vec<u16>, per_step: bool| -> Result<CudaSlice<u16>, BackendError> {
                weight_bytes += 2 * host.len() as u64;
                if per_step {
                    step_weight_bytes += 2 * host.len() as u64;
                }
                gpu.upload(&host)
            };
        let embed_t = matrix(weights, "token_embd.weight", c.hidden, c.vocab_size)?;
        let embed = up_mat(&gpu, stacked_bf16(&[&embed_t]), c.tied_embeddings)?;
        drop(embed_t);
        let output = if c.tied_embeddings {
            None
        } else {
            let t = matrix(weights, "output.weight", c.hidden, c.vocab_size)?;
            Some(up_mat(&gpu, stacked_bf16(&[&t]), true)?)
        };
        let output_norm = gpu.upload(&vector(weights, "output_norm.weight", c.hidden)?)?;
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let dev_vec = |v: Option<Vec<f32>>| v.map(|v| gpu.upload(&v)).transpose();
            let wq = matrix(weights, &n("attn_q.weight"), c.hidden, qd)?;
            let wk = matrix(weights, &n("attn_k.weight"), c.hidden, kvd)?;
            let wv = matrix(weights, &n("attn_v.weight"), c.hidden, kvd)?;
            let qkv = up_mat(&gpu, stacked_bf16(&[&wq, &wk, &wv]), true)?;
            let bq = opt_vector(weights, &n("attn_q.bias"), qd)?;
            let bk = opt_vector(weights, &n("attn_k.bias"), kvd)?;
            let bv = opt_vector(weights, &n("attn_v.bias"), kvd)?;
            let qkv_bias = if bq.is_some() || bk.is_some() || bv.is_some() {
                let mut b = bq.unwrap_or_else(|| vec![0.0; qd]);
                b.extend(bk.unwrap_or_else(|| vec![0.0; kvd]));
                b.extend(bv.unwrap_or_else(|| vec![0.0; kvd]));
                Some(b)
            } else {
                None
            };
            let post = |s: &str| {
                if c.post_norms {
                    vector(weights, &n(s), c.hidden).map(Some)
                } else {
                    Ok(None)
                }
            };
            let qkn = |s: &str| {
                if c.qk_norm {
                    vector(weights, &n(s), c.head_dim).map(Some)
                } else {
                    Ok(None)
                }
            };
            let wo = matrix(weights, &n("attn_output.weight"), qd, c.hidden)?;
            let gate = matrix(weights, &n("ffn_gate.weight"), c.hidden, c.ffn)?;
            let up = matrix(weights, &n("ffn_up.weight"), c.hidden, c.ffn)?;
            let down = matrix(weights, &n("ffn_down.weight"), c.ffn, c.hidden)?;
            layers.push(Layer {
                attn_norm: gpu.upload(&vector(weights, &n("attn_norm.weight"), c.hidden)?)?,
                qkv,
                qkv_bias: dev_vec(qkv_bias)?,
                q_norm: dev_vec(qkn("attn_q_norm.weight")?)?,
                k_norm: dev_vec(qkn("attn_k_norm.weight")?)?,
                wo: up_mat(&gpu, stacked_bf16(&[&wo]), true)?,
                post_attn_norm: dev_vec(post("post_attention_norm.weight")?)?,
                ffn_norm: gpu.upload(&vector(weights, &n("ffn_norm.weight"), c.hidden)?)?,
                gate_up: up_mat(&gpu, stacked_bf16(&[&gate, &up]), true)?,
                down: up_mat(&gpu, stacked_bf16(&[&down]), true)?,
                post_ffn_norm: dev_vec(post("post_ffw_norm.weight")?)?,
                attention: c.layers[i],
            });
        }
        let inv_freq_global = gpu.upload(&c.inv_freq_global())?;
        let inv_freq_local = gpu.upload(&c.inv_freq_local())?;
        let scratch = Scratch::new(&gpu)?;
        let graphs_from_env = std::env::var("SWITCHYARD_CUDA_GRAPHS").map_or(true, |v| v != "0");
        gpu.synchronize()?;
        tracing::info!(
            "CUDA backend on {}: {:.1} MiB of bf16 weights, kernels {} ({})",
            gpu.info.name,
            weight_bytes as f64 / (1 << 20) as f64,
            gpu.build.arch,
            if gpu.build.from_cache {
                "cached"
            } else {
                "compiled"
            }
        );
        Ok(Self {
            gpu,
            cfg: c.clone(),
            embed,
            output,
            output_norm,
            layers,
            inv_freq_global,
            inv_freq_local,
            kv: None,
            scratch,
            weight_bytes,
            step_weight_bytes,
            graphs: Graphs {
                enabled: graphs_from_env,
                off_reason: (!graphs_from_env).then(|| "SWITCHYARD_CUDA_GRAPHS=0".to_string()),
                by_bucket: (0..=MAX_GRAPH_BATCH.trailing_zeros())
                    .map(|_| None)
                    .collect(),
            },
            meta_host: Vec::new(),
            staging: None,
            spare_logits: Vec::new(),
            profiling: false,
            last: StepStats::default(),
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device this backend runs on.
    pub fn device(&self) -> &CudaDeviceInfo {
        &self.gpu.info
    }

    /// How the kernels were obtained (compiled now or loaded from the disk cache).
    pub fn kernel_build(&self) -> &KernelBuild {
        &self.gpu.build
    }

    /// Bytes of weights resident on the device.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Bytes of weights every forward step reads (all layer matrices and the output projection;
    /// the embedding gather reads only the rows of the batch's tokens): the memory-bandwidth
    /// floor of a decode step.
    pub fn step_weight_bytes(&self) -> u64 {
        self.step_weight_bytes
    }

    /// Turns CUDA graphs for decode steps on or off (initially on unless the environment has
    /// `SWITCHYARD_CUDA_GRAPHS=0`). Graphs already captured are kept for when they are turned
    /// on again.
    pub fn set_cuda_graphs(&mut self, on: bool) {
        self.graphs.enabled = on;
        self.graphs.off_reason = (!on).then(|| "turned off by set_cuda_graphs".to_string());
    }

    /// Whether decode steps replay CUDA graphs, or why not.
    pub fn cuda_graphs(&self) -> Result<(), String> {
        match &self.graphs.off_reason {
            None if self.graphs.enabled => Ok(()),
            Some(r) => Err(r.clone()),
            None => Err("off".into()),
        }
    }

    /// Records device-side timing events around every step (see [`StepStats::gpu_ms`]); costs
    /// two event records and a wait per step.
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
    }

    /// What the last forward step did: graph replay or not, driver calls, host and device time.
    pub fn last_step(&self) -> StepStats {
        self.last
    }

    /// Driver activity since the device was opened.
    pub fn counters(&self) -> DeviceCounters {
        self.gpu.counters()
    }

    /// Runs the batch like [`Backend::forward`] but returns only the greedy token (argmax, lowest
    /// id on ties) of each row of `logits_indices`, computed on the device.
    pub fn forward_argmax(&mut self, batch: &ForwardBatch) -> Result<Vec<u32>, BackendError> {
        let t0 = Instant::now();
        let c0 = self.gpu.counters();
        let (m, ev) = self.compute(batch)?;
        let mut out = vec![0u32; m];
        if m > 0 {
            let logits = DBuf::of(&self.scratch.logits);
            self.gpu.argmax(
                logits,
                m,
                self.cfg.vocab_size,
                DBuf::of(&self.scratch.argmax),
            )?;
        }
        self.finish(t0, c0, ev, |me| {
            me.gpu.download(&me.scratch.argmax, &mut out)
        })?;
        if trace_steps() {
            tracing::info!(
                target: "switchyard_cuda_trace",
                "cuda argmax step: {}: argmax {out:?}",
                trace_shape(batch, self.last.graph)
            );
        }
        Ok(out)
    }

    /// Ends a step: the end event (when profiling), the read-back `read` (which waits for the
    /// stream) and the step's statistics.
    fn finish(
        &mut self,
        t0: Instant,
        c0: DeviceCounters,
        start_ev: Option<cudarc::driver::CudaEvent>,
        read: impl FnOnce(&Self) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let end_ev = match start_ev {
            Some(_) => Some(self.gpu.timing_event()?),
            None => None,
        };
        let enqueue = t0.elapsed().as_secs_f64();
        read(self)?;
        let gpu_ms = match (start_ev, end_ev) {
            (Some(a), Some(b)) => a.elapsed_ms(&b).ok(),
            _ => None,
        };
        self.last.counters = self.gpu.counters().since(&c0);
        self.last.host_enqueue_s = enqueue;
        self.last.wall_s = t0.elapsed().as_secs_f64();
        self.last.gpu_ms = gpu_ms;
        Ok(())
    }

    fn validate(&self, batch: &ForwardBatch) -> Result<&KvCache, BackendError> {
        let kv = self.kv.as_ref().ok_or(BackendError::NoKvCache)?;
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
        if let Some(&id) = batch
            .token_ids
            .iter()
            .find(|&&id| id as usize >= self.cfg.vocab_size)
        {
            return Err(BackendError::InvalidBatch(format!(
                "token id {id} out of range (vocab {})",
                self.cfg.vocab_size
            )));
        }
        Ok(kv)
    }

    /// Grows the activation buffers; any growth moves buffers the graphs point at, so it drops
    /// them (they are captured again on demand).
    fn ensure_scratch(&mut self, dims: (usize, usize, usize)) -> Result<(), BackendError> {
        if self.scratch.ensure(&self.gpu, &self.cfg, dims)? {
            self.graphs.clear();
        }
        Ok(())
    }

    /// Runs the whole model over the batch, leaving the logits of the `logits_indices` rows in
    /// the first rows of `scratch.logits`; returns their number (and the start event when
    /// profiling). Decode-only batches of up to [`MAX_GRAPH_BATCH`] sequences replay a CUDA
    /// graph when graphs are on.
    fn compute(
        &mut self,
        batch: &ForwardBatch,
    ) -> Result<(usize, Option<cudarc::driver::CudaEvent>), BackendError> {
        let kv = self.validate(batch)?;
        let bs = kv.block_size;
        let n = batch.num_tokens();
        let m = batch.logits_indices.len();
        self.last = StepStats::default();
        if n == 0 {
            return Ok((0, None));
        }
        let ev = if self.profiling {
            Some(self.gpu.timing_event()?)
        } else {
            None
        };
        let decode = batch.seqs.iter().all(|s| s.len == 1) && n <= MAX_GRAPH_BATCH && m <= n;
        if self.graphs.enabled && decode {
            self.replay(batch)?;
            if self.last.graph {
                return Ok((m, ev));
            }
        }
        let t = pack_meta(batch, bs, None, &mut self.meta_host);
        self.ensure_scratch((n, m, self.meta_host.len()))?;
        upload_meta(
            &self.gpu,
            &mut self.staging,
            &self.meta_host,
            &mut self.scratch.meta,
        )?;
        let lay = StepLayout::of(DBuf::of(&self.scratch.meta), n, batch.seqs.len(), m, t)?;
        self.enqueue(&lay)?;
        self.last.rows_launched = n;
        Ok((m, ev))
    }

    /// The graph path of [`compute`](Self::compute) for a decode batch: pads it to its bucket,
    /// captures the bucket's graph if needed, uploads the metadata and replays. Sets
    /// `last.graph` when it replayed; a failed capture turns graphs off (logged) and leaves the
    /// step to the launch-by-launch path.
    fn replay(&mut self, batch: &ForwardBatch) -> Result<(), BackendError> {
        let kv = self.kv.as_ref().ok_or(BackendError::NoKvCache)?;
        let (bs, reserved) = (kv.block_size, kv.num_blocks as u32);
        let n = batch.num_tokens();
        let bucket = n.next_power_of_two();
        let t = pack_meta(batch, bs, Some((bucket, reserved)), &mut self.meta_host);
        self.ensure_scratch((bucket, bucket, 0))?;
        let slot = bucket.trailing_zeros() as usize;
        if self.graphs.by_bucket[slot]
            .as_ref()
            .is_none_or(|g| g.table_cap < t)
        {
            self.graphs.by_bucket[slot] = None;
            let table_cap = (16 * bucket).max(t.next_power_of_two());
            match self.capture(bucket, table_cap) {
                Ok(g) => self.graphs.by_bucket[slot] = Some(g),
                Err(e) => {
                    let reason =
                        format!("capturing the decode graph of batch {bucket} failed: {e}");
                    tracing::warn!("{reason}; CUDA graphs are off for this backend");
                    self.graphs.enabled = false;
                    self.graphs.off_reason = Some(reason);
                    self.graphs.clear();
                    return Ok(());
                }
            }
        }
        let g = self.graphs.by_bucket[slot]
            .as_mut()
            .expect("graph captured above");
        upload_meta(&self.gpu, &mut self.staging, &self.meta_host, &mut g.meta)?;
        self.gpu.launch_graph(&g.graph.0)?;
        self.last.graph = true;
        self.last.rows_launched = bucket;
        Ok(())
    }

    /// Captures one decode step of `bucket` one-token sequences (block tables of up to
    /// `table_cap` entries in all) into a graph reading its metadata from a buffer of its own.
    fn capture(&self, bucket: usize, table_cap: usize) -> Result<DecodeGraph, BackendError> {
        let meta = self.gpu.zeros::<u32>(6 * bucket + table_cap)?;
        let lay = StepLayout::of(DBuf::of(&meta), bucket, bucket, bucket, table_cap)?;
        // Nothing of ours may be in flight on the stream while it captures.
        self.gpu.synchronize()?;
        self.gpu.begin_capture()?;
        let launched = self.enqueue(&lay);
        let graph = self.gpu.end_capture();
        launched?;
        let graph = graph?;
        tracing::debug!("captured the decode graph of batch {bucket} ({table_cap} table entries)");
        Ok(DecodeGraph {
            table_cap,
            meta,
            graph: SendGraph(graph),
        })
    }

    /// Enqueues the whole forward pass for the step described by `lay` (no host waits, no
    /// allocation, no copies: safe to capture).
    fn enqueue(&self, lay: &StepLayout) -> Result<(), BackendError> {
        let c = &self.cfg;
        let g = &self.gpu;
        let sc = &self.scratch;
        let kv = self.kv.as_ref().ok_or(BackendError::NoKvCache)?;
        let (bs, num_blocks) = (kv.block_size, kv.total_blocks);
        let (n, m, n_seqs) = (lay.n, lay.m, lay.n_seqs);
        let (ids, positions, slots, tok_seq, bt_off, tables, rows_idx) = (
            lay.ids,
            lay.positions,
            lay.slots,
            lay.tok_seq,
            lay.bt_off,
            lay.tables,
            lay.rows_idx,
        );

        let (qd, kvd, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
        let qkv_w = qd + 2 * kvd;
        let x = DBuf::of(&sc.x);
        let h = DBuf::of(&sc.h);
        let qkv = DBuf::of(&sc.qkv);
        let attn = DBuf::of(&sc.attn);
        let o = DBuf::of(&sc.o);
        let gu = DBuf::of(&sc.gu);
        let act = DBuf::of(&sc.act);
        let eps = c.rms_eps;
        let opt = |b: &Option<CudaSlice<f32>>| b.as_ref().map(DBuf::of);

        g.embed(
            DBuf::of(&self.embed),
            c.vocab_size,
            ids,
            x,
            (n, c.hidden, c.embed_scale),
        )?;
        if let Some(first) = self.layers.first() {
            g.rmsnorm(&RmsNormArgs {
                x,
                x_rows: n,
                rows: None,
                w: DBuf::of(&first.attn_norm),
                out: Out::Bf16(h),
                n_rows: n,
                n: c.hidden,
                eps,
            })?;
        }
        for (li, l) in self.layers.iter().enumerate() {
            g.gemm(&GemmArgs {
                w: DBuf::of(&l.qkv),
                x: h,
                out: qkv,
                rows: qkv_w,
                cols: c.hidden,
                n,
            })?;
            if let Some(b) = &l.qkv_bias {
                g.add_bias(qkv, DBuf::of(b), n, qkv_w)?;
            }
            let (inv, window) = match l.attention {
                LayerAttention::Global => (&self.inv_freq_global, 0),
                LayerAttention::Sliding { window } => (&self.inv_freq_local, window),
            };
            g.head_norm_rope(&HeadNormRopeArgs {
                qkv,
                n_tokens: n,
                row_stride: qkv_w,
                n_q_heads: c.n_heads,
                n_k_heads: c.n_kv_heads,
                head_dim: hd,
                q_norm: opt(&l.q_norm),
                k_norm: opt(&l.k_norm),
                eps,
                positions,
                inv_freq: DBuf::of(inv),
                neox: c.arch.rope_neox(),
                q_scale: c.query_scale,
            })?;
            let (kc, vc) = (DBuf::of(&kv.k[li]), DBuf::of(&kv.v[li]));
            g.kv_write(&KvWriteArgs {
                qkv,
                n_tokens: n,
                row_stride: qkv_w,
                k_off: qd,
                v_off: qd + kvd,
                kv_dim: kvd,
                slots,
                k_cache: kc,
                v_cache: vc,
            })?;
            g.attention(&AttentionArgs {
                q: qkv,
                q_stride: qkv_w,
                k_cache: kc,
                v_cache: vc,
                out: Out::Bf16(attn),
                out_stride: qd,
                n_tokens: n,
                positions,
                tok_seq,
                bt_off,
                n_seqs,
                block_tables: tables,
                num_blocks,
                block_size: bs,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                head_dim: hd,
                window,
            })?;
            g.gemm(&GemmArgs {
                w: DBuf::of(&l.wo),
                x: attn,
                out: o,
                rows: c.hidden,
                cols: qd,
                n,
            })?;
            g.residual_rmsnorm(&ResidualArgs {
                x,
                o,
                post_w: opt(&l.post_attn_norm),
                next_w: Some(DBuf::of(&l.ffn_norm)),
                h,
                n_rows: n,
                n: c.hidden,
                eps,
            })?;
            g.gemm(&GemmArgs {
                w: DBuf::of(&l.gate_up),
                x: h,
                out: gu,
                rows: 2 * c.ffn,
                cols: c.hidden,
                n,
            })?;
            let act_id = match c.activation {
                Activation::GeluTanh => 0,
                Activation::Silu => 1,
            };
            g.act_mul(gu, Out::Bf16(act), (n, c.ffn, act_id))?;
            g.gemm(&GemmArgs {
                w: DBuf::of(&l.down),
                x: act,
                out: o,
                rows: c.hidden,
                cols: c.ffn,
                n,
            })?;
            g.residual_rmsnorm(&ResidualArgs {
                x,
                o,
                post_w: opt(&l.post_ffn_norm),
                next_w: self.layers.get(li + 1).map(|nl| DBuf::of(&nl.attn_norm)),
                h,
                n_rows: n,
                n: c.hidden,
                eps,
            })?;
        }
        if m > 0 {
            let final_h = DBuf::of(&sc.final_h);
            let logits = DBuf::of(&sc.logits);
            g.rmsnorm(&RmsNormArgs {
                x,
                x_rows: n,
                rows: Some(rows_idx),
                w: DBuf::of(&self.output_norm),
                out: Out::Bf16(final_h),
                n_rows: m,
                n: c.hidden,
                eps,
            })?;
            let out_w = DBuf::of(self.output.as_ref().unwrap_or(&self.embed));
            g.gemm(&GemmArgs {
                w: out_w,
                x: final_h,
                out: logits,
                rows: c.vocab_size,
                cols: c.hidden,
                n: m,
            })?;
            if let Some(cap) = c.final_logit_softcap {
                g.softcap(logits, m * c.vocab_size, cap)?;
            }
        }
        Ok(())
    }
}

impl Backend for CudaBackend {
    fn capabilities(&self) -> BackendCapabilities {
        let (free, total) = self
            .gpu
            .mem_info()
            .map_or((None, None), |(f, t)| (Some(f), Some(t)));
        BackendCapabilities {
            kind: "cuda",
            device_name: self.gpu.info.name.clone(),
            total_memory: total.or(Some(self.gpu.info.total_memory)),
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
        // The graphs point at the old cache.
        self.graphs.clear();
        let total_blocks = config.num_blocks + 1;
        let slots = total_blocks
            .checked_mul(config.block_size)
            .filter(|&s| s <= u32::MAX as usize)
            .ok_or_else(|| BackendError::OutOfMemory("KV cache slots exceed 2^32".into()))?;
        let n = slots * self.cfg.kv_dim();
        let mut k = Vec::with_capacity(self.cfg.n_layers);
        let mut v = Vec::with_capacity(self.cfg.n_layers);
        for _ in 0..self.cfg.n_layers {
            k.push(self.gpu.zeros::<u16>(n)?);
            v.push(self.gpu.zeros::<u16>(n)?);
        }
        self.gpu.synchronize()?;
        self.kv = Some(KvCache {
            block_size: config.block_size,
            num_blocks: config.num_blocks,
            total_blocks,
            k,
            v,
        });
        Ok(KvCacheInfo {
            block_size: config.block_size,
            num_blocks: config.num_blocks,
            bytes_per_block: self.kv_bytes_per_block(config.block_size),
        })
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError> {
        let t0 = Instant::now();
        let c0 = self.gpu.counters();
        let (m, ev) = self.compute(batch)?;
        // The download overwrites every entry: a recycled buffer is only resized, not cleared.
        let mut data = std::mem::take(&mut self.spare_logits);
        data.resize(m * self.cfg.vocab_size, 0.0);
        self.finish(t0, c0, ev, |me| {
            me.gpu.download(&me.scratch.logits, &mut data)
        })?;
        if trace_steps() {
            trace_step(batch, &data, self.cfg.vocab_size, self.last.graph);
        }
        Ok(Logits {
            vocab: self.cfg.vocab_size,
            data,
        })
    }

    fn recycle_logits(&mut self, logits: Logits) {
        self.spare_logits = logits.data;
    }

    /// The device argmax of [`CudaBackend::forward_argmax`]; `None` when `vocab_limit` cuts
    /// the rows short (the kernel scans whole rows).
    fn forward_greedy(
        &mut self,
        batch: &ForwardBatch,
        vocab_limit: usize,
    ) -> Option<Result<Vec<u32>, BackendError>> {
        (vocab_limit >= self.cfg.vocab_size).then(|| self.forward_argmax(batch))
    }

    fn copy_blocks(&mut self, pairs: &[(BlockId, BlockId)]) -> Result<(), BackendError> {
        let kv = self.kv.as_ref().ok_or(BackendError::NoKvCache)?;
        if pairs.is_empty() {
            return Ok(());
        }
        for &(s, d) in pairs {
            if s.0 as usize >= kv.num_blocks || d.0 as usize >= kv.num_blocks {
                return Err(BackendError::InvalidBatch(format!(
                    "block copy {s:?} -> {d:?} out of range"
                )));
            }
        }
        let flat: Vec<u32> = pairs.iter().flat_map(|&(s, d)| [s.0, d.0]).collect();
        let dev_pairs = self.gpu.upload(&flat)?;
        let all = DBuf::of(&dev_pairs);
        // One launch copies all pairs at once only when no block is both a source and a
        // destination and no destination repeats; otherwise copy in order, pair by pair (the
        // CPU backend's sequential semantics).
        let mut dsts: Vec<u32> = pairs.iter().map(|p| p.1 .0).collect();
        dsts.sort_unstable();
        let independent = dsts.windows(2).all(|w| w[0] != w[1])
            && pairs.iter().all(|p| dsts.binary_search(&p.0 .0).is_err());
        let block_elems = kv.block_size * self.cfg.kv_dim();
        let dims = (kv.total_blocks, block_elems);
        for cache in kv.k.iter().chain(kv.v.iter()) {
            if independent {
                self.gpu
                    .copy_blocks(DBuf::of(cache), all, pairs.len(), dims)?;
            } else {
                for p in 0..pairs.len() {
                    self.gpu
                        .copy_blocks(DBuf::of(cache), all.slice(2 * p, 2)?, 1, dims)?;
                }
            }
        }
        self.gpu.synchronize()
    }
}
