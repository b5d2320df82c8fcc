//! Large weight copies in memory backed by transparent huge pages where the kernel allows, and
//! the release of the model file's pages once the copies are made.
//!
//! The repacked matrices (`PackedQ8`, `TransposedQ0`, `TransposedK`) are read end to end on
//! every decoding step; the output projection alone is ~180 MB for Gemma 3 270M. With 4 KiB
//! pages such a scan needs a TLB entry per 4 KiB; with 2 MiB pages one per 2 MiB. Linux gives
//! huge pages to an anonymous range when THP is `always`, or when it is `madvise` (the common
//! default) and the range was `madvise(MADV_HUGEPAGE)`d before it was first touched. So on
//! Linux a [`HugeBuf`] of at least 2 MiB is its own anonymous map, 2 MiB aligned, whose whole
//! huge pages are advised before the first write (`map_huge`). Where THP is off it is still
//! such a map (4 KiB pages); on other systems, and for small buffers, an ordinary allocation:
//! same contents, same code. `SWITCHYARD_HUGEPAGES=0` skips the advice (for measuring it).

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Size of a huge page on x86-64 and (4 KiB-granule) aarch64 Linux.
const HUGE: usize = 2 << 20;
/// Size of a base page there.
const PAGE: usize = 4 << 10;

/// A fixed-length, zero-initialised buffer of plain-old-data elements; at least 2 MiB large
/// ones are 2 MiB aligned and advised for huge pages (see the module docs).
pub struct HugeBuf<T: bytemuck::Pod> {
    ptr: NonNull<T>,
    len: usize,
    alloc: Alloc,
}

/// How a [`HugeBuf`]'s memory was obtained.
enum Alloc {
    /// Nothing (zero bytes).
    None,
    /// The global allocator, with this layout.
    Heap(Layout),
    /// Its own anonymous map of this many bytes (Linux, huge buffers).
    #[cfg_attr(not(target_os = "linux"), expect(dead_code, reason = "Linux only"))]
    Map(usize),
}

// SAFETY: `HugeBuf` owns its allocation exclusively, like a `Vec<T>`; `T: Pod` has no
// thread-affine state.
unsafe impl<T: bytemuck::Pod + Send> Send for HugeBuf<T> {}
// SAFETY: shared access only hands out `&[T]`, like a `Vec<T>`.
unsafe impl<T: bytemuck::Pod + Sync> Sync for HugeBuf<T> {}

fn advise_enabled() -> bool {
    !std::env::var("SWITCHYARD_HUGEPAGES").is_ok_and(|v| v.trim() == "0")
}

impl<T: bytemuck::Pod> HugeBuf<T> {
    /// `len` zeros.
    ///
    /// # Panics
    /// If the size overflows; aborts (like `Vec`) if the allocation fails.
    pub fn zeroed(len: usize) -> Self {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .expect("HugeBuf: size overflows");
        if bytes == 0 {
            return Self {
                ptr: NonNull::dangling(),
                len,
                alloc: Alloc::None,
            };
        }
        if bytes >= HUGE {
            if let Some(p) = map_huge(bytes) {
                return Self {
                    ptr: p.cast(),
                    len,
                    alloc: Alloc::Map(bytes.next_multiple_of(PAGE)),
                };
            }
        }
        let layout = Layout::from_size_align(bytes, std::mem::align_of::<T>().max(64))
            .expect("HugeBuf: bad layout");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(raw) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Self {
            ptr: raw.cast(),
            len,
            alloc: Alloc::Heap(layout),
        }
    }
}

/// A fresh anonymous map of `bytes` (rounded up to whole base pages) starting on a huge-page
/// boundary, its whole huge pages advised for THP before anything touches them: a buffer from
/// the heap may reuse pages the load already touched, which stay 4 KiB pages, and rounding the
/// buffer up to whole huge pages would make the rounded-up tail resident too (a huge page is
/// backed whole at its first touch: for Qwen2.5 0.5B's 72 matrices of 3 MB, 86 MB). So: only
/// the buffer's own whole huge pages are huge, the rest of its last one stays in 4 KiB pages,
/// and nothing past its end is touched. A new map reads as zeros. `None` where this is not
/// Linux or the map fails (the caller then uses the allocator).
#[cfg(target_os = "linux")]
fn map_huge(bytes: usize) -> Option<NonNull<u8>> {
    let len = bytes.next_multiple_of(PAGE);
    let total = len.checked_add(HUGE)?;
    // SAFETY: a new private anonymous map; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let base = p as usize;
    let start = base.next_multiple_of(HUGE);
    // SAFETY: `base..start` and `start + len..base + total` are the parts of the map just made
    // that lie outside the buffer (`start - base <= HUGE - PAGE`, so `start + len <= base +
    // total`); nothing refers to them.
    unsafe {
        if start > base {
            libc::munmap(p, start - base);
        }
        if base + total > start + len {
            libc::munmap(
                (start + len) as *mut libc::c_void,
                base + total - start - len,
            );
        }
    }
    if advise_enabled() {
        advise_huge(start as *mut u8, bytes / HUGE * HUGE);
    }
    NonNull::new(start as *mut u8)
}

#[cfg(not(target_os = "linux"))]
fn map_huge(_: usize) -> Option<NonNull<u8>> {
    None
}

#[cfg(target_os = "linux")]
fn advise_huge(p: *mut u8, len: usize) {
    // SAFETY: `p..p + len` is one live allocation of ours; MADV_HUGEPAGE only changes how the
    // kernel backs the range, never its contents. A failure (THP not built in) is harmless.
    let _ = unsafe { libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_: *mut u8, _: usize) {}

/// Drops the pages of `bytes`, a part of a read-only shared map of a model file (of what
/// `WeightBytes::file_map` returns), from this process's resident memory, with the rest of
/// their first and last pages. After load, the matrices the kernels use are copies in other
/// layouts, and what was read to make them (and the header, the norms) would otherwise stay
/// resident for the life of the process; an embedding lookup maps whole page-cache folios
/// (hundreds of KiB) around each row it reads. A page read again afterwards is mapped again
/// from the file, with the same bytes. Does nothing on other systems.
#[cfg(target_os = "linux")]
pub(crate) fn release_file_map(bytes: &[u8]) {
    // SAFETY: `sysconf` has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let start = bytes.as_ptr() as usize / page * page;
    let end = (bytes.as_ptr() as usize + bytes.len()).next_multiple_of(page);
    if !bytes.is_empty() {
        // SAFETY: `start..end` are the pages of `bytes`, inside a read-only MAP_SHARED map of a
        // file that nothing writes while it is mapped (`WeightBytes::in_file_map`'s contract;
        // the map starts on a page and covers its last page whole). For such a map
        // MADV_DONTNEED only unmaps the pages: the next read of any byte faults the file's page
        // in again, so every reference into the map keeps reading the same bytes. A failure
        // leaves the pages as they were.
        let _ =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn release_file_map(_: &[u8]) {}

/// Returns the allocator's free memory to the system (glibc's `malloc_trim`): what the load
/// freed (the model's parse, the tokenizer's construction) would otherwise stay in the heap.
/// Does nothing with other C libraries.
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions; it only returns free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl<T: bytemuck::Pod> Drop for HugeBuf<T> {
    fn drop(&mut self) {
        match self.alloc {
            Alloc::None => {}
            // SAFETY: allocated in `zeroed` with exactly this layout.
            Alloc::Heap(layout) => unsafe { alloc::dealloc(self.ptr.as_ptr().cast(), layout) },
            #[cfg(target_os = "linux")]
            // SAFETY: the map `map_huge` made for this buffer, `len` bytes from `ptr`; no
            // reference into it outlives `self`.
            Alloc::Map(len) => unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), len);
            },
            #[cfg(not(target_os = "linux"))]
            Alloc::Map(_) => unreachable!("maps are made only on Linux"),
        }
    }
}

impl<T: bytemuck::Pod> Deref for HugeBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialised `T`s owned by `self` (or is dangling with a
        // zero-byte size: `len == 0`, or `T` zero-sized, for which dangling is valid).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: bytemuck::Pod> DerefMut for HugeBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_writable_and_aligned_when_large() {
        for len in [
            0usize,
            1,
            7,
            1000,
            (HUGE / 4) + 3,
            3 * HUGE / 4,
            5 * HUGE / 8 + 1,
        ] {
            let mut b = HugeBuf::<u32>::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&v| v == 0));
            for (i, v) in b.iter_mut().enumerate() {
                *v = i as u32;
            }
            assert!(b.iter().enumerate().all(|(i, &v)| v == i as u32));
            if cfg!(target_os = "linux") && len * 4 >= HUGE {
                assert_eq!(b.as_ptr() as usize % HUGE, 0);
            }
        }
    }
}
