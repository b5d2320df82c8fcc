//! llama.cpp's corrections of GGUF token types by token text (`llama_vocab::impl::load`):
//! end-of-turn and fill-in-the-middle tokens the file does not name are found by their text and
//! made control tokens, every token in its end-of-generation list is made a control token, and
//! a few model families get their own fixes (gpt-oss, Gemma 4). What is a control token decides
//! what is matched in text and what decoding without special tokens leaves out. (Which tokens
//! stop generation is decided elsewhere: llama.cpp's whole end-of-generation set, e.g. Qwen's
//! "</s>" and fill-in-the-middle tokens, is not adopted here.)

use std::collections::HashMap;

use super::gguf::{TYPE_CONTROL, TYPE_NORMAL, TYPE_USER_DEFINED};

/// Texts by which llama.cpp finds the end-of-turn, end-of-message and fill-in-the-middle
/// tokens when the file gives no id (`tokenizer.ggml.<key>`), in its order.
const BY_TEXT: &[(&[&str], &[&str])] = &[
    (
        &["eot_token_id"],
        &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<\u{FF5C}end\u{2581}of\u{2581}sentence\u{FF5C}>",
            "<end_of_utterance>",
        ],
    ),
    (&["eom_token_id"], &["<|eom_id|>"]),
    (
        &["fim_pre_token_id", "prefix_token_id"],
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<\u{FF5C}fim\u{2581}begin\u{FF5C}>",
            "<PRE>",
            "\u{2581}<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        &["fim_suf_token_id", "suffix_token_id"],
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<\u{FF5C}fim\u{2581}hole\u{FF5C}>",
            "<SUF>",
            "\u{2581}<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        &["fim_mid_token_id", "middle_token_id"],
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<\u{FF5C}fim\u{2581}end\u{FF5C}>",
            "<MID>",
            "\u{2581}<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        &["fim_pad_token_id"],
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        &["fim_rep_token_id"],
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    (&["fim_sep_token_id"], &["<|file_sep|>"]),
];

/// llama.cpp's end-of-generation texts.
const EOG: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{FF5C}end\u{2581}of\u{2581}sentence\u{FF5C}>",
    "[e~[",
];

/// Token types after llama.cpp's corrections, and the end-of-turn token.
pub(super) struct Corrected {
    /// The types (llama.cpp's codes).
    pub types: Vec<i64>,
    /// The end-of-turn token: the file's, else found by its text.
    pub eot: Option<u32>,
    /// llama.cpp's end-of-generation ids, by id.
    #[cfg(test)]
    pub eog: Vec<u32>,
}

/// Applies llama.cpp's corrections. `id_key(k)` is the valid id under `tokenizer.ggml.<k>`,
/// `vocab` each text's id.
pub(super) fn correct(
    tokens: &[String],
    types: &[i64],
    vocab: &HashMap<String, u32>,
    eos: Option<u32>,
    id_key: impl Fn(&str) -> Option<u32>,
) -> Corrected {
    let mut types = types.to_vec();
    let id_of = |text: &str| vocab.get(text).copied();
    let mut found = Vec::with_capacity(BY_TEXT.len());
    for (keys, texts) in BY_TEXT {
        let id = keys.iter().find_map(|k| id_key(k)).or_else(|| {
            // Not named by the file: the first present text (llama.cpp takes whichever its hash
            // map yields first; files hold at most one of each list in practice).
            let id = texts.iter().find_map(|t| id_of(t))?;
            types[id as usize] = TYPE_CONTROL;
            Some(id)
        });
        found.push(id);
    }
    let (eot, eom) = (found[0], found[1]);
    let (fim_pad, fim_rep, fim_sep) = (found[5], found[6], found[7]);
    let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
    for t in EOG {
        if let Some(id) = id_of(t) {
            types[id as usize] = TYPE_CONTROL;
            eog.push(id);
        }
    }
    // gpt-oss: always rendered.
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(id) = id_of(t) {
            types[id as usize] = TYPE_USER_DEFINED;
        }
    }
    eog.extend([eos, eot, eom].into_iter().flatten());
    let text_in = |eog: &[u32], t: &str| eog.iter().any(|&i| tokens[i as usize] == t);
    // o200k_harmony and solar-open: "<|end|>" does not end generation.
    let call = text_in(&eog, "<|call|>") || text_in(&eog, "<|calls|>");
    if call && (text_in(&eog, "<|return|>") || text_in(&eog, "<|flush|>")) {
        if let Some(end) = eog
            .iter()
            .copied()
            .find(|&i| tokens[i as usize] == "<|end|>")
        {
            eog.retain(|&i| i != end);
            types[end as usize] = TYPE_USER_DEFINED;
        }
    }
    // Gemma 4 and PLaMo: "</s>" is a normal token.
    if text_in(&eog, "<|tool_response>") || text_in(&eog, "<|plamo:eos|>") {
        if let Some(s) = eog.iter().copied().find(|&i| tokens[i as usize] == "</s>") {
            eog.retain(|&i| i != s);
            types[s as usize] = TYPE_NORMAL;
        }
    }
    eog.sort_unstable();
    eog.dedup();
    Corrected {
        types,
        eot,
        #[cfg(test)]
        eog,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(texts: &[&str], eos: Option<u32>, keys: &[(&str, u32)]) -> Corrected {
        let tokens: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let types = vec![TYPE_NORMAL; tokens.len()];
        correct(&tokens, &types, &vocab, eos, |k| {
            keys.iter().find(|(n, _)| *n == k).map(|&(_, i)| i)
        })
    }

    /// Qwen: "</s>" is a normal token in the file, a control token ending generation for
    /// llama.cpp; `<|file_sep|>` found by text (fill-in-the-middle separator) ends it too.
    #[test]
    fn end_of_generation_by_text() {
        let c = run(&["a", "</s>", "<|im_end|>", "<|file_sep|>"], Some(2), &[]);
        assert_eq!(
            c.types,
            [TYPE_NORMAL, TYPE_CONTROL, TYPE_CONTROL, TYPE_CONTROL]
        );
        assert_eq!(c.eog, [1, 2, 3]);
        assert_eq!(c.eot, Some(2));
    }

    /// A file's own id wins over the text; gpt-oss's channel tokens become user-defined and
    /// its "<|end|>" stops ending generation where "<|return|>" and "<|call|>" exist.
    #[test]
    fn harmony_end_is_not_end_of_generation() {
        let texts = ["<|end|>", "<|return|>", "<|call|>", "<|channel|>", "<x>"];
        let c = run(&texts, Some(1), &[("eot_token_id", 4)]);
        assert_eq!(c.types[0], TYPE_USER_DEFINED);
        assert_eq!(c.types[3], TYPE_USER_DEFINED);
        assert_eq!(c.types[4], TYPE_NORMAL);
        assert_eq!(c.eog, [1, 2, 4]);
        assert_eq!(c.eot, Some(4));
    }

    /// Gemma 4: "</s>" stays a normal token where "<|tool_response>" ends generation.
    #[test]
    fn gemma4_keeps_normal_end_of_sentence() {
        let c = run(&["</s>", "<|tool_response>", "<eos>"], Some(2), &[]);
        assert_eq!(c.types, [TYPE_NORMAL, TYPE_CONTROL, TYPE_CONTROL]);
        assert_eq!(c.eog, [1, 2]);
        assert_eq!(c.eot, None);
    }
}
