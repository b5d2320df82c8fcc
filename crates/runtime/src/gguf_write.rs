//! A GGUF (version 3) writer: metadata as [`Value`]s, tensors as raw bytes in their encoding.
//! The one writer the tests (of every crate: backends may use it as a dev-dependency) and the
//! fuzz targets' vocabularies use to build files, and the way to rewrite a file
//! ([`GgufWriter::from_file`]: all of its metadata and tensors, to change before writing).

use crate::gguf::{GgufFile, Value};
use switchyard_core::WeightSource;

/// The metadata and tensors of a GGUF file to be written.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    kv: Vec<(String, Value)>,
    tensors: Vec<(String, u32, Vec<usize>, Vec<u8>)>,
}

const ALIGN: usize = 32;

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every metadata entry and tensor of `g`, in file order.
    pub fn from_file(g: &GgufFile) -> Self {
        let mut w = Self::new();
        for (k, v) in g.metadata_entries() {
            w.kv(k, v.clone());
        }
        for t in &g.tensors {
            let data = g.tensor(&t.name).map(|t| t.data.as_slice().to_vec());
            w.tensor(&t.name, t.dtype.id(), &t.shape, data.unwrap_or_default());
        }
        w
    }

    /// Sets metadata `key` (replacing an earlier value).
    pub fn kv(&mut self, key: &str, v: Value) -> &mut Self {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.kv.push((key.to_string(), v)),
        }
        self
    }

    /// Sets metadata `key` to an array of strings.
    pub fn kv_strs<S: Into<String>>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = S>,
    ) -> &mut Self {
        let a = items.into_iter().map(|s| Value::Str(s.into())).collect();
        self.kv(key, Value::Array(a))
    }

    /// Sets metadata `key` to an array of f32 (GGUF type 6).
    pub fn kv_f32s(&mut self, key: &str, items: impl IntoIterator<Item = f32>) -> &mut Self {
        let a = items.into_iter().map(|x| Value::F64(x.into())).collect();
        self.kv(key, Value::Array(a))
    }

    /// Sets metadata `key` to an array of i32 (GGUF type 5).
    pub fn kv_i32s(&mut self, key: &str, items: impl IntoIterator<Item = i32>) -> &mut Self {
        let a = items.into_iter().map(|x| Value::I64(x.into())).collect();
        self.kv(key, Value::Array(a))
    }

    /// A SentencePiece vocabulary as llama.cpp stores it: `tokenizer.ggml.model` `llama`, the
    /// `tokens`, their `scores` (all 0) and `token_type`s (llama.cpp's: 1 normal, 2 unknown,
    /// 3 control, 4 user-defined, 6 byte). Ids are positions in `tokens`.
    pub fn sentencepiece_vocab(&mut self, tokens: &[(String, i32)]) -> &mut Self {
        self.kv("tokenizer.ggml.model", Value::Str("llama".into()))
            .kv_strs("tokenizer.ggml.tokens", tokens.iter().map(|t| t.0.as_str()))
            .kv_f32s("tokenizer.ggml.scores", tokens.iter().map(|_| 0.0))
            .kv_i32s("tokenizer.ggml.token_type", tokens.iter().map(|t| t.1))
    }

    /// Removes metadata `key`.
    pub fn remove_kv(&mut self, key: &str) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self
    }

    /// Adds (or replaces) tensor `name` of GGML type id `type_id`, GGML-order `shape`, `data`.
    pub fn tensor(
        &mut self,
        name: &str,
        type_id: u32,
        shape: &[usize],
        data: Vec<u8>,
    ) -> &mut Self {
        let t = (name.to_string(), type_id, shape.to_vec(), data);
        match self.tensors.iter_mut().find(|e| e.0 == name) {
            Some(e) => *e = t,
            None => self.tensors.push(t),
        }
        self
    }

    /// Removes tensor `name`.
    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        self.tensors.retain(|e| e.0 != name);
        self
    }

    /// Changes tensor `name`'s shape (not its data).
    pub fn reshape(&mut self, name: &str, shape: &[usize]) -> &mut Self {
        if let Some(e) = self.tensors.iter_mut().find(|e| e.0 == name) {
            e.2 = shape.to_vec();
        }
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend((self.tensors.len() as u64).to_le_bytes());
        v.extend((self.kv.len() as u64).to_le_bytes());
        for (k, val) in &self.kv {
            put_str(&mut v, k);
            v.extend(type_of(val).to_le_bytes());
            put_value(&mut v, val);
        }
        let mut offset = 0usize;
        for (name, ty, shape, data) in &self.tensors {
            put_str(&mut v, name);
            v.extend((shape.len() as u32).to_le_bytes());
            for &d in shape {
                v.extend((d as u64).to_le_bytes());
            }
            v.extend(ty.to_le_bytes());
            v.extend((offset as u64).to_le_bytes());
            offset += data.len().next_multiple_of(ALIGN);
        }
        v.resize(v.len().next_multiple_of(ALIGN), 0);
        for (_, _, _, data) in &self.tensors {
            v.extend(data);
            v.resize(v.len().next_multiple_of(ALIGN), 0);
        }
        v
    }
}

fn put_str(v: &mut Vec<u8>, s: &str) {
    v.extend((s.len() as u64).to_le_bytes());
    v.extend(s.as_bytes());
}

/// The GGUF value type written for `val`: u32 / i32 / f32 where the value fits (what
/// llama.cpp's files use for counts and hyperparameters), else the 64-bit types.
fn type_of(val: &Value) -> u32 {
    match val {
        Value::U64(x) if *x <= u64::from(u32::MAX) => 4,
        Value::U64(_) => 10,
        Value::I64(x) if i32::try_from(*x).is_ok() => 5,
        Value::I64(_) => 11,
        Value::F64(_) => 6,
        Value::Bool(_) => 7,
        Value::Str(_) => 8,
        Value::Array(_) => 9,
    }
}

fn put_value(v: &mut Vec<u8>, val: &Value) {
    match val {
        Value::U64(x) if *x <= u64::from(u32::MAX) => v.extend((*x as u32).to_le_bytes()),
        Value::U64(x) => v.extend(x.to_le_bytes()),
        Value::I64(x) => match i32::try_from(*x) {
            Ok(y) => v.extend(y.to_le_bytes()),
            Err(_) => v.extend(x.to_le_bytes()),
        },
        Value::F64(x) => v.extend((*x as f32).to_le_bytes()),
        Value::Bool(b) => v.push(u8::from(*b)),
        Value::Str(s) => put_str(v, s),
        Value::Array(a) => {
            // One element type for the whole array: the widest its elements need.
            let ety = a.iter().map(type_of).max().unwrap_or(4);
            v.extend(ety.to_le_bytes());
            v.extend((a.len() as u64).to_le_bytes());
            for e in a {
                put_as(v, e, ety);
            }
        }
    }
}

/// `val` written as GGUF type `ty` (an array's common element type).
fn put_as(v: &mut Vec<u8>, val: &Value, ty: u32) {
    match (val, ty) {
        (Value::U64(x), 4) => v.extend((*x as u32).to_le_bytes()),
        (Value::U64(x), 10 | 11) => v.extend(x.to_le_bytes()),
        (Value::I64(x), 5) => v.extend((*x as i32).to_le_bytes()),
        (Value::I64(x), 10 | 11) => v.extend(x.to_le_bytes()),
        (Value::U64(x), 5) => v.extend((*x as i32).to_le_bytes()),
        (Value::U64(x), 6) => v.extend((*x as f32).to_le_bytes()),
        (Value::I64(x), 6) => v.extend((*x as f32).to_le_bytes()),
        _ => put_value(v, val),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn round_trips_metadata_and_tensors() {
        let mut w = GgufWriter::new();
        w.kv("general.architecture", Value::Str("llama".into()))
            .kv("llama.block_count", Value::U64(3))
            .kv("x.neg", Value::I64(-5))
            .kv("x.f", Value::F64(0.5))
            .kv("x.b", Value::Bool(true))
            .kv(
                "x.arr",
                Value::Array(vec![Value::Str("a".into()), Value::Str("bc".into())]),
            )
            .kv(
                "x.scores",
                Value::Array(vec![Value::F64(-1.5), Value::F64(2.0)]),
            )
            .tensor("t", 0, &[2, 3], (0..24).collect());
        let g = GgufFile::from_bytes(Path::new("w.gguf"), w.to_bytes()).unwrap();
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.get("llama.block_count").and_then(Value::as_u64), Some(3));
        assert_eq!(g.get("x.neg"), Some(&Value::I64(-5)));
        assert_eq!(g.get("x.f"), Some(&Value::F64(0.5)));
        assert_eq!(g.get("x.b"), Some(&Value::Bool(true)));
        assert_eq!(
            g.get("x.scores"),
            Some(&Value::Array(vec![Value::F64(-1.5), Value::F64(2.0)]))
        );
        let t = g.tensor("t").unwrap();
        assert_eq!(t.shape, [2, 3]);
        assert_eq!(t.data.as_slice(), (0..24).collect::<Vec<u8>>());
        // A rewrite is the same file.
        let again = GgufWriter::from_file(&g).to_bytes();
        assert_eq!(again, w.to_bytes());
    }

    #[test]
    fn typed_arrays_and_a_sentencepiece_vocabulary() {
        let toks = vec![("<unk>".to_string(), 2), ("a".to_string(), 1)];
        let mut w = GgufWriter::new();
        w.sentencepiece_vocab(&toks)
            .kv_i32s("x.i", [-3, 4])
            .kv_f32s("x.f", [0.25, -1.0])
            .kv_strs("x.s", ["p", "q"]);
        let bytes = w.to_bytes();
        let g = GgufFile::from_bytes(Path::new("v.gguf"), bytes.clone()).unwrap();
        let arr = |v: Vec<Value>| Some(Value::Array(v));
        let str = |s: &str| Value::Str(s.into());
        assert_eq!(g.get("tokenizer.ggml.model"), Some(&str("llama")));
        assert_eq!(
            g.get("tokenizer.ggml.tokens").cloned(),
            arr(vec![str("<unk>"), str("a")])
        );
        assert_eq!(
            g.get("tokenizer.ggml.scores").cloned(),
            arr(vec![Value::F64(0.0), Value::F64(0.0)])
        );
        assert_eq!(
            g.get("tokenizer.ggml.token_type").cloned(),
            arr(vec![Value::I64(2), Value::I64(1)])
        );
        assert_eq!(
            g.get("x.i").cloned(),
            arr(vec![Value::I64(-3), Value::I64(4)])
        );
        assert_eq!(
            g.get("x.f").cloned(),
            arr(vec![Value::F64(0.25), Value::F64(-1.0)])
        );
        assert_eq!(g.get("x.s").cloned(), arr(vec![str("p"), str("q")]));
        // The element types llama.cpp writes: i32 token types, f32 scores, strings.
        let types_after = |key: &str| {
            let at = bytes
                .windows(key.len())
                .position(|w| w == key.as_bytes())
                .unwrap();
            let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
            (u32_at(at + key.len()), u32_at(at + key.len() + 4))
        };
        assert_eq!(types_after("tokenizer.ggml.token_type"), (9, 5));
        assert_eq!(types_after("tokenizer.ggml.scores"), (9, 6));
        assert_eq!(types_after("tokenizer.ggml.tokens"), (9, 8));
        assert_eq!(types_after("x.i"), (9, 5));
    }
}
