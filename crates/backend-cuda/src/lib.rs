//! CUDA backend of Switchyard: runs gemma3 / qwen2 / llama decoder models on an NVIDIA GPU over a
//! packed batch of many sequences, with a paged f16 KV cache.
//!
//! Everything is loaded at run time through [`cudarc`] (driver API, NVRTC, cuBLAS), so the crate
//! builds without a CUDA toolkit and a machine without a GPU gets a typed
//! [`BackendError::Unavailable`] instead of a panic:
//!
//! ```no_run
//! match switchyard_backend_cuda::probe() {
//!     Ok(devices) => println!("{} CUDA device(s): {}", devices.len(), devices[0].name),
//!     Err(e) => eprintln!("no CUDA: {e}"),
//! }
//! ```
//!
//! How it computes (see `ARCHITECTURE.md` for the picture):
//! - weights are dequantized at load, on the host, with core's scalar [`dequantize`] and kept on
//!   the device as bf16; q/k/v and gate/up are fused into one matrix each;
//! - GEMMs are cuBLAS `GemmEx` (bf16 inputs, f32 accumulation and f32 output); the residual
//!   stream and all element-wise math are f32;
//! - the other kernels (`kernels.cu`) are CUDA C compiled by NVRTC at start-up for the device's
//!   architecture and cached on disk (see [`kernel_cache_dir`]);
//! - attention is one paged kernel for prefill chunks and decodes alike (causal, sliding window,
//!   GQA, online softmax) reading keys and values back from the f16 cache;
//! - a step's metadata (token ids, positions, cache slots, block tables, logits rows) goes up in
//!   one copy from a pinned buffer, and the host waits only when it reads the logits back;
//! - decode-only steps of up to [`MAX_GRAPH_BATCH`] sequences replay a CUDA graph captured once
//!   per power-of-two batch bucket: the batch is padded with dummy one-token sequences that write
//!   their K/V into a reserved cache block and whose logits are discarded; every size is fixed
//!   per bucket and everything that varies (context lengths, block tables) is read from device
//!   memory. `SWITCHYARD_CUDA_GRAPHS=0` (or [`CudaBackend::set_cuda_graphs`]) turns this off; a
//!   failed capture turns it off with a logged reason;
//! - greedy steps can stay on the device (`Backend::forward_greedy`: one id per row comes back),
//!   and the logits buffer the engine hands back is reused;
//! - `SWITCHYARD_CUDA_TRACE_STEPS=1` prints every step's shape and a summary of its logits
//!   (argmax, range, non-finite count) to stderr, for diagnosis on a GPU machine.
//!
//! [`dequantize`]: switchyard_core::dtype::dequantize
#![deny(missing_docs)]

mod compile;
mod counters;
mod gpu;
mod model;
pub mod ops;
mod step;
mod weights;

use cudarc::driver::{result as drv, sys as drv_sys};
use switchyard_core::BackendError;

pub use compile::KernelBuild;
pub use gpu::DeviceCounters;
pub use model::{CudaBackend, StepStats, MAX_GRAPH_BATCH};

/// One CUDA device as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Total device memory in bytes.
    pub total_memory: u64,
    /// Compute capability (major, minor), e.g. (9, 0) for Hopper.
    pub compute_capability: (i32, i32),
    /// Number of streaming multiprocessors.
    pub multiprocessors: i32,
    /// CUDA version the driver supports, e.g. 12040 for 12.4.
    pub driver_version: i32,
}

fn unavailable(reason: impl Into<String>) -> BackendError {
    BackendError::Unavailable {
        backend: "cuda",
        reason: reason.into(),
    }
}

/// Runs `f`, turning a panic inside cudarc (a missing library or symbol panics in its dynamic
/// loader) into [`BackendError::Unavailable`].
pub(crate) fn catch_cuda_panic<T>(f: impl FnOnce() -> T) -> Result<T, BackendError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        unavailable(format!("the CUDA libraries could not be used: {msg}"))
    })
}

/// Checks that the CUDA driver library (`libcuda`) can be loaded.
fn check_driver_library() -> Result<(), BackendError> {
    // SAFETY: only tries to dlopen the candidate library names and drops the handles.
    if catch_cuda_panic(|| unsafe { drv_sys::is_culib_present() })? {
        Ok(())
    } else {
        Err(unavailable(
            "the CUDA driver library (libcuda.so) was not found: no NVIDIA driver installed, or not on \
             the loader path",
        ))
    }
}

/// Checks that every library the backend loads at run time is present: the driver (`libcuda`),
/// NVRTC (`libnvrtc`) and cuBLAS (`libcublas`).
pub fn check_libraries() -> Result<(), BackendError> {
    check_driver_library()?;
    // SAFETY: only tries to dlopen the candidate library names and drops the handles.
    if !catch_cuda_panic(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })? {
        return Err(unavailable(
            "NVRTC (libnvrtc.so) was not found: install the CUDA runtime libraries (e.g. the \
             nvidia-cuda-nvrtc-cu12 wheel) and add their directory to LD_LIBRARY_PATH",
        ));
    }
    // SAFETY: as above.
    if !catch_cuda_panic(|| unsafe { cudarc::cublas::sys::is_culib_present() })? {
        return Err(unavailable(
            "cuBLAS (libcublas.so) was not found: install the CUDA runtime libraries (e.g. the \
             nvidia-cublas-cu12 wheel) and add their directory to LD_LIBRARY_PATH",
        ));
    }
    Ok(())
}

/// Lists the CUDA devices, or says why there are none: no driver library, a driver that fails to
/// initialize, or no device. Never panics.
pub fn probe() -> Result<Vec<CudaDeviceInfo>, BackendError> {
    check_driver_library()?;
    catch_cuda_panic(probe_inner)?
}

fn probe_inner() -> Result<Vec<CudaDeviceInfo>, BackendError> {
    let ctx = |what: &str, e: drv::DriverError| unavailable(format!("{what} failed: {e:?}"));
    drv::init().map_err(|e| {
        ctx(
            "cuInit (the driver is installed but unusable, or no device)",
            e,
        )
    })?;
    let mut version = 0i32;
    // SAFETY: the driver is loaded and initialized; the out pointer is valid.
    unsafe { drv_sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| ctx("cuDriverGetVersion", e))?;
    let count = drv::device::get_count().map_err(|e| ctx("cuDeviceGetCount", e))?;
    if count <= 0 {
        return Err(unavailable("the CUDA driver reports no device"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let dev = drv::device::get(i).map_err(|e| ctx("cuDeviceGet", e))?;
        let name = drv::device::get_name(dev).map_err(|e| ctx("cuDeviceGetName", e))?;
        let attr = |a: drv_sys::CUdevice_attribute| {
            // SAFETY: `dev` came from cuDeviceGet above.
            unsafe { drv::device::get_attribute(dev, a) }
                .map_err(|e| ctx("cuDeviceGetAttribute", e))
        };
        use drv_sys::CUdevice_attribute as A;
        let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let sms = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        // SAFETY: `dev` came from cuDeviceGet above.
        let mem = unsafe { drv::device::total_mem(dev) }.map_err(|e| ctx("cuDeviceTotalMem", e))?;
        out.push(CudaDeviceInfo {
            ordinal: i as usize,
            name,
            total_memory: mem as u64,
            compute_capability: (major, minor),
            multiprocessors: sms,
            driver_version: version,
        });
    }
    Ok(out)
}

/// Where compiled kernels are cached: `$SWITCHYARD_CACHE/cuda-kernels`, else
/// `~/.cache/switchyard/cuda-kernels` (the platform's user cache directory).
pub fn kernel_cache_dir() -> Option<std::path::PathBuf> {
    compile::cache_dir()
}

/// The CUDA C source of the kernels (for inspection and tests).
pub fn kernel_source() -> &'static str {
    compile::SOURCE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_never_panics() {
        match probe() {
            Ok(devs) => assert!(!devs.is_empty()),
            Err(BackendError::Unavailable { backend, reason }) => {
                assert_eq!(backend, "cuda");
                assert!(!reason.is_empty());
            }
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }

    #[test]
    fn caught_panics_become_unavailable() {
        let r: Result<(), _> =
            catch_cuda_panic(|| panic!("deliberate panic (expected in this test)"));
        match r {
            Err(BackendError::Unavailable { reason, .. }) => assert!(reason.contains("deliberate")),
            other => panic!("{other:?}"),
        }
    }
}
