//! Speculative decoding: `--speculative-config` and the n-gram method (vLLM's `ngram`,
//! llama.cpp's prompt lookup): the tokens that followed the latest earlier occurrence of the
//! sequence's last `n` tokens (prompt and output) are proposed as a draft. The other method,
//! `draft_model`, runs a smaller model (`draft.rs`). Either way the engine verifies the draft
//! in the sequence's next decode step, one logits row per draft token, and keeps the tokens it
//! would have sampled anyway. Our kernels give a token the same logits alone or in any batch,
//! so greedy output is unchanged token for token; sampled output keeps the target distribution
//! exactly (a point-mass draft, as both methods propose, is accepted exactly when the target's
//! own sample equals it, and each emitted token uses the sequence's random stream as it would
//! without speculation).

use serde_json::Value;

/// How drafts are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeculativeMethod {
    /// `"ngram"`: the tokens that followed an earlier occurrence of the sequence's last `n`
    /// tokens, for the longest `n` in `prompt_lookup_max..=prompt_lookup_min` that matches.
    Ngram {
        /// Shortest suffix looked up (`prompt_lookup_min`, default 1).
        prompt_lookup_min: usize,
        /// Longest suffix looked up first (`prompt_lookup_max`; default 4, or `min` if larger).
        prompt_lookup_max: usize,
    },
    /// `"draft_model"`: a smaller model with the same vocabulary proposes its greedy
    /// continuation (`model`: an alias, GGUF path or anything else `serve -m` takes). The
    /// caller loads it and hands it to
    /// [`EngineHandle::start_with_draft`](super::EngineHandle::start_with_draft).
    DraftModel {
        /// The draft model, as given.
        model: String,
    },
}

/// `--speculative-config`, in vLLM's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeculativeConfig {
    /// Where drafts come from (`method`, default `"ngram"`; `"draft_model"` when only `model`
    /// is given, as vLLM infers it).
    pub method: SpeculativeMethod,
    /// Most draft tokens per step (`num_speculative_tokens`).
    pub num_speculative_tokens: usize,
    /// No drafts while more sequences than this run (`disable_by_batch_size`): a batch that
    /// large is compute-bound, where verifying drafts costs more than it saves. Default 4.
    pub disable_by_batch_size: usize,
}

impl SpeculativeConfig {
    /// n-gram drafts of at most `k` tokens, suffixes of 1 to 4 tokens, drafting while at most
    /// `disable_by_batch_size` sequences run.
    pub fn ngram(k: usize, disable_by_batch_size: usize) -> Self {
        Self {
            method: SpeculativeMethod::Ngram {
                prompt_lookup_min: 1,
                prompt_lookup_max: 4,
            },
            num_speculative_tokens: k,
            disable_by_batch_size,
        }
    }

    /// Drafts of at most `k` tokens from the draft model `model`.
    pub fn draft_model(model: &str, k: usize, disable_by_batch_size: usize) -> Self {
        Self {
            method: SpeculativeMethod::DraftModel {
                model: model.to_string(),
            },
            num_speculative_tokens: k,
            disable_by_batch_size,
        }
    }

    /// The draft model's name, with `"method": "draft_model"`.
    pub fn draft_model_name(&self) -> Option<&str> {
        match &self.method {
            SpeculativeMethod::DraftModel { model } => Some(model),
            SpeculativeMethod::Ngram { .. } => None,
        }
    }

    /// Parses vLLM's `--speculative-config` JSON. The methods `"ngram"` and `"draft_model"`
    /// are built; other methods (`eagle`, `medusa`, …) and unknown keys (vLLM's
    /// `draft_tensor_parallel_size`, `quantization`, … included) are refused by name.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("--speculative-config is not JSON: {e}"))?;
        let Value::Object(m) = v else {
            return Err("--speculative-config must be a JSON object".into());
        };
        let method = match m.get("method") {
            None | Some(Value::Null) if m.contains_key("model") => "draft_model",
            None | Some(Value::Null) => "ngram",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(format!(
                    "--speculative-config: method must be a string, got {other}"
                ))
            }
        };
        let keys: &[&str] = match method {
            "ngram" => &[
                "method",
                "num_speculative_tokens",
                "prompt_lookup_min",
                "prompt_lookup_max",
                "disable_by_batch_size",
            ],
            "draft_model" => &[
                "method",
                "model",
                "num_speculative_tokens",
                "disable_by_batch_size",
            ],
            _ => {
                return Err(format!(
                    "--speculative-config: method {method:?} is not supported (supported: \
                     \"ngram\", \"draft_model\")"
                ))
            }
        };
        let int = |k: &str| -> Result<Option<usize>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n <= 64)
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| {
                        format!("--speculative-config: {k} must be an integer in 0..=64, got {v}")
                    }),
            }
        };
        for k in m.keys() {
            if !keys.contains(&k.as_str()) {
                return Err(format!(
                    "--speculative-config: {k:?} is not supported with method {method:?} \
                     (supported: {})",
                    keys.join(", ")
                ));
            }
        }
        let k = int("num_speculative_tokens")?
            .ok_or("--speculative-config: num_speculative_tokens is required")?;
        if k == 0 {
            return Err("--speculative-config: num_speculative_tokens must be at least 1".into());
        }
        let method = if method == "ngram" {
            let min = int("prompt_lookup_min")?.unwrap_or(1).max(1);
            let max = int("prompt_lookup_max")?.unwrap_or(min.max(4));
            if max < min {
                return Err(format!(
                    "--speculative-config: prompt_lookup_max ({max}) is below prompt_lookup_min \
                     ({min})"
                ));
            }
            SpeculativeMethod::Ngram {
                prompt_lookup_min: min,
                prompt_lookup_max: max,
            }
        } else {
            let model = match m.get("model") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                None | Some(Value::Null) => {
                    return Err(
                        "--speculative-config: method \"draft_model\" needs \"model\" \
                                (an alias or a GGUF path, as serve -m takes)"
                            .into(),
                    )
                }
                Some(v) => {
                    return Err(format!(
                        "--speculative-config: model must be a non-empty string, got {v}"
                    ))
                }
            };
            SpeculativeMethod::DraftModel { model }
        };
        Ok(Self {
            method,
            num_speculative_tokens: k,
            disable_by_batch_size: int("disable_by_batch_size")?.unwrap_or(4),
        })
    }
}

/// The draft for `tokens` (a sequence's prompt and output): for the longest `n` in
/// `max..=min` whose last `n` tokens occur earlier, the (at most `k`) tokens that followed
/// their latest earlier occurrence. Empty when nothing matches.
pub fn ngram_draft(tokens: &[u32], min: usize, max: usize, k: usize) -> Vec<u32> {
    let len = tokens.len();
    for n in (min.max(1)..=max).rev() {
        if len <= n {
            continue;
        }
        let suffix = &tokens[len - n..];
        // Latest start i < len - n with tokens[i..i + n] == suffix.
        let found = (0..len - n).rev().find(|&i| &tokens[i..i + n] == suffix);
        if let Some(i) = found {
            let from = i + n;
            return tokens[from..(from + k).min(len)].to_vec();
        }
    }
    Vec::new()
}

/// Per-sequence acceptance, for backing off: an exponential moving average of the accepted
/// fraction of each draft, and the draft length it allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acceptance {
    rate: f32,
}

impl Default for Acceptance {
    fn default() -> Self {
        Self { rate: 1.0 }
    }
}

impl Acceptance {
    /// Records a verified draft of `drafted` tokens of which `accepted` were kept.
    pub(crate) fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted > 0 {
            let r = accepted.min(drafted) as f32 / drafted as f32;
            self.rate = 0.7 * self.rate + 0.3 * r;
        }
    }

    /// Draft tokens to propose, out of `k`: all while at least half are accepted, fewer as
    /// acceptance falls, never fewer than one (so a sequence that starts repeating itself is
    /// noticed).
    pub(crate) fn draft_len(&self, k: usize) -> usize {
        ((k as f32 * self.rate * 2.0).ceil() as usize).clamp(1, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_draft_takes_the_longest_suffix_and_its_latest_occurrence() {
        // "1 2 3 9 | 1 2 3 4 5 | 1 2 3": the suffix 1 2 3 occurs at 0 and 4; latest wins.
        let t = [1, 2, 3, 9, 1, 2, 3, 4, 5, 1, 2, 3];
        assert_eq!(ngram_draft(&t, 1, 3, 2), [4, 5]);
        assert_eq!(ngram_draft(&t, 1, 3, 10), [4, 5, 1, 2, 3]);
        // A longer suffix beats a later shorter one: "7 3" matches nowhere, "3" matches.
        let t = [3, 8, 7, 3];
        assert_eq!(ngram_draft(&t, 1, 2, 3), [8, 7, 3]);
        assert_eq!(ngram_draft(&t, 2, 2, 3), Vec::<u32>::new());
        assert!(ngram_draft(&[1], 1, 3, 3).is_empty());
        assert!(ngram_draft(&[1, 2, 3], 1, 3, 3).is_empty());
    }

    #[test]
    fn config_parses_vllm_json_and_refuses_what_it_does_not_build() {
        let c = SpeculativeConfig::from_json(
            r#"{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 3}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            SpeculativeConfig {
                method: SpeculativeMethod::Ngram {
                    prompt_lookup_min: 1,
                    prompt_lookup_max: 3
                },
                num_speculative_tokens: 5,
                disable_by_batch_size: 4
            }
        );
        assert_eq!(c.draft_model_name(), None);
        // No method: n-gram, as before.
        let c = SpeculativeConfig::from_json(r#"{"num_speculative_tokens": 2}"#).unwrap();
        assert_eq!(c, SpeculativeConfig::ngram(2, 4));
        for (bad, word) in [
            (
                r#"{"method": "eagle", "num_speculative_tokens": 3}"#,
                "eagle",
            ),
            (r#"{"method": "ngram"}"#, "num_speculative_tokens"),
            (r#"{"num_speculative_tokens": 3, "foo": 1}"#, "foo"),
            (
                r#"{"num_speculative_tokens": 3, "prompt_lookup_min": 5, "prompt_lookup_max": 2}"#,
                "prompt_lookup_max",
            ),
            (
                r#"{"num_speculative_tokens": -1}"#,
                "num_speculative_tokens",
            ),
            (r#"{"method": 3, "num_speculative_tokens": 1}"#, "method"),
            ("[1]", "object"),
        ] {
            let e = SpeculativeConfig::from_json(bad).unwrap_err();
            assert!(e.contains(word), "{bad}: {e}");
        }
    }

    #[test]
    fn config_parses_draft_model() {
        let c = SpeculativeConfig::from_json(
            r#"{"method": "draft_model", "model": "gemma-3-270m", "num_speculative_tokens": 4,
                "disable_by_batch_size": 8}"#,
        )
        .unwrap();
        assert_eq!(c, SpeculativeConfig::draft_model("gemma-3-270m", 4, 8));
        assert_eq!(c.draft_model_name(), Some("gemma-3-270m"));
        // vLLM infers the method from `model`.
        let c = SpeculativeConfig::from_json(r#"{"model": "d.gguf", "num_speculative_tokens": 2}"#)
            .unwrap();
        assert_eq!(c, SpeculativeConfig::draft_model("d.gguf", 2, 4));
        for (bad, word) in [
            (
                r#"{"method": "draft_model", "num_speculative_tokens": 3}"#,
                "needs \"model\"",
            ),
            (
                r#"{"method": "draft_model", "model": "", "num_speculative_tokens": 3}"#,
                "non-empty string",
            ),
            (
                r#"{"method": "draft_model", "model": 7, "num_speculative_tokens": 3}"#,
                "non-empty string",
            ),
            (
                r#"{"method": "draft_model", "model": "m"}"#,
                "num_speculative_tokens is required",
            ),
            (
                r#"{"method": "draft_model", "model": "m", "num_speculative_tokens": 0}"#,
                "at least 1",
            ),
            (
                r#"{"method": "draft_model", "model": "m", "num_speculative_tokens": 3,
                    "draft_tensor_parallel_size": 1}"#,
                "\"draft_tensor_parallel_size\" is not supported",
            ),
            // The n-gram keys belong to the n-gram method, and `model` to draft_model.
            (
                r#"{"method": "draft_model", "model": "m", "num_speculative_tokens": 3,
                    "prompt_lookup_max": 2}"#,
                "prompt_lookup_max",
            ),
            (
                r#"{"method": "ngram", "model": "m", "num_speculative_tokens": 3}"#,
                "\"model\" is not supported with method \"ngram\"",
            ),
        ] {
            let e = SpeculativeConfig::from_json(bad).unwrap_err();
            assert!(e.contains(word), "{bad}: {e}");
        }
    }

    #[test]
    fn acceptance_backs_off_and_recovers() {
        let mut a = Acceptance::default();
        assert_eq!(a.draft_len(8), 8);
        for _ in 0..10 {
            a.record(8, 0);
        }
        assert_eq!(a.draft_len(8), 1);
        for _ in 0..10 {
            a.record(1, 1);
        }
        assert_eq!(a.draft_len(8), 8);
    }
}
