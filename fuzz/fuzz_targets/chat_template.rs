//! Chat-template rendering with a fuzzer-chosen template and messages: compile and render return
//! Ok or Err, never panic or hang.
//!
//! Input (UTF-8, lossy): the template, then messages, separated by U+001E; a message is
//! `role U+001F content` (no U+001F: role `user`). An even input length asks for the
//! generation prompt.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_http::template::{ChatTemplate, Message};

fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::allow_caught_panics();
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1e}');
    let source = parts.next().unwrap_or("");
    let messages: Vec<Message> = parts
        .map(|p| match p.split_once('\u{1f}') {
            Some((role, content)) => Message {
                role: role.into(),
                content: content.into(),
            },
            None => Message {
                role: "user".into(),
                content: p.into(),
            },
        })
        .collect();
    let Ok(t) = ChatTemplate::new(source, "<bos>", "<eos>") else {
        return;
    };
    let _ = t.render(&messages, data.len() % 2 == 0);
});
