//! Hugging Face Hub repositories (`--model org/name[@revision]`) through the `hf-hub` crate.
//!
//! `hf-hub` 0.4 reads `HF_HOME` (cache in `$HF_HOME/hub`, token file `$HF_HOME/token`) and
//! `HF_ENDPOINT`, but neither `HF_TOKEN` nor `HF_HUB_OFFLINE`, and its cache lookup only follows
//! `refs/<revision>` (a commit hash given as the revision is not found). So, as the Python
//! `huggingface_hub` does: `HF_TOKEN` overrides the token file, `HF_HUB_CACHE` overrides the
//! cache directory, `HF_HUB_OFFLINE=1` (or `--no-fetch`) reads the cache only, and a 40-hex
//! revision is looked up as `snapshots/<hash>` directly.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

/// Errors resolving a Hub repository.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Offline (or `--no-fetch`) and a needed file is not in the cache.
    #[error("{repo}@{revision}: {file} is not in the Hugging Face cache {cache} and downloads are off ({why}); download it first (e.g. `huggingface-cli download {repo}`) or unset HF_HUB_OFFLINE", cache = cache.display())]
    NotCached {
        /// Repository id.
        repo: String,
        /// Revision.
        revision: String,
        /// File.
        file: String,
        /// Cache directory searched.
        cache: PathBuf,
        /// `HF_HUB_OFFLINE=1` or `--no-fetch`.
        why: &'static str,
    },
    /// A download failed.
    #[error("{repo}@{revision}: downloading {file} failed: {reason}")]
    Download {
        /// Repository id.
        repo: String,
        /// Revision.
        revision: String,
        /// File.
        file: String,
        /// Why.
        reason: String,
    },
    /// The repository has no weights we read.
    #[error("{repo}@{revision}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)")]
    NoWeights {
        /// Repository id.
        repo: String,
        /// Revision.
        revision: String,
    },
    /// The shard index does not parse.
    #[error("{path}: not a shard index: {reason}", path = path.display())]
    BadIndex {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Whether `HF_HUB_OFFLINE` asks for cache-only operation (`1`, `true`, `yes`, `on`).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The Hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        Some(p) => Cache::new(PathBuf::from(p)),
        None => Cache::from_env(),
    }
}

/// Splits `org/name[@revision]`; `None` if `s` is not shaped like a repository id.
pub fn parse_repo_id(s: &str) -> Option<(String, Option<String>)> {
    let (repo, rev) = match s.split_once('@') {
        Some((r, v)) if !v.is_empty() => (r, Some(v.to_string())),
        Some(_) => return None,
        None => (s, None),
    };
    let (org, name) = repo.split_once('/')?;
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (ok(org) && ok(name)).then(|| (repo.to_string(), rev))
}

enum Source {
    Cache { cache: Cache, why: &'static str },
    Api(Box<hf_hub::api::sync::ApiRepo>),
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves the files of a model repository into a local snapshot directory (downloading what
/// is missing unless offline) and returns that directory.
pub fn snapshot(
    repo: &str,
    revision: Option<&str>,
    allow_download: bool,
) -> Result<PathBuf, HubError> {
    let revision = revision.unwrap_or("main").to_string();
    let cache = cache();
    let offline = offline_from_env();
    let src = if offline || !allow_download {
        Source::Cache {
            cache: cache.clone(),
            why: if offline {
                "HF_HUB_OFFLINE is set"
            } else {
                "--no-fetch"
            },
        }
    } else {
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        let mut b = hf_hub::api::sync::ApiBuilder::from_env()
            .with_cache_dir(cache.path().clone())
            .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        if token.is_some() {
            b = b.with_token(token);
        }
        let api = b.build().map_err(|e| HubError::Download {
            repo: repo.into(),
            revision: revision.clone(),
            file: "(client)".into(),
            reason: e.to_string(),
        })?;
        Source::Api(Box::new(api.repo(Repo::with_revision(
            repo.into(),
            RepoType::Model,
            revision.clone(),
        ))))
    };
    // Fetches one file; Ok(None) when it does not exist (optional files).
    let get = |file: &str, required: bool| -> Result<Option<PathBuf>, HubError> {
        match &src {
            Source::Cache { cache, why } => {
                let found = if is_commit(&revision) {
                    let p = cache
                        .path()
                        .join(format!("models--{}", repo.replace('/', "--")))
                        .join("snapshots")
                        .join(&revision)
                        .join(file);
                    p.exists().then_some(p)
                } else {
                    cache
                        .repo(Repo::with_revision(
                            repo.into(),
                            RepoType::Model,
                            revision.clone(),
                        ))
                        .get(file)
                };
                match found {
                    Some(p) => Ok(Some(p)),
                    None if !required => Ok(None),
                    None => Err(HubError::NotCached {
                        repo: repo.into(),
                        revision: revision.clone(),
                        file: file.into(),
                        cache: cache.path().clone(),
                        why,
                    }),
                }
            }
            Source::Api(api) => match api.get(file) {
                Ok(p) => Ok(Some(p)),
                Err(hf_hub::api::sync::ApiError::RequestError(e))
                    if !required && matches!(*e, ureq::Error::Status(404, _)) =>
                {
                    Ok(None)
                }
                Err(e) => Err(HubError::Download {
                    repo: repo.into(),
                    revision: revision.clone(),
                    file: file.into(),
                    reason: e.to_string(),
                }),
            },
        }
    };
    let config = get("config.json", true)?.expect("required");
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    get("tokenizer.json", true)?;
    for f in [
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
    ] {
        get(f, false)?;
    }
    if let Some(index) = get("model.safetensors.index.json", false)? {
        let text = std::fs::read_to_string(&index).map_err(|e| HubError::BadIndex {
            path: index.clone(),
            reason: e.to_string(),
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| HubError::BadIndex {
            path: index.clone(),
            reason: e.to_string(),
        })?;
        let map = v
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| HubError::BadIndex {
                path: index.clone(),
                reason: "no weight_map object".into(),
            })?;
        let mut shards: Vec<&str> = map.values().filter_map(serde_json::Value::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        for s in shards {
            get(s, true)?;
        }
    } else if get("model.safetensors", false)?.is_none() {
        return Err(HubError::NoWeights {
            repo: repo.into(),
            revision,
        });
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert_eq!(
            parse_repo_id("Qwen/Qwen2.5-0.5B-Instruct"),
            Some(("Qwen/Qwen2.5-0.5B-Instruct".into(), None))
        );
        assert_eq!(
            parse_repo_id("google/gemma-3-270m@v1.0"),
            Some(("google/gemma-3-270m".into(), Some("v1.0".into())))
        );
        for bad in [
            "gemma-3-270m",
            "a/b/c",
            "./x/y",
            "../x",
            "/abs/path",
            "org/",
            "/name",
            "org/na me",
            "org/name@",
            "x.gguf",
        ] {
            assert_eq!(parse_repo_id(bad), None, "{bad}");
        }
    }
}
