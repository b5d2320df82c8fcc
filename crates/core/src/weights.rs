//! Named weight tensors as raw bytes in their file encoding, shared without copying.

use std::sync::Arc;

use crate::GgmlType;

/// A byte range inside a shared buffer (typically a memory-mapped model file).
#[derive(Clone)]
pub struct WeightBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    offset: usize,
    len: usize,
    /// `owner` is a read-only shared memory map of a file ([`WeightBytes::in_file_map`]).
    file_map: bool,
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
        Self {
            owner,
            offset,
            len,
            file_map: false,
        }
    }

    /// [`WeightBytes::new`] for an `owner` that is a read-only, shared memory map of a whole
    /// file, which nothing writes while it is mapped: its pages always read as the file's
    /// bytes, so a backend that copied what it needs may drop them from its resident memory
    /// (`madvise(MADV_DONTNEED)`), and any later read maps them again from the file (see
    /// [`WeightBytes::file_map`]).
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn in_file_map(
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
        len: usize,
    ) -> Self {
        Self {
            file_map: true,
            ..Self::new(owner, offset, len)
        }
    }

    /// The whole file map these bytes are a view of, where they were made by
    /// [`WeightBytes::in_file_map`] (whose contract says what a backend may do with it).
    pub fn file_map(&self) -> Option<&[u8]> {
        self.file_map.then(|| (*self.owner).as_ref())
    }

    /// Owned bytes (used for weights built in memory, e.g. by tests).
    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        Self {
            owner: Arc::new(v),
            offset: 0,
            len,
            file_map: false,
        }
    }

    /// The `len` bytes at `offset` of this view, sharing the owner.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn slice(&self, offset: usize, len: usize) -> Self {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "WeightBytes::slice out of range"
        );
        Self {
            owner: self.owner.clone(),
            offset: self.offset + offset,
            len,
            file_map: self.file_map,
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

    /// Rows `r0..r1` of a 2-D tensor, or of the rows of all its matrices taken in order (the
    /// rows of expert `e` of a `[cols, rows, n]` tensor are `e * rows .. (e + 1) * rows`), as a
    /// 2-D tensor sharing the bytes. Rows are whole blocks, so any row range is a byte range.
    ///
    /// # Panics
    /// If the range is out of bounds.
    pub fn rows(&self, r0: usize, r1: usize, name: String) -> Tensor {
        assert!(r0 <= r1 && r1 <= self.n_rows(), "Tensor::rows out of range");
        let rb = self.dtype.bytes_for(self.row_len());
        Tensor {
            name,
            dtype: self.dtype,
            shape: vec![self.row_len(), r1 - r0],
            data: self.data.slice(r0 * rb, (r1 - r0) * rb),
        }
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
