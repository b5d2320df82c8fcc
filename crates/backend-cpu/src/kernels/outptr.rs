//! The output of a matmul as its row chunks write it concurrently.

/// Where a chunk of rows writes its results: `out[t * rows + r]`.
///
/// Chunks run concurrently and each writes only the rows it was given, so the writes of
/// different chunks never overlap; the pointer is valid for `len` elements for the whole call of
/// `matmul_with`, which holds the `&mut` borrow.
pub(crate) struct OutPtr {
    pub(super) ptr: *mut f32,
    pub(super) len: usize,
    pub(super) rows: usize,
}

// SAFETY: `OutPtr` is only a way to write disjoint elements of one `&mut [f32]` from several
// rayon workers; every writer has exclusive use of the rows it writes (see `write`).
unsafe impl Send for OutPtr {}
// SAFETY: as above: shared references are used only for writes to disjoint elements.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Stores `v` at `out[t * rows + r ..]` (bounds checked): one burst of writes for a run of
    /// rows, rather than a write per row into as many output rows as there are tokens (whose
    /// lines may all fall into the same cache set).
    ///
    /// # Safety
    /// No other thread may read or write rows `r..r + v.len()` concurrently: the caller must be
    /// the one chunk that owns them.
    #[inline]
    pub(crate) unsafe fn write_run(&self, t: usize, r: usize, v: &[f32]) {
        let i = t * self.rows + r;
        assert!(
            r + v.len() <= self.rows && i + v.len() <= self.len,
            "OutPtr::write_run out of bounds"
        );
        // SAFETY: `i + v.len() <= len`, so the elements are inside the output slice, which
        // outlives every chunk; the caller guarantees no concurrent access to these rows.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.ptr.add(i), v.len()) };
    }

    /// [`write_run`](Self::write_run) of exactly 8 values: a fixed-size copy the compiler
    /// inlines (the variable-length one is a `memcpy` call, 2% of a 16-sequence decode step
    /// when made for every 8 rows of the lm_head and token).
    ///
    /// # Safety
    /// As for `write_run`.
    #[inline]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) unsafe fn write8(&self, t: usize, r: usize, v: &[f32; 8]) {
        let i = t * self.rows + r;
        assert!(
            r + 8 <= self.rows && i + 8 <= self.len,
            "OutPtr::write8 out of bounds"
        );
        // SAFETY: `i + 8 <= len`, so the elements are inside the output slice, which outlives
        // every chunk; the caller guarantees no concurrent access to these rows.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.ptr.add(i), 8) };
    }

    /// Stores `v` at `out[t * rows + r]` (bounds checked).
    ///
    /// # Safety
    /// No other thread may read or write row `r` concurrently: the caller must be the one chunk
    /// that owns row `r`.
    #[inline]
    pub(crate) unsafe fn write(&self, t: usize, r: usize, v: f32) {
        let i = t * self.rows + r;
        assert!(r < self.rows && i < self.len, "OutPtr::write out of bounds");
        // SAFETY: `i < len`, so the element is inside the output slice, which outlives every
        // chunk; the caller guarantees no concurrent access to row `r`.
        unsafe { *self.ptr.add(i) = v };
    }
}
