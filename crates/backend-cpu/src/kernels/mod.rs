//! Matrix kernels over weights in their GGUF encoding.
//!
//! `matmul` computes `out[t][r] = sum_i W[r][i] * x[t][i]` for a weight matrix `W` with `rows`
//! rows of `cols` elements, stored row by row in its GGML encoding, and `n_tok` activation rows.

use switchyard_core::GgmlType;

/// A weight matrix in its file encoding.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    /// Element type.
    pub dtype: GgmlType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Elements per row (input features).
    pub cols: usize,
    /// `rows * dtype.bytes_for(cols)` bytes.
    pub data: &'a [u8],
}

impl QMatrix<'_> {
    /// Bytes of one encoded row.
    pub fn row_bytes(&self) -> usize {
        self.dtype.bytes_for(self.cols)
    }

    /// Encoded row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// `out[t * w.rows + r] = dot(W[r], x[t * w.cols ..])` for `t < n_tok`.
pub fn matmul(w: &QMatrix<'_>, x: &[f32], n_tok: usize, out: &mut [f32]) {
    use rayon::prelude::*;
    assert_eq!(x.len(), n_tok * w.cols);
    assert_eq!(out.len(), n_tok * w.rows);
    let rows = w.rows;
    // Compute column-chunked results per thread, then scatter.
    let chunk = 64.min(rows).max(1);
    let results: Vec<(usize, Vec<f32>)> = (0..rows.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let r0 = c * chunk;
            let r1 = (r0 + chunk).min(rows);
            let mut buf = vec![0f32; w.cols];
            let mut res = vec![0f32; (r1 - r0) * n_tok];
            for r in r0..r1 {
                switchyard_core::dtype::dequantize(w.dtype, w.row(r), &mut buf);
                for t in 0..n_tok {
                    let xr = &x[t * w.cols..(t + 1) * w.cols];
                    res[(r - r0) * n_tok + t] = buf.iter().zip(xr).map(|(a, b)| a * b).sum();
                }
            }
            (r0, res)
        })
        .collect();
    for (r0, res) in results {
        let n = res.len() / n_tok;
        for i in 0..n {
            for t in 0..n_tok {
                out[t * rows + r0 + i] = res[i * n_tok + t];
            }
        }
    }
}
