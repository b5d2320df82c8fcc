#!/usr/bin/env bash
# The full test suite (the README's test command; .ci/run calls it).
# Fetches and verifies the real models, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
cargo test --workspace --release "$@"
