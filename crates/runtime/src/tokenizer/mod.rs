//! Tokenizers: built from a GGUF vocabulary as llama.cpp tokenizes ([`gguf`]: SentencePiece,
//! byte-level BPE with llama.cpp's pre-tokenizers, Gemma 4's BPE) or from a Hugging Face
//! directory's `tokenizer.json` ([`hf_dir`]), with the merges run by the `tokenizers` crate;
//! plus incremental detokenization.

mod attrs;
mod gguf;
mod hf_dir;
mod pre;
mod special;

use tokenizers::Tokenizer as HfTokenizer;

use special::{Frag, Specials};

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
    /// A tokenizer (model or pre-tokenizer) we do not support.
    #[error("{path}: unsupported {what} (supported: {supported})")]
    Unsupported {
        /// File.
        path: String,
        /// What is not supported.
        what: String,
        /// What is.
        supported: String,
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

/// How a piece of text between special tokens is handed to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextMode {
    /// As it is.
    Plain,
    /// With a space in front when it starts the text or follows a special token (SentencePiece
    /// with `add_space_prefix`, as llama.cpp does it).
    SpacePrefix,
    /// Runs of newlines apart from the other text, a run that is a token taken whole (Gemma 4).
    Lines,
}

/// A model's tokenizer plus its special-token facts.
pub struct Tokenizer {
    inner: HfTokenizer,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// BOS id, if the model has one.
    pub bos: Option<u32>,
    /// Whether BOS is prepended to prompts.
    pub add_bos: bool,
    /// Ids that end generation (EOS, end-of-turn, ...); the model's own EOS first.
    pub eos_ids: Vec<u32>,
    /// The padding token's id, if the model names one.
    pub pad: Option<u32>,
    /// The unknown token's id, if the model names one.
    pub unk: Option<u32>,
    /// The Jinja chat template, if the model has one.
    pub chat_template: Option<String>,
    /// Text of each token id (for chat template `bos_token`/`eos_token` and diagnostics).
    tokens: Vec<String>,
    /// Tokens left out when decoding without special tokens.
    special: Vec<bool>,
    /// Special tokens matched in the raw text before the model sees it.
    specials: Specials,
    mode: TextMode,
    /// EOS appended to prompts (`add_special`), where the model asks for it.
    eos_append: Option<u32>,
    /// Each token's bytes when decoded, where we decode (else the `tokenizers` decoder does).
    pieces: Option<Vec<Box<[u8]>>>,
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
    /// Tokenizes `text`; special tokens written in the text become their ids. Prepends BOS when
    /// `add_special` and the model adds one (and appends EOS where the model asks for that).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.encode_with(text, add_special, true)
    }

    /// Tokenizes `text` as llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// `parse_special` false leaves control tokens written in the text as text (user-defined
    /// tokens are still matched).
    pub fn encode_with(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        let mut frags = Vec::new();
        self.specials
            .partition(text, parse_special, |id| self.is_special(id), &mut frags);
        let mut after_special = true;
        let mut buf = String::new();
        for f in frags {
            match f {
                Frag::Token(id) => {
                    ids.push(id);
                    after_special = true;
                }
                Frag::Text(r) => {
                    let s = &text[r];
                    match self.mode {
                        TextMode::Plain => self.model_encode(s, &mut ids)?,
                        TextMode::SpacePrefix if after_special => {
                            buf.clear();
                            buf.push(' ');
                            buf.push_str(s);
                            self.model_encode(&buf, &mut ids)?;
                        }
                        TextMode::SpacePrefix => self.model_encode(s, &mut ids)?,
                        TextMode::Lines => self.encode_lines(s, &mut ids)?,
                    }
                    after_special = false;
                }
            }
        }
        if add_special {
            ids.extend(self.eos_append);
        }
        Ok(ids)
    }

    /// Text through the `tokenizers` pipeline (normalizer, pre-tokenizer, BPE).
    fn model_encode(&self, s: &str, ids: &mut Vec<u32>) -> Result<(), TokenizerError> {
        if !s.is_empty() {
            ids.extend_from_slice(self.inner.encode_fast(s, false).map_err(lib)?.get_ids());
        }
        Ok(())
    }

    /// Gemma 4 (llama.cpp's `[^\n]+|[\n]+` split): a run of newlines that is a token is that
    /// token; the rest goes through the BPE whole.
    fn encode_lines(&self, s: &str, ids: &mut Vec<u32>) -> Result<(), TokenizerError> {
        let mut rest = s;
        while !rest.is_empty() {
            let newline = rest.starts_with('\n');
            let end = rest
                .find(|c: char| (c == '\n') != newline)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            match self.inner.token_to_id(run).filter(|_| newline) {
                Some(id) => ids.push(id),
                None => self.model_encode(run, ids)?,
            }
            rest = tail;
        }
        Ok(())
    }

    /// Whether this is a SentencePiece vocabulary that puts a space before the text (so
    /// decoding a prompt's ids gives that space back in front).
    pub fn adds_space_prefix(&self) -> bool {
        self.mode == TextMode::SpacePrefix
    }

    /// Decodes ids to text (special tokens included as text unless `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            return Err(TokenizerError::BadId {
                id,
                vocab: self.vocab_size,
            });
        }
        if let Some(pieces) = &self.pieces {
            let mut bytes = Vec::with_capacity(ids.len() * 4);
            for &i in ids {
                if !(skip_special && self.is_special(i)) {
                    bytes.extend_from_slice(&pieces[i as usize]);
                }
            }
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
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

    /// Whether `id` is a control token (or, in a GGUF vocabulary, an unknown one), left out when
    /// decoding without special tokens.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The bytes token `id` stands for in generated text, as a grammar engine needs them:
    /// what decoding it alone yields (byte tokens `<0xXX>` their byte, SentencePiece's `▁` a
    /// space, GPT-2 byte-level characters their bytes). Control tokens give their text.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        if let Some(p) = self.pieces.as_ref().and_then(|p| p.get(id as usize)) {
            return p.to_vec();
        }
        let Some(t) = self.token_text(id) else {
            return Vec::new();
        };
        if self.is_special(id) {
            return t.as_bytes().to_vec();
        }
        if let Some(b) = t
            .strip_prefix("<0x")
            .and_then(|h| h.strip_suffix('>'))
            .filter(|h| h.len() == 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            return vec![b];
        }
        match self.inner.get_decoder() {
            Some(tokenizers::decoders::DecoderWrapper::ByteLevel(_)) => gguf::byte_level_piece(t),
            _ => t.replace('\u{2581}', " ").into_bytes(),
        }
    }

    /// Whether EOS is appended to prompts encoded with `add_special` (some SentencePiece
    /// models ask for it).
    pub fn adds_eos(&self) -> bool {
        self.eos_append.is_some()
    }

    /// Id of a token by its exact text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }
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
    use crate::gguf::GgufFile;
    use crate::gguf_write::GgufWriter;

    /// A SentencePiece vocabulary with byte-fallback tokens: `<unk>`, `<0x00>`..`<0xFF>` (ids
    /// 1..=256), then `▁hello`, `a`.
    fn byte_fallback_tokenizer() -> Tokenizer {
        let mut toks = vec![("<unk>".to_string(), 2i32)];
        toks.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 6)));
        toks.push(("▁hello".into(), 1));
        toks.push(("a".into(), 1));
        let mut w = GgufWriter::new();
        w.sentencepiece_vocab(&toks);
        let g = GgufFile::from_bytes(Path::new("bytes.gguf"), w.to_bytes()).unwrap();
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
