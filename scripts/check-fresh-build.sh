#!/usr/bin/env bash
# Run after a build (scripts/test.sh runs it after `cargo test --workspace --release`): the same
# build again must find every unit fresh (cargo -v says "Fresh" for each, "Compiling" or
# "Running" for work it does). A build script that watches a file the build itself touches (as
# crates/bench/build.rs once watched `.git/index`) fails this.
# Usage: scripts/check-fresh-build.sh [cargo subcommand and args, default: test --workspace --release --no-run]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- test --workspace --release --no-run
out="$(cargo "$@" -v 2>&1)"
if grep -E '^\s*(Compiling|Running) ' <<<"$out"; then
  echo "check-fresh-build: 'cargo $*' of an unchanged tree did work (above)" >&2
  exit 1
fi
echo "check-fresh-build: 'cargo $*': $(grep -cE '^\s*Fresh ' <<<"$out") units fresh, none rebuilt"
