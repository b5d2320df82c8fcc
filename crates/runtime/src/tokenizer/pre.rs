//! The pre-tokenizers of byte-level BPE vocabularies (`tokenizer.ggml.pre`), after llama.cpp's
//! `llm_tokenizer_bpe` (src/llama-vocab.cpp): the regexes that split text into words before
//! BPE, whether a word that is itself a token skips the merges (`ignore_merges`), and whether
//! BOS is added when the file does not say. Where llama.cpp rewrote a `tokenizer.json` regex for
//! its own engine and quotes the original, the original is used (our engine has the Unicode
//! classes it lacks); its rewrites for case-insensitive contractions are used as they are.

/// A pre-tokenizer: regexes applied in turn, each splitting every piece of the one before into
/// its matches and the text between them (llama.cpp's `unicode_regex_split`).
#[derive(Debug, Clone, Copy)]
pub(super) struct PreTokenizer {
    /// The regexes, in order.
    pub regexes: &'static [&'static str],
    /// A word that is a vocabulary token is that token, without merges.
    pub ignore_merges: bool,
    /// BOS is added unless `tokenizer.ggml.add_bos_token` says otherwise.
    pub add_bos: bool,
}

const LLAMA3: &[&str] = &[concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)];
const QWEN2: &[&str] = &[concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)];
const QWEN35: &[&str] = &[concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)];
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const GPT2: &[&str] = &[GPT2_RE];
const STARCODER: &[&str] = &[r"\p{N}", GPT2_RE];
const FALCON: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2_RE, "[0-9][0-9][0-9]"];
// Written with escapes, as in llama.cpp's source (some of these characters change under Unicode
// normalization, which would turn ranges around).
const CJK: &str = "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+";
const DEEPSEEK_LLM: &[&str] = &[
    "[\r\n]",
    concat!(
        "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}",
        "\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}",
        "\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}",
        "\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}",
        "\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}",
        "\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}",
        "\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}",
        "\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}",
        "\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}",
        "\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}",
        "\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}",
        "\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}",
        "\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}",
        "\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}",
        "\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}",
        "\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}",
        "\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}",
        "\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+"
    ),
    "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
    r"\s+$",
    CJK,
    r"\p{N}+",
];
const DEEPSEEK_CODER: &[&str] = &["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK, r"\p{N}"];
const TEKKEN: &[&str] = &[concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)];
const GPT4O: &[&str] = &[concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)];
const SEED_CODER: &[&str] = &[concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"
)];
const BAILINGMOE: &[&str] = &[concat!(
    r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"
)];

/// The pre-tokenizer names we accept, for error messages (llama.cpp's names; several share a
/// regex list).
pub(super) const SUPPORTED: &str = "llama-bpe (llama3, llama-v3, falcon3, falcon-h1, pixtral, \
    lfm2, midm-2.0), dbrx, smaug-bpe, qwen2 (deepseek-r1-qwen, megrez, stablelm2, hunyuan, \
    kormo, f2llmv2, solar-open), qwen35, gpt-2 (phi-2, mpt, olmo, jais, exaone4, trillion, \
    granite-docling, gigachat, a.x-4.0, mellum), starcoder (refact, command-r, smollm, codeshell, \
    exaone, minerva-7b, mellum2), falcon, deepseek-llm, deepseek-coder, tekken, gpt-4o (llama4), \
    seed-coder, grok-2, bailingmoe (bailingmoe2, llada-moe)";

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre` = `name` (a `gpt2` vocabulary).
pub(super) fn lookup(name: &str) -> Option<PreTokenizer> {
    let p = |regexes, ignore_merges, add_bos| PreTokenizer {
        regexes,
        ignore_merges,
        add_bos,
    };
    Some(match name {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => p(LLAMA3, true, true),
        "dbrx" | "smaug-bpe" => p(LLAMA3, false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" => p(QWEN2, false, false),
        "qwen35" => p(QWEN35, false, false),
        "gpt-2" | "phi-2" | "gigachat" | "a.x-4.0" | "mellum" | "mpt" | "olmo" | "jais"
        | "exaone4" | "trillion" | "granite-docling" => p(GPT2, false, false),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => p(STARCODER, false, false),
        "falcon" => p(FALCON, false, false),
        "deepseek-llm" => p(DEEPSEEK_LLM, false, false),
        "deepseek-coder" => p(DEEPSEEK_CODER, false, false),
        "tekken" => p(TEKKEN, true, true),
        "gpt-4o" | "llama4" => p(GPT4O, false, false),
        "seed-coder" => p(SEED_CODER, false, false),
        "grok-2" => p(QWEN2, false, false),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => p(BAILINGMOE, false, false),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every listed name is known and its regexes compile in the `tokenizers` crate's engine.
    #[test]
    fn every_regex_compiles() {
        let names = SUPPORTED
            .split([',', '(', ')', ' '])
            .filter(|s| !s.is_empty());
        let mut n = 0;
        for name in names {
            let pre = lookup(name).unwrap_or_else(|| panic!("{name} is listed but not known"));
            for re in pre.regexes {
                tokenizers::pre_tokenizers::split::Split::new(
                    tokenizers::pre_tokenizers::split::SplitPattern::Regex((*re).into()),
                    tokenizers::SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{name}: {re}: {e}"));
            }
            n += 1;
        }
        assert!(n > 40, "{n}");
    }
}
