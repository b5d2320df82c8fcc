//! A model's own sampling defaults, as vLLM's `--generation-config auto` reads them: Hugging
//! Face `generation_config.json` (`temperature`, `top_p`, `top_k`, `min_p`,
//! `repetition_penalty`; `do_sample: false` means greedy) or a GGUF's `general.sampling.*` keys
//! (llama.cpp's: `temp`, `top_p`, `top_k`, `min_p`, `penalty_repeat`). A request's own values
//! always win; what neither gives falls back to OpenAI's defaults (temperature 1, top_p 1).

use std::path::Path;

use serde_json::Value as Json;
use switchyard_core::SamplingParams;

use crate::gguf::GgufFile;

/// Sampling defaults a model ships with; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationDefaults {
    /// Temperature (0: greedy).
    pub temperature: Option<f32>,
    /// Nucleus mass.
    pub top_p: Option<f32>,
    /// Top-k (0: off).
    pub top_k: Option<usize>,
    /// Min-p.
    pub min_p: Option<f32>,
    /// Repetition penalty (1: off).
    pub repetition_penalty: Option<f32>,
    /// Where they came from (`generation_config.json`, `GGUF general.sampling`), for logs.
    pub source: Option<String>,
}

impl GenerationDefaults {
    /// From a GGUF's `general.sampling.*` keys.
    pub fn from_gguf(g: &GgufFile) -> Self {
        let f = |k: &str| {
            g.get(&format!("general.sampling.{k}"))
                .and_then(|v| v.as_f64())
                .filter(|x| x.is_finite())
                .map(|x| x as f32)
        };
        let mut d = Self {
            temperature: f("temp").filter(|t| *t >= 0.0),
            top_p: f("top_p").filter(|p| *p > 0.0 && *p <= 1.0),
            top_k: g
                .get("general.sampling.top_k")
                .and_then(|v| v.as_u64())
                .map(|k| k as usize),
            min_p: f("min_p").filter(|p| (0.0..=1.0).contains(p)),
            repetition_penalty: f("penalty_repeat").filter(|p| *p > 0.0),
            source: None,
        };
        if !d.is_empty() {
            d.source = Some("GGUF general.sampling".into());
        }
        d
    }

    /// From a parsed `generation_config.json`.
    pub fn from_hf_json(v: &Json) -> Self {
        let f = |k: &str| v.get(k).and_then(Json::as_f64).map(|x| x as f32);
        let mut d = Self {
            temperature: f("temperature").filter(|t| t.is_finite() && *t >= 0.0),
            top_p: f("top_p").filter(|p| *p > 0.0 && *p <= 1.0),
            top_k: v.get("top_k").and_then(Json::as_u64).map(|k| k as usize),
            min_p: f("min_p").filter(|p| (0.0..=1.0).contains(p)),
            repetition_penalty: f("repetition_penalty").filter(|p| p.is_finite() && *p > 0.0),
            source: None,
        };
        // Transformers' meaning: `do_sample: false` decodes greedily whatever the temperature.
        if v.get("do_sample").and_then(Json::as_bool) == Some(false) {
            d.temperature = Some(0.0);
        }
        if !d.is_empty() {
            d.source = Some("generation_config.json".into());
        }
        d
    }

    /// From `dir/generation_config.json`, if there is one (an unreadable one counts as none).
    pub fn from_hf_dir(dir: &Path) -> Self {
        std::fs::read(dir.join("generation_config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
            .map(|v| Self::from_hf_json(&v))
            .unwrap_or_default()
    }

    /// Whether the model gives no default at all.
    pub fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.min_p.is_none()
            && self.repetition_penalty.is_none()
    }

    /// The sampling a request starts from before its own fields: OpenAI's defaults
    /// (temperature 1, top_p 1, nothing else) with these on top.
    pub fn base_params(&self) -> SamplingParams {
        let mut s = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            ..SamplingParams::default()
        };
        if let Some(t) = self.temperature {
            s.temperature = t;
        }
        if let Some(p) = self.top_p {
            s.top_p = p;
        }
        if let Some(k) = self.top_k {
            s.top_k = k;
        }
        if let Some(p) = self.min_p {
            s.min_p = p;
        }
        if let Some(p) = self.repetition_penalty {
            s.repetition_penalty = p;
        }
        s
    }

    /// A one-line description for logs and `info`.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "none (OpenAI defaults: temperature 1, top_p 1)".into();
        }
        let mut parts = Vec::new();
        if let Some(t) = self.temperature {
            parts.push(format!("temperature {t}"));
        }
        if let Some(p) = self.top_p {
            parts.push(format!("top_p {p}"));
        }
        if let Some(k) = self.top_k {
            parts.push(format!("top_k {k}"));
        }
        if let Some(p) = self.min_p {
            parts.push(format!("min_p {p}"));
        }
        if let Some(p) = self.repetition_penalty {
            parts.push(format!("repetition_penalty {p}"));
        }
        format!(
            "{} (from {})",
            parts.join(", "),
            self.source.as_deref().unwrap_or("the model")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hf_generation_config() {
        let d = GenerationDefaults::from_hf_json(&json!({
            "do_sample": true, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
            "repetition_penalty": 1.05, "eos_token_id": [1, 2]
        }));
        assert_eq!(d.temperature, Some(0.7));
        assert_eq!(d.top_p, Some(0.8));
        assert_eq!(d.top_k, Some(20));
        assert_eq!(d.repetition_penalty, Some(1.05));
        assert_eq!(d.min_p, None);
        let s = d.base_params();
        assert_eq!((s.temperature, s.top_p, s.top_k), (0.7, 0.8, 20));
        assert_eq!(s.min_p, 0.0);
        // do_sample false: greedy whatever the temperature says.
        let g = GenerationDefaults::from_hf_json(&json!({"do_sample": false, "temperature": 0.6}));
        assert_eq!(g.base_params().temperature, 0.0);
        // Nothing given: OpenAI's defaults.
        let none = GenerationDefaults::from_hf_json(&json!({"eos_token_id": 2}));
        assert!(none.is_empty());
        let s = none.base_params();
        assert_eq!((s.temperature, s.top_p, s.top_k), (1.0, 1.0, 0));
        // Out-of-range values are not taken.
        let bad = GenerationDefaults::from_hf_json(&json!({"temperature": -1, "top_p": 0}));
        assert!(bad.is_empty());
    }
}
