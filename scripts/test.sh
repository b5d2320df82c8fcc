#!/usr/bin/env bash
# The full test suite (the README's test command; .ci/run calls it).
# Fetches and verifies the real models, builds their Hugging Face-format copies, runs every test
# of the workspace, then drives the server with the official `openai` Python client (from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
bash scripts/fetch-models.sh
# Hugging Face-format copies of the models for tests/hf.rs (converted once, cached, stamped).
bash scripts/build-hf-test-models.sh
cargo test --workspace --release "$@"
BIN="${CARGO_TARGET_DIR:-target}/release/switchyard"
"$PY" -m pip install --quiet --disable-pip-version-check "openai==3.54.0"
"$PY" tests/openai_client.py "$BIN"
# API property tests against the server's own OpenAPI document (schemathesis, seeded).
bash scripts/schemathesis.sh "$BIN"
# Soak: mixed traffic (streaming, disconnects, abandoned requests, n > 1, long prompts, bad input)
# for a bounded time; fails on any 5xx, leaked KV blocks or descriptors, or growing memory.
"$PY" scripts/soak.py --bin "$BIN" --duration "${SOAK_SECONDS:-90}" --workers 8
# Deployment files (Dockerfiles + scripts/build-release.sh, Kubernetes overlays) against the binary.
"$PY" -m pip install --quiet --disable-pip-version-check "PyYAML>=6"
"$PY" tests/deploy_test.py "$BIN"
