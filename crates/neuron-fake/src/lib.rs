//! A fake Neuron runtime: a `cdylib` exporting the `libnrt` C symbols Switchyard's Neuron
//! backend uses, so the real FFI path (dlopen, symbol lookup, status codes, handle lifetimes) can
//! be tested on a machine without Neuron hardware or SDK.
//!
//! # The fake "NEFF"
//! `nrt_load` takes a text file instead of a compiled graph:
//! ```text
//! FAKE-NEFF 1
//! batch=2
//! tokens=16
//! vocab=64
//! block_size=16
//! num_blocks=64
//! max_blocks=8
//! ```
//! The loaded graph has the tensors of Switchyard's flat, paged interface (all `int32` unless
//! said): inputs `input_ids [tokens]`, `position_ids [tokens]`, `seq_ids [tokens]` (row of each
//! token, `-1` for padding), `slot_mapping [tokens]` (KV slot written by each token, `-1` for
//! padding), `context_lens [batch]`, `block_tables [batch, max_blocks]` and the state
//! `kv_cache [num_blocks * block_size, 2]` (input and output: each slot holds (token, position));
//! output `logits [tokens, vocab]` (`float32`). Executing writes every real token into its KV
//! slot, then for each real token reads its whole sequence back through the block table and
//! fills its logits row with [`reference_logits`] of that sequence; padding rows are NaN. A KV
//! slot that does not hold the expected position fails the execution with
//! `NRT_EXEC_COMPLETED_WITH_ERR` (1004).
//!
//! # Environment
//! - `FAKE_NRT_FAIL`: comma-separated `function[:n][=status]` — make the `n`-th call (counted from
//!   `nrt_init`, 1-based; every call without `:n`) of `function` return `status` (default 1,
//!   `NRT_FAILURE`). Read by `nrt_init`, and by the core-count functions at each call.
//! - `FAKE_NRT_VISIBLE_CORES` / `FAKE_NRT_TOTAL_CORES`: the core counts (default 2 / 2).
//!
//! Extra symbols for tests: `fake_nrt_live_objects()` (models + tensors + tensor sets alive),
//! `fake_nrt_initialized()`.
//!
//! The crate is also an `rlib` so tests can call [`reference_logits`] directly.
//!
//! What this does **not** prove: the layout of real NEFF graphs, real `nrt_tensor_info_t` dtype
//! numbering across SDK versions, device memory behaviour, or timing.
// The exported functions are called from C with raw pointers; their safety contract is the C
// API's (valid pointers from this library), which `extern "C"` exports cannot express.
#![allow(clippy::missing_safety_doc)]

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{LazyLock, Mutex};

/// `NRT_STATUS` values used here.
pub mod status {
    /// Success.
    pub const SUCCESS: i32 = 0;
    /// Non-specific failure.
    pub const FAILURE: i32 = 1;
    /// Invalid argument.
    pub const INVALID: i32 = 2;
    /// Invalid handle.
    pub const INVALID_HANDLE: i32 = 3;
    /// API used before `nrt_init`.
    pub const UNINITIALIZED: i32 = 13;
    /// API used after `nrt_close`.
    pub const CLOSED: i32 = 14;
    /// Bad input to `nrt_execute`.
    pub const EXEC_BAD_INPUT: i32 = 1002;
    /// Execution completed with errors.
    pub const EXEC_COMPLETED_WITH_ERR: i32 = 1004;
}

/// `nrt_dtype_t` values (from the current `nrt.h`).
const DTYPE_INT32: i32 = 0x8;
const DTYPE_FLOAT32: i32 = 0xA;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The fake model's logits for the next token after `tokens`: a hash of the whole sequence, in
/// `[0, 4)`, with ids 0..3 (specials in the test vocabularies) at -5.
pub fn reference_logits(tokens: &[u32], vocab: usize) -> Vec<f32> {
    let h = tokens
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &t| splitmix(h ^ u64::from(t)));
    let mut row: Vec<f32> = (0..vocab)
        .map(|j| (splitmix(h ^ ((j as u64) << 20)) >> 40) as f32 / (1u64 << 24) as f32 * 4.0)
        .collect();
    for v in row.iter_mut().take(4) {
        *v = -5.0;
    }
    row
}

#[derive(Debug, Clone, Copy)]
struct Graph {
    batch: usize,
    tokens: usize,
    vocab: usize,
    block_size: usize,
    num_blocks: usize,
    max_blocks: usize,
}

impl Graph {
    fn parse(bytes: &[u8]) -> Option<Graph> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()?.trim() != "FAKE-NEFF 1" {
            return None;
        }
        let mut kv = HashMap::new();
        for l in lines {
            if let Some((k, v)) = l.split_once('=') {
                kv.insert(k.trim().to_string(), v.trim().parse::<usize>().ok()?);
            }
        }
        let g = Graph {
            batch: *kv.get("batch")?,
            tokens: *kv.get("tokens")?,
            vocab: *kv.get("vocab")?,
            block_size: *kv.get("block_size")?,
            num_blocks: *kv.get("num_blocks")?,
            max_blocks: *kv.get("max_blocks")?,
        };
        (g.batch > 0 && g.tokens > 0 && g.vocab > 0 && g.block_size > 0 && g.num_blocks > 0)
            .then_some(g)
    }

    /// (name, is_input, dtype, shape) of every tensor.
    fn tensors(&self) -> Vec<(&'static str, bool, i32, Vec<u32>)> {
        let t = self.tokens as u32;
        let b = self.batch as u32;
        vec![
            ("input_ids", true, DTYPE_INT32, vec![t]),
            ("position_ids", true, DTYPE_INT32, vec![t]),
            ("seq_ids", true, DTYPE_INT32, vec![t]),
            ("slot_mapping", true, DTYPE_INT32, vec![t]),
            ("context_lens", true, DTYPE_INT32, vec![b]),
            (
                "block_tables",
                true,
                DTYPE_INT32,
                vec![b, self.max_blocks as u32],
            ),
            (
                "kv_cache",
                true,
                DTYPE_INT32,
                vec![(self.num_blocks * self.block_size) as u32, 2],
            ),
            ("logits", false, DTYPE_FLOAT32, vec![t, self.vocab as u32]),
            (
                "kv_cache",
                false,
                DTYPE_INT32,
                vec![(self.num_blocks * self.block_size) as u32, 2],
            ),
        ]
    }
}

/// Opaque model handle.
pub struct FakeModel {
    graph: Graph,
}

/// Opaque tensor handle.
pub struct FakeTensor {
    data: Vec<u8>,
}

type TensorSet = HashMap<String, *mut FakeTensor>;

#[derive(Default)]
struct State {
    /// 0: never initialized, 1: initialized, 2: closed.
    phase: u8,
    calls: HashMap<String, u64>,
    /// (function, nth call or None for all, status).
    failures: Vec<(String, Option<u64>, i32)>,
    live: u64,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Mutex::default);

fn parse_failures(spec: &str) -> Vec<(String, Option<u64>, i32)> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (head, st) = match item.split_once('=') {
                Some((h, s)) => (h, s.trim().parse().unwrap_or(status::FAILURE)),
                None => (item, status::FAILURE),
            };
            let (name, nth) = match head.split_once(':') {
                Some((n, k)) => (n, k.trim().parse().ok()),
                None => (head, None),
            };
            (name.trim().to_string(), nth, st)
        })
        .collect()
}

fn lock() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a call of `name` and returns the injected status, if any. With `need_init`, returns
/// `NRT_UNINITIALIZED` / `NRT_CLOSED` outside `nrt_init` … `nrt_close`.
fn enter(st: &mut State, name: &str, need_init: bool) -> Option<i32> {
    if need_init {
        match st.phase {
            0 => return Some(status::UNINITIALIZED),
            2 => return Some(status::CLOSED),
            _ => {}
        }
    }
    let n = st.calls.entry(name.to_string()).or_insert(0);
    *n += 1;
    let n = *n;
    st.failures
        .iter()
        .find(|(f, nth, _)| f == name && nth.is_none_or(|k| k == n))
        .map(|&(_, _, s)| s)
}

fn env_count(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn core_count(name: &str, var: &str, out: *mut u32) -> i32 {
    if out.is_null() {
        return status::INVALID;
    }
    let failures = parse_failures(&std::env::var("FAKE_NRT_FAIL").unwrap_or_default());
    if let Some((_, _, s)) = failures.iter().find(|(f, _, _)| f == name) {
        return *s;
    }
    // SAFETY: checked non-null; the caller passes a valid `uint32_t*`.
    unsafe { *out = env_count(var, 2) };
    status::SUCCESS
}

/// `nrt_get_total_vnc_count`.
#[no_mangle]
pub unsafe extern "C" fn nrt_get_total_vnc_count(count: *mut u32) -> i32 {
    core_count("nrt_get_total_vnc_count", "FAKE_NRT_TOTAL_CORES", count)
}

/// `nrt_get_visible_vnc_count`.
#[no_mangle]
pub unsafe extern "C" fn nrt_get_visible_vnc_count(count: *mut u32) -> i32 {
    core_count("nrt_get_visible_vnc_count", "FAKE_NRT_VISIBLE_CORES", count)
}

/// `nrt_init`: (re)reads `FAKE_NRT_FAIL` and resets the call counters.
#[no_mangle]
pub unsafe extern "C" fn nrt_init(
    framework: c_int,
    _fw_version: *const c_char,
    _fal_version: *const c_char,
) -> i32 {
    let mut st = lock();
    st.calls.clear();
    st.failures = parse_failures(&std::env::var("FAKE_NRT_FAIL").unwrap_or_default());
    if let Some(s) = enter(&mut st, "nrt_init", false) {
        return s;
    }
    if !(1..=5).contains(&framework) {
        return status::INVALID;
    }
    st.phase = 1;
    status::SUCCESS
}

/// `nrt_close`.
#[no_mangle]
pub extern "C" fn nrt_close() {
    lock().phase = 2;
}

/// `nrt_load`: parses a fake NEFF (see the crate docs).
#[no_mangle]
pub unsafe extern "C" fn nrt_load(
    neff: *const c_void,
    size: usize,
    _vnc: i32,
    _vnc_count: i32,
    model: *mut *mut FakeModel,
) -> i32 {
    let mut st = lock();
    if let Some(s) = enter(&mut st, "nrt_load", true) {
        return s;
    }
    if neff.is_null() || model.is_null() {
        return status::INVALID;
    }
    // SAFETY: the caller passes `size` readable bytes at `neff`.
    let bytes = unsafe { std::slice::from_raw_parts(neff.cast::<u8>(), size) };
    let Some(graph) = Graph::parse(bytes) else {
        return status::INVALID;
    };
    st.live += 1;
    // SAFETY: checked non-null; the caller passes a valid out pointer.
    unsafe { *model = Box::into_raw(Box::new(FakeModel { graph })) };
    status::SUCCESS
}

/// `nrt_unload`.
#[no_mangle]
pub unsafe extern "C" fn nrt_unload(model: *mut FakeModel) -> i32 {
    let mut st = lock();
    if let Some(s) = enter(&mut st, "nrt_unload", true) {
        return s;
    }
    if model.is_null() {
        return status::INVALID_HANDLE;
    }
    st.live -= 1;
    // SAFETY: `model` came from `nrt_load` and is unloaded once (the C contract).
    drop(unsafe { Box::from_raw(model) });
    status::SUCCESS
}

/// Layout of `nrt_tensor_info_t` (`nrt_experimental.h`).
#[repr(C)]
pub struct TensorInfo {
    name: [c_char; 256],
    usage: c_int,
    size: usize,
    dtype: c_int,
    shape: *mut u32,
    ndim: u32,
}

/// Header of `nrt_tensor_info_array_t`; `TensorInfo` entries follow.
#[repr(C)]
pub struct TensorInfoArray {
    tensor_count: u64,
    tensor_array: [TensorInfo; 0],
}

/// `nrt_get_model_tensor_info`: allocates with the system allocator (freed by
/// `nrt_free_model_tensor_info`).
#[no_mangle]
pub unsafe extern "C" fn nrt_get_model_tensor_info(
    model: *mut FakeModel,
    info: *mut *mut TensorInfoArray,
) -> i32 {
    let mut st = lock();
    if let Some(s) = enter(&mut st, "nrt_get_model_tensor_info", true) {
        return s;
    }
    if model.is_null() || info.is_null() {
        return status::INVALID;
    }
    // SAFETY: `model` is a live handle from `nrt_load`.
    let g = unsafe { &*model }.graph;
    let tensors = g.tensors();
    let bytes =
        std::mem::size_of::<TensorInfoArray>() + tensors.len() * std::mem::size_of::<TensorInfo>();
    let layout = std::alloc::Layout::from_size_align(bytes, 8).expect("layout");
    // SAFETY: the layout has a non-zero size.
    let arr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<TensorInfoArray>();
    if arr.is_null() {
        return 11; // NRT_FAIL_HOST_MEM_ALLOC
    }
    // SAFETY: `arr` points to zeroed memory large enough for the header and the entries.
    unsafe {
        (*arr).tensor_count = tensors.len() as u64;
        let entries = (*arr).tensor_array.as_mut_ptr();
        for (i, (name, input, dtype, shape)) in tensors.into_iter().enumerate() {
            let e = &mut *entries.add(i);
            for (k, b) in name.bytes().enumerate() {
                e.name[k] = b as c_char;
            }
            e.usage = if input { 0 } else { 1 };
            let elems: usize = shape.iter().map(|&d| d as usize).product();
            e.size = elems * 4;
            e.dtype = dtype;
            e.ndim = shape.len() as u32;
            e.shape = Box::into_raw(shape.into_boxed_slice()).cast::<u32>();
        }
        *info = arr;
    }
    status::SUCCESS
}

/// `nrt_free_model_tensor_info`.
#[no_mangle]
pub unsafe extern "C" fn nrt_free_model_tensor_info(info: *mut TensorInfoArray) -> i32 {
    if info.is_null() {
        return status::INVALID;
    }
    // SAFETY: `info` came from `nrt_get_model_tensor_info`, which allocated it with this layout
    // and each shape as a boxed slice of `ndim` elements.
    unsafe {
        let n = (*info).tensor_count as usize;
        let entries = (*info).tensor_array.as_mut_ptr();
        for i in 0..n {
            let e = &*entries.add(i);
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                e.shape,
                e.ndim as usize,
            )));
        }
        let bytes = std::mem::size_of::<TensorInfoArray>() + n * std::mem::size_of::<TensorInfo>();
        std::alloc::dealloc(
            info.cast(),
            std::alloc::Layout::from_size_align(bytes, 8).expect("layout"),
        );
    }
    status::SUCCESS
}

/// `nrt_allocate_tensor_set`.
#[no_mangle]
pub unsafe extern "C" fn nrt_allocate_tensor_set(out: *mut *mut c_void) -> i32 {
    let mut st = lock();
    if let Some(s) = enter(&mut st, "nrt_allocate_tensor_set", true) {
        return s;
    }
    if out.is_null() {
        return status::INVALID;
    }
    st.live += 1;
    // SAFETY: checked non-null.
    unsafe { *out = Box::into_raw(Box::new(TensorSet::new())).cast() };
    status::SUCCESS
}

/// `nrt_destroy_tensor_set`: frees the set, not its tensors.
#[no_mangle]
pub unsafe extern "C" fn nrt_destroy_tensor_set(set: *mut *mut c_void) {
    if set.is_null() {
        return;
    }
    // SAFETY: the caller passes a pointer to a set handle (or to null).
    let p = unsafe { *set };
    if p.is_null() {
        return;
    }
    lock().live -= 1;
    // SAFETY: `p` came from `nrt_allocate_tensor_set`.
    drop(unsafe { Box::from_raw(p.cast::<TensorSet>()) });
    // SAFETY: as above.
    unsafe { *set = std::ptr::null_mut() };
}

/// `nrt_add_tensor_to_tensor_set`.
#[no_mangle]
pub unsafe extern "C" fn nrt_add_tensor_to_tensor_set(
    set: *mut c_void,
    name: *const c_char,
    tensor: *mut FakeTensor,
) -> i32 {
    let mut st = lock();
    if let Some(s) = enter(&mut st, "nrt_add_tensor_to_tensor_set", true) {
        return s;
    }
    if set.is_null() || name.is_null() || tensor.is_null() {
        return status::INVALID;
    }
    // SAFETY: `name` is a NUL-terminated string; `set` a live set.
    let name = unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: as above.
    unsafe { &mut *set.cast::<TensorSet>() }.insert(name, tensor);
    status::SUCCESS
}

/// `nrt_tensor_allocate`: zero-filled host memory whatever the placement.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_allocate(
    placement: c_int,
    _vnc: c_int,
    size: usize,
    _name: *const c_char,
    tensor: *mut *mut FakeTensor,
) -> i32 {
    let mut st = lock();
    if let Some(s) = enter(&mut st, "nrt_tensor_allocate", true) {
        return s;
    }
    if tensor.is_null() || !(0..=2).contains(&placement) {
        return status::INVALID;
    }
    st.live += 1;
    // SAFETY: checked non-null.
    unsafe {
        *tensor = Box::into_raw(Box::new(FakeTensor {
            data: vec![0; size],
        }))
    };
    status::SUCCESS
}

/// `nrt_tensor_free`.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_free(tensor: *mut *mut FakeTensor) {
    if tensor.is_null() {
        return;
    }
    // SAFETY: the caller passes a pointer to a tensor handle (or to null).
    let p = unsafe { *tensor };
    if p.is_null() {
        return;
    }
    lock().live -= 1;
    // SAFETY: `p` came from `nrt_tensor_allocate`.
    drop(unsafe { Box::from_raw(p) });
    // SAFETY: as above.
    unsafe { *tensor = std::ptr::null_mut() };
}

/// `nrt_tensor_write`.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_write(
    tensor: *mut FakeTensor,
    buf: *const c_void,
    offset: usize,
    size: usize,
) -> i32 {
    let mut st = lock();
    if let Some(s) = enter(&mut st, "nrt_tensor_write", true) {
        return s;
    }
    if tensor.is_null() || buf.is_null() {
        return status::INVALID;
    }
    // SAFETY: `tensor` is live; `buf` holds `size` readable bytes.
    let (t, src) = unsafe {
        (
            &mut *tensor,
            std::slice::from_raw_parts(buf.cast::<u8>(), size),
        )
    };
    match t.data.get_mut(offset..offset.saturating_add(size)) {
        Some(dst) => {
            dst.copy_from_slice(src);
            status::SUCCESS
        }
        None => status::INVALID,
    }
}

/// `nrt_tensor_read`.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_read(
    tensor: *const FakeTensor,
    buf: *mut c_void,
    offset: usize,
    size: usize,
) -> i32 {
    let mut st = lock();
    if let Some(s) = enter(&mut st, "nrt_tensor_read", true) {
        return s;
    }
    if tensor.is_null() || buf.is_null() {
        return status::INVALID;
    }
    // SAFETY: `tensor` is live; `buf` holds `size` writable bytes.
    let (t, dst) = unsafe {
        (
            &*tensor,
            std::slice::from_raw_parts_mut(buf.cast::<u8>(), size),
        )
    };
    match t.data.get(offset..offset.saturating_add(size)) {
        Some(src) => {
            dst.copy_from_slice(src);
            status::SUCCESS
        }
        None => status::INVALID,
    }
}

fn i32s(t: &FakeTensor) -> Vec<i32> {
    t.data
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Runs the toy graph; `Err(status)` on bad input.
fn run_graph(g: &Graph, inputs: &TensorSet, outputs: &TensorSet) -> Result<(), i32> {
    let get = |set: &TensorSet, name: &str, elems: usize| -> Result<*mut FakeTensor, i32> {
        let p = *set.get(name).ok_or(status::EXEC_BAD_INPUT)?;
        // SAFETY: tensors in a set stay alive until the set is destroyed (the C contract).
        if unsafe { &*p }.data.len() != elems * 4 {
            return Err(status::EXEC_BAD_INPUT);
        }
        Ok(p)
    };
    let read = |name: &str, elems: usize| -> Result<Vec<i32>, i32> {
        let p = get(inputs, name, elems)?;
        // SAFETY: see `get`.
        Ok(i32s(unsafe { &*p }))
    };
    let slots = g.num_blocks * g.block_size;
    let ids = read("input_ids", g.tokens)?;
    let pos = read("position_ids", g.tokens)?;
    let seq = read("seq_ids", g.tokens)?;
    let slot = read("slot_mapping", g.tokens)?;
    let ctx = read("context_lens", g.batch)?;
    let bt = read("block_tables", g.batch * g.max_blocks)?;
    let mut kv = read("kv_cache", slots * 2)?;
    let kv_out = get(outputs, "kv_cache", slots * 2)?;
    let logits = get(outputs, "logits", g.tokens * g.vocab)?;
    for i in 0..g.tokens {
        if seq[i] < 0 {
            continue;
        }
        let s = slot[i];
        if s < 0 || s as usize >= slots || seq[i] as usize >= g.batch {
            return Err(status::EXEC_BAD_INPUT);
        }
        kv[2 * s as usize] = ids[i];
        kv[2 * s as usize + 1] = pos[i];
    }
    let mut out = vec![f32::NAN; g.tokens * g.vocab];
    for i in 0..g.tokens {
        if seq[i] < 0 {
            continue;
        }
        let row = seq[i] as usize;
        let p = pos[i];
        if p < 0 || p >= ctx[row] {
            return Err(status::EXEC_BAD_INPUT);
        }
        let mut toks = Vec::with_capacity(p as usize + 1);
        for q in 0..=p as usize {
            let b = q / g.block_size;
            if b >= g.max_blocks {
                return Err(status::EXEC_BAD_INPUT);
            }
            let blk = bt[row * g.max_blocks + b];
            if blk < 0 || blk as usize >= g.num_blocks {
                return Err(status::EXEC_BAD_INPUT);
            }
            let s = blk as usize * g.block_size + q % g.block_size;
            if kv[2 * s + 1] != q as i32 {
                return Err(status::EXEC_COMPLETED_WITH_ERR);
            }
            toks.push(kv[2 * s] as u32);
        }
        out[i * g.vocab..(i + 1) * g.vocab].copy_from_slice(&reference_logits(&toks, g.vocab));
    }
    // SAFETY: see `get`; output tensors are distinct from the slices read above.
    unsafe {
        (*kv_out).data = kv.iter().flat_map(|v| v.to_le_bytes()).collect();
        (*logits).data = out.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    Ok(())
}

/// `nrt_execute`.
#[no_mangle]
pub unsafe extern "C" fn nrt_execute(
    model: *mut FakeModel,
    inputs: *const c_void,
    outputs: *mut c_void,
) -> i32 {
    let mut st = lock();
    if let Some(s) = enter(&mut st, "nrt_execute", true) {
        return s;
    }
    if model.is_null() {
        return status::INVALID_HANDLE;
    }
    if inputs.is_null() || outputs.is_null() {
        return status::INVALID;
    }
    // SAFETY: live handles from this library.
    let (g, ins, outs) = unsafe {
        (
            &(*model).graph,
            &*inputs.cast::<TensorSet>(),
            &*outputs.cast::<TensorSet>(),
        )
    };
    match run_graph(g, ins, outs) {
        Ok(()) => status::SUCCESS,
        Err(s) => s,
    }
}

/// Test hook: models, tensors and tensor sets currently alive.
#[no_mangle]
pub extern "C" fn fake_nrt_live_objects() -> u64 {
    lock().live
}

/// Test hook: 1 between `nrt_init` and `nrt_close`.
#[no_mangle]
pub extern "C" fn fake_nrt_initialized() -> c_int {
    c_int::from(lock().phase == 1)
}
