//! Why a sequence stopped generating: one vocabulary for the scheduler (which finishes a
//! sequence at `max_tokens`), the engine (which decides the stops) and the HTTP layer (which
//! spells a reason for each API).

/// What ended a sequence with [`FinishReason::Stop`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The tokenizer's end-of-sequence token with this id.
    Eos(u32),
    /// One of the request's `stop_token_ids`.
    StopToken(u32),
    /// One of the request's `stop` strings (not included in the text).
    StopString(String),
}

/// Why a sequence (one choice of a request) ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop(StopReason),
    /// `max_tokens` were generated.
    Length,
    /// The request was cancelled (by its client, or its stream was dropped).
    Cancelled,
}
