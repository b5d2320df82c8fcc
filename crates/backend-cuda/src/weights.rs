//! Reading the model's tensors for the device: checks of names, shapes and data, f32 vectors,
//! bf16 matrices (dequantized from any GGUF type), stacked projections, RoPE frequencies, and
//! the configurations the backend supports.

use half::bf16;
use switchyard_core::{BackendError, GgmlType, ModelConfig, Tensor, WeightSource};

use crate::gpu::MAX_HEAD_DIM;
pub(crate) fn get(w: &dyn WeightSource, name: &str) -> Result<Tensor, BackendError> {
    w.tensor(name)
        .ok_or_else(|| BackendError::MissingTensor(name.to_string()))
}

pub(crate) fn bad_tensor(name: &str, reason: String) -> BackendError {
    BackendError::BadTensor {
        name: name.to_string(),
        reason,
    }
}

/// Checks that the tensor's bytes hold whole blocks for all its elements.
pub(crate) fn check_data(t: &Tensor) -> Result<(), BackendError> {
    if t.dtype == GgmlType::Q8_K {
        return Err(bad_tensor(
            &t.name,
            "Q8_K is an activation format, not a weight format".into(),
        ));
    }
    if t.shape.is_empty() || !t.row_len().is_multiple_of(t.dtype.block_size()) {
        return Err(bad_tensor(
            &t.name,
            format!(
                "row length of shape {:?} is not a multiple of the {} block size",
                t.shape, t.dtype
            ),
        ));
    }
    let need = t.dtype.bytes_for(t.numel());
    if t.data.as_slice().len() < need {
        return Err(bad_tensor(
            &t.name,
            format!(
                "{} bytes of data, {need} needed for shape {:?} of {}",
                t.data.as_slice().len(),
                t.shape,
                t.dtype
            ),
        ));
    }
    Ok(())
}

pub(crate) fn vector(
    w: &dyn WeightSource,
    name: &str,
    len: usize,
) -> Result<Vec<f32>, BackendError> {
    let t = get(w, name)?;
    if t.numel() != len {
        return Err(bad_tensor(
            name,
            format!("expected {len} elements, found shape {:?}", t.shape),
        ));
    }
    check_data(&t)?;
    Ok(t.to_f32())
}

pub(crate) fn opt_vector(
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
        return Err(bad_tensor(
            name,
            format!("expected shape [{cols}, {rows}], found {:?}", t.shape),
        ));
    }
    check_data(&t)?;
    Ok(t)
}

/// Dequantizes the rows of `t` (scalar reference code) into bf16 bits, on all CPU cores.
pub(crate) fn dequant_bf16_into(t: &Tensor, out: &mut [u16]) {
    let cols = t.row_len();
    let rb = t.dtype.bytes_for(cols);
    let data = t.data.as_slice();
    let rows = out.len() / cols;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(rows.div_ceil(256))
        .max(1);
    let chunk_rows = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (ci, out_chunk) in out.chunks_mut(chunk_rows * cols).enumerate() {
            let dtype = t.dtype;
            s.spawn(move || {
                let mut buf = vec![0f32; cols];
                for (i, dst) in out_chunk.chunks_exact_mut(cols).enumerate() {
                    let r = ci * chunk_rows + i;
                    switchyard_core::dtype::dequantize(
                        dtype,
                        &data[r * rb..(r + 1) * rb],
                        &mut buf,
                    );
                    for (d, v) in dst.iter_mut().zip(&buf) {
                        *d = bf16::from_f32(*v).to_bits();
                    }
                }
            });
        }
    });
}

/// The matrices stacked row-wise, as one bf16 matrix.
pub(crate) fn stacked_bf16(parts: &[&Tensor]) -> Vec<u16> {
    let cols = parts[0].row_len();
    let total: usize = parts.iter().map(|t| t.n_rows() * cols).sum();
    let mut out = vec![0u16; total];
    let mut off = 0;
    for t in parts {
        let n = t.n_rows() * cols;
        dequant_bf16_into(t, &mut out[off..off + n]);
        off += n;
    }
    out
}

pub(crate) fn check_config(c: &ModelConfig) -> Result<(), BackendError> {
    let bad = |m: String| {
        Err(BackendError::BadTensor {
            name: "config".into(),
            reason: m,
        })
    };
    if c.layers.len() != c.n_layers {
        return bad(format!(
            "{} layer kinds for {} layers",
            c.layers.len(),
            c.n_layers
        ));
    }
    if c.n_kv_heads == 0 || !c.n_heads.is_multiple_of(c.n_kv_heads) {
        return bad(format!(
            "{} heads are not a multiple of {} kv heads",
            c.n_heads, c.n_kv_heads
        ));
    }
    if c.head_dim == 0 || !c.head_dim.is_multiple_of(2) || c.head_dim > MAX_HEAD_DIM {
        return bad(format!(
            "head dim {} must be even and at most {MAX_HEAD_DIM}",
            c.head_dim
        ));
    }
    if c.hidden == 0 || c.ffn == 0 || c.vocab_size == 0 {
        return bad("zero hidden, ffn or vocabulary size".into());
    }
    if c.moe.is_some()
        || c.attn_logit_softcap.is_some()
        || c.arch == switchyard_core::Architecture::Phi3
    {
        return bad(format!(
            "architecture {} is not supported on the CUDA backend yet (CUDA runs gemma3, qwen2, \
             qwen3, llama; the CPU backend runs it)",
            c.arch.gguf_name()
        ));
    }
    // YaRN's and LongRoPE's frequencies are in `inv_freq_*` (shared with the CPU backend); their
    // magnitude on cos/sin is not applied by the CUDA RoPE kernel.
    if c.rope_scaling.attn_factor != 1.0 {
        let kind = if c.rope_scaling.yarn.is_some() {
            "YaRN"
        } else if c.rope_scaling.longrope.is_some() {
            "LongRoPE"
        } else {
            "rope.scaling.attn_factor"
        };
        return bad(format!(
            "RoPE scaling with an attention factor ({kind}, {}) is not supported on the CUDA \
             backend yet (CUDA runs RoPE without scaling, linear and Llama 3.1 factors; the CPU \
             backend runs it)",
            c.rope_scaling.attn_factor
        ));
    }
    Ok(())
}
