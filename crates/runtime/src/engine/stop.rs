//! Stop-string matching over streamed text: text that could still become a stop string is held
//! back until the next tokens decide, so a stop string split across tokens is found and never
//! partly sent. Public for the fuzz targets (`fuzz/`); the engine is its only user.

/// What a [`StopMatcher`] releases after more text arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// No stop string ended here: `emit` is safe to send.
    No {
        /// Text to send now.
        emit: String,
    },
    /// Stop string `index` was found: `emit` is the text before it; the choice is done.
    Stop {
        /// Text to send before finishing.
        emit: String,
        /// Index into the stop strings.
        index: usize,
    },
}

/// Finds the first of several stop strings in a growing text, holding back the longest tail
/// that is a proper prefix of some stop string.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet released.
    pending: String,
}

impl StopMatcher {
    /// A matcher for `stops` (none: everything passes through at once).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
        }
    }

    /// Adds `delta`. With `allow` false (before `min_tokens`) stop strings are not matched, but
    /// a possible beginning of one is still held back so that it can complete later.
    pub fn push(&mut self, delta: &str, allow: bool) -> Matched {
        self.pending.push_str(delta);
        if allow {
            if let Some(m) = self.find() {
                return m;
            }
        }
        let keep = self.held_tail();
        let emit = self.pending.drain(..self.pending.len() - keep).collect();
        Matched::No { emit }
    }

    /// Adds the final `tail` and releases everything (or the text before a stop string).
    pub fn finish(&mut self, tail: &str, allow: bool) -> Matched {
        self.pending.push_str(tail);
        if allow {
            if let Some(m) = self.find() {
                return m;
            }
        }
        Matched::No {
            emit: std::mem::take(&mut self.pending),
        }
    }

    /// The earliest stop string in `pending` (ties: the first listed), consuming everything.
    fn find(&mut self) -> Option<Matched> {
        let (pos, index) = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.pending.find(s.as_str()).map(|p| (p, i)))
            .min()?;
        let mut emit = std::mem::take(&mut self.pending);
        emit.truncate(pos);
        Some(Matched::Stop { emit, index })
    }

    /// Length in bytes of the longest suffix of `pending` that a stop string starts with but
    /// does not equal.
    fn held_tail(&self) -> usize {
        let p = &self.pending;
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        p.char_indices()
            .map(|(i, _)| i)
            .filter(|&i| p.len() - i < longest)
            .find(|&i| {
                let tail = &p[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .map_or(0, |i| p.len() - i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `deltas` (all allowed), returning the released text and the stop index.
    fn run(stops: &[&str], deltas: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for d in deltas {
            match m.push(d, true) {
                Matched::No { emit } => out.push_str(&emit),
                Matched::Stop { emit, index } => {
                    out.push_str(&emit);
                    return (out, Some(index));
                }
            }
        }
        match m.finish("", true) {
            Matched::No { emit } => out.push_str(&emit),
            Matched::Stop { emit, index } => {
                out.push_str(&emit);
                return (out, Some(index));
            }
        }
        (out, None)
    }

    #[test]
    fn no_stops_passes_through_at_once() {
        let mut m = StopMatcher::new(Vec::new());
        assert_eq!(m.push("abc", true), Matched::No { emit: "abc".into() });
    }

    #[test]
    fn stop_within_one_delta() {
        assert_eq!(run(&["END"], &["abc END xyz"]), ("abc ".into(), Some(0)));
    }

    #[test]
    fn stop_across_deltas_is_held_back_then_cut() {
        let mut m = StopMatcher::new(vec!["\n\n".into()]);
        assert_eq!(m.push("one\n", true), Matched::No { emit: "one".into() });
        assert_eq!(
            m.push("\ntwo", true),
            Matched::Stop {
                emit: String::new(),
                index: 0
            }
        );
        assert_eq!(
            run(&["STOP"], &["ab", "S", "T", "O", "Pcd"]),
            ("ab".into(), Some(0))
        );
    }

    #[test]
    fn held_prefix_that_does_not_complete_is_released() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("xST", true), Matched::No { emit: "x".into() });
        assert_eq!(
            m.push("Ay", true),
            Matched::No {
                emit: "STAy".into()
            }
        );
        assert_eq!(run(&["STOP"], &["ST"]), ("ST".into(), None));
    }

    #[test]
    fn earliest_match_wins_then_list_order() {
        assert_eq!(run(&["c", "ab"], &["xabc"]), ("x".into(), Some(1)));
        assert_eq!(run(&["ab", "abc"], &["xabc"]), ("x".into(), Some(0)));
    }

    #[test]
    fn overlapping_prefixes_hold_the_longest_tail() {
        // "baa" must hold "aa" (a prefix of "aaX"), not just "a" (a prefix of both).
        let mut m = StopMatcher::new(vec!["aaX".into(), "aY".into()]);
        assert_eq!(m.push("baa", true), Matched::No { emit: "b".into() });
        assert_eq!(
            m.push("X", true),
            Matched::Stop {
                emit: String::new(),
                index: 0
            }
        );
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        // "é" is two bytes; the stop string starts with it.
        assert_eq!(run(&["éé"], &["caf", "é", "!"]), ("café!".into(), None));
        assert_eq!(run(&["éé"], &["caf", "é", "é!"]), ("caf".into(), Some(0)));
        assert_eq!(
            run(&["日本"], &["こんにちは日", "本語"]),
            ("こんにちは".into(), Some(0))
        );
    }

    #[test]
    fn disallowed_matches_pass_but_prefixes_wait() {
        let mut m = StopMatcher::new(vec!["ab".into()]);
        // Before min_tokens a complete stop string is ordinary text...
        assert_eq!(m.push("xab", false), Matched::No { emit: "xab".into() });
        // ...but a beginning is held and may complete once stops are allowed.
        assert_eq!(
            m.push("a", false),
            Matched::No {
                emit: String::new()
            }
        );
        assert_eq!(
            m.push("b", true),
            Matched::Stop {
                emit: String::new(),
                index: 0
            }
        );
    }

    #[test]
    fn finish_releases_held_text_or_finds_a_stop() {
        let mut m = StopMatcher::new(vec!["xyz".into()]);
        assert_eq!(m.push("abx", true), Matched::No { emit: "ab".into() });
        assert_eq!(m.finish("y", true), Matched::No { emit: "xy".into() });
        let mut m = StopMatcher::new(vec!["xyz".into()]);
        assert_eq!(m.push("abx", true), Matched::No { emit: "ab".into() });
        assert_eq!(
            m.finish("yz!", true),
            Matched::Stop {
                emit: String::new(),
                index: 0
            }
        );
    }

    #[test]
    fn random_splits_agree_with_whole_text_search() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let alphabet = ['a', 'b', 'é', '\n'];
        let stops = ["ab", "bé\n", "\n\n", "éa"];
        for _ in 0..2000 {
            let len = rng.gen_range(0..12);
            let text: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            // Expected: cut at the earliest occurrence of any stop string.
            let expected = stops
                .iter()
                .enumerate()
                .filter_map(|(i, s)| text.find(s).map(|p| (p, i)))
                .min()
                .map_or((text.clone(), None), |(p, i)| {
                    (text[..p].to_string(), Some(i))
                });
            // Split the text at random character boundaries.
            let mut deltas = Vec::new();
            let mut cur = String::new();
            for c in text.chars() {
                cur.push(c);
                if rng.gen_bool(0.4) {
                    deltas.push(std::mem::take(&mut cur));
                }
            }
            deltas.push(cur);
            let refs: Vec<&str> = deltas.iter().map(String::as_str).collect();
            let got = run(&stops, &refs);
            // No stop string occurs inside another past its first character, so the
            // streaming result must equal the whole-text search.
            assert_eq!(got, expected, "text {text:?} split as {deltas:?}");
        }
    }
}
