//! GGUF reader: parses the header, metadata and tensor directory of a memory-mapped file.
//!
//! The parser checks every length and offset against the file size, so a truncated or corrupt
//! file yields a [`GgufError`] naming the problem, never a panic or a huge allocation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_core::{GgmlType, Tensor, WeightBytes, WeightSource};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string (lossily decoded).
    Str(String),
    /// Array of values.
    Array(Vec<Value>),
}

impl Value {
    /// As an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    /// As a float, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }
    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// As a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// As an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Errors reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a GGUF file.
    #[error("{path} is not a GGUF file (magic {found:?}, expected \"GGUF\")")]
    BadMagic {
        /// File.
        path: PathBuf,
        /// First bytes found.
        found: String,
    },
    /// Unsupported version.
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3)")]
    BadVersion {
        /// File.
        path: PathBuf,
        /// Version found.
        version: u32,
    },
    /// The file ends early or a length is inconsistent.
    #[error("{path} is truncated or corrupt: {what} (file is {size} bytes){hint}")]
    Truncated {
        /// File.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// File size.
        size: u64,
        /// Advice.
        hint: &'static str,
    },
    /// A tensor uses a type we do not support.
    #[error("{path}: tensor {tensor} has unsupported type {type_name} (id {type_id}); supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS")]
    UnsupportedType {
        /// File.
        path: PathBuf,
        /// Tensor.
        tensor: String,
        /// Type name.
        type_name: &'static str,
        /// Type id.
        type_id: u32,
    },
}

const REFETCH_HINT: &str = "; re-download it (scripts/fetch-models.sh ALIAS)";

/// Directory entry of one tensor.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// GGML-order dimensions.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: usize,
    /// Byte length.
    pub len: usize,
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    /// Path it was read from.
    pub path: PathBuf,
    /// GGUF version.
    pub version: u32,
    /// Metadata key/values.
    pub metadata: HashMap<String, Value>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Metadata keys in file order.
    metadata_order: Vec<String>,
    index: HashMap<String, usize>,
    data: Arc<dyn AsRef<[u8]> + Send + Sync>,
    /// `data` is a map of the file (tensors are `WeightBytes::in_file_map` views).
    file_map: bool,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn err(&self, what: impl Into<String>) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what: what.into(),
            size: self.b.len() as u64,
            hint: REFETCH_HINT,
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(e) => {
                let s = &self.b[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => Err(self.err(format!("{what} at byte {} runs past the end", self.pos))),
        }
    }
    fn u8(&mut self, w: &str) -> Result<u8, GgufError> {
        Ok(self.take(1, w)?[0])
    }
    fn u16(&mut self, w: &str) -> Result<u16, GgufError> {
        let s = self.take(2, w)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, w: &str) -> Result<u32, GgufError> {
        let s = self.take(4, w)?;
        Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, w: &str) -> Result<u64, GgufError> {
        let s = self.take(8, w)?;
        Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }
    fn string(&mut self, w: &str) -> Result<String, GgufError> {
        let n = self.u64(w)?;
        let n = usize::try_from(n).map_err(|_| self.err(format!("{w}: length {n}")))?;
        let s = self.take(n, w)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U64(self.u8(key)? as u64),
            1 => Value::I64(self.u8(key)? as i8 as i64),
            2 => Value::U64(self.u16(key)? as u64),
            3 => Value::I64(self.u16(key)? as i16 as i64),
            4 => Value::U64(self.u32(key)? as u64),
            5 => Value::I64(self.u32(key)? as i32 as i64),
            6 => Value::F64(f32::from_bits(self.u32(key)?) as f64),
            7 => Value::Bool(self.u8(key)? != 0),
            8 => Value::Str(self.string(key)?),
            9 if depth == 0 => {
                let ety = self.u32(key)?;
                let n = self.u64(key)?;
                // Every element takes at least one byte: a count beyond the remaining bytes is corrupt.
                let remaining = (self.b.len() - self.pos) as u64;
                if n > remaining {
                    return Err(self.err(format!("array {key} claims {n} elements")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            _ => return Err(self.err(format!("metadata {key} has unknown value type {ty}"))),
        })
    }
}

impl GgufFile {
    /// Opens and memory-maps `path`, parsing its header and tensor directory.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let (data, file_map) = crate::mmap::map_file(&file).map_err(io)?;
        Ok(Self {
            file_map,
            ..Self::parse(path, data)?
        })
    }

    /// Parses GGUF from bytes already in memory (tests, fuzzing).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(path, Arc::new(bytes))
    }

    fn parse(path: &Path, data: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Result<Self, GgufError> {
        let b: &[u8] = (*data).as_ref();
        let mut r = Reader { b, pos: 0, path };
        if b.len() < 4 || &b[0..4] != b"GGUF" {
            let found = String::from_utf8_lossy(&b[..b.len().min(4)]).into_owned();
            return Err(GgufError::BadMagic {
                path: path.to_path_buf(),
                found,
            });
        }
        r.pos = 4;
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::BadVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        if n_tensors > b.len() as u64 / 16 || n_kv > b.len() as u64 / 8 {
            return Err(r.err(format!(
                "header claims {n_tensors} tensors and {n_kv} metadata entries"
            )));
        }
        let mut metadata = HashMap::new();
        let mut metadata_order = Vec::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32(&key)?;
            let v = r.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), v).is_none() {
                metadata_order.push(key);
            }
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32)
            .max(1) as usize;
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let nd = r.u32(&name)?;
            if nd == 0 || nd > 4 {
                return Err(r.err(format!("tensor {name} has {nd} dimensions")));
            }
            let mut shape = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                let d = r.u64(&name)?;
                shape
                    .push(usize::try_from(d).map_err(|_| r.err(format!("tensor {name} dim {d}")))?);
            }
            let type_id = r.u32(&name)?;
            let off = r.u64(&name)?;
            raw.push((name, shape, type_id, off));
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut index = HashMap::new();
        for (name, shape, type_id, off) in raw {
            let dtype = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnsupportedType {
                path: path.to_path_buf(),
                tensor: name.clone(),
                type_name: GgmlType::name_of_id(type_id),
                type_id,
            })?;
            let numel = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| r.err(format!("tensor {name} shape {shape:?} overflows")))?;
            if shape[0] % dtype.block_size() != 0 {
                return Err(r.err(format!(
                    "tensor {name} row length {} is not a multiple of the {dtype} block size",
                    shape[0]
                )));
            }
            let len = (numel / dtype.block_size())
                .checked_mul(dtype.block_bytes())
                .ok_or_else(|| r.err(format!("tensor {name} shape {shape:?} overflows")))?;
            let offset = usize::try_from(off)
                .ok()
                .and_then(|o| o.checked_add(data_start))
                .filter(|o| o.checked_add(len).is_some_and(|e| e <= b.len()))
                .ok_or_else(|| {
                    r.err(format!(
                        "data of tensor {name} ({len} bytes at offset {off}) lies past the end"
                    ))
                })?;
            index.insert(name.clone(), tensors.len());
            tensors.push(TensorInfo {
                name,
                shape,
                dtype,
                offset,
                len,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            metadata_order,
            index,
            data,
            file_map: false,
        })
    }

    /// Metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The architecture string (`general.architecture`).
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// Size of the mapped file in bytes.
    pub fn file_size(&self) -> usize {
        (*self.data).as_ref().len()
    }

    /// Drops the tokenizer's tables from the metadata (`tokenizer.ggml.tokens`, `.scores`,
    /// `.token_type`, `.merges`), once the tokenizer is built from them: one [`Value`] per
    /// token is most of the metadata's memory (Gemma 3: 262,144 tokens, about 34 MB as
    /// values). Afterwards [`GgufFile::get`] and [`GgufFile::metadata_entries`] lack them.
    pub fn drop_tokenizer_tables(&mut self) {
        for k in ["tokens", "scores", "token_type", "merges"] {
            self.metadata.remove(&format!("tokenizer.ggml.{k}"));
        }
    }

    /// Every metadata entry, in file order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata_order
            .iter()
            .filter_map(|k| self.metadata.get(k).map(|v| (k.as_str(), v)))
    }

    /// Directory entry by name.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }
}

impl WeightSource for GgufFile {
    fn tensor(&self, name: &str) -> Option<Tensor> {
        let t = self.info(name)?;
        Some(Tensor {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            data: if self.file_map {
                WeightBytes::in_file_map(self.data.clone(), t.offset, t.len)
            } else {
                WeightBytes::new(self.data.clone(), t.offset, t.len)
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("test.gguf")
    }

    /// A llama file with a string, an array of two u32 and one 4x2 F32 tensor `w` (0..8).
    fn tiny() -> Vec<u8> {
        let mut w = crate::gguf_write::GgufWriter::new();
        w.kv("general.architecture", Value::Str("llama".into()))
            .kv(
                "some.array",
                Value::Array(vec![Value::U64(7), Value::U64(9)]),
            )
            .tensor(
                "w",
                0,
                &[4, 2],
                (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect(),
            );
        w.to_bytes()
    }

    #[test]
    fn parses_tiny_file() {
        let g = GgufFile::from_bytes(p(), tiny()).unwrap();
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.get("some.array").unwrap().as_array().unwrap().len(), 2);
        let t = g.tensor("w").unwrap();
        assert_eq!(t.shape, vec![4, 2]);
        assert_eq!(t.to_f32(), (0..8).map(|i| i as f32).collect::<Vec<_>>());
    }

    #[test]
    fn tensors_of_a_mapped_file_are_file_map_views_and_in_memory_ones_are_not() {
        let path = std::env::temp_dir().join(format!("sy-file-map-{}.gguf", std::process::id()));
        std::fs::write(&path, tiny()).unwrap();
        let mapped = GgufFile::open(&path).unwrap();
        let t = mapped.tensor("w").unwrap();
        let map = t
            .data
            .file_map()
            .expect("a mapped file's tensor is a file map view");
        assert_eq!(map.len(), tiny().len());
        assert_eq!(t.to_f32(), (0..8).map(|i| i as f32).collect::<Vec<_>>());
        let sliced = t.data.slice(4, 8);
        assert!(sliced.file_map().is_some());
        crate::mmap::set_read_into_memory(true);
        let read = GgufFile::open(&path);
        crate::mmap::set_read_into_memory(false);
        assert!(read.unwrap().tensor("w").unwrap().data.file_map().is_none());
        let in_memory = GgufFile::from_bytes(p(), tiny()).unwrap();
        assert!(in_memory.tensor("w").unwrap().data.file_map().is_none());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn tokenizer_tables_are_dropped_and_the_rest_kept() {
        let mut g = GgufFile::from_bytes(p(), tiny()).unwrap();
        g.metadata.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(vec![Value::Str("a".into())]),
        );
        g.drop_tokenizer_tables();
        assert!(g.get("tokenizer.ggml.tokens").is_none());
        assert_eq!(g.architecture(), Some("llama"));
        assert!(g.get("some.array").is_some());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = tiny();
        for n in 0..full.len() {
            let r = GgufFile::from_bytes(p(), full[..n].to_vec());
            assert!(r.is_err(), "prefix of {n} bytes parsed");
        }
    }

    /// Fuzz find (gguf): a shape whose element count fits but whose byte length does not
    /// (`bytes_for` overflowed: a panic with overflow checks; without, a wrapped length that
    /// passed the bounds check for a tensor of 2^63 elements).
    #[test]
    fn byte_length_overflow_is_an_error() {
        let mut v = tiny();
        let name_pos = v
            .windows(9)
            .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'w'])
            .unwrap();
        let dim0 = name_pos + 9 + 4;
        v[dim0..dim0 + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
        let e = GgufFile::from_bytes(p(), v).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn bad_magic_and_version() {
        let e = GgufFile::from_bytes(p(), b"GGML\0\0\0\0".to_vec()).unwrap_err();
        assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
        let mut v = tiny();
        v[4] = 9;
        let e = GgufFile::from_bytes(p(), v).unwrap_err();
        assert!(e.to_string().contains("version 9"), "{e}");
    }

    #[test]
    fn unsupported_type_is_named() {
        let mut v = tiny();
        // The tensor type field sits right before the 8-byte offset, before the padding.
        let pos = v.windows(4).rposition(|w| w == 0u32.to_le_bytes()).unwrap();
        let _ = pos;
        let idx = {
            // find "w" name entry then skip: len(8) + 1 + ndims(4) + 2*8
            let name_pos = v
                .windows(9)
                .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'w'])
                .unwrap();
            name_pos + 9 + 4 + 16
        };
        // IQ2_XXS (id 16): not supported.
        v[idx..idx + 4].copy_from_slice(&16u32.to_le_bytes());
        let e = GgufFile::from_bytes(p(), v).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("IQ2_XXS") && msg.contains("supported: F32"),
            "{e}"
        );
        // The list names every weight type the loader accepts.
        let listed = msg.split("supported: ").nth(1).unwrap();
        for id in 0..64 {
            if let Some(t) = GgmlType::from_id(id).filter(|&t| t != GgmlType::Q8_K) {
                assert!(
                    listed.split(", ").any(|n| n == t.name()),
                    "{t} missing from {msg}"
                );
            }
        }
    }
}
