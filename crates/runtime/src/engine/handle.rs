//! The client side of the engine: [`EngineHandle`] (cheap to clone, usable from any thread or
//! async task) and the per-request [`RequestStream`]. Both only send messages to the engine
//! thread; nothing here touches the scheduler, the model or the backend.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use switchyard_core::RequestId;
use tokio::sync::{mpsc as tmpsc, oneshot};

use super::types::{
    Completion, EngineError, EngineOutput, EngineRequest, EngineStats, SubmitError, MAX_LOGPROBS,
    MAX_N,
};
use super::EngineInfo;
use crate::tokenizer::Tokenizer;

/// One item of a [`RequestStream`].
pub type StreamItem = Result<EngineOutput, EngineError>;

/// A request accepted by [`EngineHandle::submit`], on its way to the engine thread.
pub(crate) struct Submission {
    pub(crate) id: RequestId,
    pub(crate) request: EngineRequest,
    pub(crate) tx: tmpsc::UnboundedSender<StreamItem>,
}

/// Messages to the engine thread (a closed set).
pub(crate) enum Command {
    /// Queue a request.
    Submit(Box<Submission>),
    /// Abort a request (all its choices) and free its blocks.
    Cancel(RequestId),
    /// Reply with a stats snapshot.
    Stats(oneshot::Sender<EngineStats>),
    /// Fail everything in flight with [`EngineError::Stopped`] and exit.
    Shutdown,
}

struct Shared {
    cmd: mpsc::Sender<Command>,
    tokenizer: Arc<Tokenizer>,
    info: EngineInfo,
    next_id: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Talks to the engine thread: submit, cancel, stats, shutdown. Clone it freely; the engine
/// thread exits when every handle and stream is gone or [`shutdown`](Self::shutdown) is
/// called.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("info", &self.shared.info)
            .finish()
    }
}

impl EngineHandle {
    pub(crate) fn new(
        cmd: mpsc::Sender<Command>,
        tokenizer: Arc<Tokenizer>,
        info: EngineInfo,
        thread: JoinHandle<()>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                cmd,
                tokenizer,
                info,
                next_id: AtomicU64::new(1),
                thread: Mutex::new(Some(thread)),
            }),
        }
    }

    /// The model's tokenizer (to tokenize prompts and render logprob tokens).
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.shared.tokenizer
    }

    /// Sizes and limits the engine runs with.
    pub fn info(&self) -> &EngineInfo {
        &self.shared.info
    }

    /// Checks `request` against the model and the KV pool and queues it. Never blocks: the
    /// outputs arrive on the returned stream; dropping the stream cancels the request.
    pub fn submit(&self, request: EngineRequest) -> Result<RequestStream, SubmitError> {
        validate_request(&request, &self.shared.info)?;
        let id = RequestId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = tmpsc::unbounded_channel();
        let n = request.n;
        self.shared
            .cmd
            .send(Command::Submit(Box::new(Submission { id, request, tx })))
            .map_err(|_| SubmitError::Stopped)?;
        Ok(RequestStream {
            id,
            rx,
            cmd: self.shared.cmd.clone(),
            open_choices: n,
            ended: false,
        })
    }

    /// Aborts request `id` (all its choices) and frees its KV blocks before the next step; its
    /// stream receives a [`Cancelled`](super::FinishReason::Cancelled) output per unfinished
    /// choice. Unknown or finished ids are ignored.
    pub fn cancel(&self, id: RequestId) {
        let _ = self.shared.cmd.send(Command::Cancel(id));
    }

    /// A snapshot of the engine's counters, taken between two steps.
    pub async fn stats(&self) -> Result<EngineStats, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .cmd
            .send(Command::Stats(tx))
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// [`stats`](Self::stats) for synchronous callers (not from inside an async runtime).
    pub fn stats_blocking(&self) -> Result<EngineStats, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .cmd
            .send(Command::Stats(tx))
            .map_err(|_| EngineError::Stopped)?;
        rx.blocking_recv().map_err(|_| EngineError::Stopped)
    }

    /// Stops the engine: requests in flight end with [`EngineError::Stopped`], later submits
    /// fail. Blocks until the engine thread has exited (at most one step); from async code call
    /// it on a blocking thread.
    pub fn shutdown(&self) {
        let _ = self.shared.cmd.send(Command::Shutdown);
        let thread = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!("the engine thread panicked");
            }
        }
    }
}

/// The checks [`EngineHandle::submit`] makes of a request against the engine's limits (public
/// for the fuzz targets and callers that want the error before submitting).
pub fn validate_request(r: &EngineRequest, info: &EngineInfo) -> Result<(), SubmitError> {
    if r.prompt.is_empty() {
        return Err(SubmitError::EmptyPrompt);
    }
    let vocab = info.vocab_size;
    if let Some(&token) = r
        .prompt
        .iter()
        .chain(&r.stop_token_ids)
        .find(|&&t| t as usize >= vocab)
    {
        return Err(SubmitError::TokenOutOfRange { token, vocab });
    }
    if r.max_tokens == 0 {
        return Err(SubmitError::ZeroMaxTokens);
    }
    if r.min_tokens > r.max_tokens {
        return Err(SubmitError::MinAboveMax {
            min_tokens: r.min_tokens,
            max_tokens: r.max_tokens,
        });
    }
    if r.prompt.len().saturating_add(r.max_tokens) > info.max_model_len {
        return Err(SubmitError::ContextTooLong {
            prompt_tokens: r.prompt.len(),
            max_tokens: r.max_tokens,
            max_model_len: info.max_model_len,
        });
    }
    if r.n == 0 || r.n > MAX_N {
        return Err(SubmitError::BadN { n: r.n, max: MAX_N });
    }
    for (field, v) in [
        ("logprobs", r.logprobs),
        ("prompt_logprobs", r.prompt_logprobs),
    ] {
        if let Some(requested) = v.filter(|&v| v > MAX_LOGPROBS) {
            return Err(SubmitError::TooManyLogprobs {
                field,
                requested,
                max: MAX_LOGPROBS,
            });
        }
    }
    let s = &r.sampling;
    let checks: [(&'static str, f32, bool, &'static str); 5] = [
        (
            "temperature",
            s.temperature,
            s.temperature >= 0.0 && s.temperature.is_finite(),
            "must be a finite number >= 0",
        ),
        (
            "top_p",
            s.top_p,
            s.top_p > 0.0 && s.top_p <= 1.0,
            "must be in (0, 1]",
        ),
        (
            "min_p",
            s.min_p,
            (0.0..=1.0).contains(&s.min_p),
            "must be in [0, 1]",
        ),
        (
            "repetition_penalty",
            s.repetition_penalty,
            s.repetition_penalty > 0.0 && s.repetition_penalty.is_finite(),
            "must be a finite number > 0",
        ),
        (
            "presence_penalty + frequency_penalty",
            s.presence_penalty + s.frequency_penalty,
            s.presence_penalty.is_finite() && s.frequency_penalty.is_finite(),
            "penalties must be finite",
        ),
    ];
    if let Some(&(param, value, _, expected)) = checks.iter().find(|c| !c.2) {
        return Err(SubmitError::BadSampling {
            param,
            value,
            expected,
        });
    }
    if let Some(&(_, value)) = s.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
        return Err(SubmitError::BadSampling {
            param: "logit_bias",
            value,
            expected: "biases must be finite",
        });
    }
    if r.stop.iter().any(String::is_empty) {
        return Err(SubmitError::EmptyStop);
    }
    if r.embed.is_some() {
        if !info.embeddings {
            return Err(SubmitError::BadEmbedding(
                "this backend does not compute embeddings",
            ));
        }
        if r.n != 1
            || r.max_tokens != 1
            || r.logprobs.is_some()
            || r.prompt_logprobs.is_some()
            || r.constraint.is_some()
        {
            return Err(SubmitError::BadEmbedding(
                "an embedding request takes n = 1, max_tokens = 1 and no logprobs or constraint",
            ));
        }
    }
    Ok(())
}

/// The outputs of one request, in order; ends after the last choice finishes or an error.
/// Dropping it before the end cancels the request (its blocks are freed within one step).
///
/// Use [`recv`](Self::recv) from async code, [`blocking_recv`](Self::blocking_recv) from plain
/// threads, or the [`futures_core::Stream`] impl.
#[derive(Debug)]
pub struct RequestStream {
    id: RequestId,
    rx: tmpsc::UnboundedReceiver<StreamItem>,
    cmd: mpsc::Sender<Command>,
    open_choices: usize,
    ended: bool,
}

impl RequestStream {
    /// The request's id (for [`EngineHandle::cancel`]).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Tracks the end of the stream: every choice finished, an error, or the engine gone
    /// (which becomes [`EngineError::Stopped`]).
    fn observe(&mut self, item: Option<StreamItem>) -> Option<StreamItem> {
        if self.ended {
            return None;
        }
        match item {
            Some(Ok(out)) => {
                if out.finish.is_some() {
                    self.open_choices = self.open_choices.saturating_sub(1);
                    self.ended = self.open_choices == 0;
                }
                Some(Ok(out))
            }
            Some(Err(e)) => {
                self.ended = true;
                Some(Err(e))
            }
            None => {
                self.ended = true;
                Some(Err(EngineError::Stopped))
            }
        }
    }

    /// The next output, or `None` after the end.
    pub async fn recv(&mut self) -> Option<StreamItem> {
        if self.ended {
            return None;
        }
        let item = self.rx.recv().await;
        self.observe(item)
    }

    /// [`recv`](Self::recv) for synchronous callers (panics inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<StreamItem> {
        if self.ended {
            return None;
        }
        let item = self.rx.blocking_recv();
        self.observe(item)
    }

    /// Reads the stream to its end and assembles each choice (ordered by index).
    pub fn collect_blocking(mut self) -> Result<Vec<Completion>, EngineError> {
        let mut done: Vec<Completion> = Vec::new();
        let mut open: std::collections::BTreeMap<usize, Completion> = Default::default();
        while let Some(item) = self.blocking_recv() {
            let out = item?;
            let c = open.entry(out.index).or_insert_with(|| Completion {
                index: out.index,
                token_ids: Vec::new(),
                text: String::new(),
                logprobs: None,
                prompt_logprobs: None,
                finish: super::FinishReason::Cancelled,
                usage: out.usage,
            });
            c.token_ids.extend_from_slice(&out.token_ids);
            c.text.push_str(&out.text);
            if let Some(lp) = out.logprobs {
                c.logprobs.get_or_insert_with(Vec::new).extend(lp);
            }
            if out.prompt_logprobs.is_some() {
                c.prompt_logprobs = out.prompt_logprobs;
            }
            c.usage = out.usage;
            if let Some(f) = out.finish {
                c.finish = f;
                let c = open.remove(&out.index).expect("inserted above");
                done.push(c);
            }
        }
        done.sort_by_key(|c| c.index);
        Ok(done)
    }
}

impl futures_core::Stream for RequestStream {
    type Item = StreamItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(item) => Poll::Ready(this.observe(item)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.cmd.send(Command::Cancel(self.id));
        }
    }
}
