//! Safe, RAII wrappers over the `libnrt` handles: the initialized runtime (`nrt_close` on drop),
//! loaded models (`nrt_unload`), tensors (`nrt_tensor_free`) and tensor sets
//! (`nrt_destroy_tensor_set`). Every handle keeps the runtime alive, so `nrt_close` runs last.

use std::ffi::{c_char, CStr, CString};
use std::sync::{Arc, Mutex, Weak};

use crate::ffi::{self, check, NrtError, NrtLib, NrtModel, NrtTensor, NrtTensorSet};

/// The initialized Neuron runtime. libnrt's state is per process, so there is at most one:
/// [`Runtime::init`] returns the live one if there is one.
pub struct Runtime {
    lib: Arc<NrtLib>,
}

static CURRENT: Mutex<Weak<Runtime>> = Mutex::new(Weak::new());

impl Runtime {
    /// `nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, …)`, or the runtime already initialized.
    pub fn init(lib: Arc<NrtLib>) -> Result<Arc<Runtime>, NrtError> {
        let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rt) = cur.upgrade() {
            return Ok(rt);
        }
        let version = c"0.1";
        // SAFETY: valid NUL-terminated strings that outlive the call.
        check("nrt_init", unsafe {
            (lib.init)(ffi::FRAMEWORK_NO_FW, version.as_ptr(), version.as_ptr())
        })?;
        let rt = Arc::new(Runtime { lib });
        *cur = Arc::downgrade(&rt);
        Ok(rt)
    }

    /// The library.
    pub fn lib(&self) -> &NrtLib {
        &self.lib
    }

    /// `nrt_load` of NEFF bytes on any free core (`vnc = -1`).
    pub fn load(self: &Arc<Self>, neff: &[u8]) -> Result<Model, NrtError> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: `neff` is readable for its length; `ptr` is a valid out pointer.
        check("nrt_load", unsafe {
            (self.lib.load)(neff.as_ptr().cast(), neff.len(), -1, -1, &mut ptr)
        })?;
        if ptr.is_null() {
            return Err(NrtError::Invalid("nrt_load returned a null model".into()));
        }
        Ok(Model {
            rt: self.clone(),
            ptr,
        })
    }

    /// `nrt_tensor_allocate` on the device (core `vnc`, `-1` for any).
    pub fn allocate_tensor(
        self: &Arc<Self>,
        name: &str,
        size: usize,
        vnc: i32,
    ) -> Result<Tensor, NrtError> {
        let cname = cstring(name)?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: valid name and out pointer.
        check("nrt_tensor_allocate", unsafe {
            (self.lib.tensor_allocate)(ffi::PLACEMENT_DEVICE, vnc, size, cname.as_ptr(), &mut ptr)
        })?;
        if ptr.is_null() {
            return Err(NrtError::Invalid(
                "nrt_tensor_allocate returned a null tensor".into(),
            ));
        }
        Ok(Tensor {
            rt: self.clone(),
            ptr,
            size,
            name: name.to_string(),
        })
    }

    /// `nrt_allocate_tensor_set`.
    pub fn tensor_set(self: &Arc<Self>) -> Result<TensorSet, NrtError> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: a valid out pointer.
        check("nrt_allocate_tensor_set", unsafe {
            (self.lib.allocate_tensor_set)(&mut ptr)
        })?;
        if ptr.is_null() {
            return Err(NrtError::Invalid(
                "nrt_allocate_tensor_set returned null".into(),
            ));
        }
        Ok(TensorSet {
            rt: self.clone(),
            ptr,
            tensors: Vec::new(),
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: every handle holds an `Arc<Runtime>`, so none is alive any more.
        unsafe { (self.lib.close)() };
    }
}

fn cstring(s: &str) -> Result<CString, NrtError> {
    CString::new(s).map_err(|_| NrtError::Invalid(format!("name {s:?} contains a NUL byte")))
}

/// What `nrt_get_model_tensor_info` says about one tensor of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name in the NEFF.
    pub name: String,
    /// Input (true) or output.
    pub input: bool,
    /// Size in bytes.
    pub size: usize,
    /// Raw `nrt_dtype_t` (its numbering changed between SDK releases; only logged).
    pub dtype: i32,
    /// Shape.
    pub shape: Vec<u32>,
}

/// A loaded NEFF (`nrt_unload` on drop).
pub struct Model {
    rt: Arc<Runtime>,
    ptr: *mut NrtModel,
}

// SAFETY: libnrt model handles may be used from any thread (the runtime is thread-safe); the
// handle is owned by this value and used by one thread at a time through `&mut`/`&`.
unsafe impl Send for Model {}

impl Model {
    /// Input and output tensors of the model.
    pub fn tensor_info(&self) -> Result<Vec<TensorInfo>, NrtError> {
        let lib = self.rt.lib();
        let mut arr = std::ptr::null_mut();
        // SAFETY: `self.ptr` is a live model; `arr` a valid out pointer.
        check("nrt_get_model_tensor_info", unsafe {
            (lib.get_model_tensor_info)(self.ptr, &mut arr)
        })?;
        if arr.is_null() {
            return Err(NrtError::Invalid(
                "nrt_get_model_tensor_info returned null".into(),
            ));
        }
        let mut out = Vec::new();
        // SAFETY: the runtime returned an array of `tensor_count` entries, each with `ndim`
        // shape values and a NUL-terminated name; it stays valid until freed below.
        unsafe {
            let n = (*arr).tensor_count as usize;
            let entries = (*arr).tensor_array.as_ptr();
            for i in 0..n {
                let e = &*entries.add(i);
                let name_bytes = &*(&e.name as *const [c_char; ffi::TENSOR_NAME_MAX]
                    as *const [u8; ffi::TENSOR_NAME_MAX]);
                let name = CStr::from_bytes_until_nul(name_bytes)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let shape = if e.shape.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(e.shape, e.ndim as usize).to_vec()
                };
                out.push(TensorInfo {
                    name,
                    input: e.usage == ffi::USAGE_INPUT,
                    size: e.size,
                    dtype: e.dtype,
                    shape,
                });
            }
            (lib.free_model_tensor_info)(arr);
        }
        Ok(out)
    }

    /// `nrt_execute`: runs the model on `inputs`, writing `outputs`.
    pub fn execute(&self, inputs: &TensorSet, outputs: &mut TensorSet) -> Result<(), NrtError> {
        // SAFETY: live model and tensor sets whose tensors are kept alive by the sets.
        check("nrt_execute", unsafe {
            (self.rt.lib().execute)(self.ptr, inputs.ptr, outputs.ptr)
        })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the model is live and unloaded exactly once.
        let status = unsafe { (self.rt.lib().unload)(self.ptr) };
        if let Err(e) = check("nrt_unload", status) {
            tracing::warn!("{e}");
        }
    }
}

/// A device tensor (`nrt_tensor_free` on drop).
pub struct Tensor {
    rt: Arc<Runtime>,
    ptr: *mut NrtTensor,
    size: usize,
    name: String,
}

// SAFETY: as for `Model`: an owned handle into the thread-safe runtime.
unsafe impl Send for Tensor {}
// SAFETY: `&Tensor` only allows reads (`nrt_tensor_read`), which libnrt allows concurrently.
unsafe impl Sync for Tensor {}

impl Tensor {
    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Name given at allocation.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn range(&self, offset: usize, len: usize) -> Result<(), NrtError> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(NrtError::Invalid(format!(
                "tensor {}: {len} bytes at {offset} exceed its {} bytes",
                self.name, self.size
            )));
        }
        Ok(())
    }

    /// `nrt_tensor_write` of `data` at byte `offset`.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), NrtError> {
        self.range(offset, data.len())?;
        // SAFETY: a live tensor; `data` is readable for its length, within the tensor.
        check("nrt_tensor_write", unsafe {
            (self.rt.lib().tensor_write)(self.ptr, data.as_ptr().cast(), offset, data.len())
        })
    }

    /// `nrt_tensor_read` into `out` from byte `offset`.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), NrtError> {
        self.range(offset, out.len())?;
        // SAFETY: a live tensor; `out` is writable for its length, within the tensor.
        check("nrt_tensor_read", unsafe {
            (self.rt.lib().tensor_read)(self.ptr, out.as_mut_ptr().cast(), offset, out.len())
        })
    }

    /// Writes `values` as little-endian `i32`s from element 0.
    pub fn write_i32(&mut self, values: &[i32]) -> Result<(), NrtError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(0, &bytes)
    }

    /// Reads the whole tensor as little-endian `f32`s.
    pub fn read_f32(&self) -> Result<Vec<f32>, NrtError> {
        let mut bytes = vec![0u8; self.size];
        self.read(0, &mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: the tensor is live and freed exactly once; sets that hold it are dropped first
        // (they own an `Arc` of it).
        unsafe { (self.rt.lib().tensor_free)(&mut self.ptr) };
    }
}

/// A tensor set (`nrt_destroy_tensor_set` on drop); it keeps its tensors alive, as the header
/// requires.
pub struct TensorSet {
    rt: Arc<Runtime>,
    ptr: *mut NrtTensorSet,
    tensors: Vec<Arc<Mutex<Tensor>>>,
}

// SAFETY: as for `Model`.
unsafe impl Send for TensorSet {}

impl TensorSet {
    /// `nrt_add_tensor_to_tensor_set` under `name` (the NEFF's tensor name).
    pub fn add(&mut self, name: &str, tensor: Arc<Mutex<Tensor>>) -> Result<(), NrtError> {
        let cname = cstring(name)?;
        let ptr = tensor.lock().unwrap_or_else(|e| e.into_inner()).ptr;
        // SAFETY: live set and tensor; the tensor is kept alive in `self.tensors` until the set
        // is destroyed.
        check("nrt_add_tensor_to_tensor_set", unsafe {
            (self.rt.lib().add_tensor_to_tensor_set)(self.ptr, cname.as_ptr(), ptr)
        })?;
        self.tensors.push(tensor);
        Ok(())
    }
}

impl Drop for TensorSet {
    fn drop(&mut self) {
        // SAFETY: the set is live and destroyed exactly once; its tensors are freed after it
        // (the `tensors` field drops after this body).
        unsafe { (self.rt.lib().destroy_tensor_set)(&mut self.ptr) };
    }
}
