//! Read-only memory maps of model files: the one `unsafe` outside the backend crates (see
//! ARCHITECTURE.md, "Invariants"), shared by the GGUF and safetensors readers.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Bytes shared by every tensor view of one file.
pub(crate) type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

struct MmapBytes(memmap2::Mmap);

impl AsRef<[u8]> for MmapBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

static READ_INTO_MEMORY: AtomicBool = AtomicBool::new(false);

/// `--no-mmap`: model files opened from now on are read into anonymous memory instead of being
/// mapped, so truncating, rewriting or removing a file while it is served cannot fault the
/// process (at the cost of the file's size in resident memory and a full read at start-up).
pub fn set_read_into_memory(on: bool) {
    READ_INTO_MEMORY.store(on, Ordering::Relaxed);
}

/// Maps `file` read-only (or, after `set_read_into_memory(true)`, reads it into page-aligned
/// anonymous memory); `true` with a map of the file (`WeightBytes::in_file_map` views).
pub(crate) fn map_file(file: &std::fs::File) -> std::io::Result<(SharedBytes, bool)> {
    if READ_INTO_MEMORY.load(Ordering::Relaxed) {
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("file too large for this address space"))?;
        if len == 0 {
            return Ok((Arc::new(Vec::<u8>::new()), false));
        }
        let mut anon = memmap2::MmapMut::map_anon(len)?;
        let mut f = file;
        f.read_exact(&mut anon)?;
        return Ok((Arc::new(MmapBytes(anon.make_read_only()?)), false));
    }
    #[expect(
        unsafe_code,
        reason = "the one read-only mmap of a model file (ARCHITECTURE.md, invariants)"
    )]
    // SAFETY: the mapping is read-only; memmap2 requires that the file is not modified while
    // mapped. Model files are immutable cache entries (registry files verified by sha256, Hub
    // snapshots content-addressed); modifying or truncating one while it is served is documented
    // as unsupported (it faults the process).
    let mmap = unsafe { memmap2::Mmap::map(file) }?;
    Ok((Arc::new(MmapBytes(mmap)), true))
}
