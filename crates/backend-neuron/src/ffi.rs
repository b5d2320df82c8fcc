//! The hand-written `libnrt` function table (from the Neuron SDK's public `nrt/nrt.h`,
//! `nrt/nrt_status.h` and `nrt/nrt_experimental.h`), loaded at run time with `libloading`.

use std::ffi::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};

/// Opaque `nrt_model_t`.
#[repr(C)]
pub struct NrtModel {
    _private: [u8; 0],
}

/// Opaque `nrt_tensor_t`.
#[repr(C)]
pub struct NrtTensor {
    _private: [u8; 0],
}

/// `nrt_tensor_set_t` is `void` in the header.
pub type NrtTensorSet = c_void;

/// `NRT_TENSOR_NAME_MAX`.
pub const TENSOR_NAME_MAX: usize = 256;

/// `nrt_tensor_info_t`.
#[repr(C)]
pub struct NrtTensorInfo {
    /// NUL-terminated name.
    pub name: [c_char; TENSOR_NAME_MAX],
    /// `nrt_tensor_usage_t`: 0 input, 1 output.
    pub usage: c_int,
    /// Size in bytes.
    pub size: usize,
    /// `nrt_dtype_t`.
    pub dtype: c_int,
    /// `ndim` dimensions.
    pub shape: *mut u32,
    /// Number of dimensions.
    pub ndim: u32,
}

/// `nrt_tensor_info_array_t` (a header followed by `tensor_count` entries).
#[repr(C)]
pub struct NrtTensorInfoArray {
    /// Number of entries.
    pub tensor_count: u64,
    /// Flexible array member.
    pub tensor_array: [NrtTensorInfo; 0],
}

/// `NRT_FRAMEWORK_TYPE_NO_FW`.
pub const FRAMEWORK_NO_FW: c_int = 1;
/// `NRT_TENSOR_PLACEMENT_DEVICE`.
pub const PLACEMENT_DEVICE: c_int = 0;
/// `NRT_TENSOR_USAGE_INPUT`.
pub const USAGE_INPUT: c_int = 0;

/// A failed `NRT_STATUS` (every value but `NRT_SUCCESS` = 0), as in `nrt_status.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NrtStatus {
    /// 1.
    #[error("NRT_FAILURE (1): non-specific failure")]
    Failure,
    /// 2.
    #[error("NRT_INVALID (2): invalid argument or malformed NEFF")]
    Invalid,
    /// 3.
    #[error("NRT_INVALID_HANDLE (3): invalid handle")]
    InvalidHandle,
    /// 4.
    #[error("NRT_RESOURCE (4): failed to allocate a resource (device memory, queues)")]
    Resource,
    /// 5.
    #[error("NRT_TIMEOUT (5): operation timed out")]
    Timeout,
    /// 6.
    #[error("NRT_HW_ERROR (6): hardware failure")]
    HwError,
    /// 7.
    #[error("NRT_QUEUE_FULL (7): the execution input queue is full")]
    QueueFull,
    /// 9.
    #[error("NRT_LOAD_NOT_ENOUGH_NC (9): not enough NeuronCores to load the NEFF")]
    LoadNotEnoughNc,
    /// 10.
    #[error("NRT_UNSUPPORTED_NEFF_VERSION (10): NEFF version unsupported by this runtime")]
    UnsupportedNeffVersion,
    /// 11.
    #[error("NRT_FAIL_HOST_MEM_ALLOC (11): host memory allocation failed")]
    FailHostMemAlloc,
    /// 13.
    #[error("NRT_UNINITIALIZED (13): runtime used before nrt_init")]
    Uninitialized,
    /// 14.
    #[error("NRT_CLOSED (14): runtime used after nrt_close")]
    Closed,
    /// 15.
    #[error("NRT_QUEUE_EMPTY (15): accessed an empty queue")]
    QueueEmpty,
    /// 101.
    #[error("NRT_EXEC_UNIT_UNRECOVERABLE (101): execution unit in an unrecoverable state")]
    ExecUnitUnrecoverable,
    /// 1002.
    #[error("NRT_EXEC_BAD_INPUT (1002): invalid input submitted to nrt_execute")]
    ExecBadInput,
    /// 1003.
    #[error("NRT_EXEC_COMPLETED_WITH_NUM_ERR (1003): execution produced NaN")]
    ExecCompletedWithNumErr,
    /// 1004.
    #[error("NRT_EXEC_COMPLETED_WITH_ERR (1004): execution completed with errors")]
    ExecCompletedWithErr,
    /// 1005.
    #[error("NRT_EXEC_NC_BUSY (1005): the NeuronCore is locked by another model or process")]
    ExecNcBusy,
    /// 1006.
    #[error("NRT_EXEC_OOB (1006): an indirect copy or embedding update was out of bounds")]
    ExecOob,
    /// 1100.
    #[error("NRT_COLL_PENDING (1100): collective operation still pending")]
    CollPending,
    /// 1200.
    #[error("NRT_EXEC_HW_ERR_COLLECTIVES (1200): hardware error in collectives")]
    ExecHwErrCollectives,
    /// 1201.
    #[error("NRT_EXEC_HW_ERR_HBM_UE (1201): uncorrectable HBM error")]
    ExecHwErrHbmUe,
    /// 1202.
    #[error("NRT_EXEC_HW_ERR_NC_UE (1202): uncorrectable NeuronCore error")]
    ExecHwErrNcUe,
    /// 1203.
    #[error("NRT_EXEC_HW_ERR_DMA_ABORT (1203): DMA abort")]
    ExecHwErrDmaAbort,
    /// 1204.
    #[error("NRT_EXEC_SW_NQ_OVERFLOW (1204): notification queue overflow")]
    ExecSwNqOverflow,
    /// 1205.
    #[error("NRT_EXEC_HW_ERR_REPAIRABLE_HBM_UE (1205): repairable HBM error")]
    ExecHwErrRepairableHbmUe,
    /// 1206.
    #[error("NRT_NETWORK_PROXY_FAILURE (1206): network proxy failure")]
    NetworkProxyFailure,
    /// A value this crate does not know.
    #[error("NRT_STATUS {0} (unknown)")]
    Unknown(i32),
}

impl NrtStatus {
    /// Every named status, for tests and tables.
    pub const ALL: [NrtStatus; 27] = [
        Self::Failure,
        Self::Invalid,
        Self::InvalidHandle,
        Self::Resource,
        Self::Timeout,
        Self::HwError,
        Self::QueueFull,
        Self::LoadNotEnoughNc,
        Self::UnsupportedNeffVersion,
        Self::FailHostMemAlloc,
        Self::Uninitialized,
        Self::Closed,
        Self::QueueEmpty,
        Self::ExecUnitUnrecoverable,
        Self::ExecBadInput,
        Self::ExecCompletedWithNumErr,
        Self::ExecCompletedWithErr,
        Self::ExecNcBusy,
        Self::ExecOob,
        Self::CollPending,
        Self::ExecHwErrCollectives,
        Self::ExecHwErrHbmUe,
        Self::ExecHwErrNcUe,
        Self::ExecHwErrDmaAbort,
        Self::ExecSwNqOverflow,
        Self::ExecHwErrRepairableHbmUe,
        Self::NetworkProxyFailure,
    ];

    /// `Ok(())` for `NRT_SUCCESS`, else the typed status.
    pub fn check(raw: i32) -> Result<(), NrtStatus> {
        if raw == 0 {
            Ok(())
        } else {
            Err(Self::from_raw(raw))
        }
    }

    /// The status for a non-zero raw value.
    pub fn from_raw(raw: i32) -> NrtStatus {
        Self::ALL
            .into_iter()
            .find(|s| s.as_raw() == raw)
            .unwrap_or(Self::Unknown(raw))
    }

    /// The raw `NRT_STATUS` value.
    pub fn as_raw(self) -> i32 {
        match self {
            Self::Failure => 1,
            Self::Invalid => 2,
            Self::InvalidHandle => 3,
            Self::Resource => 4,
            Self::Timeout => 5,
            Self::HwError => 6,
            Self::QueueFull => 7,
            Self::LoadNotEnoughNc => 9,
            Self::UnsupportedNeffVersion => 10,
            Self::FailHostMemAlloc => 11,
            Self::Uninitialized => 13,
            Self::Closed => 14,
            Self::QueueEmpty => 15,
            Self::ExecUnitUnrecoverable => 101,
            Self::ExecBadInput => 1002,
            Self::ExecCompletedWithNumErr => 1003,
            Self::ExecCompletedWithErr => 1004,
            Self::ExecNcBusy => 1005,
            Self::ExecOob => 1006,
            Self::CollPending => 1100,
            Self::ExecHwErrCollectives => 1200,
            Self::ExecHwErrHbmUe => 1201,
            Self::ExecHwErrNcUe => 1202,
            Self::ExecHwErrDmaAbort => 1203,
            Self::ExecSwNqOverflow => 1204,
            Self::ExecHwErrRepairableHbmUe => 1205,
            Self::NetworkProxyFailure => 1206,
            Self::Unknown(v) => v,
        }
    }

    /// Whether the status means memory ran out.
    pub fn is_out_of_memory(self) -> bool {
        matches!(self, Self::Resource | Self::FailHostMemAlloc)
    }
}

/// Errors of the Neuron runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum NrtError {
    /// No `libnrt` could be loaded.
    #[error("the Neuron runtime library (libnrt.so) could not be loaded: {0}")]
    LibraryMissing(String),
    /// The library lacks a function this crate needs.
    #[error("{library} lacks the symbol {symbol}: {reason}")]
    MissingSymbol {
        /// The library path.
        library: String,
        /// The symbol.
        symbol: &'static str,
        /// The loader's message.
        reason: String,
    },
    /// A runtime call returned a failing status.
    #[error("{call} failed: {status}")]
    Status {
        /// The function.
        call: &'static str,
        /// Its status.
        status: NrtStatus,
    },
    /// A call succeeded but returned something unusable (null handle, inconsistent sizes).
    #[error("{0}")]
    Invalid(String),
}

impl NrtError {
    /// The failing status, if any.
    pub fn status(&self) -> Option<NrtStatus> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Turns a raw status of `call` into a result.
pub fn check(call: &'static str, raw: i32) -> Result<(), NrtError> {
    NrtStatus::check(raw).map_err(|status| NrtError::Status { call, status })
}

type CountFn = unsafe extern "C" fn(*mut u32) -> i32;

/// The `libnrt` functions Switchyard calls, resolved once.
pub struct NrtLib {
    /// Where the library was loaded from.
    pub path: PathBuf,
    pub(crate) init: unsafe extern "C" fn(c_int, *const c_char, *const c_char) -> i32,
    pub(crate) close: unsafe extern "C" fn(),
    pub(crate) load:
        unsafe extern "C" fn(*const c_void, usize, i32, i32, *mut *mut NrtModel) -> i32,
    pub(crate) unload: unsafe extern "C" fn(*mut NrtModel) -> i32,
    pub(crate) total_count: CountFn,
    pub(crate) visible_count: CountFn,
    pub(crate) allocate_tensor_set: unsafe extern "C" fn(*mut *mut NrtTensorSet) -> i32,
    pub(crate) destroy_tensor_set: unsafe extern "C" fn(*mut *mut NrtTensorSet),
    pub(crate) tensor_allocate:
        unsafe extern "C" fn(c_int, c_int, usize, *const c_char, *mut *mut NrtTensor) -> i32,
    pub(crate) tensor_free: unsafe extern "C" fn(*mut *mut NrtTensor),
    pub(crate) tensor_write:
        unsafe extern "C" fn(*mut NrtTensor, *const c_void, usize, usize) -> i32,
    pub(crate) tensor_read:
        unsafe extern "C" fn(*const NrtTensor, *mut c_void, usize, usize) -> i32,
    pub(crate) add_tensor_to_tensor_set:
        unsafe extern "C" fn(*mut NrtTensorSet, *const c_char, *mut NrtTensor) -> i32,
    pub(crate) execute:
        unsafe extern "C" fn(*mut NrtModel, *const NrtTensorSet, *mut NrtTensorSet) -> i32,
    pub(crate) get_model_tensor_info:
        unsafe extern "C" fn(*mut NrtModel, *mut *mut NrtTensorInfoArray) -> i32,
    pub(crate) free_model_tensor_info: unsafe extern "C" fn(*mut NrtTensorInfoArray) -> i32,
    /// Keeps the function pointers above valid; dropped last.
    _lib: libloading::Library,
}

/// Default install directory of the Neuron SDK's runtime.
pub const SDK_LIB_DIR: &str = "/opt/aws/neuron/lib";

/// The candidates tried, in order: `$NEURON_RT_LIB` (a file; when set, nothing else is tried),
/// then `libnrt.so.1` and `libnrt.so` in [`SDK_LIB_DIR`], then on the loader path.
pub fn library_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("NEURON_RT_LIB").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let dir = Path::new(SDK_LIB_DIR);
    vec![
        dir.join("libnrt.so.1"),
        dir.join("libnrt.so"),
        PathBuf::from("libnrt.so.1"),
        PathBuf::from("libnrt.so"),
    ]
}

impl NrtLib {
    /// Loads the first library of [`library_candidates`] that opens.
    pub fn load() -> Result<NrtLib, NrtError> {
        let mut errors = Vec::new();
        for c in library_candidates() {
            // A bare name goes to the loader's search; a path must exist.
            if c.components().count() > 1 && !c.exists() {
                errors.push(format!("{}: not found", c.display()));
                continue;
            }
            match Self::load_from(&c) {
                Ok(lib) => return Ok(lib),
                Err(NrtError::LibraryMissing(e)) => errors.push(e),
                Err(e) => return Err(e),
            }
        }
        Err(NrtError::LibraryMissing(format!(
            "{} (install the Neuron runtime, aws-neuronx-runtime-lib, or set NEURON_RT_LIB)",
            errors.join("; ")
        )))
    }

    /// Loads `libnrt` from `path` and resolves every function.
    pub fn load_from(path: &Path) -> Result<NrtLib, NrtError> {
        // SAFETY: loading libnrt runs its initializers, which have no preconditions we could
        // violate; a wrong library is caught by the symbol lookups below.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| NrtError::LibraryMissing(format!("{}: {e}", path.display())))?;
        let library = path.display().to_string();
        macro_rules! sym {
            ($name:literal) => {{
                // SAFETY: the function type is the one declared for this symbol in nrt.h; the
                // pointer is copied out and kept valid by storing `lib` in the same struct.
                match unsafe { lib.get::<_>(concat!($name, "\0").as_bytes()) } {
                    Ok(s) => *s,
                    Err(e) => {
                        return Err(NrtError::MissingSymbol {
                            library: library.clone(),
                            symbol: $name,
                            reason: e.to_string(),
                        })
                    }
                }
            }};
        }
        macro_rules! sym_or {
            ($name:literal, $old:literal) => {{
                // SAFETY: as in `sym!`; the deprecated name has the same signature.
                match unsafe { lib.get::<CountFn>(concat!($name, "\0").as_bytes()) } {
                    Ok(s) => *s,
                    Err(_) => sym!($old),
                }
            }};
        }
        Ok(NrtLib {
            path: path.to_path_buf(),
            init: sym!("nrt_init"),
            close: sym!("nrt_close"),
            load: sym!("nrt_load"),
            unload: sym!("nrt_unload"),
            total_count: sym_or!("nrt_get_total_vnc_count", "nrt_get_total_nc_count"),
            visible_count: sym_or!("nrt_get_visible_vnc_count", "nrt_get_visible_nc_count"),
            allocate_tensor_set: sym!("nrt_allocate_tensor_set"),
            destroy_tensor_set: sym!("nrt_destroy_tensor_set"),
            tensor_allocate: sym!("nrt_tensor_allocate"),
            tensor_free: sym!("nrt_tensor_free"),
            tensor_write: sym!("nrt_tensor_write"),
            tensor_read: sym!("nrt_tensor_read"),
            add_tensor_to_tensor_set: sym!("nrt_add_tensor_to_tensor_set"),
            execute: sym!("nrt_execute"),
            get_model_tensor_info: sym!("nrt_get_model_tensor_info"),
            free_model_tensor_info: sym!("nrt_free_model_tensor_info"),
            _lib: lib,
        })
    }

    /// NeuronCores in the instance (`nrt_get_total_vnc_count`; callable before `nrt_init`).
    pub fn total_cores(&self) -> Result<u32, NrtError> {
        let mut n = 0u32;
        // SAFETY: a valid out pointer; the header allows the call before nrt_init.
        check("nrt_get_total_vnc_count", unsafe {
            (self.total_count)(&mut n)
        })?;
        Ok(n)
    }

    /// NeuronCores visible to this process (`nrt_get_visible_vnc_count`).
    pub fn visible_cores(&self) -> Result<u32, NrtError> {
        let mut n = 0u32;
        // SAFETY: as in `total_cores`.
        check("nrt_get_visible_vnc_count", unsafe {
            (self.visible_count)(&mut n)
        })?;
        Ok(n)
    }
}

impl std::fmt::Debug for NrtLib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NrtLib").field("path", &self.path).finish()
    }
}
