//! Host-level entry points to each kernel of the backend: upload the inputs, launch, download.
//!
//! They exist so the kernels can be tested one by one against scalar reference code
//! (`tests/kernels.rs`) and timed in isolation; the model itself chains the kernels on the device
//! without these copies.

use half::{bf16, f16};
use switchyard_core::{Activation, BackendError, SeqInBatch};

use crate::gpu::{
    AttentionArgs, DBuf, GemmArgs, Gpu, HeadNormRopeArgs, KvWriteArgs, Out, ResidualArgs,
    RmsNormArgs,
};
use crate::{CudaDeviceInfo, KernelBuild};

fn invalid(msg: String) -> BackendError {
    BackendError::InvalidBatch(msg)
}

fn to_bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|x| bf16::from_f32(*x).to_bits()).collect()
}

fn from_bf16_bits(v: &[u16]) -> Vec<f32> {
    v.iter().map(|b| bf16::from_bits(*b).to_f32()).collect()
}

/// Inputs of [`GpuOps::head_norm_rope`]: `n_tokens` rows of `row_stride` floats holding
/// `n_q_heads` query heads then `n_k_heads` key heads of `head_dim` (then anything, e.g. values).
#[derive(Debug, Clone)]
pub struct HeadNormRope<'a> {
    /// The rows, `[n_tokens, row_stride]`.
    pub qkv: &'a [f32],
    /// Floats per row.
    pub row_stride: usize,
    /// Query heads at the start of each row.
    pub n_q_heads: usize,
    /// Key heads after them.
    pub n_k_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// RMSNorm weight of query heads (`head_dim`), if any.
    pub q_norm: Option<&'a [f32]>,
    /// RMSNorm weight of key heads (`head_dim`), if any.
    pub k_norm: Option<&'a [f32]>,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Position of each row.
    pub positions: &'a [u32],
    /// `base^(-2i/head_dim)` for `i < head_dim/2`.
    pub inv_freq: &'a [f32],
    /// NEOX pairs (i, i + d/2) when true, else (2i, 2i+1).
    pub neox: bool,
    /// Factor applied to query heads after RoPE.
    pub q_scale: f32,
}

/// Inputs of [`GpuOps::paged_attention`]: this step's tokens (queries, new keys and values) of
/// several sequences, and the cache contents before the step.
#[derive(Debug, Clone)]
pub struct PagedAttention<'a> {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Tokens per cache block.
    pub block_size: usize,
    /// Blocks in the cache.
    pub num_blocks: usize,
    /// Sliding window (0: global causal attention).
    pub window: usize,
    /// Queries `[n_tokens, n_heads * head_dim]` (already rotated and scaled).
    pub q: &'a [f32],
    /// This step's keys `[n_tokens, n_kv_heads * head_dim]`, written to the cache first.
    pub new_k: &'a [f32],
    /// This step's values, like `new_k`.
    pub new_v: &'a [f32],
    /// Key cache before the step, `[num_blocks * block_size, n_kv_heads * head_dim]`.
    pub k_cache: &'a [f16],
    /// Value cache before the step.
    pub v_cache: &'a [f16],
    /// The sequences (offsets, lengths, contexts, block tables), as in a `ForwardBatch`.
    pub seqs: &'a [SeqInBatch],
}

/// Output of [`GpuOps::paged_attention`].
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// `[n_tokens, n_heads * head_dim]`.
    pub out: Vec<f32>,
    /// Key cache after the step.
    pub k_cache: Vec<f16>,
    /// Value cache after the step.
    pub v_cache: Vec<f16>,
}

/// One CUDA device with the backend's kernels, driven from host memory.
pub struct GpuOps {
    gpu: Gpu,
}

impl GpuOps {
    /// Opens device `ordinal` and compiles (or loads cached) kernels.
    pub fn new(ordinal: usize) -> Result<Self, BackendError> {
        Ok(Self {
            gpu: Gpu::open(ordinal)?,
        })
    }

    /// The device.
    pub fn device(&self) -> &CudaDeviceInfo {
        &self.gpu.info
    }

    /// How the kernels were obtained.
    pub fn kernel_build(&self) -> &KernelBuild {
        &self.gpu.build
    }

    fn fetch_f32(
        &self,
        b: &cudarc::driver::CudaSlice<f32>,
        n: usize,
    ) -> Result<Vec<f32>, BackendError> {
        let mut out = vec![0f32; n];
        self.gpu.download(b, &mut out)?;
        Ok(out)
    }

    fn fetch_bf16(
        &self,
        b: &cudarc::driver::CudaSlice<u16>,
        n: usize,
    ) -> Result<Vec<f32>, BackendError> {
        let mut out = vec![0u16; n];
        self.gpu.download(b, &mut out)?;
        Ok(from_bf16_bits(&out))
    }

    /// `out[t, r] = sum_c w[r, c] x[t, c]` with `w` (`[rows, cols]`) and `x` (`[n, cols]`) rounded
    /// to bf16 first, as the model's GEMMs see them.
    pub fn gemm_bf16(
        &self,
        w: &[f32],
        rows: usize,
        x: &[f32],
        n: usize,
    ) -> Result<Vec<f32>, BackendError> {
        let cols = w.len().checked_div(rows).unwrap_or(0);
        if w.len() != rows * cols || x.len() != n * cols {
            return Err(invalid(format!(
                "gemm shapes: w {} for {rows} rows, x {} for {n} rows",
                w.len(),
                x.len()
            )));
        }
        let dw = self.gpu.upload(&to_bf16_bits(w))?;
        let dx = self.gpu.upload(&to_bf16_bits(x))?;
        let out = self.gpu.zeros::<f32>(n * rows)?;
        self.gpu.gemm(&GemmArgs {
            w: DBuf::of(&dw),
            x: DBuf::of(&dx),
            out: DBuf::of(&out),
            rows,
            cols,
            n,
        })?;
        self.fetch_f32(&out, n * rows)
    }

    /// RMSNorm of each `w.len()`-wide row of `x`, scaled by `w` (f32 output).
    pub fn rmsnorm(&self, x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>, BackendError> {
        let n = w.len();
        let rows = x.len() / n.max(1);
        let dx = self.gpu.upload(x)?;
        let dw = self.gpu.upload(w)?;
        let out = self.gpu.zeros::<f32>(x.len())?;
        self.gpu.rmsnorm(&RmsNormArgs {
            x: DBuf::of(&dx),
            x_rows: rows,
            rows: None,
            w: DBuf::of(&dw),
            out: Out::F32(DBuf::of(&out)),
            n_rows: rows,
            n,
            eps,
        })?;
        self.fetch_f32(&out, x.len())
    }

    /// RMSNorm of the rows `rows` of `x` (in that order), bf16 output returned as f32.
    pub fn rmsnorm_gather_bf16(
        &self,
        x: &[f32],
        rows: &[u32],
        w: &[f32],
        eps: f32,
    ) -> Result<Vec<f32>, BackendError> {
        let n = w.len();
        let x_rows = x.len() / n.max(1);
        if let Some(bad) = rows.iter().find(|&&r| r as usize >= x_rows) {
            return Err(invalid(format!("row {bad} of {x_rows}")));
        }
        let dx = self.gpu.upload(x)?;
        let dr = self.gpu.upload(rows)?;
        let dw = self.gpu.upload(w)?;
        let out = self.gpu.zeros::<u16>(rows.len() * n)?;
        self.gpu.rmsnorm(&RmsNormArgs {
            x: DBuf::of(&dx),
            x_rows,
            rows: Some(DBuf::of(&dr)),
            w: DBuf::of(&dw),
            out: Out::Bf16(DBuf::of(&out)),
            n_rows: rows.len(),
            n,
            eps,
        })?;
        self.fetch_bf16(&out, rows.len() * n)
    }

    /// `x += post_w ? rmsnorm(o) * post_w : o`, then `h = bf16(rmsnorm(x) * next_w)`; returns
    /// `(x, h)` (`h` empty without `next_w`). Rows are `width` wide.
    pub fn residual_rmsnorm(
        &self,
        x: &[f32],
        o: &[f32],
        width: usize,
        (post_w, next_w): (Option<&[f32]>, Option<&[f32]>),
        eps: f32,
    ) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
        let rows = x.len() / width.max(1);
        let dx = self.gpu.upload(x)?;
        let d_o = self.gpu.upload(o)?;
        let dp = post_w.map(|w| self.gpu.upload(w)).transpose()?;
        let dn = next_w.map(|w| self.gpu.upload(w)).transpose()?;
        let h = self.gpu.zeros::<u16>(x.len())?;
        self.gpu.residual_rmsnorm(&ResidualArgs {
            x: DBuf::of(&dx),
            o: DBuf::of(&d_o),
            post_w: dp.as_ref().map(DBuf::of),
            next_w: dn.as_ref().map(DBuf::of),
            h: DBuf::of(&h),
            n_rows: rows,
            n: width,
            eps,
        })?;
        let x_out = self.fetch_f32(&dx, x.len())?;
        let h_out = if next_w.is_some() {
            self.fetch_bf16(&h, x.len())?
        } else {
            Vec::new()
        };
        Ok((x_out, h_out))
    }

    /// `y[r, :] += b` for each `b.len()`-wide row.
    pub fn add_bias(&self, y: &[f32], b: &[f32]) -> Result<Vec<f32>, BackendError> {
        let dy = self.gpu.upload(y)?;
        let db = self.gpu.upload(b)?;
        self.gpu.add_bias(
            DBuf::of(&dy),
            DBuf::of(&db),
            y.len() / b.len().max(1),
            b.len(),
        )?;
        self.fetch_f32(&dy, y.len())
    }

    /// Per-head RMSNorm (when weights are given), RoPE and query scale, in place; returns the rows.
    pub fn head_norm_rope(&self, p: &HeadNormRope<'_>) -> Result<Vec<f32>, BackendError> {
        let n_tokens = p.positions.len();
        if p.qkv.len() != n_tokens * p.row_stride {
            return Err(invalid(format!(
                "{} floats for {n_tokens} rows of {}",
                p.qkv.len(),
                p.row_stride
            )));
        }
        let d = self.gpu.upload(p.qkv)?;
        let qn = p.q_norm.map(|w| self.gpu.upload(w)).transpose()?;
        let kn = p.k_norm.map(|w| self.gpu.upload(w)).transpose()?;
        let pos = self.gpu.upload(p.positions)?;
        let inv = self.gpu.upload(p.inv_freq)?;
        self.gpu.head_norm_rope(&HeadNormRopeArgs {
            qkv: DBuf::of(&d),
            n_tokens,
            row_stride: p.row_stride,
            n_q_heads: p.n_q_heads,
            n_k_heads: p.n_k_heads,
            head_dim: p.head_dim,
            q_norm: qn.as_ref().map(DBuf::of),
            k_norm: kn.as_ref().map(DBuf::of),
            eps: p.eps,
            positions: DBuf::of(&pos),
            inv_freq: DBuf::of(&inv),
            neox: p.neox,
            q_scale: p.q_scale,
        })?;
        self.fetch_f32(&d, p.qkv.len())
    }

    /// `out[t, c] = act(gu[t, c]) * gu[t, ffn + c]` (f32 output).
    pub fn act_mul(
        &self,
        gu: &[f32],
        ffn: usize,
        act: Activation,
    ) -> Result<Vec<f32>, BackendError> {
        let n_tokens = gu.len() / (2 * ffn).max(1);
        let d = self.gpu.upload(gu)?;
        let out = self.gpu.zeros::<f32>(n_tokens * ffn)?;
        let id = match act {
            Activation::GeluTanh => 0,
            Activation::Silu => 1,
        };
        self.gpu
            .act_mul(DBuf::of(&d), Out::F32(DBuf::of(&out)), (n_tokens, ffn, id))?;
        self.fetch_f32(&out, n_tokens * ffn)
    }

    /// Writes this step's keys/values into the cache, then runs paged attention (f32 output).
    pub fn paged_attention(&self, p: &PagedAttention<'_>) -> Result<AttentionOutput, BackendError> {
        let qd = p.n_heads * p.head_dim;
        let kvd = p.n_kv_heads * p.head_dim;
        let n: usize = p.seqs.iter().map(|s| s.len).sum();
        let slots_total = p.num_blocks * p.block_size;
        if p.q.len() != n * qd || p.new_k.len() != n * kvd || p.new_v.len() != n * kvd {
            return Err(invalid("q/k/v lengths do not match the sequences".into()));
        }
        if p.k_cache.len() != slots_total * kvd || p.v_cache.len() != slots_total * kvd {
            return Err(invalid(
                "cache length does not match num_blocks * block_size * kv_dim".into(),
            ));
        }
        // Fused rows [q | k | v], as the model lays them out.
        let stride = qd + 2 * kvd;
        let mut qkv = vec![0f32; n * stride];
        for t in 0..n {
            let row = &mut qkv[t * stride..(t + 1) * stride];
            row[..qd].copy_from_slice(&p.q[t * qd..(t + 1) * qd]);
            row[qd..qd + kvd].copy_from_slice(&p.new_k[t * kvd..(t + 1) * kvd]);
            row[qd + kvd..].copy_from_slice(&p.new_v[t * kvd..(t + 1) * kvd]);
        }
        let mut positions = Vec::with_capacity(n);
        let mut slots = Vec::with_capacity(n);
        let mut tok_seq = Vec::with_capacity(n);
        let mut bt_off = Vec::with_capacity(p.seqs.len());
        let mut tables = Vec::new();
        for (si, s) in p.seqs.iter().enumerate() {
            let needed = (s.context_before + s.len).div_ceil(p.block_size);
            if s.block_table.len() < needed
                || s.block_table.iter().any(|b| b.0 as usize >= p.num_blocks)
            {
                return Err(invalid(format!("sequence {si}: bad block table")));
            }
            bt_off.push(tables.len() as u32);
            tables.extend(s.block_table.iter().map(|b| b.0));
            for i in 0..s.len {
                let pos = s.context_before + i;
                positions.push(pos as u32);
                slots.push(
                    s.block_table[pos / p.block_size].0 * p.block_size as u32
                        + (pos % p.block_size) as u32,
                );
                tok_seq.push(si as u32);
            }
        }
        let bits = |c: &[f16]| c.iter().map(|v| v.to_bits()).collect::<Vec<u16>>();
        let d_qkv = self.gpu.upload(&qkv)?;
        let kc = self.gpu.upload(&bits(p.k_cache))?;
        let vc = self.gpu.upload(&bits(p.v_cache))?;
        let d_pos = self.gpu.upload(&positions)?;
        let d_slots = self.gpu.upload(&slots)?;
        let d_seq = self.gpu.upload(&tok_seq)?;
        let d_off = self.gpu.upload(&bt_off)?;
        let d_tab = self.gpu.upload(&tables)?;
        let out = self.gpu.zeros::<f32>(n * qd)?;
        self.gpu.kv_write(&KvWriteArgs {
            qkv: DBuf::of(&d_qkv),
            n_tokens: n,
            row_stride: stride,
            k_off: qd,
            v_off: qd + kvd,
            kv_dim: kvd,
            slots: DBuf::of(&d_slots),
            k_cache: DBuf::of(&kc),
            v_cache: DBuf::of(&vc),
        })?;
        self.gpu.attention(&AttentionArgs {
            q: DBuf::of(&d_qkv),
            q_stride: stride,
            k_cache: DBuf::of(&kc),
            v_cache: DBuf::of(&vc),
            out: Out::F32(DBuf::of(&out)),
            out_stride: qd,
            n_tokens: n,
            positions: DBuf::of(&d_pos),
            tok_seq: DBuf::of(&d_seq),
            bt_off: DBuf::of(&d_off),
            n_seqs: p.seqs.len(),
            block_tables: DBuf::of(&d_tab),
            num_blocks: p.num_blocks,
            block_size: p.block_size,
            n_heads: p.n_heads,
            n_kv_heads: p.n_kv_heads,
            head_dim: p.head_dim,
            window: p.window,
        })?;
        let out = self.fetch_f32(&out, n * qd)?;
        let mut k_bits = vec![0u16; p.k_cache.len()];
        let mut v_bits = vec![0u16; p.v_cache.len()];
        self.gpu.download(&kc, &mut k_bits)?;
        self.gpu.download(&vc, &mut v_bits)?;
        Ok(AttentionOutput {
            out,
            k_cache: k_bits.into_iter().map(f16::from_bits).collect(),
            v_cache: v_bits.into_iter().map(f16::from_bits).collect(),
        })
    }

    /// `x[t] = bf16(table[ids[t]]) * scale`, table `[vocab, hidden]` given in f32 and rounded to
    /// bf16 as the model stores it.
    pub fn embed(
        &self,
        table: &[f32],
        hidden: usize,
        ids: &[u32],
        scale: f32,
    ) -> Result<Vec<f32>, BackendError> {
        let vocab = table.len() / hidden.max(1);
        let dt = self.gpu.upload(&to_bf16_bits(table))?;
        let di = self.gpu.upload(ids)?;
        let out = self.gpu.zeros::<f32>(ids.len() * hidden)?;
        self.gpu.embed(
            DBuf::of(&dt),
            vocab,
            DBuf::of(&di),
            DBuf::of(&out),
            (ids.len(), hidden, scale),
        )?;
        self.fetch_f32(&out, ids.len() * hidden)
    }

    /// `cap * tanh(x / cap)`.
    pub fn softcap(&self, x: &[f32], cap: f32) -> Result<Vec<f32>, BackendError> {
        let d = self.gpu.upload(x)?;
        self.gpu.softcap(DBuf::of(&d), x.len(), cap)?;
        self.fetch_f32(&d, x.len())
    }

    /// Argmax of each `cols`-wide row (lowest index among equal maxima).
    pub fn argmax(&self, x: &[f32], cols: usize) -> Result<Vec<u32>, BackendError> {
        let rows = x.len() / cols.max(1);
        let d = self.gpu.upload(x)?;
        let out = self.gpu.zeros::<u32>(rows)?;
        self.gpu.argmax(DBuf::of(&d), rows, cols, DBuf::of(&out))?;
        let mut host = vec![0u32; rows];
        self.gpu.download(&out, &mut host)?;
        Ok(host)
    }

    /// Copies blocks of `block_elems` elements `src -> dst` within `cache` (independent pairs).
    pub fn copy_blocks(
        &self,
        cache: &[u16],
        block_elems: usize,
        pairs: &[(u32, u32)],
    ) -> Result<Vec<u16>, BackendError> {
        let num_blocks = cache.len() / block_elems.max(1);
        let d = self.gpu.upload(cache)?;
        let flat: Vec<u32> = pairs.iter().flat_map(|&(s, t)| [s, t]).collect();
        let dp = self.gpu.upload(&flat)?;
        self.gpu.copy_blocks(
            DBuf::of(&d),
            DBuf::of(&dp),
            pairs.len(),
            (num_blocks, block_elems),
        )?;
        let mut out = vec![0u16; cache.len()];
        self.gpu.download(&d, &mut out)?;
        Ok(out)
    }
}
