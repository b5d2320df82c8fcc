//! Splitting text at special tokens written in it, before the model's own tokenization.
//!
//! GGUF vocabularies follow llama.cpp's `tokenizer_st_partition`: control, unknown and
//! user-defined tokens, longest first, each cut out of the text pieces not yet cut (control and
//! unknown ones only when special tokens are parsed), with the whitespace beside a token dropped
//! where it strips (Phi-3). Hugging Face directories match their added tokens leftmost-longest,
//! as the `tokenizers` crate does.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};

use super::{lib, TokenizerError};

/// A piece of the text to tokenize: plain text (a byte range) or a special token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frag {
    /// Text, tokenized by the model.
    Text(Range<usize>),
    /// A token written in the text.
    Token(u32),
}

/// A special token that llama.cpp matches in the text.
#[derive(Debug, Clone)]
pub(super) struct SpecialToken {
    /// Its text.
    pub text: String,
    /// Its id.
    pub id: u32,
    /// Control or unknown: matched only when special tokens are parsed.
    pub control: bool,
    /// Whitespace before it is dropped.
    pub lstrip: bool,
    /// Whitespace after it is dropped.
    pub rstrip: bool,
}

/// How special tokens are found in text.
pub(super) enum Specials {
    /// None are.
    None,
    /// Leftmost-longest (Hugging Face's added vocabulary).
    LeftmostLongest {
        /// Matcher of the tokens' texts.
        ac: AhoCorasick,
        /// Id of each pattern.
        ids: Vec<u32>,
    },
    /// llama.cpp's partition.
    Llama(LlamaSpecials),
}

/// The tokens of llama.cpp's partition and how their occurrences are found.
pub(super) struct LlamaSpecials {
    /// The tokens.
    toks: Vec<SpecialToken>,
    /// Each token's place in llama.cpp's order (longest first).
    rank: Vec<u32>,
    /// Matcher of the tokens that are not runs of one byte, every occurrence, and the token of
    /// each of its patterns.
    ac: Option<(AhoCorasick, Vec<usize>)>,
    /// Tokens that are runs of one (ASCII) byte, such as Gemma's whitespace and newline tokens,
    /// found from the runs of that byte in the text: (byte, [(run length, token)] shortest
    /// first). Through the matcher a run of 100 kB of spaces would be 3 million matches.
    runs: Vec<(u8, Vec<(usize, usize)>)>,
}

/// C's `isspace` in the "C" locale, which llama.cpp strips with.
fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl Specials {
    /// Leftmost-longest matching of `(text, id)` pairs.
    pub fn leftmost_longest(pairs: Vec<(&str, u32)>) -> Result<Self, TokenizerError> {
        let pairs: Vec<_> = pairs.into_iter().filter(|(t, _)| !t.is_empty()).collect();
        if pairs.is_empty() {
            return Ok(Self::None);
        }
        let (patterns, ids): (Vec<&str>, Vec<u32>) = pairs.into_iter().unzip();
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(lib)?;
        Ok(Self::LeftmostLongest { ac, ids })
    }

    /// llama.cpp's partition by `toks`.
    pub fn llama(toks: Vec<SpecialToken>) -> Result<Self, TokenizerError> {
        let toks: Vec<_> = toks.into_iter().filter(|t| !t.text.is_empty()).collect();
        if toks.is_empty() {
            return Ok(Self::None);
        }
        let mut runs: Vec<(u8, Vec<(usize, usize)>)> = Vec::new();
        let mut others = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            let b = t.text.as_bytes();
            if b.iter().all(|&c| c == b[0]) {
                match runs.iter_mut().find(|(c, _)| *c == b[0]) {
                    Some((_, v)) => v.push((b.len(), i)),
                    None => runs.push((b[0], vec![(b.len(), i)])),
                }
            } else {
                others.push(i);
            }
        }
        for (_, v) in &mut runs {
            v.sort_unstable();
        }
        let ac = if others.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(others.iter().map(|&i| toks[i].text.as_str()))
                .map_err(lib)?;
            Some((ac, others))
        };
        // llama.cpp sorts by length, longest first (ties in no defined order: here by id).
        let mut order: Vec<usize> = (0..toks.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(toks[i].text.len()), toks[i].id));
        let mut rank = vec![0u32; toks.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r as u32;
        }
        Ok(Self::Llama(LlamaSpecials {
            toks,
            rank,
            ac,
            runs,
        }))
    }

    /// Splits `text` into pieces. `parse_special`: control tokens are matched too (user-defined
    /// ones always are). `is_special` tells a Hugging Face added token's kind.
    pub fn partition(
        &self,
        text: &str,
        parse_special: bool,
        is_special: impl Fn(u32) -> bool,
        out: &mut Vec<Frag>,
    ) {
        match self {
            Self::None => {
                if !text.is_empty() {
                    out.push(Frag::Text(0..text.len()));
                }
            }
            Self::LeftmostLongest { ac, ids } => {
                let mut last = 0;
                for m in ac.find_iter(text) {
                    let id = ids[m.pattern().as_usize()];
                    if !parse_special && is_special(id) {
                        continue;
                    }
                    if m.start() > last {
                        out.push(Frag::Text(last..m.start()));
                    }
                    out.push(Frag::Token(id));
                    last = m.end();
                }
                if text.len() > last {
                    out.push(Frag::Text(last..text.len()));
                }
            }
            Self::Llama(l) => partition_llama(text, parse_special, l, out),
        }
    }
}

/// llama.cpp's `tokenizer_st_partition`: for each token, longest first, every occurrence left to
/// right that lies wholly in text not yet cut becomes the token. Equivalently: all occurrences,
/// token by token in that order, each kept when none of its bytes is taken yet. As every token
/// taken before is at least as long, an occurrence overlaps one exactly when its first or last
/// byte is taken.
fn partition_llama(text: &str, parse_special: bool, l: &LlamaSpecials, out: &mut Vec<Frag>) {
    let (toks, rank) = (&l.toks, &l.rank);
    // Each token's occurrences as runs of consecutive starts (start, count): overlapping matches
    // come by their end, so one token's starts increase; a run of spaces that several
    // whitespace tokens match stays a few runs rather than a match per byte and token.
    let mut runs: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut present: Vec<usize> = Vec::new();
    let mut add = |p: usize, start: usize, n: usize| {
        if !parse_special && toks[p].control {
            return;
        }
        if runs.is_empty() {
            runs = vec![Vec::new(); toks.len()];
        }
        let r = &mut runs[p];
        match r.last_mut() {
            Some((s, k)) if *s + *k == start => *k += n,
            _ => {
                if r.is_empty() {
                    present.push(p);
                }
                r.push((start, n));
            }
        }
    };
    if let Some((ac, pat_tok)) = &l.ac {
        for m in ac.find_overlapping_iter(text) {
            add(pat_tok[m.pattern().as_usize()], m.start(), 1);
        }
    }
    let b = text.as_bytes();
    for (c, lens) in &l.runs {
        let mut i = 0;
        while i < b.len() {
            if b[i] != *c {
                i += 1;
                continue;
            }
            let j = b[i..]
                .iter()
                .position(|x| x != c)
                .map_or(b.len(), |k| i + k);
            // A run of `j - i` bytes holds a token of `len` at each of its first
            // `j - i - len + 1` places.
            for &(len, p) in lens.iter().take_while(|(len, _)| *len <= j - i) {
                add(p, i, j - i - len + 1);
            }
            i = j;
        }
    }
    if present.is_empty() {
        if !text.is_empty() {
            out.push(Frag::Text(0..text.len()));
        }
        return;
    }
    present.sort_unstable_by_key(|&p| rank[p]);
    let mut taken = vec![false; b.len()];
    // (start, end of the token itself, id)
    let mut cut: Vec<(usize, usize, u32)> = Vec::new();
    for p in present {
        let t = &toks[p];
        let len = t.text.len();
        for &(first, n) in &runs[p] {
            let mut s = first;
            while s < first + n {
                let e = s + len;
                if taken[s] || taken[e - 1] {
                    s += 1;
                    continue;
                }
                let (mut a, mut z) = (s, e);
                if t.lstrip {
                    while a > 0 && !taken[a - 1] && c_space(b[a - 1]) {
                        a -= 1;
                    }
                }
                if t.rstrip {
                    while z < b.len() && !taken[z] && c_space(b[z]) {
                        z += 1;
                    }
                }
                taken[a..z].fill(true);
                cut.push((s, e, t.id));
                // Later starts before `e` overlap this one.
                s = e;
            }
        }
    }
    cut.sort_unstable();
    // Between two cut tokens the text left is one run (what was stripped touches the tokens).
    let text_in = |from: usize, to: usize, out: &mut Vec<Frag>| {
        if let Some(i) = (from..to).find(|&i| !taken[i]) {
            let j = (i..to).find(|&j| taken[j]).unwrap_or(to);
            out.push(Frag::Text(i..j));
        }
    };
    let mut pos = 0;
    for (s, e, id) in cut {
        text_in(pos, s, out);
        out.push(Frag::Token(id));
        pos = e;
    }
    text_in(pos, b.len(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str, id: u32, control: bool) -> SpecialToken {
        SpecialToken {
            text: text.into(),
            id,
            control,
            lstrip: false,
            rstrip: false,
        }
    }

    fn run(s: &Specials, text: &str, parse: bool) -> Vec<Frag> {
        let mut out = Vec::new();
        s.partition(text, parse, |_| false, &mut out);
        out
    }

    /// The longest token is cut first even where a shorter one starts earlier (llama.cpp's
    /// order, unlike leftmost-longest).
    #[test]
    fn longest_token_first() {
        let s = Specials::llama(vec![tok("ab", 1, false), tok("bcd", 2, false)]).unwrap();
        assert_eq!(
            run(&s, "xabcdab", true),
            vec![Frag::Text(0..2), Frag::Token(2), Frag::Token(1),]
        );
        let l = Specials::leftmost_longest(vec![("ab", 1), ("bcd", 2)]).unwrap();
        assert_eq!(
            run(&l, "xabcdab", true),
            vec![
                Frag::Text(0..1),
                Frag::Token(1),
                Frag::Text(3..5),
                Frag::Token(1)
            ]
        );
    }

    #[test]
    fn control_tokens_only_when_parsing_special() {
        let s = Specials::llama(vec![tok("<s>", 1, true), tok("<u>", 2, false)]).unwrap();
        assert_eq!(
            run(&s, "a<s>b<u>", false),
            vec![Frag::Text(0..5), Frag::Token(2)]
        );
        assert_eq!(
            run(&s, "a<s>b<u>", true),
            vec![
                Frag::Text(0..1),
                Frag::Token(1),
                Frag::Text(4..5),
                Frag::Token(2)
            ]
        );
    }

    /// Phi-3's right strip drops the whitespace after a token, up to the next token.
    #[test]
    fn rstrip_drops_following_whitespace() {
        let mut t = tok("<|user|>", 7, true);
        t.rstrip = true;
        let s = Specials::llama(vec![t, tok("<e>", 8, true)]).unwrap();
        assert_eq!(
            run(&s, "<|user|> \n hi <|user|>  <e>", true),
            vec![
                Frag::Token(7),
                Frag::Text(11..14),
                Frag::Token(7),
                Frag::Token(8)
            ]
        );
    }

    /// llama.cpp's `tokenizer_st_partition` loop as written there (token by token, longest first,
    /// `find` in each text fragment, strip, split), the reference for the one above.
    fn reference(text: &str, parse_special: bool, toks: &[SpecialToken]) -> Vec<Frag> {
        let b = text.as_bytes();
        let find = |from: usize, to: usize, pat: &[u8]| {
            b[from..to]
                .windows(pat.len())
                .position(|w| w == pat)
                .map(|i| from + i)
        };
        let mut order: Vec<&SpecialToken> = toks.iter().collect();
        order.sort_by_key(|t| (std::cmp::Reverse(t.text.len()), t.id));
        let mut buf: Vec<Frag> = Vec::new();
        if !text.is_empty() {
            buf.push(Frag::Text(0..b.len()));
        }
        for t in order {
            if !parse_special && t.control {
                continue;
            }
            let pat = t.text.as_bytes();
            let mut next = Vec::new();
            for f in buf {
                let Frag::Text(r) = f else {
                    next.push(f);
                    continue;
                };
                let (mut base, end) = (r.start, r.end);
                loop {
                    let Some(m) = find(base, end, pat) else {
                        if end > base {
                            next.push(Frag::Text(base..end));
                        }
                        break;
                    };
                    let mut left_end = m;
                    if t.lstrip {
                        while left_end > base && c_space(b[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > base {
                        next.push(Frag::Text(base..left_end));
                    }
                    next.push(Frag::Token(t.id));
                    base = m + pat.len();
                    if t.rstrip {
                        while base < end && c_space(b[base]) {
                            base += 1;
                        }
                    }
                }
            }
            buf = next;
        }
        buf
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Random texts over a small alphabet and random token sets (overlapping, nested,
        /// stripping, control or not) split as llama.cpp's loop splits them.
        #[test]
        fn partition_equals_llamacpp_loop(
            text in "[ab \\n]{0,40}",
            specs in proptest::collection::vec(
                ("[ab \\n]{1,5}", proptest::bool::ANY, proptest::bool::ANY, proptest::bool::ANY),
                0..8,
            ),
            parse in proptest::bool::ANY,
        ) {
            let mut toks: Vec<SpecialToken> = Vec::new();
            for (i, (t, control, lstrip, rstrip)) in specs.into_iter().enumerate() {
                if toks.iter().all(|x| x.text != t) {
                    toks.push(SpecialToken { text: t, id: i as u32, control, lstrip, rstrip });
                }
            }
            let s = Specials::llama(toks.clone()).unwrap();
            proptest::prop_assert_eq!(run(&s, &text, parse), reference(&text, parse, &toks));
        }
    }
}
