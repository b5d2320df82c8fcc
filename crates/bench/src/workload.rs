//! Workloads: what each request asks. Every request is a pure function of (seed, index), so a
//! workload is reproducible and unbounded (`--duration` runs draw as many as they need).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use switchyard_runtime::tokenizer::Tokenizer;

/// The bundled prompt set (see benches/prompts/README.md for its source and license).
pub const BUNDLED_PROMPTS: &str = include_str!("../../../benches/prompts/switchyard-tasks.jsonl");
/// The code-editing workload (scripts/gen-spec-prompts.py wrote it).
pub const CODE_EDIT_PROMPTS: &str = include_str!("../../../benches/prompts/code-edit.jsonl");
/// The summarise-with-quotes workload (scripts/gen-spec-prompts.py wrote it).
pub const SUMMARIZE_QUOTES_PROMPTS: &str =
    include_str!("../../../benches/prompts/summarize-quotes.jsonl");

/// A length distribution: `128` (fixed) or `64:256` (uniform, inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LenDist {
    /// Always this length.
    Fixed {
        /// The length.
        len: usize,
    },
    /// Uniform over `min..=max`.
    Uniform {
        /// Smallest length.
        min: usize,
        /// Largest length.
        max: usize,
    },
}

impl LenDist {
    /// Draws a length.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        match *self {
            LenDist::Fixed { len } => len,
            LenDist::Uniform { min, max } => rng.gen_range(min..=max),
        }
    }

    /// The mean length.
    pub fn mean(&self) -> f64 {
        match *self {
            LenDist::Fixed { len } => len as f64,
            LenDist::Uniform { min, max } => (min + max) as f64 / 2.0,
        }
    }
}

impl FromStr for LenDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{s}': expected N or MIN:MAX"))
        };
        let parsed = match s.split_once(':').or_else(|| s.split_once("..")) {
            Some((a, b)) => {
                let (min, max) = (num(a)?, num(b)?);
                if min > max {
                    return Err(format!("'{s}': MIN > MAX"));
                }
                if min == max {
                    LenDist::Fixed { len: min }
                } else {
                    LenDist::Uniform { min, max }
                }
            }
            None => LenDist::Fixed { len: num(s)? },
        };
        Ok(parsed)
    }
}

impl std::fmt::Display for LenDist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LenDist::Fixed { len } => write!(f, "{len}"),
            LenDist::Uniform { min, max } => write!(f, "{min}:{max}"),
        }
    }
}

/// Which prompts to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Dataset {
    /// Random-token prompts of `input_len` tokens.
    Random,
    /// `num_groups` random prefixes of `prefix_len` tokens; request `i` uses prefix `i %
    /// num_groups` followed by a random suffix of `input_len` tokens.
    SharedPrefix {
        /// Number of distinct prefixes.
        num_groups: usize,
        /// Tokens per prefix.
        prefix_len: usize,
    },
    /// Prompts from a JSONL file, one `{"prompt": ..., "output_len": N?}` a line, cycled.
    Jsonl {
        /// The file.
        path: String,
    },
    /// The bundled prompt set (benches/prompts/switchyard-tasks.jsonl), cycled.
    Bundled,
    /// Code editing (benches/prompts/code-edit.jsonl), cycled.
    CodeEdit,
    /// Summaries with quotes (benches/prompts/summarize-quotes.jsonl), cycled.
    SummarizeQuotes,
}

/// Where random text comes from.
#[derive(Clone)]
pub enum TextSource {
    /// Random token ids of a real tokenizer, decoded (and re-encoded to hit the length).
    Tokenizer(Arc<Tokenizer>),
    /// Random common English words (about one token each for most tokenizers).
    Words,
}

impl std::fmt::Debug for TextSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextSource::Tokenizer(_) => f.write_str("Tokenizer"),
            TextSource::Words => f.write_str("Words"),
        }
    }
}

impl TextSource {
    /// Loads the tokenizer of a registry alias, GGUF path, Hugging Face directory or Hub
    /// repository that is already local (never downloads).
    pub fn from_model(name: &str) -> Result<TextSource> {
        use switchyard_runtime::registry::ModelRef;
        let hf_dir = match switchyard_runtime::registry::resolve(name)? {
            ModelRef::HfDir(d) => Some(d),
            ModelRef::HfRepo { repo, revision } => Some(switchyard_runtime::hub::snapshot(
                &repo,
                revision.as_deref(),
                false,
            )?),
            _ => None,
        };
        if let Some(d) = hf_dir {
            return Ok(TextSource::Tokenizer(Arc::new(Tokenizer::from_hf_dir(
                &d, 0,
            )?)));
        }
        let path = switchyard_runtime::registry::locate(name, false)?;
        let g = switchyard_runtime::gguf::GgufFile::open(&path)?;
        Ok(TextSource::Tokenizer(Arc::new(Tokenizer::from_gguf(&g)?)))
    }

    /// Counts tokens of `text` (words when no tokenizer).
    pub fn count(&self, text: &str) -> usize {
        match self {
            TextSource::Tokenizer(t) => t.encode(text, false).map(|v| v.len()).unwrap_or(0),
            TextSource::Words => text.split_whitespace().count(),
        }
    }

    /// Random text of about `n` tokens; returns it with its token count.
    pub fn random_text(&self, rng: &mut impl Rng, n: usize) -> (String, usize) {
        if n == 0 {
            return (String::new(), 0);
        }
        match self {
            TextSource::Words => {
                let words: Vec<&str> = (0..n)
                    .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
                    .collect();
                (words.join(" "), n)
            }
            TextSource::Tokenizer(t) => {
                let mut ids: Vec<u32> = Vec::with_capacity(n);
                let mut text = String::new();
                for _ in 0..4 {
                    while ids.len() < n {
                        let id = rng.gen_range(0..t.vocab_size as u32);
                        let ok = !t.is_special(id)
                            && t.token_text(id)
                                .is_some_and(|s| !s.is_empty() && !s.starts_with("<0x"));
                        if ok {
                            ids.push(id);
                        }
                    }
                    text = t.decode(&ids, true).unwrap_or_default();
                    // Decoding then encoding does not round-trip: re-encode and trim or grow.
                    ids = t.encode(&text, false).unwrap_or_default();
                    if ids.len() >= n {
                        ids.truncate(n);
                        text = t.decode(&ids, true).unwrap_or_default();
                        break;
                    }
                }
                let count = t.encode(&text, false).map(|v| v.len()).unwrap_or(n);
                (text, count)
            }
        }
    }
}

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRequest {
    /// Index in the workload.
    pub index: u64,
    /// The prompt text (sent as `prompt`, or as the user message on the chat endpoint).
    pub prompt: String,
    /// The client's count of prompt tokens (the server's `usage` replaces it when reported).
    pub prompt_len: usize,
    /// `max_tokens`.
    pub output_len: usize,
}

#[derive(Debug, Clone, Deserialize)]
struct PromptLine {
    #[serde(alias = "text")]
    prompt: String,
    #[serde(default)]
    output_len: Option<usize>,
}

/// A workload: a dataset, length distributions, a seed and a text source.
#[derive(Debug, Clone)]
pub struct Workload {
    dataset: Dataset,
    input_len: LenDist,
    output_len: LenDist,
    seed: u64,
    source: TextSource,
    prompts: Vec<(String, usize, Option<usize>)>,
    prefixes: Vec<(String, usize)>,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finalizer
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed ^ mix(stream ^ mix(index))))
}

fn parse_jsonl(text: &str, origin: &str) -> Result<Vec<PromptLine>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let p: PromptLine = serde_json::from_str(line)
            .with_context(|| format!("{origin}:{}: expected {{\"prompt\": ...}}", n + 1))?;
        out.push(p);
    }
    if out.is_empty() {
        bail!("{origin}: no prompts");
    }
    Ok(out)
}

impl Workload {
    /// Builds a workload (reads the JSONL file, draws the shared prefixes).
    pub fn new(
        dataset: Dataset,
        input_len: LenDist,
        output_len: LenDist,
        seed: u64,
        source: TextSource,
    ) -> Result<Workload> {
        let lines = match &dataset {
            Dataset::Jsonl { path } => {
                let text = std::fs::read_to_string(Path::new(path))
                    .with_context(|| format!("reading {path}"))?;
                parse_jsonl(&text, path)?
            }
            Dataset::Bundled => parse_jsonl(BUNDLED_PROMPTS, "bundled prompts")?,
            Dataset::CodeEdit => parse_jsonl(CODE_EDIT_PROMPTS, "code-edit prompts")?,
            Dataset::SummarizeQuotes => {
                parse_jsonl(SUMMARIZE_QUOTES_PROMPTS, "summarize-quotes prompts")?
            }
            _ => Vec::new(),
        };
        let prompts = lines
            .into_iter()
            .map(|l| {
                let n = source.count(&l.prompt);
                (l.prompt, n, l.output_len)
            })
            .collect();
        let prefixes = match dataset {
            Dataset::SharedPrefix {
                num_groups,
                prefix_len,
            } => {
                if num_groups == 0 {
                    bail!("shared-prefix needs --num-groups >= 1");
                }
                (0..num_groups as u64)
                    .map(|g| source.random_text(&mut rng_for(seed, 1, g), prefix_len))
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(Workload {
            dataset,
            input_len,
            output_len,
            seed,
            source,
            prompts,
            prefixes,
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Whether prompts are made with a real tokenizer.
    pub fn has_tokenizer(&self) -> bool {
        matches!(self.source, TextSource::Tokenizer(_))
    }

    /// The shared prefixes (empty unless shared-prefix).
    pub fn prefixes(&self) -> &[(String, usize)] {
        &self.prefixes
    }

    /// Prompt files: every request gets `max_tokens` from the workload's output length, not
    /// from its line's own `output_len`.
    pub fn use_output_len_for_all(&mut self) {
        for p in &mut self.prompts {
            p.2 = None;
        }
    }

    /// Request number `index` (deterministic in seed and index).
    pub fn request(&self, index: u64) -> BenchRequest {
        let mut rng = rng_for(self.seed, 0, index);
        let output_len = self.output_len.sample(&mut rng);
        match &self.dataset {
            Dataset::Random => {
                let n = self.input_len.sample(&mut rng);
                let (prompt, prompt_len) = self.source.random_text(&mut rng, n);
                BenchRequest {
                    index,
                    prompt,
                    prompt_len,
                    output_len,
                }
            }
            Dataset::SharedPrefix { .. } => {
                let g = (index % self.prefixes.len() as u64) as usize;
                let n = self.input_len.sample(&mut rng);
                let (suffix, slen) = self.source.random_text(&mut rng, n);
                let (prefix, plen) = &self.prefixes[g];
                BenchRequest {
                    index,
                    prompt: format!("{prefix} {suffix}"),
                    prompt_len: plen + slen,
                    output_len,
                }
            }
            Dataset::Jsonl { .. }
            | Dataset::Bundled
            | Dataset::CodeEdit
            | Dataset::SummarizeQuotes => {
                let (p, n, o) = &self.prompts[(index % self.prompts.len() as u64) as usize];
                BenchRequest {
                    index,
                    prompt: p.clone(),
                    prompt_len: *n,
                    output_len: o.unwrap_or(output_len),
                }
            }
        }
    }
}

/// Common English words for prompts when no tokenizer is at hand.
const WORDS: &[&str] = &[
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "name",
    "president",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "information",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "person",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
    "girl",
    "guy",
    "moment",
    "air",
    "teacher",
    "force",
    "education",
    "river",
    "stone",
    "green",
    "quick",
    "small",
    "large",
    "early",
    "young",
    "important",
    "few",
    "public",
    "bad",
    "same",
    "able",
    "make",
    "know",
    "take",
    "see",
    "come",
    "think",
    "look",
    "want",
    "give",
    "use",
    "find",
    "tell",
    "ask",
    "seem",
    "feel",
    "try",
    "leave",
    "call",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn words(d: Dataset, i: &str, o: &str, seed: u64) -> Workload {
        Workload::new(
            d,
            i.parse().unwrap(),
            o.parse().unwrap(),
            seed,
            TextSource::Words,
        )
        .unwrap()
    }

    #[test]
    fn len_dist_parse() {
        assert_eq!("128".parse::<LenDist>(), Ok(LenDist::Fixed { len: 128 }));
        assert_eq!(
            "64:256".parse::<LenDist>(),
            Ok(LenDist::Uniform { min: 64, max: 256 })
        );
        assert_eq!(
            "64..256".parse::<LenDist>(),
            Ok(LenDist::Uniform { min: 64, max: 256 })
        );
        assert_eq!("8:8".parse::<LenDist>(), Ok(LenDist::Fixed { len: 8 }));
        assert!("9:8".parse::<LenDist>().is_err());
        assert!("x".parse::<LenDist>().is_err());
        assert_eq!(LenDist::Uniform { min: 1, max: 3 }.to_string(), "1:3");
    }

    #[test]
    fn random_lengths_and_seeds() {
        let w = words(Dataset::Random, "16:32", "4:8", 7);
        for i in 0..200 {
            let r = w.request(i);
            assert!((16..=32).contains(&r.prompt_len), "{}", r.prompt_len);
            assert_eq!(r.prompt.split_whitespace().count(), r.prompt_len);
            assert!((4..=8).contains(&r.output_len));
        }
        // Reproducible: same seed, same requests; other seed, other prompts.
        let w2 = words(Dataset::Random, "16:32", "4:8", 7);
        let w3 = words(Dataset::Random, "16:32", "4:8", 8);
        assert_eq!(w.request(5), w2.request(5));
        assert_ne!(w.request(5).prompt, w3.request(5).prompt);
        assert_ne!(w.request(5).prompt, w.request(6).prompt);
        // Both ends of the range get drawn.
        let lens: Vec<usize> = (0..500).map(|i| w.request(i).output_len).collect();
        assert!(lens.contains(&4) && lens.contains(&8));
        let fixed = words(Dataset::Random, "10", "3", 0);
        assert!((0..20).all(|i| fixed.request(i).prompt_len == 10));
    }

    #[test]
    fn shared_prefix_groups() {
        let d = Dataset::SharedPrefix {
            num_groups: 3,
            prefix_len: 50,
        };
        let w = words(d.clone(), "5", "2", 1);
        assert_eq!(w.prefixes().len(), 3);
        for i in 0..12u64 {
            let r = w.request(i);
            let (p, plen) = &w.prefixes()[(i % 3) as usize];
            assert!(r.prompt.starts_with(p.as_str()));
            assert_eq!(*plen, 50);
            assert_eq!(r.prompt_len, 55);
        }
        // Distinct groups have distinct prefixes; same seed, same prefixes.
        assert_ne!(w.prefixes()[0].0, w.prefixes()[1].0);
        assert_eq!(words(d, "5", "2", 1).prefixes(), w.prefixes());
    }

    #[test]
    fn jsonl_and_bundled() {
        let dir = std::env::temp_dir().join(format!("sy-bench-wl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.jsonl");
        std::fs::write(
            &f,
            "{\"prompt\":\"a b c\",\"output_len\":5}\n\n{\"text\":\"d e\"}\n",
        )
        .unwrap();
        let w = words(
            Dataset::Jsonl {
                path: f.to_string_lossy().into(),
            },
            "1",
            "9",
            0,
        );
        assert_eq!(w.request(0).prompt, "a b c");
        assert_eq!(w.request(0).output_len, 5);
        assert_eq!(w.request(0).prompt_len, 3);
        assert_eq!(w.request(1).output_len, 9);
        assert_eq!(w.request(2).prompt, "a b c"); // cycles
        std::fs::write(&f, "{\"nope\":1}\n").unwrap();
        assert!(Workload::new(
            Dataset::Jsonl {
                path: f.to_string_lossy().into()
            },
            LenDist::Fixed { len: 1 },
            LenDist::Fixed { len: 1 },
            0,
            TextSource::Words
        )
        .is_err());
        let b = words(Dataset::Bundled, "1", "32", 0);
        let n = BUNDLED_PROMPTS
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        assert!(n >= 20);
        assert!((0..n as u64).all(|i| !b.request(i).prompt.is_empty()));
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[cfg(test)]
mod tokenizer_tests {
    use super::*;

    /// With a real tokenizer (the cached Gemma model; skipped when it is not cached),
    /// random-token prompts re-encode to the requested length.
    #[test]
    fn random_tokens_hit_the_length() {
        let Ok(src) = TextSource::from_model("gemma-3-270m") else {
            eprintln!("gemma-3-270m not cached; skipping");
            return;
        };
        let w = Workload::new(
            Dataset::Random,
            LenDist::Uniform { min: 32, max: 256 },
            LenDist::Fixed { len: 8 },
            3,
            src.clone(),
        )
        .unwrap();
        assert!(w.has_tokenizer());
        for i in 0..20 {
            let r = w.request(i);
            let counted = src.count(&r.prompt);
            assert_eq!(counted, r.prompt_len);
            assert!((24..=256).contains(&r.prompt_len), "{}", r.prompt_len);
        }
    }
}
