//! Compiles the CUDA C kernels with NVRTC for the device's architecture, and caches the result
//! on disk keyed by a hash of source, architecture, options and NVRTC version.
//!
//! The preferred output is a CUBIN for `sm_XY` (no JIT at load, and it loads on any driver new
//! enough for the GPU); if NVRTC cannot produce one, PTX for `compute_XY` is used instead and the
//! driver JIT-compiles it.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::time::Instant;

use cudarc::nvrtc::{sys, Ptx};
use sha2::{Digest, Sha256};
use switchyard_core::BackendError;

/// The kernels' source.
pub(crate) const SOURCE: &str = include_str!("kernels.cu");

/// Options passed to NVRTC besides the architecture. Deliberately no `--use_fast_math`: the
/// kernels must follow the CPU backend's float semantics (precise `expf`, `tanhf`, `sincosf`,
/// `sqrtf` and division), and no `--restrict` (some kernels work in place).
const OPTIONS: &[&str] = &["--std=c++14"];

/// How the kernel module was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelBuild {
    /// `cubin` or `ptx`.
    pub format: &'static str,
    /// The architecture compiled for (`sm_90`, or `compute_90` for PTX).
    pub arch: String,
    /// NVRTC version (major, minor).
    pub nvrtc_version: (i32, i32),
    /// Whether the module came from the disk cache.
    pub from_cache: bool,
    /// The cache file, when the cache directory is usable.
    pub cache_file: Option<PathBuf>,
    /// Seconds spent compiling (0 on a cache hit).
    pub compile_seconds: f64,
}

/// The compiled module image plus how it was obtained.
pub(crate) struct Compiled {
    pub image: Vec<u8>,
    pub build: KernelBuild,
}

impl Compiled {
    pub(crate) fn to_ptx(&self) -> Ptx {
        match self.build.format {
            "cubin" => Ptx::from_binary(self.image.clone()),
            _ => {
                let text = String::from_utf8_lossy(&self.image);
                Ptx::from_src(text.trim_end_matches('\0').to_string())
            }
        }
    }
}

/// Directory of the kernel cache: `$SWITCHYARD_CACHE/cuda-kernels`, else
/// `<user cache dir>/switchyard/cuda-kernels` (`~/.cache/...` on Linux).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SWITCHYARD_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("cuda-kernels"));
    }
    dirs::cache_dir().map(|d| d.join("switchyard").join("cuda-kernels"))
}

fn nvrtc_err(what: &str, r: sys::nvrtcResult) -> BackendError {
    BackendError::Device(format!("NVRTC {what} failed: {r:?}"))
}

pub(crate) fn nvrtc_version() -> Result<(i32, i32), BackendError> {
    let (mut major, mut minor) = (0 as c_int, 0 as c_int);
    // SAFETY: both pointers are valid for writes of one c_int; the library is loaded (callers
    // checked `is_culib_present`).
    let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc_err("nvrtcVersion", r));
    }
    Ok((major, minor))
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from nvrtcCreateProgram and is destroyed exactly once.
        unsafe {
            sys::nvrtcDestroyProgram(&mut self.0);
        }
    }
}

impl Program {
    fn new(src: &CStr) -> Result<Self, BackendError> {
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: `src` and the name are NUL-terminated strings that outlive the call (NVRTC
        // copies them); zero headers are passed with null arrays, as the API allows.
        let r = unsafe {
            sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                c"switchyard_kernels.cu".as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err("nvrtcCreateProgram", r));
        }
        Ok(Self(prog))
    }

    fn compile(&self, options: &[String]) -> Result<(), BackendError> {
        let c_opts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()).expect("options have no NUL"))
            .collect();
        let ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: `self.0` is a live program; `ptrs` holds `ptrs.len()` valid C strings that
        // outlive the call.
        let r = unsafe { sys::nvrtcCompileProgram(self.0, ptrs.len() as c_int, ptrs.as_ptr()) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            let log = self.log();
            return Err(BackendError::Device(format!(
                "NVRTC compilation failed ({r:?}) with options {options:?}:\n{log}"
            )));
        }
        Ok(())
    }

    fn log(&self) -> String {
        let mut size = 0usize;
        // SAFETY: live program, valid out pointer.
        if unsafe { sys::nvrtcGetProgramLogSize(self.0, &mut size) }
            != sys::nvrtcResult::NVRTC_SUCCESS
        {
            return String::new();
        }
        let mut buf = vec![0u8; size.max(1)];
        // SAFETY: `buf` has room for `size` bytes, as NVRTC asked.
        if unsafe { sys::nvrtcGetProgramLog(self.0, buf.as_mut_ptr().cast()) }
            != sys::nvrtcResult::NVRTC_SUCCESS
        {
            return String::new();
        }
        String::from_utf8_lossy(&buf)
            .trim_end_matches('\0')
            .to_string()
    }

    fn cubin(&self) -> Result<Vec<u8>, BackendError> {
        let mut size = 0usize;
        // SAFETY: live, compiled program; valid out pointer.
        let r = unsafe { sys::nvrtcGetCUBINSize(self.0, &mut size) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
            return Err(nvrtc_err("nvrtcGetCUBINSize", r));
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has the `size` bytes NVRTC reported.
        let r = unsafe { sys::nvrtcGetCUBIN(self.0, buf.as_mut_ptr().cast()) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err("nvrtcGetCUBIN", r));
        }
        Ok(buf)
    }

    fn ptx(&self) -> Result<Vec<u8>, BackendError> {
        let mut size = 0usize;
        // SAFETY: live, compiled program; valid out pointer.
        let r = unsafe { sys::nvrtcGetPTXSize(self.0, &mut size) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
            return Err(nvrtc_err("nvrtcGetPTXSize", r));
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has the `size` bytes NVRTC reported (including the trailing NUL).
        let r = unsafe { sys::nvrtcGetPTX(self.0, buf.as_mut_ptr().cast()) };
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(nvrtc_err("nvrtcGetPTX", r));
        }
        Ok(buf)
    }
}

fn cache_key(format: &str, arch: &str, options: &[String], nvrtc: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(SOURCE.as_bytes());
    h.update([0]);
    h.update(format.as_bytes());
    h.update([0]);
    h.update(arch.as_bytes());
    for o in options {
        h.update([0]);
        h.update(o.as_bytes());
    }
    h.update(format!("\0nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    let digest = h.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn read_cache(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok().filter(|b| !b.is_empty())
}

fn write_cache(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(
            "cannot create kernel cache directory {}: {e}",
            dir.display()
        );
        return;
    }
    // Write then rename, so a concurrent reader never sees a partial file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!("cannot write kernel cache file {}: {e}", path.display());
    }
}

/// Compiles (or loads from the cache directory `cache`) the kernels for compute capability `cc`
/// in `format` (`cubin` for `sm_XY`, `ptx` for `compute_XY`).
pub(crate) fn compile(
    cc: (i32, i32),
    format: &'static str,
    cache: Option<&Path>,
) -> Result<Compiled, BackendError> {
    let nvrtc = nvrtc_version()?;
    let arch = match format {
        "cubin" => format!("sm_{}{}", cc.0, cc.1),
        _ => format!("compute_{}{}", cc.0, cc.1),
    };
    let mut options: Vec<String> = vec![format!("--gpu-architecture={arch}")];
    options.extend(OPTIONS.iter().map(|s| s.to_string()));
    let key = cache_key(format, &arch, &options, nvrtc);
    let cache_file = cache.map(|d| d.join(format!("kernels-{arch}-{key}.{format}")));
    if let Some(bytes) = cache_file.as_deref().and_then(read_cache) {
        tracing::debug!("CUDA kernels loaded from cache {:?}", cache_file);
        return Ok(Compiled {
            image: bytes,
            build: KernelBuild {
                format,
                arch,
                nvrtc_version: nvrtc,
                from_cache: true,
                cache_file,
                compile_seconds: 0.0,
            },
        });
    }
    let start = Instant::now();
    let src = CString::new(SOURCE).expect("kernel source has no NUL");
    let prog = Program::new(&src)?;
    prog.compile(&options)?;
    let image = match format {
        "cubin" => prog.cubin()?,
        _ => prog.ptx()?,
    };
    let compile_seconds = start.elapsed().as_secs_f64();
    tracing::info!("compiled CUDA kernels for {arch} ({format}) in {compile_seconds:.2}s");
    if let Some(path) = &cache_file {
        write_cache(path, &image);
    }
    Ok(Compiled {
        image,
        build: KernelBuild {
            format,
            arch,
            nvrtc_version: nvrtc,
            from_cache: false,
            cache_file,
            compile_seconds,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_depends_on_arch_and_options() {
        let a = cache_key("cubin", "sm_90", &["x".into()], (12, 8));
        assert_eq!(a.len(), 32);
        assert_ne!(a, cache_key("cubin", "sm_89", &["x".into()], (12, 8)));
        assert_ne!(a, cache_key("cubin", "sm_90", &["y".into()], (12, 8)));
        assert_ne!(a, cache_key("cubin", "sm_90", &["x".into()], (12, 9)));
        assert_ne!(a, cache_key("ptx", "sm_90", &["x".into()], (12, 8)));
        assert_eq!(a, cache_key("cubin", "sm_90", &["x".into()], (12, 8)));
    }

    #[test]
    fn cache_dir_honours_env() {
        // Only checks the shape; the environment is not modified (tests run in parallel).
        if let Some(d) = cache_dir() {
            assert!(d.ends_with("cuda-kernels"));
        }
    }

    /// Compiles the real kernel source with NVRTC when the library can be loaded (no GPU is
    /// needed for that): e.g. `LD_LIBRARY_PATH=<site-packages>/nvidia/cuda_nvrtc/lib`.
    #[test]
    fn nvrtc_compiles_the_kernels_when_available() {
        // SAFETY: only tries to dlopen the candidate library names.
        let present =
            crate::catch_cuda_panic(|| unsafe { sys::is_culib_present() }).unwrap_or(false);
        if !present {
            eprintln!("SKIPPED: NVRTC (libnvrtc.so) not found");
            return;
        }
        let dir =
            std::env::temp_dir().join(format!("switchyard-nvrtc-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (cc, format) in [((9, 0), "cubin"), ((8, 0), "cubin"), ((9, 0), "ptx")] {
            let first = compile(cc, format, Some(&dir)).unwrap_or_else(|e| panic!("{e}"));
            assert!(!first.build.from_cache);
            assert!(
                first.image.len() > 1000,
                "{format} for {cc:?}: {} bytes",
                first.image.len()
            );
            if format == "ptx" {
                let text = String::from_utf8_lossy(&first.image);
                for name in crate::gpu::KERNEL_NAMES {
                    assert!(
                        text.contains(&format!(".entry {name}(")),
                        "{name} missing from PTX"
                    );
                }
            }
            let second = compile(cc, format, Some(&dir)).unwrap();
            assert!(second.build.from_cache);
            assert_eq!(first.image, second.image);
            eprintln!(
                "NVRTC {:?} built {} for {} in {:.2}s ({} bytes)",
                first.build.nvrtc_version,
                format,
                first.build.arch,
                first.build.compile_seconds,
                first.image.len()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn source_declares_every_kernel() {
        for name in crate::gpu::KERNEL_NAMES {
            assert!(
                SOURCE.contains(&format!("__global__ void {name}(")),
                "kernel {name} missing from kernels.cu"
            );
        }
    }
}
