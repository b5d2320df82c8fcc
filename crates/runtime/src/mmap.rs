//! Read-only memory maps of model files: the one `unsafe` outside the backend crates (see
//! ARCHITECTURE.md, "Invariants"), shared by the GGUF and safetensors readers.

use std::sync::Arc;

/// Bytes shared by every tensor view of one file.
pub(crate) type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

struct MmapBytes(memmap2::Mmap);

impl AsRef<[u8]> for MmapBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Maps `file` read-only.
pub(crate) fn map_file(file: &std::fs::File) -> std::io::Result<SharedBytes> {
    #[allow(unsafe_code)]
    // SAFETY: the mapping is read-only; memmap2 requires that the file is not modified while
    // mapped. Model files are immutable cache entries (registry files verified by sha256, Hub
    // snapshots content-addressed); modifying or truncating one while it is served is documented
    // as unsupported (it faults the process).
    let mmap = unsafe { memmap2::Mmap::map(file) }?;
    Ok(Arc::new(MmapBytes(mmap)))
}
