//! Constrained decoding: a request's output held to a JSON schema, a regular expression, a list
//! of choices or a Lark grammar, by masking the tokens the constraint does not allow before each
//! sampling step. The engine is [llguidance](https://github.com/guidance-ai/llguidance) (the one
//! llama.cpp, mistral.rs and vLLM's `guidance` backend use) over a token trie built from the
//! model's vocabulary.
//!
//! - [`Grammars`] (one per model) compiles a [`ConstraintSpec`] into a [`Constraint`]: compiled
//!   grammars are cached by their text, compilation has llguidance's fuel and size limits, and an
//!   invalid or unsupported constraint is a [`ConstraintError`] naming what is wrong.
//! - [`ConstraintState`] (one per sequence) holds the matcher. After each accepted token the
//!   matcher advances and the next mask is computed on a mask worker thread, while the engine
//!   runs the next forward pass; sampling waits for it only if it is not ready yet.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie::{ApproximateTokEnv, SimpleVob, TokRxInfo, TokTrie, TokenizerEnv};

use crate::tokenizer::Tokenizer;

/// What a request's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// A JSON document valid under this JSON schema.
    JsonSchema(serde_json::Value),
    /// Any JSON object (OpenAI's `json_object`).
    JsonObject,
    /// Text matching this regular expression (whole output).
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark dialect (which also embeds JSON schemas with `%json`).
    Lark(String),
}

impl ConstraintSpec {
    /// Short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JsonSchema(_) => "json_schema",
            Self::JsonObject => "json_object",
            Self::Regex(_) => "regex",
            Self::Choice(_) => "choice",
            Self::Lark(_) => "grammar",
        }
    }

    /// The cache key: the kind and the constraint's text.
    fn key(&self) -> String {
        match self {
            Self::JsonSchema(v) => format!("json_schema\0{v}"),
            Self::JsonObject => "json_object".into(),
            Self::Regex(r) => format!("regex\0{r}"),
            Self::Choice(c) => format!("choice\0{}", c.join("\0")),
            Self::Lark(g) => format!("lark\0{g}"),
        }
    }

    fn grammar(&self) -> Result<TopLevelGrammar, ConstraintError> {
        Ok(match self {
            Self::JsonSchema(schema) => {
                let mut schema = schema.clone();
                let Some(obj) = schema.as_object_mut() else {
                    return Err(ConstraintError::Invalid(
                        "a JSON schema must be an object".into(),
                    ));
                };
                obj.entry("x-guidance").or_insert_with(json_options);
                TopLevelGrammar::from_json_schema(schema)
            }
            Self::JsonObject => {
                let mut schema = serde_json::json!({"type": "object"});
                schema["x-guidance"] = json_options();
                TopLevelGrammar::from_json_schema(schema)
            }
            Self::Regex(r) => TopLevelGrammar::from_regex(r),
            Self::Choice(c) => {
                if c.is_empty() {
                    return Err(ConstraintError::Invalid(
                        "`choice` must list at least one string".into(),
                    ));
                }
                let alts: Vec<String> = c
                    .iter()
                    .map(|s| serde_json::to_string(s).expect("a string serializes"))
                    .collect();
                TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | ")))
            }
            Self::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        })
    }
}

/// How JSON is laid out: any JSON whitespace between tokens, but at most 32 characters of it
/// at a time, so that a model cannot fill its whole output with blanks (llguidance's default
/// allows unbounded runs).
fn json_options() -> serde_json::Value {
    serde_json::json!({
        "whitespace_flexible": true,
        "whitespace_pattern": r"[\x20\x0A\x0D\x09]{1,32}",
    })
}

/// Why a constraint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The constraint is malformed, uses an unsupported feature, admits nothing or is too large
    /// (llguidance's message, which names the feature).
    #[error("invalid {kind}: {msg}")]
    Compile {
        /// [`ConstraintSpec::kind`].
        kind: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// Rejected before compiling.
    #[error("{0}")]
    Invalid(String),
}

/// Most compiled grammars kept.
const CACHE_ENTRIES: usize = 128;

/// The constraint compiler of one model: its vocabulary as a token trie, and a cache of
/// compiled grammars.
pub struct Grammars {
    factory: ParserFactory,
    /// The tokenizer's end ids: allowed wherever the grammar allows ending.
    eos_ids: Vec<u32>,
    /// The id the trie calls EOS.
    trie_eos: u32,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, (Arc<Matcher>, u64)>,
    tick: u64,
}

impl Grammars {
    /// The compiler for `tok`'s vocabulary (`vocab_rows`: the model's logits width, at least
    /// the tokenizer's vocabulary). Builds the token trie (tens of milliseconds for 150,000
    /// tokens).
    pub fn new(tok: &Tokenizer) -> Result<Self, ConstraintError> {
        let n = tok.vocab_size;
        let trie_eos = tok.eos_ids.first().copied().unwrap_or(u32::MAX);
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let b = tok.token_bytes(id);
                if tok.is_special(id) || tok.eos_ids.contains(&id) {
                    // toktrie's marker: never produced by text, only by name.
                    let mut v = Vec::with_capacity(b.len() + 1);
                    v.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    v.extend_from_slice(&b);
                    v
                } else {
                    b
                }
            })
            .collect();
        let info = TokRxInfo {
            vocab_size: n as u32,
            tok_eos: if (trie_eos as usize) < n { trie_eos } else { 0 },
            tok_bos: tok.bos,
            tok_pad: None,
            tok_unk: None,
            tok_end_of_turn: None,
        };
        let env: Arc<dyn TokenizerEnv + Sync> =
            Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Invalid(format!("cannot build the token trie: {e}")))?;
        factory.quiet();
        Ok(Self {
            factory,
            eos_ids: tok.eos_ids.clone(),
            trie_eos: info.tok_eos,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Compiles `spec` (or takes it from the cache). Compilation runs in llguidance's limits
    /// (lexer fuel, grammar size), so it ends; callers that must answer quickly run it on a
    /// blocking thread under a timeout.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let key = spec.key();
        {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            c.tick += 1;
            let tick = c.tick;
            if let Some((m, used)) = c.map.get_mut(&key) {
                *used = tick;
                return Ok(Constraint {
                    spec: spec.clone(),
                    start: m.clone(),
                    eos_ids: self.eos_ids.clone(),
                    trie_eos: self.trie_eos,
                    compile_time: Duration::ZERO,
                    triggers: Vec::new(),
                });
            }
        }
        let t0 = Instant::now();
        let err = |msg: String| ConstraintError::Compile {
            kind: spec.kind(),
            msg,
        };
        let grammar = spec.grammar()?;
        let parser = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.create_parser(grammar)
        }))
        .map_err(|_| err("the grammar compiler failed on this input".into()))?
        .map_err(|e| err(first_line(&e.to_string())))?;
        let mut m = Matcher::new(Ok(parser));
        // The first mask proves the grammar admits something and warms the lexer.
        let mask = m
            .compute_mask()
            .map_err(|e| err(first_line(&e.to_string())))?;
        if mask.num_set() == 0 {
            return Err(err("the grammar admits no output".into()));
        }
        let start = Arc::new(m);
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.map.len() >= CACHE_ENTRIES {
            if let Some(oldest) = c
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                c.map.remove(&oldest);
            }
        }
        let tick = c.tick;
        c.map.insert(key, (start.clone(), tick));
        drop(c);
        record(|t| &mut t.compile, t0.elapsed().as_secs_f32());
        Ok(Constraint {
            spec: spec.clone(),
            start,
            eos_ids: self.eos_ids.clone(),
            trie_eos: self.trie_eos,
            compile_time: t0.elapsed(),
            triggers: Vec::new(),
        })
    }
}

/// llguidance's errors can carry the whole grammar: keep the first line, at most 500 bytes.
fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("").trim();
    match l.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &l[..i]),
        None => l.to_string(),
    }
}

/// A compiled constraint, ready to start sequences. Cheap to clone.
#[derive(Clone)]
pub struct Constraint {
    spec: ConstraintSpec,
    start: Arc<Matcher>,
    eos_ids: Vec<u32>,
    trie_eos: u32,
    compile_time: Duration,
    /// Lazy constraint: dormant until one of these tokens is sampled (see [`Constraint::lazy`]).
    triggers: Vec<u32>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("kind", &self.spec.kind())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Constraint {
    /// What it was compiled from.
    pub fn spec(&self) -> &ConstraintSpec {
        &self.spec
    }

    /// How long compiling took (zero when it came from the cache).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// The same grammar, applied lazily (as llama.cpp's lazy grammars): output is free until one
    /// of `triggers` is sampled; that token is the grammar's first and everything after it is
    /// constrained. An empty list keeps the constraint eager.
    pub fn lazy(mut self, triggers: Vec<u32>) -> Self {
        self.triggers = triggers;
        self
    }

    /// Whether the constraint waits for a trigger token.
    pub fn is_lazy(&self) -> bool {
        !self.triggers.is_empty()
    }

    /// A fresh matcher for one sequence, its first mask already being computed (a lazy one
    /// waits, dormant, for its trigger).
    pub fn start(&self) -> ConstraintState {
        let mut s = ConstraintState {
            pending: None,
            eos_ids: self.eos_ids.clone(),
            trie_eos: self.trie_eos,
            failed: None,
            dormant: None,
            triggers: self.triggers.clone(),
        };
        if self.triggers.is_empty() {
            s.schedule(self.start.deep_clone(), None);
        } else {
            s.dormant = Some(self.start.clone());
        }
        s
    }
}

/// A matcher's work result: the matcher back, and the next mask (or why there is none).
type MaskResult = (Matcher, Result<SimpleVob, String>, Duration);

/// One sequence's constraint: the matcher, away on a mask worker between steps.
pub struct ConstraintState {
    pending: Option<Receiver<MaskResult>>,
    eos_ids: Vec<u32>,
    trie_eos: u32,
    failed: Option<String>,
    /// A lazy constraint before its trigger: the start matcher, not yet cloned.
    dormant: Option<Arc<Matcher>>,
    triggers: Vec<u32>,
}

impl std::fmt::Debug for ConstraintState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintState").finish_non_exhaustive()
    }
}

/// The threads that advance matchers and compute masks while the engine runs forward passes.
fn mask_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("switchyard-mask-{i}"))
            .build()
            .expect("mask worker threads")
    })
}

/// Per-token constraint timings since the last [`take_timings`] (seconds).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Timings {
    /// Advancing the matcher and computing the mask, on a mask worker.
    pub mask: Vec<f32>,
    /// What sampling waited for the mask (the part the forward pass did not hide).
    pub wait: Vec<f32>,
    /// Compiling a constraint (cache misses only).
    pub compile: Vec<f32>,
}

/// Most samples kept between two [`take_timings`] calls.
const MAX_SAMPLES: usize = 1 << 16;

static TIMINGS: Mutex<Timings> = Mutex::new(Timings {
    mask: Vec::new(),
    wait: Vec::new(),
    compile: Vec::new(),
});

fn record(f: impl FnOnce(&mut Timings) -> &mut Vec<f32>, secs: f32) {
    let mut t = TIMINGS.lock().unwrap_or_else(|e| e.into_inner());
    let v = f(&mut t);
    if v.len() < MAX_SAMPLES {
        v.push(secs);
    }
}

/// Takes the constraint timings recorded (process-wide) since the last call.
pub fn take_timings() -> Timings {
    std::mem::take(&mut *TIMINGS.lock().unwrap_or_else(|e| e.into_inner()))
}

impl ConstraintState {
    /// Sends the matcher to a mask worker: consume `token` (if any), then compute the mask.
    fn schedule(&mut self, mut m: Matcher, token: Option<u32>) {
        let (tx, rx) = mpsc::sync_channel(1);
        mask_pool().spawn(move || {
            let t0 = Instant::now();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Some(t) = token {
                    m.consume_token(t).map_err(|e| e.to_string())?;
                }
                if m.is_stopped() {
                    // Done: only the end is left (an empty mask means "end").
                    return Ok(SimpleVob::alloc(0));
                }
                m.compute_mask().map_err(|e| e.to_string())
            }));
            let r = r.unwrap_or_else(|_| Err("the grammar engine panicked".into()));
            let dt = t0.elapsed();
            let _ = tx.send((m, r, dt));
        });
        self.pending = Some(rx);
    }

    /// Waits for the mask and applies it to `logits`: disallowed tokens become -inf; the
    /// tokenizer's end ids stay allowed where the grammar may end. Errors (the grammar engine
    /// failed) fail the request.
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.dormant.is_some() {
            return Ok(());
        }
        let rx = self.pending.take().ok_or("constraint: no mask pending")?;
        let t0 = Instant::now();
        let (m, r, dt) = rx
            .recv()
            .map_err(|_| "constraint: the mask worker went away".to_string())?;
        record(|t| &mut t.wait, t0.elapsed().as_secs_f32());
        record(|t| &mut t.mask, dt.as_secs_f32());
        // Put the matcher back for `accept` (a receiver that is already answered).
        let (tx, again) = mpsc::sync_channel(1);
        let mask = match r {
            Ok(mask) => mask,
            Err(e) => {
                let msg = format!("constraint: {}", first_line(&e));
                self.failed = Some(msg.clone());
                return Err(msg);
            }
        };
        let _ = tx.send((m, Ok(SimpleVob::alloc(0)), Duration::ZERO));
        self.pending = Some(again);
        let may_end = mask.is_empty() || mask.is_allowed(self.trie_eos);
        // The end ids are special tokens, outside every grammar's text: keep their logits
        // where the grammar may end.
        let saved: Vec<(usize, f32)> = if may_end {
            self.eos_ids
                .iter()
                .filter_map(|&e| Some((e as usize, *logits.get(e as usize)?)))
                .collect()
        } else {
            Vec::new()
        };
        let words = mask.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX {
                continue;
            }
            for (b, v) in chunk.iter_mut().enumerate() {
                if bits & (1 << b) == 0 {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        for (i, v) in saved {
            logits[i] = v;
        }
        Ok(())
    }

    /// Advances the matcher past the sampled `token` and starts computing the next mask. The
    /// tokenizer's end ids end the sequence and are not fed to the grammar.
    pub fn accept(&mut self, token: u32) {
        if self.eos_ids.contains(&token) || self.failed.is_some() {
            return;
        }
        if let Some(start) = &self.dormant {
            if self.triggers.contains(&token) {
                // The trigger is the grammar's first token: from here on, constrained.
                let m = start.deep_clone();
                self.dormant = None;
                self.schedule(m, Some(token));
            }
            return;
        }
        let Some(rx) = self.pending.take() else {
            self.failed = Some("constraint: token accepted without a mask".into());
            return;
        };
        match rx.recv() {
            Ok((m, _, _)) => self.schedule(m, Some(token)),
            Err(_) => self.failed = Some("constraint: the mask worker went away".into()),
        }
    }
}
