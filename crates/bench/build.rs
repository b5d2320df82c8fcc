//! Records the git commit for result files (`SWITCHYARD_GIT_COMMIT`).
//!
//! Only `HEAD` and the ref it points to are watched, and only read-only git commands run: a
//! `git status` here would refresh `.git/index`, and watching the index made every build
//! rerun this script (and rebuild the crates after it). Uncommitted changes are therefore not
//! marked; set `SWITCHYARD_GIT_COMMIT` to label such a build.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git").args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SWITCHYARD_GIT_COMMIT");
    if std::env::var_os("SWITCHYARD_GIT_COMMIT").is_none() {
        if let Some(c) = git(&["rev-parse", "HEAD"]) {
            println!("cargo:rustc-env=SWITCHYARD_GIT_COMMIT={c}");
        }
    }
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for p in watch {
        // A missing path would make cargo rerun the script on every build: skip it.
        if let Some(path) = git(&["rev-parse", "--git-path", &p]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
