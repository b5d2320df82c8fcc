//! `<think>…</think>` reasoning, streaming.
//!
//! Rules: the answer is reasoning from a `<think>` at its very start (whitespace before it
//! allowed), or from its first byte when the prompt ended inside an open `<think>` (DeepSeek-R1
//! distills, Qwen3 templates that open the block in the generation prompt), up to the first
//! `</think>`; with no `</think>` the whole rest is reasoning (the output was cut or the model
//! never closed it). Everything after `</think>` is the answer (`content`), which the tool-call
//! parser reads. A `<think>` anywhere else is ordinary text. Whitespace around the reasoning and
//! at the start of the answer after it is dropped.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing decided: a `<think>` may open the answer.
    Start,
    /// Inside, before the first non-whitespace.
    ThinkStart,
    /// Inside.
    Think,
    /// After `</think>`, before the first non-whitespace.
    AfterThink,
    /// The answer.
    Content,
}

/// Splits one choice's text into reasoning and answer.
#[derive(Debug)]
pub struct ThinkSplitter {
    state: State,
    buf: String,
    ws: String,
}

impl ThinkSplitter {
    /// A splitter for an answer that starts inside the reasoning when `starts_inside` (the
    /// prompt ends in an open `<think>`).
    pub fn new(starts_inside: bool) -> Self {
        Self {
            state: if starts_inside {
                State::ThinkStart
            } else {
                State::Start
            },
            buf: String::new(),
            ws: String::new(),
        }
    }

    /// Whether the prompt `text` ends inside an open `<think>` block.
    pub fn prompt_ends_inside(text: &str) -> bool {
        match (text.rfind(OPEN), text.rfind(CLOSE)) {
            (Some(o), Some(c)) => o > c,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Pieces `(is_reasoning, text)` decided after `text` more (`eof`: the end of the output).
    pub fn push(&mut self, text: &str, eof: bool) -> Vec<(bool, String)> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let t = self.buf.trim_start();
                    if t.starts_with(OPEN) {
                        let skip = self.buf.len() - t.len() + OPEN.len();
                        self.buf.drain(..skip);
                        self.state = State::ThinkStart;
                    } else if !eof && OPEN.starts_with(t) {
                        break;
                    } else {
                        self.state = State::Content;
                    }
                }
                State::ThinkStart | State::AfterThink => {
                    let n = self.buf.len() - self.buf.trim_start().len();
                    self.buf.drain(..n);
                    if self.buf.is_empty() && !eof {
                        break;
                    }
                    self.state = if self.state == State::ThinkStart {
                        State::Think
                    } else {
                        State::Content
                    };
                }
                State::Think => {
                    if let Some(k) = self.buf.find(CLOSE) {
                        let r = format!("{}{}", std::mem::take(&mut self.ws), &self.buf[..k]);
                        push(&mut out, true, r.trim_end());
                        self.buf.drain(..k + CLOSE.len());
                        self.state = State::AfterThink;
                    } else if eof {
                        let r = format!("{}{}", std::mem::take(&mut self.ws), self.buf);
                        push(&mut out, true, r.trim_end());
                        self.buf.clear();
                        break;
                    } else {
                        // Hold a tail that may begin `</think>`, and trailing whitespace.
                        let keep = (1..CLOSE.len())
                            .rev()
                            .find(|&l| self.buf.ends_with(&CLOSE[..l]))
                            .unwrap_or(0);
                        let tail = self.buf.split_off(self.buf.len() - keep);
                        let body = std::mem::replace(&mut self.buf, tail);
                        let trimmed = body.trim_end();
                        if !trimmed.is_empty() {
                            let r = format!("{}{trimmed}", std::mem::take(&mut self.ws));
                            push(&mut out, true, &r);
                        }
                        self.ws.push_str(&body[trimmed.len()..]);
                        break;
                    }
                }
                State::Content => {
                    push(&mut out, false, &std::mem::take(&mut self.buf));
                    break;
                }
            }
        }
        out
    }
}

fn push(out: &mut Vec<(bool, String)>, reasoning: bool, s: &str) {
    if !s.is_empty() {
        out.push((reasoning, s.to_string()));
    }
}
