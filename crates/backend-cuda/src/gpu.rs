//! One CUDA device as the backend uses it: context, stream, cuBLAS handle and the compiled
//! kernels, with launch wrappers that check every buffer's length against the dimensions before
//! launching (the kernels additionally bounds-check the indices they read from device memory).

use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use cudarc::cublas::{result as blas_result, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    result::DriverError, sys as drv_sys, CudaContext, CudaEvent, CudaFunction, CudaGraph,
    CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PinnedHostSlice,
    PushKernelArg, ValidAsZeroBits,
};
use switchyard_core::BackendError;

use crate::compile::{self, KernelBuild};
pub use crate::counters::DeviceCounters;
use crate::counters::{bump, Counters};
use crate::CudaDeviceInfo;

/// Every kernel the module must export (checked against the source by a unit test).
#[cfg(test)]
pub(crate) const KERNEL_NAMES: &[&str] = &[
    "embed_rows",
    "rmsnorm_f32",
    "rmsnorm_bf16",
    "residual_rmsnorm",
    "add_bias",
    "head_norm_rope",
    "kv_write",
    "copy_blocks",
    "attention_f32",
    "attention_bf16",
    "act_mul_f32",
    "act_mul_bf16",
    "softcap",
    "argmax_rows",
];

/// Largest head dimension the attention kernel supports (32 lanes x 8 values).
pub(crate) const MAX_HEAD_DIM: usize = 256;
/// Threads per block of the attention kernel (16 warps: at batch 1 only n_heads blocks run, so the
/// key loop is spread over many warps; 4 warps took 150 us per layer at a 150-token context on an
/// H100, 16 warps cut a Gemma decode step from 3.6 to 1.7 ms).
const ATT_THREADS: u32 = 512;
/// Threads per block of the row-wise kernels.
const ROW_THREADS: u32 = 256;
/// Threads per block of the element-wise kernels.
const ELEM_THREADS: u32 = 256;
/// cuBLAS workspace we own (set once, so GEMMs never allocate, which stream capture forbids).
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

pub(crate) fn driver_err(e: DriverError) -> BackendError {
    if e.0 == drv_sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
        BackendError::OutOfMemory(format!("CUDA: {e:?}"))
    } else {
        BackendError::Device(format!("CUDA driver: {e:?}"))
    }
}

fn blas_err(e: blas_result::CublasError) -> BackendError {
    BackendError::Device(format!("cuBLAS: {e:?}"))
}

fn bad(msg: String) -> BackendError {
    BackendError::Device(format!("internal launch check failed: {msg}"))
}

/// A typed device address plus the number of elements behind it: what a launch wrapper needs to
/// check lengths. Taken from a live [`CudaSlice`]; valid only while that slice lives.
pub(crate) struct DBuf<T> {
    ptr: u64,
    len: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for DBuf<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DBuf<T> {}

impl<T> DBuf<T> {
    pub(crate) fn of(s: &CudaSlice<T>) -> Self {
        let (ptr, _sync) = s.device_ptr(s.stream());
        Self {
            ptr,
            len: s.len(),
            _t: PhantomData,
        }
    }

    /// Elements `start..start + len`.
    pub(crate) fn slice(self, start: usize, len: usize) -> Result<Self, BackendError> {
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(bad(format!(
                "sub-buffer {start}+{len} of {} elements",
                self.len
            )));
        }
        Ok(Self {
            ptr: self.ptr + (start * std::mem::size_of::<T>()) as u64,
            len,
            _t: PhantomData,
        })
    }

    /// The address, after checking that at least `n` elements are there.
    fn need(self, n: usize, what: &str) -> Result<u64, BackendError> {
        if self.len < n {
            return Err(bad(format!(
                "{what}: {} elements, kernel needs {n}",
                self.len
            )));
        }
        Ok(self.ptr)
    }
}

fn opt_need<T>(b: Option<DBuf<T>>, n: usize, what: &str) -> Result<u64, BackendError> {
    b.map_or(Ok(0), |b| b.need(n, what))
}

/// A kernel argument by value.
#[derive(Debug, Clone, Copy)]
enum Arg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    U64(u64),
    F32(f32),
}

fn i32_of(v: usize, what: &str) -> Result<Arg, BackendError> {
    i32::try_from(v)
        .map(Arg::I32)
        .map_err(|_| bad(format!("{what} = {v} exceeds i32")))
}

fn u32_of(v: usize, what: &str) -> Result<Arg, BackendError> {
    u32::try_from(v)
        .map(Arg::U32)
        .map_err(|_| bad(format!("{what} = {v} exceeds u32")))
}

fn grid_for(total: usize, threads: u32) -> LaunchConfig {
    let blocks = total.div_ceil(threads as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The kernels of the module.
pub(crate) struct Kernels {
    embed_rows: CudaFunction,
    rmsnorm_f32: CudaFunction,
    rmsnorm_bf16: CudaFunction,
    residual_rmsnorm: CudaFunction,
    add_bias: CudaFunction,
    head_norm_rope: CudaFunction,
    kv_write: CudaFunction,
    copy_blocks: CudaFunction,
    attention_f32: CudaFunction,
    attention_bf16: CudaFunction,
    act_mul_f32: CudaFunction,
    act_mul_bf16: CudaFunction,
    softcap: CudaFunction,
    argmax_rows: CudaFunction,
}

impl Kernels {
    fn load(m: &Arc<CudaModule>) -> Result<Self, BackendError> {
        let f = |name: &str| {
            m.load_function(name).map_err(|e| {
                BackendError::Device(format!("kernel {name} missing from module: {e:?}"))
            })
        };
        Ok(Self {
            embed_rows: f("embed_rows")?,
            rmsnorm_f32: f("rmsnorm_f32")?,
            rmsnorm_bf16: f("rmsnorm_bf16")?,
            residual_rmsnorm: f("residual_rmsnorm")?,
            add_bias: f("add_bias")?,
            head_norm_rope: f("head_norm_rope")?,
            kv_write: f("kv_write")?,
            copy_blocks: f("copy_blocks")?,
            attention_f32: f("attention_f32")?,
            attention_bf16: f("attention_bf16")?,
            act_mul_f32: f("act_mul_f32")?,
            act_mul_bf16: f("act_mul_bf16")?,
            softcap: f("softcap")?,
            argmax_rows: f("argmax_rows")?,
        })
    }
}

/// Output precision of a kernel that can write either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Out {
    F32(DBuf<f32>),
    Bf16(DBuf<u16>),
}

impl Out {
    fn need(self, n: usize, what: &str) -> Result<u64, BackendError> {
        match self {
            Out::F32(b) => b.need(n, what),
            Out::Bf16(b) => b.need(n, what),
        }
    }
}

impl<T> PartialEq for DBuf<T> {
    fn eq(&self, other: &Self) -> bool {
        self.ptr == other.ptr && self.len == other.len
    }
}
impl<T> Eq for DBuf<T> {}
impl<T> std::fmt::Debug for DBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DBuf({:#x}, {})", self.ptr, self.len)
    }
}

/// RMSNorm of `n_rows` rows of width `n`: `out[r] = rmsnorm(x[rows[r]]) * w` (`rows` absent:
/// row `r`).
pub(crate) struct RmsNormArgs {
    pub x: DBuf<f32>,
    pub x_rows: usize,
    pub rows: Option<DBuf<u32>>,
    pub w: DBuf<f32>,
    pub out: Out,
    pub n_rows: usize,
    pub n: usize,
    pub eps: f32,
}

/// `x += post_w ? rmsnorm(o) * post_w : o`; then `h = bf16(rmsnorm(x) * next_w)` if `next_w`.
pub(crate) struct ResidualArgs {
    pub x: DBuf<f32>,
    pub o: DBuf<f32>,
    pub post_w: Option<DBuf<f32>>,
    pub next_w: Option<DBuf<f32>>,
    pub h: DBuf<u16>,
    pub n_rows: usize,
    pub n: usize,
    pub eps: f32,
}

/// Per-head norm + RoPE + query scale, in place on a fused `[q | k | v]` buffer.
pub(crate) struct HeadNormRopeArgs {
    pub qkv: DBuf<f32>,
    pub n_tokens: usize,
    pub row_stride: usize,
    pub n_q_heads: usize,
    pub n_k_heads: usize,
    pub head_dim: usize,
    pub q_norm: Option<DBuf<f32>>,
    pub k_norm: Option<DBuf<f32>>,
    pub eps: f32,
    pub positions: DBuf<u32>,
    pub inv_freq: DBuf<f32>,
    pub neox: bool,
    pub q_scale: f32,
}

/// K/V of each token (columns `k_off..`, `v_off..` of a fused qkv buffer) into cache rows.
pub(crate) struct KvWriteArgs {
    pub qkv: DBuf<f32>,
    pub n_tokens: usize,
    pub row_stride: usize,
    pub k_off: usize,
    pub v_off: usize,
    pub kv_dim: usize,
    pub slots: DBuf<u32>,
    pub k_cache: DBuf<u16>,
    pub v_cache: DBuf<u16>,
}

/// Paged attention of `n_tokens` query rows.
pub(crate) struct AttentionArgs {
    pub q: DBuf<f32>,
    pub q_stride: usize,
    pub k_cache: DBuf<u16>,
    pub v_cache: DBuf<u16>,
    pub out: Out,
    pub out_stride: usize,
    pub n_tokens: usize,
    pub positions: DBuf<u32>,
    pub tok_seq: DBuf<u32>,
    pub bt_off: DBuf<u32>,
    pub n_seqs: usize,
    pub block_tables: DBuf<u32>,
    pub num_blocks: usize,
    pub block_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// 0 for global attention.
    pub window: usize,
}

/// `out[t, r] = sum_c w[r, c] * x[t, c]`: bf16 weights `[rows, cols]` and inputs `[n, cols]`,
/// f32 output `[n, rows]`, f32 accumulation.
pub(crate) struct GemmArgs {
    pub w: DBuf<u16>,
    pub x: DBuf<u16>,
    pub out: DBuf<f32>,
    pub rows: usize,
    pub cols: usize,
    pub n: usize,
}

/// The device, its stream, cuBLAS and the kernels.
pub(crate) struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// Set as the cuBLAS workspace; must outlive `blas`' use of it (dropped after it).
    _blas_workspace: Option<CudaSlice<u8>>,
    k: Kernels,
    pub info: CudaDeviceInfo,
    pub build: KernelBuild,
    counters: Counters,
}

impl Gpu {
    /// Opens device `ordinal`, compiles (or loads cached) kernels and creates a cuBLAS handle.
    pub(crate) fn open(ordinal: usize) -> Result<Self, BackendError> {
        crate::check_libraries()?;
        crate::catch_cuda_panic(|| Self::open_inner(ordinal))?
    }

    fn open_inner(ordinal: usize) -> Result<Self, BackendError> {
        let devices = crate::probe()?;
        let info = devices
            .into_iter()
            .find(|d| d.ordinal == ordinal)
            .ok_or_else(|| BackendError::Unavailable {
                backend: "cuda",
                reason: format!("no CUDA device with ordinal {ordinal}"),
            })?;
        let ctx = CudaContext::new(ordinal).map_err(driver_err)?;
        // SAFETY: nothing has been allocated in this context by us yet, and everything we do
        // runs on the one stream created below, so cross-stream event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver_err)?;
        let blas = CudaBlas::new(stream.clone()).map_err(blas_err)?;
        let cc = info.compute_capability;
        let cache = compile::cache_dir();
        let (module, build) = match compile::compile(cc, "cubin", cache.as_deref()) {
            Ok(c) => match ctx.load_module(c.to_ptx()) {
                Ok(m) => (m, c.build),
                Err(e) => {
                    tracing::warn!("loading the CUBIN failed ({e:?}); falling back to PTX");
                    let c = compile::compile(cc, "ptx", cache.as_deref())?;
                    (ctx.load_module(c.to_ptx()).map_err(driver_err)?, c.build)
                }
            },
            Err(e) => {
                tracing::warn!("NVRTC could not build a CUBIN ({e}); falling back to PTX");
                let c = compile::compile(cc, "ptx", cache.as_deref())?;
                (ctx.load_module(c.to_ptx()).map_err(driver_err)?, c.build)
            }
        };
        let k = Kernels::load(&module)?;
        // A workspace of our own: without one cuBLAS may allocate during a GEMM, which a stream
        // capture does not allow. Failing to set it only costs the graph path (logged there).
        let ws: CudaSlice<u8> = stream
            .alloc_zeros(BLAS_WORKSPACE_BYTES)
            .map_err(driver_err)?;
        let blas_workspace = {
            let ptr = DBuf::of(&ws).ptr;
            // SAFETY: the handle is live; `ws` is a device allocation of BLAS_WORKSPACE_BYTES that
            // is kept in `Gpu` next to the handle and never used for anything else.
            let st = unsafe {
                blas_sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    ptr as *mut std::ffi::c_void,
                    BLAS_WORKSPACE_BYTES,
                )
            };
            if st == blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                Some(ws)
            } else {
                tracing::warn!("cublasSetWorkspace failed ({st:?}); cuBLAS keeps its own");
                None
            }
        };
        Ok(Self {
            ctx,
            stream,
            blas,
            _blas_workspace: blas_workspace,
            k,
            info,
            build,
            counters: Counters::default(),
        })
    }

    /// Cumulative driver activity of this device handle.
    pub(crate) fn counters(&self) -> DeviceCounters {
        let c = &self.counters;
        DeviceCounters {
            kernel_launches: c.kernel_launches.load(Relaxed),
            gemm_calls: c.gemm_calls.load(Relaxed),
            htod_copies: c.htod_copies.load(Relaxed),
            dtoh_copies: c.dtoh_copies.load(Relaxed),
            syncs: c.syncs.load(Relaxed),
            graph_launches: c.graph_launches.load(Relaxed),
            graph_captures: c.graph_captures.load(Relaxed),
        }
    }

    /// Page-locked host memory of `n` elements (write-combined: for uploads only).
    pub(crate) fn pinned(&self, n: usize) -> Result<PinnedHostSlice<u32>, BackendError> {
        // SAFETY: the memory is uninitialized; callers write before they copy from it.
        unsafe { self.ctx.alloc_pinned::<u32>(n.max(1)) }.map_err(driver_err)
    }

    /// Starts capturing this thread's work on the stream into a graph.
    pub(crate) fn begin_capture(&self) -> Result<(), BackendError> {
        self.stream
            .begin_capture(drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver_err)
    }

    /// Ends the capture and instantiates the graph (always ends it, also after a failed
    /// launch inside the capture).
    pub(crate) fn end_capture(&self) -> Result<CudaGraph, BackendError> {
        let g = self
            .stream
            .end_capture(drv_sys::CUgraphInstantiate_flags(0))
            .map_err(driver_err)?
            .ok_or_else(|| BackendError::Device("stream capture produced no graph".into()))?;
        bump(&self.counters.graph_captures);
        Ok(g)
    }

    /// Replays `g` on the stream.
    pub(crate) fn launch_graph(&self, g: &CudaGraph) -> Result<(), BackendError> {
        bump(&self.counters.graph_launches);
        g.launch().map_err(driver_err)
    }

    /// A timing event recorded on the stream now.
    pub(crate) fn timing_event(&self) -> Result<CudaEvent, BackendError> {
        let e = self
            .ctx
            .new_event(Some(drv_sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver_err)?;
        e.record(&self.stream).map_err(driver_err)?;
        Ok(e)
    }

    /// Free and total device memory in bytes.
    pub(crate) fn mem_info(&self) -> Option<(u64, u64)> {
        self.ctx
            .mem_get_info()
            .ok()
            .map(|(f, t)| (f as u64, t as u64))
    }

    pub(crate) fn upload<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        host: &[T],
    ) -> Result<CudaSlice<T>, BackendError> {
        if host.is_empty() {
            return self.zeros(1);
        }
        self.stream.clone_htod(host).map_err(driver_err)
    }

    pub(crate) fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, BackendError> {
        self.stream.alloc_zeros(n.max(1)).map_err(driver_err)
    }

    /// Copies `dst.len()` elements from the start of `src` to the host, waiting for them.
    pub(crate) fn download<T: DeviceRepr>(
        &self,
        src: &CudaSlice<T>,
        dst: &mut [T],
    ) -> Result<(), BackendError> {
        if dst.is_empty() {
            return Ok(());
        }
        if dst.len() > src.len() {
            return Err(bad(format!(
                "download of {} from {} elements",
                dst.len(),
                src.len()
            )));
        }
        let view = src.slice(0..dst.len());
        bump(&self.counters.dtoh_copies);
        self.stream.memcpy_dtoh(&view, dst).map_err(driver_err)?;
        bump(&self.counters.syncs);
        self.stream.synchronize().map_err(driver_err)
    }

    /// Copies host data into the start of an existing device buffer.
    pub(crate) fn write<T: DeviceRepr>(
        &self,
        dst: &mut CudaSlice<T>,
        src: &[T],
    ) -> Result<(), BackendError> {
        if src.is_empty() {
            return Ok(());
        }
        if src.len() > dst.len() {
            return Err(bad(format!(
                "upload of {} into {} elements",
                src.len(),
                dst.len()
            )));
        }
        let mut view = dst.slice_mut(0..src.len());
        bump(&self.counters.htod_copies);
        self.stream.memcpy_htod(src, &mut view).map_err(driver_err)
    }

    pub(crate) fn synchronize(&self) -> Result<(), BackendError> {
        bump(&self.counters.syncs);
        self.stream.synchronize().map_err(driver_err)
    }

    /// Launches `f` with `args`.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in number, order and type, and every pointer
    /// must address device memory covering everything the kernel touches given the other args.
    unsafe fn launch(
        &self,
        f: &CudaFunction,
        cfg: LaunchConfig,
        args: &[Arg],
    ) -> Result<(), BackendError> {
        bump(&self.counters.kernel_launches);
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(v) | Arg::U64(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::U32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: forwarded from this function's contract; the argument values live in `args`,
        // which outlives the launch call that reads them.
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(driver_err)
    }

    /// `x[t] = table[ids[t]] * scale` for `n_tokens` rows of `hidden`.
    pub(crate) fn embed(
        &self,
        table: DBuf<u16>,
        vocab: usize,
        ids: DBuf<u32>,
        x: DBuf<f32>,
        (n_tokens, hidden, scale): (usize, usize, f32),
    ) -> Result<(), BackendError> {
        let total = n_tokens * hidden;
        let args = [
            Arg::Ptr(table.need(vocab * hidden, "embedding table")?),
            Arg::Ptr(ids.need(n_tokens, "token ids")?),
            Arg::Ptr(x.need(total, "embedding output")?),
            i32_of(hidden, "hidden")?,
            u32_of(vocab, "vocab")?,
            Arg::F32(scale),
            Arg::U64(total as u64),
        ];
        // SAFETY: matches `embed_rows(const u16*, const u32*, float*, int, u32, float, u64)`; the
        // buffers were checked to cover vocab*hidden, n_tokens and n_tokens*hidden elements, and
        // the kernel skips ids >= vocab.
        unsafe { self.launch(&self.k.embed_rows, grid_for(total, ELEM_THREADS), &args) }
    }

    pub(crate) fn rmsnorm(&self, a: &RmsNormArgs) -> Result<(), BackendError> {
        if a.n_rows == 0 {
            return Ok(());
        }
        let src_rows = if a.rows.is_some() { a.x_rows } else { a.n_rows };
        let f = match a.out {
            Out::F32(_) => &self.k.rmsnorm_f32,
            Out::Bf16(_) => &self.k.rmsnorm_bf16,
        };
        let args = [
            Arg::Ptr(a.x.need(src_rows * a.n, "rmsnorm input")?),
            Arg::Ptr(opt_need(a.rows, a.n_rows, "rmsnorm row indices")?),
            u32_of(src_rows, "rmsnorm source rows")?,
            Arg::Ptr(a.w.need(a.n, "rmsnorm weight")?),
            Arg::Ptr(a.out.need(a.n_rows * a.n, "rmsnorm output")?),
            i32_of(a.n, "rmsnorm width")?,
            Arg::F32(a.eps),
        ];
        let cfg = LaunchConfig {
            grid_dim: (
                u32::try_from(a.n_rows).map_err(|_| bad("too many rows".into()))?,
                1,
                1,
            ),
            block_dim: (ROW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `rmsnorm_{f32,bf16}(const float*, const u32*, u32, const float*, Out*,
        // int, float)`; input covers src_rows rows (and the kernel skips row indices >= src_rows),
        // the index list n_rows entries, the output n_rows rows, the weight n elements.
        unsafe { self.launch(f, cfg, &args) }
    }

    pub(crate) fn residual_rmsnorm(&self, a: &ResidualArgs) -> Result<(), BackendError> {
        if a.n_rows == 0 {
            return Ok(());
        }
        let total = a.n_rows * a.n;
        let h = if a.next_w.is_some() {
            a.h.need(total, "normed output")?
        } else {
            0
        };
        let args = [
            Arg::Ptr(a.x.need(total, "residual")?),
            Arg::Ptr(a.o.need(total, "residual update")?),
            Arg::Ptr(opt_need(a.post_w, a.n, "post norm weight")?),
            Arg::Ptr(opt_need(a.next_w, a.n, "next norm weight")?),
            Arg::Ptr(h),
            i32_of(a.n, "width")?,
            Arg::F32(a.eps),
        ];
        let cfg = LaunchConfig {
            grid_dim: (
                u32::try_from(a.n_rows).map_err(|_| bad("too many rows".into()))?,
                1,
                1,
            ),
            block_dim: (ROW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `residual_rmsnorm(float*, const float*, const float*, const float*,
        // bf16*, int, float)`; x, o (and h when written) cover n_rows*n elements, the optional
        // weights n elements (null pointers when absent, which the kernel tests for).
        unsafe { self.launch(&self.k.residual_rmsnorm, cfg, &args) }
    }

    /// `y[r, :] += b` for `n_rows` rows of `b.len()`.
    pub(crate) fn add_bias(
        &self,
        y: DBuf<f32>,
        b: DBuf<f32>,
        n_rows: usize,
        cols: usize,
    ) -> Result<(), BackendError> {
        let total = n_rows * cols;
        if total == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(y.need(total, "bias target")?),
            Arg::Ptr(b.need(cols, "bias")?),
            i32_of(cols, "bias width")?,
            Arg::U64(total as u64),
        ];
        // SAFETY: matches `add_bias(float*, const float*, int, u64)`; y covers `total`, b `cols`.
        unsafe { self.launch(&self.k.add_bias, grid_for(total, ELEM_THREADS), &args) }
    }

    pub(crate) fn head_norm_rope(&self, a: &HeadNormRopeArgs) -> Result<(), BackendError> {
        if a.n_tokens == 0 {
            return Ok(());
        }
        let heads = a.n_q_heads + a.n_k_heads;
        if heads * a.head_dim > a.row_stride || !a.head_dim.is_multiple_of(2) {
            return Err(bad(format!(
                "{heads} heads of {} in rows of {}",
                a.head_dim, a.row_stride
            )));
        }
        let args = [
            Arg::Ptr(
                a.qkv
                    .need((a.n_tokens - 1) * a.row_stride + heads * a.head_dim, "qkv")?,
            ),
            i32_of(a.row_stride, "row stride")?,
            i32_of(a.n_q_heads, "q heads")?,
            i32_of(a.head_dim, "head dim")?,
            Arg::Ptr(opt_need(a.q_norm, a.head_dim, "q norm")?),
            Arg::Ptr(opt_need(a.k_norm, a.head_dim, "k norm")?),
            Arg::F32(a.eps),
            Arg::Ptr(a.positions.need(a.n_tokens, "positions")?),
            Arg::Ptr(a.inv_freq.need(a.head_dim / 2, "inv_freq")?),
            Arg::I32(i32::from(a.neox)),
            Arg::F32(a.q_scale),
        ];
        let cfg = LaunchConfig {
            grid_dim: (
                u32::try_from(a.n_tokens).map_err(|_| bad("too many tokens".into()))?,
                u32::try_from(heads).map_err(|_| bad("too many heads".into()))?,
                1,
            ),
            block_dim: (if a.head_dim > 64 { 128 } else { 64 }, 1, 1),
            shared_mem_bytes: (a.head_dim * 4) as u32,
        };
        // SAFETY: matches `head_norm_rope(float*, int, int, int, const float*, const float*,
        // float, const u32*, const float*, int, float)`; qkv covers the last token's heads, the
        // norms head_dim, positions n_tokens, inv_freq head_dim/2; shared memory is head_dim floats.
        unsafe { self.launch(&self.k.head_norm_rope, cfg, &args) }
    }

    pub(crate) fn kv_write(&self, a: &KvWriteArgs) -> Result<(), BackendError> {
        let total = a.n_tokens * a.kv_dim;
        if total == 0 {
            return Ok(());
        }
        if a.k_off + a.kv_dim > a.row_stride || a.v_off + a.kv_dim > a.row_stride {
            return Err(bad("k/v columns outside the qkv row".into()));
        }
        let n_slots = a.k_cache.len.min(a.v_cache.len) / a.kv_dim;
        let args = [
            Arg::Ptr(a.qkv.need(a.n_tokens * a.row_stride, "qkv")?),
            i32_of(a.row_stride, "row stride")?,
            i32_of(a.k_off, "k offset")?,
            i32_of(a.v_off, "v offset")?,
            i32_of(a.kv_dim, "kv dim")?,
            Arg::Ptr(a.slots.need(a.n_tokens, "slots")?),
            u32_of(n_slots, "cache slots")?,
            Arg::Ptr(a.k_cache.ptr),
            Arg::Ptr(a.v_cache.ptr),
            Arg::U64(total as u64),
        ];
        // SAFETY: matches `kv_write(const float*, int, int, int, int, const u32*, u32, u16*,
        // u16*, u64)`; qkv covers n_tokens rows whose k/v columns lie inside the row; both caches
        // hold at least n_slots*kv_dim elements and the kernel skips slots >= n_slots.
        unsafe { self.launch(&self.k.kv_write, grid_for(total, ELEM_THREADS), &args) }
    }

    /// Copies KV blocks `pairs = [src0, dst0, src1, dst1, ...]` (device) within one cache tensor;
    /// the pairs must be independent of each other.
    pub(crate) fn copy_blocks(
        &self,
        cache: DBuf<u16>,
        pairs: DBuf<u32>,
        n_pairs: usize,
        (num_blocks, block_elems): (usize, usize),
    ) -> Result<(), BackendError> {
        if n_pairs == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(cache.need(num_blocks * block_elems, "KV cache")?),
            Arg::Ptr(pairs.need(2 * n_pairs, "block pairs")?),
            u32_of(num_blocks, "blocks")?,
            Arg::U64(block_elems as u64),
        ];
        let cfg = LaunchConfig {
            grid_dim: (
                block_elems.div_ceil(ELEM_THREADS as usize).clamp(1, 1024) as u32,
                u32::try_from(n_pairs).map_err(|_| bad("too many pairs".into()))?,
                1,
            ),
            block_dim: (ELEM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `copy_blocks(u16*, const u32*, u32, u64)`; the cache covers
        // num_blocks*block_elems elements (the kernel skips ids >= num_blocks), pairs 2*n_pairs.
        unsafe { self.launch(&self.k.copy_blocks, cfg, &args) }
    }

    pub(crate) fn attention(&self, a: &AttentionArgs) -> Result<(), BackendError> {
        if a.n_tokens == 0 {
            return Ok(());
        }
        if a.head_dim > MAX_HEAD_DIM
            || a.n_kv_heads == 0
            || !a.n_heads.is_multiple_of(a.n_kv_heads)
            || a.block_size == 0
        {
            return Err(bad(format!(
                "attention shape: {} heads, {} kv heads, head dim {}, block size {}",
                a.n_heads, a.n_kv_heads, a.head_dim, a.block_size
            )));
        }
        let kv_dim = a.n_kv_heads * a.head_dim;
        let cache = a.num_blocks * a.block_size * kv_dim;
        let q_dim = a.n_heads * a.head_dim;
        let f = match a.out {
            Out::F32(_) => &self.k.attention_f32,
            Out::Bf16(_) => &self.k.attention_bf16,
        };
        let args = [
            Arg::Ptr(a.q.need((a.n_tokens - 1) * a.q_stride + q_dim, "q")?),
            i32_of(a.q_stride, "q stride")?,
            Arg::Ptr(a.k_cache.need(cache, "k cache")?),
            Arg::Ptr(a.v_cache.need(cache, "v cache")?),
            Arg::Ptr(
                a.out
                    .need((a.n_tokens - 1) * a.out_stride + q_dim, "attention output")?,
            ),
            i32_of(a.out_stride, "out stride")?,
            Arg::Ptr(a.positions.need(a.n_tokens, "positions")?),
            Arg::Ptr(a.tok_seq.need(a.n_tokens, "token sequences")?),
            Arg::Ptr(a.bt_off.need(a.n_seqs, "block table offsets")?),
            Arg::Ptr(a.block_tables.ptr),
            u32_of(a.n_seqs, "sequences")?,
            u32_of(a.block_tables.len, "block table length")?,
            u32_of(a.num_blocks, "blocks")?,
            i32_of(a.block_size, "block size")?,
            i32_of(a.n_heads, "heads")?,
            i32_of(a.n_kv_heads, "kv heads")?,
            i32_of(a.head_dim, "head dim")?,
            i32_of(a.window, "window")?,
        ];
        let nwarps = (ATT_THREADS / 32) as usize;
        let cfg = LaunchConfig {
            grid_dim: (
                u32::try_from(a.n_tokens).map_err(|_| bad("too many tokens".into()))?,
                u32::try_from(a.n_heads).map_err(|_| bad("too many heads".into()))?,
                1,
            ),
            block_dim: (ATT_THREADS, 1, 1),
            shared_mem_bytes: (nwarps * (a.head_dim + 2) * 4) as u32,
        };
        // SAFETY: matches `attention_{f32,bf16}(const float*, int, const u16*, const u16*, Out*,
        // int, const u32*, const u32*, const u32*, const u32*, u32, u32, u32, int, int, int, int,
        // int)`; q and out cover n_tokens rows of their strides, the caches num_blocks*block_size
        // rows of kv_dim, positions/tok_seq n_tokens and bt_off n_seqs entries; the kernel checks
        // sequence ids against n_seqs, block-table reads against bt_len and block ids against
        // num_blocks. Dynamic shared memory matches nwarps*(head_dim+2) floats.
        unsafe { self.launch(f, cfg, &args) }
    }

    /// `out[t, c] = act(gu[t, c]) * gu[t, ffn + c]`; `act`: 0 GELU-tanh, 1 SiLU.
    pub(crate) fn act_mul(
        &self,
        gu: DBuf<f32>,
        out: Out,
        (n_tokens, ffn, act): (usize, usize, i32),
    ) -> Result<(), BackendError> {
        let total = n_tokens * ffn;
        if total == 0 {
            return Ok(());
        }
        let f = match out {
            Out::F32(_) => &self.k.act_mul_f32,
            Out::Bf16(_) => &self.k.act_mul_bf16,
        };
        let args = [
            Arg::Ptr(gu.need(2 * total, "gate/up")?),
            Arg::Ptr(out.need(total, "activation output")?),
            i32_of(ffn, "ffn")?,
            Arg::I32(act),
            Arg::U64(total as u64),
        ];
        // SAFETY: matches `act_mul_{f32,bf16}(const float*, Out*, int, int, u64)`; gu covers
        // n_tokens rows of 2*ffn, out n_tokens rows of ffn.
        unsafe { self.launch(f, grid_for(total, ELEM_THREADS), &args) }
    }

    pub(crate) fn softcap(&self, x: DBuf<f32>, total: usize, cap: f32) -> Result<(), BackendError> {
        if total == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(x.need(total, "logits")?),
            Arg::F32(cap),
            Arg::U64(total as u64),
        ];
        // SAFETY: matches `softcap(float*, float, u64)`; x covers `total` elements.
        unsafe { self.launch(&self.k.softcap, grid_for(total, ELEM_THREADS), &args) }
    }

    /// `out[r] = argmax(x[r, :cols])` (lowest index among equal maxima).
    pub(crate) fn argmax(
        &self,
        x: DBuf<f32>,
        rows: usize,
        cols: usize,
        out: DBuf<u32>,
    ) -> Result<(), BackendError> {
        if rows == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(x.need(rows * cols, "argmax input")?),
            i32_of(cols, "cols")?,
            Arg::Ptr(out.need(rows, "argmax output")?),
        ];
        let cfg = LaunchConfig {
            grid_dim: (
                u32::try_from(rows).map_err(|_| bad("too many rows".into()))?,
                1,
                1,
            ),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `argmax_rows(const float*, int, u32*)`; x covers rows*cols, out rows.
        unsafe { self.launch(&self.k.argmax_rows, cfg, &args) }
    }

    /// See [`GemmArgs`]. Row-major `W[rows, cols]` is column-major `Wᵀ` with `ld = cols`, so
    /// cuBLAS computes `C (rows x n, ld rows) = op(A)=Aᵀ (rows x cols) * B (cols x n, ld cols)`,
    /// which is the row-major `[n, rows]` output.
    pub(crate) fn gemm(&self, a: &GemmArgs) -> Result<(), BackendError> {
        if a.n == 0 || a.rows == 0 {
            return Ok(());
        }
        let w = a.w.need(a.rows * a.cols, "gemm weight")?;
        let x = a.x.need(a.n * a.cols, "gemm input")?;
        let out = a.out.need(a.n * a.rows, "gemm output")?;
        let dim = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| bad(format!("gemm {what} = {v} exceeds i32")))
        };
        let (m, n, k) = (dim(a.rows, "rows")?, dim(a.n, "n")?, dim(a.cols, "cols")?);
        let (alpha, beta) = (1.0f32, 0.0f32);
        bump(&self.counters.gemm_calls);
        self.ctx.bind_to_thread().map_err(driver_err)?;
        // SAFETY: the handle is live and bound to our stream; A (bf16) holds rows*cols, B (bf16)
        // n*cols and C (f32) n*rows elements as checked above, matching m=rows, n, k=cols with
        // lda=ldb=cols and ldc=rows; alpha/beta are host f32 scalars (pointer mode host, compute
        // type 32F).
        unsafe {
            blas_result::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                (&alpha as *const f32).cast(),
                w as *const std::ffi::c_void,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                k,
                x as *const std::ffi::c_void,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                k,
                (&beta as *const f32).cast(),
                out as *mut std::ffi::c_void,
                blas_sys::cudaDataType_t::CUDA_R_32F,
                m,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(blas_err)
    }
}
