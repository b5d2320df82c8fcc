#!/usr/bin/env python3
"""Writes the speculative-decoding bench workloads (benches/prompts/code-edit.jsonl and
summarize-quotes.jsonl) from a snapshot of small source files and README paragraphs of this
repository. Run once; the JSONL files are committed (so the workloads do not change when the
sources do).

    python3 scripts/gen-spec-prompts.py
"""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EDITS = [
    ("crates/scheduler/src/hash.rs", "Rename the function `hash_block` to `block_hash` everywhere."),
    ("crates/scheduler/src/lib.rs", "Add a line `//! Edited for the benchmark.` at the very top."),
    ("scripts/gpu-libs.sh", "Change every `echo` to `printf '%s\\n'`."),
    ("crates/scheduler/src/hash.rs", "Add a `#[inline]` attribute before each function."),
    ("scripts/clean-test-cache.sh", "Replace `set -euo pipefail` with `set -eu`."),
    ("crates/scheduler/src/lib.rs", "Remove every blank line."),
    ("scripts/check-fresh-build.sh", "Rename the variable used for the cargo command's output to `log`."),
    ("crates/scheduler/src/error.rs", "Change the word `request` to `sequence` in every error message string."),
]


def code_edit():
    out = []
    for path, change in EDITS:
        text = open(os.path.join(ROOT, path)).read()
        lines = text.splitlines()[:70]
        body = "\n".join(lines)
        prompt = (f"Here is the file `{path}`:\n\n```\n{body}\n```\n\n{change} "
                  "Return the whole file with only that change, in one code block, and nothing else.")
        out.append({"prompt": prompt, "output_len": 512})
    return out


def summarize():
    readme = open(os.path.join(ROOT, "README.md")).read()
    arch = open(os.path.join(ROOT, "ARCHITECTURE.md")).read()
    paras = [p.strip() for p in re.split(r"\n\s*\n", readme + "\n\n" + arch)
             if len(p.strip()) > 600 and not p.strip().startswith(("|", "```", "#"))]
    out = []
    for p in paras[:8]:
        prompt = ("Summarise the following passage in three bullet points. Each bullet must quote "
                  "the passage's exact words for its key sentence, in double quotes.\n\n" + p)
        out.append({"prompt": prompt, "output_len": 256})
    return out


def main():
    for name, rows in [("code-edit", code_edit()), ("summarize-quotes", summarize())]:
        path = os.path.join(ROOT, "benches", "prompts", f"{name}.jsonl")
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(path, len(rows))


if __name__ == "__main__":
    main()
