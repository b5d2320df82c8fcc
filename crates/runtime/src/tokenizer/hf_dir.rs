//! Tokenizers of Hugging Face model directories (`tokenizer.json` and its companions).

use tokenizers::Tokenizer as HfTokenizer;

use super::{lib, Specials, TextMode, Tokenizer, TokenizerError};

impl Tokenizer {
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
        let specials = if own_matcher {
            Specials::leftmost_longest(added.iter().map(|a| (a.content.as_str(), a.id)).collect())?
        } else {
            Specials::None
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
            pad: tok_of(tc.get("pad_token"))
                .or_else(|| ids_of(gc.get("pad_token_id")).first().copied())
                .or_else(|| ids_of(cc.get("pad_token_id")).first().copied())
                .filter(valid),
            unk: tok_of(tc.get("unk_token")).filter(valid),
            chat_template,
            tokens,
            special,
            specials,
            mode: TextMode::Plain,
            eos_append: None,
            pieces: None,
        })
    }
}
