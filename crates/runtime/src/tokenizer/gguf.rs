//! Tokenizers built from GGUF vocabularies, reproducing llama.cpp's `llama_tokenize`
//! (src/llama-vocab.cpp): SentencePiece (`llama`: BPE by scores with byte fallback, a space
//! prefix where `tokenizer.ggml.add_space_prefix`, default true), byte-level BPE (`gpt2`, split
//! into words by the pre-tokenizer `tokenizer.ggml.pre` names) and Gemma 4's BPE (`gemma4`:
//! spaces as `▁`, lines merged whole, byte fallback). The merges run in the `tokenizers` crate;
//! special tokens written in the text are cut out first, as llama.cpp does.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
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

use super::special::{SpecialToken, Specials};
use super::{attrs, lib, pre, TextMode, Tokenizer, TokenizerError};
use crate::gguf::{GgufFile, Value};

// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub(super) const TYPE_NORMAL: i64 = 1;
pub(super) const TYPE_UNKNOWN: i64 = 2;
pub(super) const TYPE_CONTROL: i64 = 3;
pub(super) const TYPE_USER_DEFINED: i64 = 4;
pub(super) const TYPE_UNUSED: i64 = 5;
pub(super) const TYPE_BYTE: i64 = 6;

/// The tokenizer models we read.
const MODELS: &str = "llama (SentencePiece), gpt2 (byte-level BPE), gemma4";

enum Kind {
    Spm,
    Bpe(pre::PreTokenizer),
    Gemma4,
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
        let kind = match model.as_str() {
            "llama" => Kind::Spm,
            "gemma4" => Kind::Gemma4,
            "gpt2" => {
                let Some(name) = g.get("tokenizer.ggml.pre").and_then(Value::as_str) else {
                    return Err(TokenizerError::Unsupported {
                        path,
                        what: "gpt2 vocabulary without tokenizer.ggml.pre (llama.cpp falls back \
                               to its 'default' splitting, which degrades generation)"
                            .into(),
                        supported: format!("tokenizer.ggml.pre = {}", pre::SUPPORTED),
                    });
                };
                Kind::Bpe(
                    pre::lookup(name).ok_or_else(|| TokenizerError::Unsupported {
                        path: path.clone(),
                        what: format!("gpt2 pre-tokenizer '{name}' (tokenizer.ggml.pre)"),
                        supported: pre::SUPPORTED.into(),
                    })?,
                )
            }
            other => {
                return Err(TokenizerError::Unsupported {
                    path,
                    what: format!("tokenizer model '{other}' (tokenizer.ggml.model)"),
                    supported: MODELS.into(),
                })
            }
        };
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
            _ => vec![TYPE_NORMAL; n],
        };
        let id_key = |k: &str| {
            g.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as u32)
                .filter(|&v| (v as usize) < n)
        };
        let flag = |k: &str| g.get(k).and_then(Value::as_bool);
        let bos = id_key("tokenizer.ggml.bos_token_id");
        let eos = id_key("tokenizer.ggml.eos_token_id");
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        // Types as llama.cpp corrects them by text (the merges keep the file's).
        let corrected = attrs::correct(&tokens, &types, &vocab, eos, |k| {
            id_key(&format!("tokenizer.ggml.{k}"))
        });
        let ctypes = &corrected.types;
        // llama.cpp's defaults, then the file's flags (Gemma 4 always adds BOS).
        let add_bos = match &kind {
            Kind::Spm => flag("tokenizer.ggml.add_bos_token").unwrap_or(true),
            Kind::Bpe(p) => flag("tokenizer.ggml.add_bos_token").unwrap_or(p.add_bos),
            Kind::Gemma4 => true,
        };
        let add_eos = flag("tokenizer.ggml.add_eos_token").unwrap_or(false);
        let add_space_prefix =
            matches!(kind, Kind::Spm) && flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
        let chat_template = g
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);

        let bpe_vocab = || {
            vocab
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect::<tokenizers::models::bpe::Vocab>()
        };
        let unk = || {
            g.get("tokenizer.ggml.unknown_token_id")
                .and_then(Value::as_u64)
                .and_then(|i| tokens.get(i as usize).cloned())
        };
        let file_merges = || -> Result<Vec<(String, String)>, TokenizerError> {
            g.get("tokenizer.ggml.merges")
                .and_then(Value::as_array)
                .ok_or_else(|| meta("tokenizer.ggml.merges"))?
                .iter()
                .map(|v| {
                    // As llama.cpp: split at the first space after the first byte.
                    let s = v.as_str()?;
                    let first = s.chars().next()?.len_utf8();
                    let at = s[first..].find(' ')? + first;
                    Some((s[..at].to_string(), s[at + 1..].to_string()))
                })
                .collect::<Option<_>>()
                .ok_or_else(|| meta("tokenizer.ggml.merges"))
        };
        let spm_decoder = || -> Result<DecoderWrapper, TokenizerError> {
            Ok(DecoderWrapper::Sequence(DecoderSequence::new(vec![
                DecoderWrapper::Replace(Replace::new("▁", " ").map_err(lib)?),
                DecoderWrapper::ByteFallback(ByteFallback::new()),
                DecoderWrapper::Fuse(Fuse::new()),
            ])))
        };
        let escape_spaces = || -> Result<NormalizerWrapper, TokenizerError> {
            Ok(NormalizerWrapper::Replace(
                Replace::new(" ", "▁").map_err(lib)?,
            ))
        };

        let (inner, mode, pieces) = match &kind {
            Kind::Spm => {
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
                let bpe = BPE::builder()
                    .vocab_and_merges(bpe_vocab(), merges)
                    .byte_fallback(true)
                    .fuse_unk(true)
                    .unk_token(unk().unwrap_or_else(|| "<unk>".into()))
                    .build()
                    .map_err(lib)?;
                let mut tk = HfTokenizer::new(bpe);
                tk.with_normalizer(Some(escape_spaces()?));
                tk.with_decoder(Some(spm_decoder()?));
                let mode = if add_space_prefix {
                    TextMode::SpacePrefix
                } else {
                    TextMode::Plain
                };
                (tk, mode, None)
            }
            Kind::Bpe(p) => {
                let bpe = BPE::builder()
                    .vocab_and_merges(bpe_vocab(), file_merges()?)
                    .ignore_merges(p.ignore_merges)
                    .build()
                    .map_err(lib)?;
                let mut tk = HfTokenizer::new(bpe);
                let mut seq = Vec::with_capacity(p.regexes.len() + 1);
                for re in p.regexes {
                    seq.push(PreTokenizerWrapper::Split(
                        Split::new(
                            SplitPattern::Regex((*re).into()),
                            SplitDelimiterBehavior::Isolated,
                            false,
                        )
                        .map_err(lib)?,
                    ));
                }
                seq.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
                    false, false, false,
                )));
                tk.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(PreSequence::new(seq))));
                let pieces = pieces(&tokens, ctypes, byte_level_piece);
                (tk, TextMode::Plain, Some(pieces))
            }
            Kind::Gemma4 => {
                let mut b = BPE::builder()
                    .vocab_and_merges(bpe_vocab(), file_merges()?)
                    .byte_fallback(true);
                if let Some(u) = unk() {
                    b = b.unk_token(u);
                }
                let mut tk = HfTokenizer::new(b.build().map_err(lib)?);
                tk.with_normalizer(Some(escape_spaces()?));
                let pieces = pieces(&tokens, ctypes, |t| t.replace('▁', " ").into_bytes());
                (tk, TextMode::Lines, Some(pieces))
            }
        };

        // The tokens llama.cpp cuts out of the text before tokenizing it: control and unknown
        // tokens (when special tokens are parsed) and user-defined ones (always). Phi-3 drops
        // the whitespace after them (llama.cpp keys that on the model's name).
        let name = g
            .get("general.name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase();
        let phi3 = name.contains("phi-3") || name.contains("phi3");
        let specials = Specials::llama(
            tokens
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    matches!(ctypes[*i], TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN)
                })
                .map(|(i, t)| SpecialToken {
                    text: t.clone(),
                    id: i as u32,
                    control: ctypes[i] != TYPE_USER_DEFINED,
                    lstrip: false,
                    rstrip: phi3 && !matches!(t.as_str(), "<unk>" | "<s>" | "<|endoftext|>"),
                })
                .collect(),
        )?;
        // Generation stops at EOS, the end-of-turn token and these (control in the file).
        let mut eos_ids: Vec<u32> = eos.into_iter().chain(corrected.eot).collect();
        eos_ids.dedup();
        for t in ["<end_of_turn>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(&id) = vocab.get(t) {
                if types[id as usize] == TYPE_CONTROL && !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        // Left out of text decoded without special tokens (as llama.cpp's `token_to_piece`).
        let special = ctypes
            .iter()
            .map(|&t| t == TYPE_CONTROL || t == TYPE_UNKNOWN)
            .collect();

        Ok(Self {
            inner,
            vocab_size: n,
            bos,
            add_bos: add_bos && bos.is_some(),
            eos_ids,
            chat_template,
            tokens,
            special,
            specials,
            mode,
            eos_append: eos.filter(|_| add_eos),
            pieces,
        })
    }
}

/// Each token's bytes when decoded, as llama.cpp's `token_to_piece`: normal tokens through
/// `normal`, byte tokens (`<0xXX>`) their byte, unused ones nothing, the others their text.
fn pieces(tokens: &[String], types: &[i64], normal: impl Fn(&str) -> Vec<u8>) -> Vec<Box<[u8]>> {
    tokens
        .iter()
        .zip(types)
        .map(|(t, &ty)| {
            let byte = || {
                let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
                u8::from_str_radix(hex, 16).ok()
            };
            match ty {
                TYPE_NORMAL => normal(t),
                TYPE_BYTE => byte().map_or_else(|| normal(t), |b| vec![b]),
                TYPE_UNUSED => Vec::new(),
                _ => t.as_bytes().to_vec(),
            }
            .into_boxed_slice()
        })
        .collect()
}

/// The bytes without a printable character of their own, in order: GPT-2 writes them as
/// U+0100 onwards.
const UNMAPPED: [u8; 68] = {
    let mut t = [0u8; 68];
    let (mut b, mut k) = (0usize, 0usize);
    while b < 256 {
        if !matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF) {
            t[k] = b as u8;
            k += 1;
        }
        b += 1;
    }
    t
};

/// The bytes of a byte-level BPE token: GPT-2's byte-to-character map reversed (a character
/// outside the map stands for itself).
pub(super) fn byte_level_piece(t: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.len());
    for c in t.chars() {
        let u = c as u32;
        let b = match u {
            0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(u as u8),
            0x100..=0x143 => Some(UNMAPPED[(u - 0x100) as usize]),
            _ => None,
        };
        match b {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
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
