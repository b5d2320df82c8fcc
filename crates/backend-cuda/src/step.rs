//! One step's metadata: how it is packed on the host, uploaded through a pinned buffer, and
//! sliced into the sections the launches read; and the `SWITCHYARD_CUDA_TRACE_STEPS` trace.

use cudarc::driver::{CudaSlice, PinnedHostSlice};
use switchyard_core::{BackendError, ForwardBatch};

use crate::gpu::{DBuf, Gpu};

/// Sizes and device locations of one step's metadata, as the launches see them.
pub(crate) struct StepLayout {
    /// Token rows.
    pub(crate) n: usize,
    pub(crate) n_seqs: usize,
    /// Logits rows.
    pub(crate) m: usize,
    pub(crate) ids: DBuf<u32>,
    pub(crate) positions: DBuf<u32>,
    pub(crate) slots: DBuf<u32>,
    pub(crate) tok_seq: DBuf<u32>,
    pub(crate) bt_off: DBuf<u32>,
    pub(crate) rows_idx: DBuf<u32>,
    pub(crate) tables: DBuf<u32>,
}

impl StepLayout {
    /// The sections of `meta` for `n` token rows, `s` sequences, `m` logits rows and `t` table
    /// entries, in the order [`pack_meta`] writes them.
    pub(crate) fn of(
        meta: DBuf<u32>,
        n: usize,
        s: usize,
        m: usize,
        t: usize,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            n,
            n_seqs: s,
            m,
            ids: meta.slice(0, n)?,
            positions: meta.slice(n, n)?,
            slots: meta.slice(2 * n, n)?,
            tok_seq: meta.slice(3 * n, n)?,
            bt_off: meta.slice(4 * n, s)?,
            rows_idx: meta.slice(4 * n + s, m)?,
            tables: meta.slice(4 * n + s + m, t)?,
        })
    }
}

/// Packs a step's metadata into `out`: `[token ids | positions | cache slots | sequence of each
/// token | block-table offsets | logits row indices | block tables]`. With `pad = Some((rows,
/// reserved))` (one-token sequences only) the batch is padded to `rows` dummy sequences of
/// token 0 at position 0, each writing its K/V to slot 0 of block `reserved` through one extra
/// table entry, with logits rows padded by their own index; returns the table entries written.
pub(crate) fn pack_meta(
    batch: &ForwardBatch,
    bs: usize,
    pad: Option<(usize, u32)>,
    out: &mut Vec<u32>,
) -> usize {
    let n = batch.num_tokens();
    let (rows, reserved) = pad.unwrap_or((n, 0));
    let padding = rows - n;
    let bt_total: usize = batch.seqs.iter().map(|s| s.block_table.len()).sum();
    out.clear();
    out.extend_from_slice(&batch.token_ids);
    out.extend(std::iter::repeat_n(0, padding));
    out.extend_from_slice(&batch.positions);
    out.extend(std::iter::repeat_n(0, padding));
    for s in &batch.seqs {
        for i in 0..s.len {
            let pos = s.context_before + i;
            out.push(s.block_table[pos / bs].0 * bs as u32 + (pos % bs) as u32);
        }
    }
    out.extend(std::iter::repeat_n(reserved * bs as u32, padding));
    for (si, s) in batch.seqs.iter().enumerate() {
        out.extend(std::iter::repeat_n(si as u32, s.len));
    }
    let n_seqs = batch.seqs.len();
    out.extend((n_seqs..n_seqs + padding).map(|s| s as u32));
    let mut off = 0u32;
    for s in &batch.seqs {
        out.push(off);
        off += s.block_table.len() as u32;
    }
    out.extend(std::iter::repeat_n(bt_total as u32, padding));
    let m = batch.logits_indices.len();
    out.extend(batch.logits_indices.iter().map(|&i| i as u32));
    if pad.is_some() {
        out.extend((m..rows).map(|r| r as u32));
    }
    for s in &batch.seqs {
        out.extend(s.block_table.iter().map(|b| b.0));
    }
    if padding > 0 {
        out.push(reserved);
        bt_total + 1
    } else {
        bt_total
    }
}

/// Copies `host` into the start of `dst` through the pinned staging buffer (one async copy).
/// The staging buffer is rewritten by the next step only after this step's read-back waited for
/// the stream, so the copy has finished by then.
pub(crate) fn upload_meta(
    gpu: &Gpu,
    staging: &mut Option<PinnedHostSlice<u32>>,
    host: &[u32],
    dst: &mut CudaSlice<u32>,
) -> Result<(), BackendError> {
    if staging.as_ref().is_none_or(|s| s.len() < host.len()) {
        *staging = None;
        *staging = Some(gpu.pinned(host.len().next_power_of_two().max(4096))?);
    }
    let st = staging.as_mut().expect("staging buffer allocated above");
    let buf = st.as_mut_slice().map_err(crate::gpu::driver_err)?;
    buf[..host.len()].copy_from_slice(host);
    gpu.write(dst, &buf[..host.len()])
}

/// `SWITCHYARD_CUDA_TRACE_STEPS=1`: log every `forward` step's shape and a summary of each
/// logits row (a diagnostic for a GPU machine, where no debugger is at hand), through `tracing`
/// at INFO, target `switchyard_cuda_trace` (the server logs INFO by default; the test helpers
/// install a subscriber when the variable is set).
pub(crate) fn trace_steps() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SWITCHYARD_CUDA_TRACE_STEPS").is_ok_and(|v| v == "1"))
}

/// One step's shape for the trace: tokens, graph or not, each sequence's context + new tokens.
pub(crate) fn trace_shape(batch: &ForwardBatch, graph: bool) -> String {
    let seqs: Vec<String> = batch
        .seqs
        .iter()
        .map(|s| {
            format!(
                "{}+{} ({} blocks)",
                s.context_before,
                s.len,
                s.block_table.len()
            )
        })
        .collect();
    format!(
        "{} tokens, graph {graph}, seqs [{}], logits rows {:?}",
        batch.num_tokens(),
        seqs.join(", "),
        batch.logits_indices
    )
}

pub(crate) fn trace_step(batch: &ForwardBatch, logits: &[f32], vocab: usize, graph: bool) {
    let rows: Vec<String> = logits
        .chunks_exact(vocab.max(1))
        .map(|r| {
            let (mut best, mut max, mut min, mut bad) =
                (0usize, f32::NEG_INFINITY, f32::INFINITY, 0);
            for (i, &v) in r.iter().enumerate() {
                if !v.is_finite() {
                    bad += 1;
                } else {
                    if v > max {
                        (best, max) = (i, v);
                    }
                    min = min.min(v);
                }
            }
            format!("argmax {best} max {max:.3} min {min:.3} non-finite {bad}")
        })
        .collect();
    tracing::info!(
        target: "switchyard_cuda_trace",
        "cuda step: {}: {}",
        trace_shape(batch, graph),
        rows.join("; ")
    );
}
