//! What goes into the engine (requests), what comes out (outputs, stats) and what can go wrong.

use switchyard_core::{FinishReason, SamplingParams};

/// Most choices (`n`) one request may ask for.
pub const MAX_N: usize = 128;

/// Most alternatives per position that `logprobs` / `prompt_logprobs` may ask for.
pub const MAX_LOGPROBS: usize = 20;

/// One generation request, already tokenized and validated by the caller's protocol layer.
///
/// The engine checks it again in [`EngineHandle::submit`](super::EngineHandle::submit) against
/// the model and the KV pool (see [`SubmitError`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineRequest {
    /// Prompt token ids (BOS included if the model wants one); must not be empty.
    pub prompt: Vec<u32>,
    /// Most tokens to generate per choice (at least 1).
    pub max_tokens: usize,
    /// Fewest tokens to generate per choice before EOS, stop token ids or stop strings may end
    /// it (EOS and stop token ids are masked out of sampling until then). At most `max_tokens`.
    pub min_tokens: usize,
    /// Temperature, top-k/p, min-p, penalties, logit bias, seed.
    pub sampling: SamplingParams,
    /// Strings that end a choice; the returned text stops just before the first one found.
    pub stop: Vec<String>,
    /// Token ids that end a choice (the id is reported in `token_ids`, its text is not).
    pub stop_token_ids: Vec<u32>,
    /// Keep generating past the tokenizer's EOS ids (benchmarks).
    pub ignore_eos: bool,
    /// Independent choices for the same prompt (1..=[`MAX_N`]). Choice `i` samples with seed
    /// `seed + i`; the prompt's full KV blocks are computed once and shared by all choices
    /// through the prefix cache (choices 1.. are admitted once choice 0 has its first token).
    pub n: usize,
    /// Log-probabilities of each generated token plus this many top alternatives
    /// (0..=[`MAX_LOGPROBS`]); `None` for none.
    pub logprobs: Option<usize>,
    /// Log-probabilities of each prompt token (after the first) plus this many alternatives;
    /// delivered with the first output of choice 0. Choice 0 of such a request computes its
    /// whole prompt (no prefix-cache lookup), so every entry after the first is present.
    pub prompt_logprobs: Option<usize>,
    /// Drop control tokens from the text (the ids stay in `token_ids`).
    pub skip_special_tokens: bool,
    /// Scheduling priority: lower runs first and is preempted last. Default 0.
    pub priority: i32,
    /// What the output must match (JSON schema, regex, choice, grammar), compiled by
    /// [`Grammars`](crate::constraint::Grammars); each choice gets its own matcher.
    pub constraint: Option<crate::constraint::Constraint>,
    /// An embedding instead of a generation: the prompt is computed (in the same steps as
    /// generations, never through or into the prefix cache), its tokens' final hidden states
    /// are pooled so, and one output carries the vector ([`EngineOutput::embedding`], not
    /// normalized) with no tokens. Needs `n` 1, `max_tokens` 1 and no logprobs or constraint.
    pub embed: Option<crate::pooling::Pooling>,
    /// Let speculative decoding draft for this request when the engine has it on (the output
    /// is the same either way); `false` opts out.
    pub speculative: bool,
}

impl Default for EngineRequest {
    fn default() -> Self {
        Self {
            prompt: Vec::new(),
            max_tokens: 16,
            min_tokens: 0,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            n: 1,
            logprobs: None,
            prompt_logprobs: None,
            skip_special_tokens: true,
            priority: 0,
            constraint: None,
            embed: None,
            speculative: true,
        }
    }
}

impl EngineRequest {
    /// A greedy request for `max_tokens` tokens after `prompt`, everything else default.
    pub fn new(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt,
            max_tokens,
            ..Self::default()
        }
    }
}

/// Log-probability of one token and the most likely alternatives at its position, computed
/// from the logits after logit bias and penalties, before temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub token: u32,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The top alternatives as (id, logprob), most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Token counts of one choice so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of those, tokens whose KV came from the prefix cache when the choice was first admitted.
    pub cached_tokens: usize,
    /// Tokens generated (including a final EOS or stop token).
    pub completion_tokens: usize,
    /// Time from the engine receiving the request to the first step that scheduled this
    /// choice (`None` before that).
    pub queue_time: Option<std::time::Duration>,
}

/// One step's worth of output for one choice of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOutput {
    /// Which choice (`0..n`).
    pub index: usize,
    /// Tokens generated in this step (usually one; none in a [`FinishReason::Cancelled`] item).
    pub token_ids: Vec<u32>,
    /// Text completed by this step (may be empty: incomplete UTF-8 or a possible stop string
    /// is held back until resolved).
    pub text: String,
    /// One entry per `token_ids` entry when the request asked for `logprobs`.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Prompt logprobs (one entry per prompt token, `None` for the first and for cached ones);
    /// only in the first output of choice 0 of a request that asked for them.
    pub prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
    /// Set on the last output of this choice.
    pub finish: Option<FinishReason>,
    /// Counts for this choice so far (a request's prompt counts once, not once per choice).
    pub usage: Usage,
    /// The pooled final hidden state of an embedding request (in its one output, which
    /// finishes it with [`FinishReason::Length`]).
    pub embedding: Option<Vec<f32>>,
}

/// One finished choice, gathered from a stream by
/// [`RequestStream::collect_blocking`](super::RequestStream::collect_blocking).
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Which choice.
    pub index: usize,
    /// Every generated token id.
    pub token_ids: Vec<u32>,
    /// The whole text.
    pub text: String,
    /// Per-token logprobs, when asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Prompt logprobs, when asked for (choice 0 only).
    pub prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
    /// Why it ended.
    pub finish: FinishReason,
    /// Final counts.
    pub usage: Usage,
}

/// A snapshot of the engine, taken between steps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences (choices) running.
    pub num_running: usize,
    /// Sequences waiting (new or preempted).
    pub num_waiting: usize,
    /// Requests not finished (each may hold several sequences).
    pub num_requests: usize,
    /// Free KV blocks (including cached blocks that may be evicted).
    pub num_free_blocks: usize,
    /// KV blocks in the pool.
    pub num_blocks: usize,
    /// Fraction of KV blocks held by sequences, `0.0..=1.0`.
    pub kv_usage: f32,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_cache_queries: u64,
    /// Of those, tokens found.
    pub prefix_cache_hits: u64,
    /// Sequences preempted (and later recomputed) so far.
    pub num_preemptions: u64,
    /// Most sequences running at once after planning a step, so far.
    pub peak_running: usize,
    /// Prompt tokens of all admitted sequences so far.
    pub prompt_tokens_total: u64,
    /// Tokens generated so far.
    pub generation_tokens_total: u64,
    /// Forward steps run so far.
    pub num_steps: u64,
    /// Token slots of padding the backend added to fit static shapes (Neuron buckets).
    pub padding_tokens_total: u64,
    /// Speculative decoding: drafts verified so far.
    pub spec_num_drafts: u64,
    /// Draft tokens verified so far.
    pub spec_num_draft_tokens: u64,
    /// Of those, accepted (each saved a step).
    pub spec_num_accepted_tokens: u64,
    /// Blocks of the draft model's KV cache held by sequences (`draft_model` speculative
    /// decoding; 0 without).
    pub spec_draft_blocks_held: usize,
}

/// Why a request failed after it was accepted; the stream ends after this item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The backend failed in a step this request was part of.
    #[error("backend error: {0}")]
    Backend(String),
    /// Processing this request's output panicked (a bug); other requests go on.
    #[error("internal error while processing the request: {0}")]
    Internal(String),
    /// The scheduler refused the request.
    #[error("request rejected: {0}")]
    Rejected(String),
    /// The engine shut down (or died) before the request finished.
    #[error("the engine stopped before the request finished")]
    Stopped,
}

/// Why [`EngineHandle::submit`](super::EngineHandle::submit) refused a request. The messages
/// name the offending value and are meant for the end user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// No prompt tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// A prompt (or stop) token id outside the model's vocabulary.
    #[error("token id {token} is out of range (vocabulary size {vocab})")]
    TokenOutOfRange {
        /// The id.
        token: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// `max_tokens` was 0.
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    /// `min_tokens` above `max_tokens`.
    #[error("min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})")]
    MinAboveMax {
        /// Asked minimum.
        min_tokens: usize,
        /// Asked maximum.
        max_tokens: usize,
    },
    /// Prompt plus `max_tokens` exceeds the model's context.
    #[error(
        "this model's maximum context length is {max_model_len} tokens, but {prompt_tokens} \
         prompt tokens + {max_tokens} max_tokens were requested; shorten the prompt or lower \
         max_tokens"
    )]
    ContextTooLong {
        /// Prompt length.
        prompt_tokens: usize,
        /// Asked `max_tokens`.
        max_tokens: usize,
        /// The longest sequence served.
        max_model_len: usize,
    },
    /// `n` outside `1..=MAX_N`.
    #[error("n must be between 1 and {max}, got {n}")]
    BadN {
        /// Asked.
        n: usize,
        /// Limit.
        max: usize,
    },
    /// Too many logprob alternatives.
    #[error("{field} must be at most {max}, got {requested}")]
    TooManyLogprobs {
        /// `logprobs` or `prompt_logprobs`.
        field: &'static str,
        /// Asked.
        requested: usize,
        /// Limit.
        max: usize,
    },
    /// A sampling parameter out of its range.
    #[error("{param} = {value} is invalid: {expected}")]
    BadSampling {
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: f32,
        /// The valid range.
        expected: &'static str,
    },
    /// An empty stop string.
    #[error("stop strings must not be empty")]
    EmptyStop,
    /// An embedding request the engine cannot serve as asked.
    #[error("{0}")]
    BadEmbedding(&'static str),
    /// The engine is not running.
    #[error("the engine is not running")]
    Stopped,
}
