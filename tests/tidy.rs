//! House rules as a test (in the spirit of rust-analyzer's `tidy.rs`): the layering between
//! crates, where `unsafe` may appear and how it is justified, the size of source files, and
//! debugging macros left in library code. Each failure names the file (and line) and the rule.
//! Needs no model and no network (`cargo metadata --offline --no-deps`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Workspace crates and their normal and build dependencies on other workspace crates
/// (dev-dependencies are for tests: the CUDA backend's parity tests use the CPU backend).
fn layering() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let packages = v["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|d| names.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

const BACKENDS: [&str; 3] = [
    "switchyard-backend-cpu",
    "switchyard-backend-cuda",
    "switchyard-backend-neuron",
];

/// The violations of the layering in `deps` (crate -> its workspace dependencies).
fn layering_violations(deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut forbidden: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "switchyard-http",
            [&BACKENDS[..], &["switchyard-scheduler"]].concat(),
            "HTTP talks to the engine handle only, never to a backend or the scheduler",
        ),
        (
            "switchyard-scheduler",
            [&BACKENDS[..], &["switchyard-runtime", "switchyard-http"]].concat(),
            "the scheduler is pure bookkeeping: no runtime, no backend",
        ),
        (
            "switchyard-bench",
            [&BACKENDS[..], &["switchyard-scheduler", "switchyard-http"]].concat(),
            "bench measures servers over HTTP and never runs a model",
        ),
        (
            "switchyard-core",
            deps.keys().map(String::as_str).collect(),
            "core is the bottom layer",
        ),
    ];
    for b in BACKENDS {
        let others: Vec<&str> = BACKENDS.iter().copied().filter(|o| *o != b).collect();
        forbidden.push((
            b,
            [
                &others[..],
                &[
                    "switchyard-runtime",
                    "switchyard-scheduler",
                    "switchyard-http",
                ],
            ]
            .concat(),
            "a backend sees only core: not the runtime, the scheduler, HTTP or another backend",
        ));
    }
    let mut v = Vec::new();
    for (krate, banned, why) in forbidden {
        for d in deps.get(krate).into_iter().flatten() {
            if banned.contains(&d.as_str()) && d != krate {
                v.push(format!(
                    "{krate} depends on {d}: {why} (ARCHITECTURE.md, code map)"
                ));
            }
        }
    }
    v
}

/// Non-test Rust sources of the workspace's crates: `crates/*/src/**.rs` except `tests.rs`
/// files and `tests/` directories.
fn sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("crates")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if !matches!(name.as_str(), "tests" | "target" | "benches" | "emulator") {
                    stack.push(p);
                }
            } else if name.ends_with(".rs")
                && name != "tests.rs"
                && p.components().any(|c| c.as_os_str() == "src")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// The code of a line: without a trailing `//` comment (a `//` inside a string literal is
/// rare enough in this code base to ignore) and empty for comment lines.
fn code(line: &str) -> &str {
    let t = line.trim_start();
    if t.starts_with("//") {
        return "";
    }
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Lines of `text` up to its `#[cfg(test)] mod tests` (unit tests may print and need no
/// SAFETY argument for test-only code... they are held to the same rules anyway, except
/// printing).
fn non_test_part(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

const UNSAFE_CRATES: [&str; 4] = [
    "crates/backend-cpu/",
    "crates/backend-cuda/",
    "crates/backend-neuron/",
    "crates/neuron-fake/",
];
/// The one documented exception (ARCHITECTURE.md, invariants): the read-only model mmap.
const UNSAFE_EXCEPTIONS: [&str; 1] = ["crates/runtime/src/mmap.rs"];

fn has_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

/// `unsafe` outside the backend crates, or an `unsafe` block or impl without a `// SAFETY:`
/// comment in the lines just above it.
fn unsafe_violations(files: &[(String, String)]) -> Vec<String> {
    let mut v = Vec::new();
    for (path, text) in files {
        let lines: Vec<&str> = text.lines().collect();
        let allowed = UNSAFE_CRATES.iter().any(|c| path.starts_with(c))
            || UNSAFE_EXCEPTIONS.contains(&path.as_str());
        for (i, line) in lines.iter().enumerate() {
            let c = code(line);
            if !has_word(c, "unsafe") {
                continue;
            }
            if !allowed {
                v.push(format!(
                    "{path}:{}: `unsafe` outside the backend crates (only they, and the model \
                     mmap, may use it)",
                    i + 1
                ));
                continue;
            }
            // `unsafe fn` / `unsafe extern` declarations carry a `# Safety` doc instead, and
            // `unsafe_op_in_unsafe_fn` makes every use inside one a block of its own.
            let is_block_or_impl = c.contains("unsafe {") || c.contains("unsafe impl");
            if !is_block_or_impl {
                continue;
            }
            let justified = lines[i.saturating_sub(12)..=i]
                .iter()
                .any(|l| l.contains("SAFETY:"));
            if !justified {
                v.push(format!(
                    "{path}:{}: `unsafe` block without a `// SAFETY:` comment above it",
                    i + 1
                ));
            }
        }
    }
    v
}

const MAX_LINES: usize = 1000;

fn size_violations(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter(|(_, t)| t.lines().count() > MAX_LINES)
        .map(|(p, t)| {
            format!(
                "{p}: {} lines, over {MAX_LINES}: split it by concept",
                t.lines().count()
            )
        })
        .collect()
}

/// The binary, and the `bench` command's front end, print to the terminal by design.
const PRINTING_ALLOWED: [&str; 2] = ["crates/switchyard/src/", "crates/bench/src/cli.rs"];

fn macro_violations(files: &[(String, String)]) -> Vec<String> {
    let mut v = Vec::new();
    for (path, text) in files {
        let printing_ok = PRINTING_ALLOWED.iter().any(|a| path.starts_with(a));
        for (i, line) in non_test_part(text).lines().enumerate() {
            let c = code(line);
            for m in ["dbg!", "todo!", "println!"] {
                if m == "println!" && printing_ok {
                    continue;
                }
                if c.match_indices(m).any(|(j, _)| {
                    !c[..j]
                        .chars()
                        .next_back()
                        .is_some_and(|ch| ch.is_alphanumeric() || ch == '_')
                }) {
                    v.push(format!(
                        "{path}:{}: `{m}` in library code (use `tracing`, or return the value)",
                        i + 1
                    ));
                }
            }
        }
    }
    v
}

fn read_sources() -> Vec<(String, String)> {
    sources()
        .into_iter()
        .map(|p| (rel(&p), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

#[test]
fn tidy() {
    let files = read_sources();
    assert!(files.len() > 50, "found only {} source files", files.len());
    let deps = layering();
    assert!(
        deps.len() >= 9,
        "cargo metadata listed {} crates",
        deps.len()
    );
    let mut problems = layering_violations(&deps);
    problems.extend(unsafe_violations(&files));
    problems.extend(size_violations(&files));
    problems.extend(macro_violations(&files));
    assert!(
        problems.is_empty(),
        "tidy: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// Each rule catches what it is meant to (so a passing `tidy` means something).
#[test]
fn tidy_rules_catch_violations() {
    let mut deps = BTreeMap::new();
    deps.insert(
        "switchyard-http".to_string(),
        BTreeSet::from(["switchyard-scheduler".to_string()]),
    );
    deps.insert(
        "switchyard-backend-cpu".to_string(),
        BTreeSet::from(["switchyard-runtime".to_string()]),
    );
    deps.insert(
        "switchyard-bench".to_string(),
        BTreeSet::from(["switchyard-runtime".to_string()]),
    );
    let v = layering_violations(&deps);
    assert_eq!(v.len(), 2, "{v:?}");
    let f = |p: &str, t: &str| vec![(p.to_string(), t.to_string())];
    assert_eq!(
        unsafe_violations(&f("crates/http/src/x.rs", "let a = unsafe { f() };")).len(),
        1
    );
    assert_eq!(
        unsafe_violations(&f("crates/backend-cpu/src/x.rs", "let a = unsafe { f() };")).len(),
        1
    );
    assert!(unsafe_violations(&f(
        "crates/backend-cpu/src/x.rs",
        "// SAFETY: f has no preconditions.\nlet a = unsafe { f() };"
    ))
    .is_empty());
    assert!(unsafe_violations(&f(
        "crates/http/src/x.rs",
        "// unsafe in a comment\nlet unsafe_x = 1;"
    ))
    .is_empty());
    assert_eq!(
        size_violations(&f("crates/http/src/x.rs", &"a\n".repeat(1001))).len(),
        1
    );
    assert_eq!(
        macro_violations(&f("crates/http/src/x.rs", "fn f() { dbg!(1); todo!() }")).len(),
        2
    );
    assert!(macro_violations(&f("crates/switchyard/src/main.rs", "println!(\"hi\");")).is_empty());
    assert!(
        macro_violations(&f("crates/http/src/x.rs", "eprintln!(\"x\"); // println!")).is_empty()
    );
}
