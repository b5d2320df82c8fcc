//! Tokenizers built from a GGUF vocabulary with the `tokenizers` crate, reproducing llama.cpp's
//! tokenization: SentencePiece-style BPE by scores (`llama` model, e.g. Gemma) and GPT-2 byte
//! level BPE (`gpt2` model, e.g. Qwen2), plus incremental detokenization.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::gguf::{GgufFile, Value};

/// Errors building or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Vocabulary metadata missing or malformed.
    #[error("{path}: tokenizer metadata {key} missing or invalid")]
    Metadata {
        /// File.
        path: String,
        /// Key.
        key: String,
    },
    /// The tokenizer model is not one we support.
    #[error("{path}: unsupported tokenizer model '{model}' (supported: llama, gpt2)")]
    UnsupportedModel {
        /// File.
        path: String,
        /// Model found.
        model: String,
    },
    /// Error from the tokenizers library.
    #[error("tokenizer: {0}")]
    Library(String),
    /// A token id outside the vocabulary.
    #[error("token id {id} out of range (vocabulary size {vocab})")]
    BadId {
        /// Id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
}

const GPT2_TYPE_NORMAL: i64 = 1;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A model's tokenizer plus its special-token facts.
pub struct Tokenizer {
    inner: HfTokenizer,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// BOS id, if the model has one.
    pub bos: Option<u32>,
    /// Whether BOS is prepended to prompts.
    pub add_bos: bool,
    /// Ids that end generation (EOS, end-of-turn, ...).
    pub eos_ids: Vec<u32>,
    /// The Jinja chat template, if the model has one.
    pub chat_template: Option<String>,
    /// Text of each token id (for chat template `bos_token`/`eos_token` and diagnostics).
    tokens: Vec<String>,
    special: Vec<bool>,
    /// Control and user-defined tokens, matched in the raw text before the model sees it.
    added: Option<(aho_corasick::AhoCorasick, Vec<u32>)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

fn lib<E: std::fmt::Display>(e: E) -> TokenizerError {
    TokenizerError::Library(e.to_string())
}

impl Tokenizer {
    /// Builds the tokenizer described by the GGUF metadata of `g`.
    pub fn from_gguf(g: &GgufFile) -> Result<Self, TokenizerError> {
        let path = g.path.display().to_string();
        let meta = |key: &str| TokenizerError::Metadata {
            path: path.clone(),
            key: key.into(),
        };
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or_else(|| meta("tokenizer.ggml.model"))?
            .to_string();
        let tokens: Vec<String> = g
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| meta("tokenizer.ggml.tokens"))?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| meta("tokenizer.ggml.tokens"))?;
        let n = tokens.len();
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) if a.len() == n => a
                .iter()
                .map(|v| v.as_f64().map(|f| f as i64))
                .collect::<Option<_>>()
                .ok_or_else(|| meta("tokenizer.ggml.token_type"))?,
            _ => vec![GPT2_TYPE_NORMAL; n],
        };
        let id_key = |k: &str| {
            g.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as u32)
                .filter(|&v| (v as usize) < n)
        };
        let bos = id_key("tokenizer.ggml.bos_token_id");
        let eos = id_key("tokenizer.ggml.eos_token_id");
        let eot = id_key("tokenizer.ggml.eot_token_id");
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(model == "llama" && bos.is_some());
        let chat_template = g
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);

        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let inner = match model.as_str() {
            "llama" => {
                let scores: Vec<f64> = g
                    .get("tokenizer.ggml.scores")
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == n)
                    .ok_or_else(|| meta("tokenizer.ggml.scores"))?
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(0.0))
                    .collect();
                // Merges: every split of a normal token into two normal tokens, ordered by the
                // merged token's score (highest first, ties by lower id).
                let merges = sentencepiece_merges(&tokens, &types, &scores);
                let unk = g
                    .get("tokenizer.ggml.unknown_token_id")
                    .and_then(Value::as_u64)
                    .and_then(|i| tokens.get(i as usize).cloned())
                    .unwrap_or_else(|| "<unk>".into());
                let bpe = BPE::builder()
                    .vocab_and_merges(
                        vocab
                            .iter()
                            .map(|(k, v)| (k.clone(), *v))
                            .collect::<tokenizers::models::bpe::Vocab>(),
                        merges,
                    )
                    .byte_fallback(true)
                    .fuse_unk(true)
                    .unk_token(unk)
                    .build()
                    .map_err(lib)?;
                let mut tk = HfTokenizer::new(bpe);
                let add_space_prefix = g
                    .get("tokenizer.ggml.add_space_prefix")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if add_space_prefix {
                    return Err(TokenizerError::Library(
                        "SentencePiece add_space_prefix=true is not supported yet".into(),
                    ));
                }
                tk.with_normalizer(Some(NormalizerWrapper::Replace(
                    Replace::new(" ", "▁").map_err(lib)?,
                )));
                tk.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(vec![
                    DecoderWrapper::Replace(
                        tokenizers::normalizers::replace::Replace::new("▁", " ").map_err(lib)?,
                    ),
                    DecoderWrapper::ByteFallback(ByteFallback::new()),
                    DecoderWrapper::Fuse(Fuse::new()),
                ]))));
                tk
            }
            "gpt2" => {
                let merges: Vec<(String, String)> = g
                    .get("tokenizer.ggml.merges")
                    .and_then(Value::as_array)
                    .ok_or_else(|| meta("tokenizer.ggml.merges"))?
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .and_then(|s| s.split_once(' '))
                            .map(|(a, b)| (a.to_string(), b.to_string()))
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(|| meta("tokenizer.ggml.merges"))?;
                let pre = g
                    .get("tokenizer.ggml.pre")
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                if pre != "qwen2" {
                    return Err(TokenizerError::Library(format!(
                        "gpt2 pre-tokenizer '{pre}' is not supported yet (supported: qwen2)"
                    )));
                }
                let bpe = BPE::builder()
                    .vocab_and_merges(
                        vocab
                            .iter()
                            .map(|(k, v)| (k.clone(), *v))
                            .collect::<tokenizers::models::bpe::Vocab>(),
                        merges,
                    )
                    .build()
                    .map_err(lib)?;
                let mut tk = HfTokenizer::new(bpe);
                let split = Split::new(
                    SplitPattern::Regex(QWEN2_PATTERN.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(lib)?;
                tk.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(PreSequence::new(vec![
                    PreTokenizerWrapper::Split(split),
                    PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
                ]))));
                tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
                tk
            }
            other => {
                return Err(TokenizerError::UnsupportedModel {
                    path,
                    model: other.to_string(),
                })
            }
        };
        // Control tokens (special: dropped by skip-special decoding) and user-defined tokens
        // (Gemma's whitespace runs, HTML tags, ...; ordinary text when decoding) are matched in
        // the raw text, leftmost-longest, as llama.cpp and HF's added vocabulary do. We match
        // them ourselves: `tokenizers`' `add_tokens` is quadratic in their number (Gemma has
        // 6400), which cost most of a second at every start-up.
        let (patterns, pattern_ids): (Vec<&str>, Vec<u32>) = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                (types[*i] == TYPE_CONTROL || types[*i] == TYPE_USER_DEFINED) && !t.is_empty()
            })
            .map(|(i, t)| (t.as_str(), i as u32))
            .unzip();
        let added = if patterns.is_empty() {
            None
        } else {
            let ac = aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&patterns)
                .map_err(lib)?;
            Some((ac, pattern_ids))
        };
        let special = types.iter().map(|&t| t == TYPE_CONTROL).collect();

        let mut eos_ids: Vec<u32> = eos.into_iter().chain(eot).collect();
        for t in ["<end_of_turn>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(&id) = vocab.get(t) {
                if types[id as usize] == TYPE_CONTROL && !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        Ok(Self {
            inner,
            vocab_size: n,
            bos,
            add_bos: add_bos && bos.is_some(),
            eos_ids,
            chat_template,
            tokens,
            special,
            added,
        })
    }

    /// Builds the tokenizer of a Hugging Face model directory: `tokenizer.json` (any model the
    /// `tokenizers` crate reads), special tokens and BOS/EOS from `tokenizer_config.json`,
    /// `generation_config.json` and `config.json`, and the chat template from
    /// `tokenizer_config.json` (`chat_template`: a string or a list of named templates, the one
    /// named `default` chosen) or `chat_template.jinja`. `model_vocab` is the embedding's row
    /// count (ids up to it are valid; rows past the tokenizer's vocabulary decode to nothing).
    pub fn from_hf_dir(dir: &std::path::Path, model_vocab: usize) -> Result<Self, TokenizerError> {
        let read = |name: &str,
                    required: bool|
         -> Result<Option<serde_json::Value>, TokenizerError> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(t) => serde_json::from_str(&t)
                    .map(Some)
                    .map_err(|e| TokenizerError::Metadata {
                        path: p.display().to_string(),
                        key: format!("(not valid JSON: {e})"),
                    }),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(TokenizerError::Metadata {
                    path: p.display().to_string(),
                    key: format!("(cannot read: {e})"),
                }),
            }
        };
        let tj_path = dir.join("tokenizer.json").display().to_string();
        let mut tj = read("tokenizer.json", true)?.expect("required");
        let tc = read("tokenizer_config.json", false)?.unwrap_or_default();
        let gc = read("generation_config.json", false)?.unwrap_or_default();
        let cc = read("config.json", false)?.unwrap_or_default();
        let meta = |key: &str| TokenizerError::Metadata {
            path: tj_path.clone(),
            key: key.into(),
        };

        #[derive(serde::Deserialize)]
        struct Added {
            id: u32,
            content: String,
            #[serde(default)]
            special: bool,
            #[serde(default)]
            single_word: bool,
            #[serde(default)]
            lstrip: bool,
            #[serde(default)]
            rstrip: bool,
            #[serde(default)]
            normalized: bool,
        }
        let added: Vec<Added> = match tj.get("added_tokens") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| meta("added_tokens"))?,
        };
        // Added tokens are matched by us in the raw text (leftmost-longest, like `tokenizers`'
        // added vocabulary) when they are plain and the model is BPE: each is put into the BPE
        // vocabulary so it decodes, and the library's quadratic `add_tokens` is skipped (Gemma
        // has 6400). Otherwise the library handles them.
        let is_bpe = tj
            .get("model")
            .and_then(|m| m.get("type"))
            .and_then(serde_json::Value::as_str)
            == Some("BPE");
        let plain = added
            .iter()
            .all(|a| !a.single_word && !a.lstrip && !a.rstrip && !a.normalized);
        let own_matcher = is_bpe && plain && !added.is_empty();
        if own_matcher {
            let vocab = tj
                .get_mut("model")
                .and_then(|m| m.get_mut("vocab"))
                .and_then(serde_json::Value::as_object_mut)
                .ok_or_else(|| meta("model.vocab"))?;
            for a in &added {
                match vocab.get(&a.content).and_then(serde_json::Value::as_u64) {
                    Some(id) if id as u32 == a.id => {}
                    Some(id) => {
                        return Err(meta(&format!(
                            "added token {:?} (id {}) is also vocabulary id {id}",
                            a.content, a.id
                        )))
                    }
                    None => {
                        vocab.insert(a.content.clone(), a.id.into());
                    }
                }
            }
            tj["added_tokens"] = serde_json::Value::Array(Vec::new());
        }
        let inner = HfTokenizer::from_bytes(serde_json::to_vec(&tj).map_err(lib)?)
            .map_err(|e| TokenizerError::Library(format!("{tj_path}: {e}")))?;
        let vocab = inner.get_vocab(true);
        let n = vocab
            .values()
            .map(|&i| i as usize + 1)
            .max()
            .unwrap_or(0)
            .max(model_vocab);
        let mut tokens = vec![String::new(); n];
        for (t, &i) in &vocab {
            tokens[i as usize] = t.clone();
        }
        let mut special = vec![false; n];
        for a in &added {
            if let Some(s) = special.get_mut(a.id as usize) {
                *s = a.special;
            }
        }
        let added_matcher = if own_matcher {
            let (patterns, ids): (Vec<&str>, Vec<u32>) = added
                .iter()
                .filter(|a| !a.content.is_empty())
                .map(|a| (a.content.as_str(), a.id))
                .unzip();
            let ac = aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&patterns)
                .map_err(lib)?;
            Some((ac, ids))
        } else {
            None
        };

        // Special tokens: tokenizer_config.json names them (a string or {"content": ...});
        // generation_config.json and config.json give ids.
        let tok_of = |v: Option<&serde_json::Value>| -> Option<u32> {
            let s = match v? {
                serde_json::Value::String(s) => s.as_str(),
                o => o.get("content")?.as_str()?,
            };
            vocab.get(s).copied()
        };
        let ids_of = |v: Option<&serde_json::Value>| -> Vec<u32> {
            match v {
                Some(serde_json::Value::Number(x)) => {
                    x.as_u64().map(|i| i as u32).into_iter().collect()
                }
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_u64().map(|i| i as u32))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let valid = |i: &u32| (*i as usize) < n;
        let bos = tok_of(tc.get("bos_token"))
            .or_else(|| ids_of(gc.get("bos_token_id")).first().copied())
            .or_else(|| ids_of(cc.get("bos_token_id")).first().copied())
            .filter(valid);
        let post_adds_bos = || {
            let pp = tj.get("post_processor")?;
            let first = pp.get("single")?.as_array()?.first()?;
            let id = first.get("SpecialToken")?.get("id")?.as_str()?;
            Some(bos.is_some() && vocab.get(id).copied() == bos)
        };
        let add_bos = tc
            .get("add_bos_token")
            .and_then(serde_json::Value::as_bool)
            .or_else(post_adds_bos)
            .unwrap_or(false);
        let mut eos_ids: Vec<u32> = Vec::new();
        let candidates = tok_of(tc.get("eos_token"))
            .into_iter()
            .chain(ids_of(gc.get("eos_token_id")))
            .chain(ids_of(cc.get("eos_token_id")));
        for id in candidates.filter(valid) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        for t in ["<end_of_turn>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(&id) = vocab.get(t) {
                if special[id as usize] && !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        let chat_template = match tc.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => {
                let named = |want: &str| {
                    list.iter().find_map(|e| {
                        (e.get("name")?.as_str()? == want)
                            .then(|| e.get("template")?.as_str().map(str::to_string))
                            .flatten()
                    })
                };
                named("default").or_else(|| {
                    list.first()
                        .and_then(|e| e.get("template"))
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_string)
                })
            }
            _ => None,
        };
        let chat_template = match chat_template {
            Some(t) => Some(t),
            None => match std::fs::read_to_string(dir.join("chat_template.jinja")) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(TokenizerError::Metadata {
                        path: dir.join("chat_template.jinja").display().to_string(),
                        key: format!("(cannot read: {e})"),
                    })
                }
            },
        };
        Ok(Self {
            inner,
            vocab_size: n,
            bos,
            add_bos: add_bos && bos.is_some(),
            eos_ids,
            chat_template,
            tokens,
            special,
            added: added_matcher,
        })
    }

    /// Tokenizes `text`; special tokens written in the text become their ids. Prepends BOS when
    /// `add_special` and the model adds one.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        let plain = |s: &str, ids: &mut Vec<u32>| -> Result<(), TokenizerError> {
            if !s.is_empty() {
                ids.extend_from_slice(self.inner.encode_fast(s, false).map_err(lib)?.get_ids());
            }
            Ok(())
        };
        let mut last = 0;
        if let Some((ac, pid)) = &self.added {
            for m in ac.find_iter(text) {
                plain(&text[last..m.start()], &mut ids)?;
                ids.push(pid[m.pattern().as_usize()]);
                last = m.end();
            }
        }
        plain(&text[last..], &mut ids)?;
        Ok(ids)
    }

    /// Decodes ids to text (special tokens included as text unless `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            return Err(TokenizerError::BadId {
                id,
                vocab: self.vocab_size,
            });
        }
        if skip_special && ids.iter().any(|&i| self.is_special(i)) {
            let kept: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|&i| !self.is_special(i))
                .collect();
            return self.inner.decode(&kept, false).map_err(lib);
        }
        self.inner.decode(ids, false).map_err(lib)
    }

    /// Text of a token id as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Whether `id` is a control token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Id of a token by its exact text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }
}

/// Merges equivalent to SentencePiece's score-driven BPE: every split of a normal token into two
/// normal tokens, ordered by the merged token's score (highest first, ties by lower id).
fn sentencepiece_merges(tokens: &[String], types: &[i64], scores: &[f64]) -> Vec<(String, String)> {
    use rayon::prelude::*;
    let normal: ahash::AHashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types[*i] == 1)
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let mut found: Vec<(u32, &str, &str)> = tokens
        .par_iter()
        .enumerate()
        .filter(|(i, t)| types[*i] == 1 && t.len() > 1)
        .flat_map_iter(|(id, t)| {
            let normal = &normal;
            t.char_indices().skip(1).filter_map(move |(bi, _)| {
                let (l, r) = t.split_at(bi);
                (normal.contains_key(l) && normal.contains_key(r)).then_some((id as u32, l, r))
            })
        })
        .collect();
    found.par_sort_unstable_by(|a, b| {
        scores[b.0 as usize]
            .total_cmp(&scores[a.0 as usize])
            .then(a.0.cmp(&b.0))
            .then(a.1.len().cmp(&b.1.len()))
    });
    found
        .into_iter()
        .map(|(_, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// Incremental detokenizer: turns a growing list of token ids into text deltas, never emitting
/// half a UTF-8 character (the prefix/read offset method of Hugging Face's `DecodeStream`).
#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special: bool,
}

impl IncrementalDecoder {
    /// A decoder for a fresh output. `skip_special` drops control tokens from the text.
    pub fn new(skip_special: bool) -> Self {
        Self {
            skip_special,
            ..Self::default()
        }
    }

    /// Adds one token and returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let prefix = tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = tok.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        if full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        // `prefix` was sent. It normally still starts `full`; it does not when a byte-fallback
        // group it ended with turned out invalid (every byte of it then decodes to U+FFFD).
        // What was sent cannot be taken back: send what follows the common part, so that the
        // text after it is not held back (and lost) forever.
        let sent = sent_len(&prefix, &full);
        if full.len() > sent {
            let delta = full[sent..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Text still held back (an incomplete character at the end), decoded lossily.
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<String, TokenizerError> {
        let prefix = tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = tok.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(full[sent_len(&prefix, &full)..].to_string())
    }
}

/// Bytes of `full` already sent as `prefix`: all of `prefix` when `full` starts with it, else
/// their common beginning (whole characters).
fn sent_len(prefix: &str, full: &str) -> usize {
    if full.starts_with(prefix) {
        return prefix.len();
    }
    prefix
        .char_indices()
        .zip(full.chars())
        .find(|((_, a), b)| a != b)
        .map_or(prefix.len().min(full.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A SentencePiece vocabulary with byte-fallback tokens: `<unk>`, `<0x00>`..`<0xFF>` (ids
    /// 1..=256), then `▁hello`, `a`.
    fn byte_fallback_tokenizer() -> Tokenizer {
        fn s(v: &mut Vec<u8>, x: &str) {
            v.extend((x.len() as u64).to_le_bytes());
            v.extend(x.as_bytes());
        }
        let mut toks = vec![("<unk>".to_string(), 2i32)];
        toks.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 6)));
        toks.push(("▁hello".into(), 1));
        toks.push(("a".into(), 1));
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        v.extend(4u64.to_le_bytes());
        s(&mut v, "tokenizer.ggml.model");
        v.extend(8u32.to_le_bytes());
        s(&mut v, "llama");
        s(&mut v, "tokenizer.ggml.tokens");
        v.extend(9u32.to_le_bytes());
        v.extend(8u32.to_le_bytes());
        v.extend((toks.len() as u64).to_le_bytes());
        for (t, _) in &toks {
            s(&mut v, t);
        }
        s(&mut v, "tokenizer.ggml.scores");
        v.extend(9u32.to_le_bytes());
        v.extend(6u32.to_le_bytes());
        v.extend((toks.len() as u64).to_le_bytes());
        for _ in &toks {
            v.extend(0f32.to_le_bytes());
        }
        s(&mut v, "tokenizer.ggml.token_type");
        v.extend(9u32.to_le_bytes());
        v.extend(5u32.to_le_bytes());
        v.extend((toks.len() as u64).to_le_bytes());
        for (_, ty) in &toks {
            v.extend(ty.to_le_bytes());
        }
        let g = GgufFile::from_bytes(Path::new("bytes.gguf"), v).unwrap();
        Tokenizer::from_gguf(&g).unwrap()
    }

    /// Fuzz find (detokenize): `<0x46>` ("F", sent at once) followed by the invalid byte
    /// `<0xA1>` re-decodes the group as "\u{FFFD}\u{FFFD}", so the sent "F" no longer starts the
    /// window's text; the decoder then held back everything after it forever and the flush
    /// dropped it all.
    #[test]
    fn text_after_an_invalid_byte_group_is_not_lost() {
        let tok = byte_fallback_tokenizer();
        let (hello, a) = (257, 258);
        let ids = [hello, 1 + 0x46, 1 + 0xA1, a, a];
        assert_eq!(tok.decode(&ids, false).unwrap(), " hello\u{FFFD}\u{FFFD}aa");
        let mut dec = IncrementalDecoder::new(false);
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&dec.push(&tok, id).unwrap());
        }
        out.push_str(&dec.flush(&tok).unwrap());
        assert_eq!(out, " helloF\u{FFFD}\u{FFFD}aa");
        // The same ending in the flush.
        let mut dec = IncrementalDecoder::new(false);
        let mut out = String::new();
        for &id in &ids[..3] {
            out.push_str(&dec.push(&tok, id).unwrap());
        }
        out.push_str(&dec.flush(&tok).unwrap());
        assert_eq!(out, " helloF\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn out_of_range_ids_are_errors() {
        let tok = byte_fallback_tokenizer();
        let mut dec = IncrementalDecoder::new(true);
        assert!(matches!(
            dec.push(&tok, 100_000),
            Err(TokenizerError::BadId { id: 100_000, .. })
        ));
        assert!(tok.decode(&[u32::MAX], false).is_err());
    }
}
