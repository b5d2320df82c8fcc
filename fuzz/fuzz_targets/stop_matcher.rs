//! The stop-string matcher with arbitrary stop strings and text deltas. Invariants: the released
//! text is always a prefix of the text received; with stops allowed from the start, it never
//! contains a stop string; a reported stop string starts where the released text ends; when no
//! stop is reported, everything is released.
//!
//! Input (UTF-8, lossy), split on U+001E: stop strings until an empty field, then the deltas.
//! An odd first byte disallows matching for the first delta (`min_tokens`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_runtime::engine::stop::{Matched, StopMatcher};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\u{1e}');
    let stops: Vec<String> = fields
        .by_ref()
        .take_while(|s| !s.is_empty())
        .take(16)
        .map(|s| s.chars().take(64).collect())
        .collect();
    let deltas: Vec<&str> = fields.collect();
    let hold_first = data.first().is_some_and(|b| b & 1 == 1);
    let mut m = StopMatcher::new(stops.clone());
    let mut full = String::new();
    let mut out = String::new();
    let mut stopped = None;
    let n = deltas.len();
    for (i, d) in deltas.iter().enumerate() {
        full.push_str(d);
        let allow = !(hold_first && i == 0);
        let r = if i + 1 == n {
            m.finish(d, allow)
        } else {
            m.push(d, allow)
        };
        let (emit, idx) = match r {
            Matched::No { emit } => (emit, None),
            Matched::Stop { emit, index } => (emit, Some(index)),
        };
        out.push_str(&emit);
        assert!(
            full.starts_with(&out),
            "released {out:?} is not a prefix of {full:?}"
        );
        if let Some(index) = idx {
            stopped = Some(index);
            break;
        }
    }
    if !hold_first {
        for s in stops.iter().filter(|s| !s.is_empty()) {
            assert!(
                !out.contains(s.as_str()),
                "released {out:?} contains stop {s:?}"
            );
        }
    }
    match stopped {
        Some(index) => {
            let s = &stops[index];
            assert!(
                full[out.len()..].starts_with(s.as_str()),
                "stop {s:?} does not start at the end of the released {out:?} in {full:?}"
            );
        }
        None if n > 0 => assert_eq!(out, full, "finish did not release everything"),
        None => {}
    }
});
