//! What a model says about its embeddings: how token states are pooled (GGUF
//! `{arch}.pooling_type`, sentence-transformers' `1_Pooling/config.json`) and whether its
//! vectors may be truncated (Matryoshka: `config.json`'s `is_matryoshka` /
//! `matryoshka_dimensions`, as vLLM reads them).

use std::path::Path;

use crate::gguf::GgufFile;

/// How an embedding pools the final hidden states (after the output norm) of its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over every token.
    Mean,
    /// The last token (decoder embedding models such as Qwen3-Embedding).
    Last,
    /// The first token.
    Cls,
}

impl Pooling {
    /// `mean`, `last` or `cls`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" => Some(Self::Mean),
            "last" => Some(Self::Last),
            "cls" => Some(Self::Cls),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Last => "last",
            Self::Cls => "cls",
        }
    }
}

/// Which `dimensions` an embedding request may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Matryoshka {
    /// None: the model was not trained for truncated vectors.
    #[default]
    No,
    /// Any size up to the hidden size.
    Any,
    /// Only these sizes.
    Dims(Vec<usize>),
}

/// A model's embedding facts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmbeddingDefaults {
    /// The pooling the model declares; `None`: not declared (the server then pools the mean).
    pub pooling: Option<Pooling>,
    /// Truncation the model allows.
    pub matryoshka: Matryoshka,
}

impl EmbeddingDefaults {
    /// From GGUF metadata: `{arch}.pooling_type` (llama.cpp's numbering: 1 mean, 2 cls,
    /// 3 last). GGUF has no Matryoshka key.
    pub fn from_gguf(g: &GgufFile) -> Self {
        let pooling = g
            .architecture()
            .and_then(|a| g.get(&format!("{a}.pooling_type")))
            .and_then(|v| v.as_u64())
            .and_then(|t| match t {
                1 => Some(Pooling::Mean),
                2 => Some(Pooling::Cls),
                3 => Some(Pooling::Last),
                _ => None,
            });
        Self {
            pooling,
            matryoshka: Matryoshka::No,
        }
    }

    /// From a Hugging Face directory: the sentence-transformers pooling module named in
    /// `modules.json` (default `1_Pooling`), and `config.json`'s Matryoshka keys. Missing or
    /// malformed files declare nothing.
    pub fn from_hf_dir(dir: &Path) -> Self {
        let json = |p: &Path| -> Option<serde_json::Value> {
            serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
        };
        let pool_dir = json(&dir.join("modules.json"))
            .and_then(|m| {
                m.as_array()?.iter().find_map(|e| {
                    let ty = e.get("type")?.as_str()?;
                    ty.ends_with("Pooling")
                        .then(|| e.get("path")?.as_str().map(str::to_string))
                        .flatten()
                })
            })
            .unwrap_or_else(|| "1_Pooling".into());
        let pooling = json(&dir.join(pool_dir).join("config.json")).and_then(|c| {
            let on = |k: &str| c.get(k).and_then(serde_json::Value::as_bool) == Some(true);
            if on("pooling_mode_lasttoken") {
                Some(Pooling::Last)
            } else if on("pooling_mode_cls_token") {
                Some(Pooling::Cls)
            } else if on("pooling_mode_mean_tokens") {
                Some(Pooling::Mean)
            } else {
                None
            }
        });
        let cfg = json(&dir.join("config.json"));
        let matryoshka = match cfg.as_ref().and_then(|c| c.get("matryoshka_dimensions")) {
            Some(serde_json::Value::Array(a)) => Matryoshka::Dims(
                a.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect(),
            ),
            _ if cfg
                .as_ref()
                .and_then(|c| c.get("is_matryoshka"))
                .and_then(serde_json::Value::as_bool)
                == Some(true) =>
            {
                Matryoshka::Any
            }
            _ => Matryoshka::No,
        };
        Self {
            pooling,
            matryoshka,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_dir_pooling_and_matryoshka() {
        let d = std::env::temp_dir().join(format!("sy-pooling-{}", std::process::id()));
        std::fs::create_dir_all(d.join("pool")).unwrap();
        assert_eq!(
            EmbeddingDefaults::from_hf_dir(&d),
            EmbeddingDefaults::default()
        );
        std::fs::write(
            d.join("modules.json"),
            r#"[{"idx":0,"path":"","type":"sentence_transformers.models.Transformer"},
               {"idx":1,"path":"pool","type":"sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        std::fs::write(
            d.join("pool/config.json"),
            r#"{"pooling_mode_mean_tokens": false, "pooling_mode_lasttoken": true}"#,
        )
        .unwrap();
        std::fs::write(d.join("config.json"), r#"{"is_matryoshka": true}"#).unwrap();
        let e = EmbeddingDefaults::from_hf_dir(&d);
        assert_eq!(e.pooling, Some(Pooling::Last));
        assert_eq!(e.matryoshka, Matryoshka::Any);
        std::fs::write(
            d.join("config.json"),
            r#"{"matryoshka_dimensions": [64, 128]}"#,
        )
        .unwrap();
        assert_eq!(
            EmbeddingDefaults::from_hf_dir(&d).matryoshka,
            Matryoshka::Dims(vec![64, 128])
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names_round_trip() {
        for p in [Pooling::Mean, Pooling::Last, Pooling::Cls] {
            assert_eq!(Pooling::parse(p.name()), Some(p));
        }
        assert_eq!(Pooling::parse("max"), None);
    }
}
