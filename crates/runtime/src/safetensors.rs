//! safetensors reader: the JSON header and tensor directory of a memory-mapped file, and sharded
//! checkpoints (`model.safetensors.index.json`).
//!
//! Format: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]}, ...,
//! "__metadata__": {"k": "v"}}`), then the data section; offsets are relative to its start.
//! Every length and offset is checked against the file (header at most [`MAX_HEADER`] bytes,
//! tensor byte ranges inside the data section, matching their shape, not overlapping), so a
//! truncated or hostile file is a [`SafetensorsError`] naming the file, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_core::{GgmlType, Tensor, WeightBytes};

use crate::mmap::SharedBytes;

/// Largest JSON header accepted (the reference implementation's limit).
pub const MAX_HEADER: u64 = 100_000_000;

/// Errors reading safetensors files.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The header or a tensor entry is malformed, or the file is truncated.
    #[error("{path} is not a valid safetensors file: {what}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A tensor has an element type we do not run.
    #[error("{path}: tensor {tensor} has unsupported dtype {dtype}; supported: BF16, F16, F32")]
    UnsupportedDtype {
        /// File.
        path: PathBuf,
        /// Tensor.
        tensor: String,
        /// Dtype found.
        dtype: String,
    },
    /// The shard index is malformed or names files or tensors inconsistently.
    #[error("{path}: {what}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Directory entry of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct StTensorInfo {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: GgmlType,
    /// Dimensions in safetensors (row-major, PyTorch) order: the last one is contiguous.
    pub shape: Vec<usize>,
    /// Absolute byte offset in the file.
    pub offset: usize,
    /// Byte length.
    pub len: usize,
}

impl StTensorInfo {
    /// Dimensions in GGML order (innermost first), as [`Tensor::shape`] wants them.
    pub fn ggml_shape(&self) -> Vec<usize> {
        if self.shape.is_empty() {
            vec![1]
        } else {
            self.shape.iter().rev().copied().collect()
        }
    }
}

/// A parsed (typically memory-mapped) safetensors file.
pub struct SafetensorsFile {
    /// Path it was read from.
    pub path: PathBuf,
    /// `__metadata__` string pairs.
    pub metadata: HashMap<String, String>,
    /// Tensors in data order.
    pub tensors: Vec<StTensorInfo>,
    index: HashMap<String, usize>,
    data: SharedBytes,
    /// `data` is a map of the file (tensors are `WeightBytes::in_file_map` views).
    file_map: bool,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

impl SafetensorsFile {
    /// Opens and memory-maps `path`, parsing its header.
    pub fn open(path: &Path) -> Result<Self, SafetensorsError> {
        let io = |source| SafetensorsError::Io {
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

    /// Parses safetensors from bytes already in memory (tests, fuzzing).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, SafetensorsError> {
        Self::parse(path, std::sync::Arc::new(bytes))
    }

    fn parse(path: &Path, data: SharedBytes) -> Result<Self, SafetensorsError> {
        let b: &[u8] = (*data).as_ref();
        let invalid = |what: String| SafetensorsError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        if b.len() < 8 {
            return Err(invalid(format!(
                "{} bytes, shorter than the 8-byte header length",
                b.len()
            )));
        }
        let n = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        if n > MAX_HEADER {
            return Err(invalid(format!(
                "header length {n} exceeds the limit of {MAX_HEADER} bytes"
            )));
        }
        let data_start = 8 + n as usize;
        if data_start > b.len() {
            return Err(invalid(format!(
                "header of {n} bytes runs past the end of the file ({} bytes); truncated?",
                b.len()
            )));
        }
        let header = std::str::from_utf8(&b[8..data_start])
            .map_err(|e| invalid(format!("header is not UTF-8: {e}")))?;
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(header)
            .map_err(|e| invalid(format!("header is not a JSON object: {e}")))?;
        let data_len = b.len() - data_start;
        let mut metadata = HashMap::new();
        let mut tensors = Vec::with_capacity(obj.len());
        for (name, v) in obj {
            if name == "__metadata__" {
                let m: HashMap<String, String> = serde_json::from_value(v)
                    .map_err(|e| invalid(format!("__metadata__ is not a string map: {e}")))?;
                metadata = m;
                continue;
            }
            let e: Entry = serde_json::from_value(v)
                .map_err(|e| invalid(format!("entry of tensor {name}: {e}")))?;
            let (dtype, elem) = match e.dtype.as_str() {
                "F32" => (GgmlType::F32, 4u64),
                "F16" => (GgmlType::F16, 2),
                "BF16" => (GgmlType::BF16, 2),
                _ => {
                    return Err(SafetensorsError::UnsupportedDtype {
                        path: path.to_path_buf(),
                        tensor: name,
                        dtype: e.dtype,
                    })
                }
            };
            let bytes = e
                .shape
                .iter()
                .try_fold(elem, |a, &d| a.checked_mul(d))
                .ok_or_else(|| invalid(format!("tensor {name} shape {:?} overflows", e.shape)))?;
            let [begin, end] = e.data_offsets;
            if begin > end || end > data_len as u64 {
                return Err(invalid(format!(
                    "tensor {name} data_offsets [{begin}, {end}] lie outside the data section \
                     ({data_len} bytes); truncated?"
                )));
            }
            if end - begin != bytes {
                return Err(invalid(format!(
                    "tensor {name} has {} bytes for shape {:?} of {} ({bytes} bytes expected)",
                    end - begin,
                    e.shape,
                    e.dtype
                )));
            }
            let shape = e
                .shape
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| invalid(format!("tensor {name} shape {:?} overflows", e.shape)))?;
            tensors.push(StTensorInfo {
                name,
                dtype,
                shape,
                offset: data_start + begin as usize,
                len: bytes as usize,
            });
        }
        tensors.sort_by(|a, b| a.offset.cmp(&b.offset).then(a.len.cmp(&b.len)));
        for w in tensors.windows(2) {
            if w[0].offset + w[0].len > w[1].offset {
                return Err(invalid(format!(
                    "data of tensors {} and {} overlap",
                    w[0].name, w[1].name
                )));
            }
        }
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            metadata,
            tensors,
            index,
            data,
            file_map: false,
        })
    }

    /// Directory entry by name.
    pub fn info(&self, name: &str) -> Option<&StTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> usize {
        (*self.data).as_ref().len()
    }

    /// The tensor `name` as stored (no copy), with its shape in GGML order, under the name
    /// `as_name`.
    pub fn tensor_as(&self, name: &str, as_name: &str) -> Option<Tensor> {
        let t = self.info(name)?;
        Some(Tensor {
            name: as_name.to_string(),
            dtype: t.dtype,
            shape: t.ggml_shape(),
            data: if self.file_map {
                WeightBytes::in_file_map(self.data.clone(), t.offset, t.len)
            } else {
                WeightBytes::new(self.data.clone(), t.offset, t.len)
            },
        })
    }
}

/// A checkpoint: one `model.safetensors` or the shards listed by `model.safetensors.index.json`.
#[derive(Debug)]
pub struct Checkpoint {
    /// The files, in index order.
    pub files: Vec<SafetensorsFile>,
    where_: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct IndexJson {
    weight_map: HashMap<String, String>,
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`: the shards of `model.safetensors.index.json` if present,
    /// else `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self, SafetensorsError> {
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|source| SafetensorsError::Io {
                path: index.clone(),
                source,
            })?;
            return Self::open_index(dir, &index, &text);
        }
        Self::from_files(vec![SafetensorsFile::open(&dir.join("model.safetensors"))?])
    }

    /// Opens the shards named by an index (`text`, read from `index_path`) relative to `dir`.
    pub fn open_index(dir: &Path, index_path: &Path, text: &str) -> Result<Self, SafetensorsError> {
        let bad = |what: String| SafetensorsError::Index {
            path: index_path.to_path_buf(),
            what,
        };
        let idx: IndexJson =
            serde_json::from_str(text).map_err(|e| bad(format!("not a shard index: {e}")))?;
        let mut names: Vec<&String> = idx.weight_map.values().collect();
        names.sort();
        names.dedup();
        let mut files = Vec::with_capacity(names.len());
        for n in &names {
            let p = Path::new(n.as_str());
            if p.components().count() != 1 || p.is_absolute() || n.contains("..") {
                return Err(bad(format!("shard name {n:?} is not a plain file name")));
            }
            files.push(SafetensorsFile::open(&dir.join(p))?);
        }
        let ck = Self::from_files(files)?;
        for (t, f) in &idx.weight_map {
            match ck.where_.get(t) {
                Some(&i) if ck.files[i].path.file_name() == Some(std::ffi::OsStr::new(f)) => {}
                Some(&i) => {
                    return Err(bad(format!(
                        "tensor {t} is listed in {f} but found in {}",
                        ck.files[i].path.display()
                    )))
                }
                None => {
                    return Err(bad(format!(
                        "tensor {t} is listed in {f} but missing there"
                    )))
                }
            }
        }
        Ok(ck)
    }

    /// A checkpoint over already opened files; a tensor name in two files is an error.
    pub fn from_files(files: Vec<SafetensorsFile>) -> Result<Self, SafetensorsError> {
        let mut where_ = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for t in &f.tensors {
                if let Some(j) = where_.insert(t.name.clone(), i) {
                    return Err(SafetensorsError::Invalid {
                        path: f.path.clone(),
                        what: format!("tensor {} is also in {}", t.name, files[j].path.display()),
                    });
                }
            }
        }
        Ok(Self { files, where_ })
    }

    /// The file holding `name` and its entry.
    pub fn info(&self, name: &str) -> Option<(&SafetensorsFile, &StTensorInfo)> {
        let f = &self.files[*self.where_.get(name)?];
        Some((f, f.info(name)?))
    }

    /// All tensor entries.
    pub fn tensors(&self) -> impl Iterator<Item = &StTensorInfo> {
        self.files.iter().flat_map(|f| f.tensors.iter())
    }

    /// Total bytes of all files.
    pub fn total_size(&self) -> usize {
        self.files.iter().map(|f| f.file_size()).sum()
    }
}

/// Serializes tensors to safetensors bytes (tests; the format's canonical layout: header padded
/// with spaces to a multiple of 8, data in the given order).
pub fn serialize(tensors: &[(&str, &str, &[usize], &[u8])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + bytes.len()]}),
        );
        off += bytes.len();
    }
    let mut h = serde_json::to_string(&header).expect("serializable");
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h.as_bytes());
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("test.safetensors")
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn tiny() -> Vec<u8> {
        let a = f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let c: Vec<u8> = [0.25f32]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        serialize(&[
            ("a", "F32", &[2, 3], &a),
            ("b", "BF16", &[2], &b),
            ("c", "F16", &[], &c),
        ])
    }

    fn with_header(h: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend(h.as_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn parses_tiny_file() {
        let f = SafetensorsFile::from_bytes(p(), tiny()).unwrap();
        let a = f.tensor_as("a", "x").unwrap();
        assert_eq!(a.shape, vec![3, 2], "GGML order: row length first");
        assert_eq!(a.name, "x");
        assert_eq!(a.to_f32(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(f.tensor_as("b", "b").unwrap().to_f32(), vec![1.5, -2.0]);
        let c = f.tensor_as("c", "c").unwrap();
        assert_eq!((c.shape.clone(), c.to_f32()), (vec![1], vec![0.25]));
        assert!(f.info("missing").is_none());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = tiny();
        for n in 0..full.len() {
            let r = SafetensorsFile::from_bytes(p(), full[..n].to_vec());
            let e = r.expect_err(&format!("prefix of {n} bytes parsed"));
            assert!(e.to_string().contains("test.safetensors"), "{e}");
        }
    }

    #[test]
    fn hostile_headers_are_errors() {
        let d = [0u8; 16];
        let cases: &[(&str, Vec<u8>)] = &[
            ("exceeds the limit", {
                let mut v = (MAX_HEADER + 1).to_le_bytes().to_vec();
                v.extend([b' '; 8]);
                v
            }),
            ("runs past the end", {
                let mut v = 1000u64.to_le_bytes().to_vec();
                v.extend(b"{}");
                v
            }),
            ("not a JSON object", with_header("[1, 2]", &d)),
            ("not a JSON object", with_header("{\"a\":", &d)),
            ("not UTF-8", {
                let mut v = 2u64.to_le_bytes().to_vec();
                v.extend([0xff, 0xfe]);
                v
            }),
            (
                "lie outside",
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
                    &d,
                ),
            ),
            (
                "lie outside",
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[9,8]}}"#,
                    &d,
                ),
            ),
            (
                "bytes expected",
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#,
                    &d,
                ),
            ),
            (
                "overflows",
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
                    &d,
                ),
            ),
            (
                "overlap",
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    &d,
                ),
            ),
            (
                "entry of tensor a",
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                    &d,
                ),
            ),
            (
                "entry of tensor a",
                with_header(r#"{"a":{"dtype":"F32","shape":[1]}}"#, &d),
            ),
            (
                "entry of tensor a",
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#,
                    &d,
                ),
            ),
            (
                "__metadata__",
                with_header(r#"{"__metadata__":{"k":1}}"#, &d),
            ),
            (
                "unsupported dtype I64",
                with_header(
                    r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
                    &d,
                ),
            ),
        ];
        for (want, bytes) in cases {
            let e = SafetensorsFile::from_bytes(p(), bytes.clone()).unwrap_err();
            let s = e.to_string();
            assert!(s.contains(want), "want {want:?} in: {s}");
            assert!(s.contains("test.safetensors"), "{s}");
        }
    }

    #[test]
    fn metadata_and_empty_tensors() {
        let h = r#"{"__metadata__":{"format":"pt"},"e":{"dtype":"BF16","shape":[0,4],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let f = SafetensorsFile::from_bytes(p(), with_header(h, &1f32.to_le_bytes())).unwrap();
        assert_eq!(f.metadata.get("format").map(String::as_str), Some("pt"));
        assert_eq!(f.tensors.len(), 2);
        assert_eq!(f.tensor_as("a", "a").unwrap().to_f32(), vec![1.0]);
    }

    #[test]
    fn sharded_checkpoint() {
        let dir = std::env::temp_dir().join(format!("sy-st-shards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let one = serialize(&[("a", "F32", &[1], &f32s(&[1.0]))]);
        let two = serialize(&[("b", "F32", &[2], &f32s(&[2.0, 3.0]))]);
        std::fs::write(dir.join("s1.safetensors"), one).unwrap();
        std::fs::write(dir.join("s2.safetensors"), two).unwrap();
        let ip = dir.join("model.safetensors.index.json");
        let idx = r#"{"metadata":{"total_size":12},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}"#;
        std::fs::write(&ip, idx).unwrap();
        let ck = Checkpoint::open_dir(&dir).unwrap();
        assert_eq!(ck.files.len(), 2);
        let (f, _) = ck.info("b").unwrap();
        assert_eq!(f.tensor_as("b", "b").unwrap().to_f32(), vec![2.0, 3.0]);
        assert_eq!(ck.tensors().count(), 2);

        let e = Checkpoint::open_index(
            &dir,
            &ip,
            r#"{"weight_map":{"a":"s2.safetensors","b":"s2.safetensors"}}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("tensor a is listed in s2.safetensors but missing"),
            "{e}"
        );
        let e = Checkpoint::open_index(&dir, &ip, r#"{"weight_map":{"a":"../s1.safetensors"}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("not a plain file name"), "{e}");
        let e = Checkpoint::open_index(&dir, &ip, r#"{"weight_map":{"a":"s3.safetensors"}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("s3.safetensors"), "{e}");
        let e = Checkpoint::open_index(&dir, &ip, "[]").unwrap_err();
        assert!(e.to_string().contains("not a shard index"), "{e}");
        // The same tensor in two files.
        std::fs::write(
            dir.join("s2.safetensors"),
            serialize(&[("a", "F32", &[1], &f32s(&[5.0]))]),
        )
        .unwrap();
        let e = Checkpoint::open_index(
            &dir,
            &ip,
            r#"{"weight_map":{"a":"s1.safetensors"},"x":{"a":"s2.safetensors"}}"#,
        );
        assert!(e.is_ok(), "only shards named by the index are opened");
        let e = Checkpoint::from_files(vec![
            SafetensorsFile::open(&dir.join("s1.safetensors")).unwrap(),
            SafetensorsFile::open(&dir.join("s2.safetensors")).unwrap(),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("also in"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
