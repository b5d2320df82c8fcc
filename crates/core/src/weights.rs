//! Named weight tensors as raw bytes in their file encoding, shared without copying.

use std::sync::Arc;

use crate::GgmlType;

/// A byte range inside a shared buffer (typically a memory-mapped model file).
#[derive(Clone)]
pub struct WeightBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    offset: usize,
    len: usize,
}

impl WeightBytes {
    /// A view of `len` bytes at `offset` of `owner`.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, offset: usize, len: usize) -> Self {
        let total = (*owner).as_ref().len();
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= total),
            "WeightBytes out of range"
        );
        Self { owner, offset, len }
    }

    /// Owned bytes (used for weights built in memory, e.g. by tests).
    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        Self {
            owner: Arc::new(v),
            offset: 0,
            len,
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.offset..self.offset + self.len]
    }
}

impl std::fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightBytes({} bytes)", self.len)
    }
}

/// One weight tensor. `shape` is in GGML order: `shape[0]` is the length of a row (the
/// contiguous dimension), `shape[1]` the number of rows.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// Tensor name, in GGUF naming (`blk.3.attn_q.weight`).
    pub name: String,
    /// Element type.
    pub dtype: GgmlType,
    /// Dimensions, innermost first.
    pub shape: Vec<usize>,
    /// Encoded data.
    pub data: WeightBytes,
}

impl Tensor {
    /// Total number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row length (`shape[0]`).
    pub fn row_len(&self) -> usize {
        self.shape[0]
    }

    /// Number of rows (product of all but the first dimension).
    pub fn n_rows(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Dequantizes the whole tensor to f32 (tests and load-time conversions only).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.numel()];
        crate::dtype::dequantize(self.dtype, self.data.as_slice(), &mut out);
        out
    }
}

/// Where a backend gets its weights from, by GGUF tensor name.
pub trait WeightSource: Send + Sync {
    /// The tensor with this name, if present.
    fn tensor(&self, name: &str) -> Option<Tensor>;
}
