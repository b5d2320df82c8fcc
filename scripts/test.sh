#!/usr/bin/env bash
# The full test suite (the README's test command; .ci/run calls it).
# Fetches and verifies the real models, builds their Hugging Face-format copies, runs every test
# of the workspace, then drives the server with the official `openai` Python client (from PyPI).
# Python tools go into the project's virtual environment (.venv, scripts/pyenv.sh), never into
# the system's Python. What it downloads, and how to remove it: README ("The test command").
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { echo "== test.sh: $1 ($(date +%T), ${SECONDS}s so far)" >&2; }
stage "python environment"
PY="$(bash scripts/pyenv.sh)"
stage "models"
bash scripts/fetch-models.sh
# Hugging Face-format copies of the models for tests/hf.rs (converted once, cached, stamped).
bash scripts/build-hf-test-models.sh
bash scripts/fetch-vocabs.sh >/dev/null  # llama.cpp's test vocabularies (runtime/tests/vocab_vectors.rs)
# Random-weight models of every architecture we claim, around real vocabularies, for tests/arch.rs.
bash scripts/build-arch-models.sh >/dev/null
stage "cargo test"
cargo test --workspace --release "$@"
# A second build of an unchanged tree does no work (nothing watches files that builds touch).
bash scripts/check-fresh-build.sh test --workspace --release --no-run
BIN="${CARGO_TARGET_DIR:-target}/release/switchyard"
stage "openai client"
"$PY" tests/openai_client.py "$BIN"
# lm-evaluation-harness (PyPI lm_eval) with local-completions + tokenizer_backend=remote: a tiny
# loglikelihood task and a tiny generation task over local JSONL files, checked against the server.
# Agent-facing APIs with their own PyPI clients: openai `responses.create` (plain, streaming,
# function-tool round trip, previous_response_id, text.format) and anthropic `messages.create` /
# `.stream` / `.count_tokens` (text and a tool round trip), bad input in each API's error shape.
stage "agent clients (responses, messages)"
"$PY" tests/agent_clients.py "$BIN"
stage "lm-eval remote tokenizer"
"$PY" tests/lm_eval_remote.py "$BIN"
# Structured outputs: 50+ JSON schemas on both models validated with PyPI jsonschema, parse(),
# regex / choice / grammar, unconstrained neighbours unchanged, bad constraints 400.
stage "structured outputs"
"$PY" tests/structured_outputs.py "$BIN"
# The built-in chat page and dashboard in headless Chromium (Debian's chromium + chromium-driver,
# driven by PyPI selenium): streaming, Stop, untrusted output as text, API key, --no-webui.
stage "web UI (headless chromium)"
"$PY" tests/webui.py "$BIN"
# API property tests against the server's own OpenAPI document (schemathesis, seeded).
stage "schemathesis"
PYTHON="$PY" bash scripts/schemathesis.sh "$BIN"
# Soak: mixed traffic (streaming, disconnects, abandoned requests, n > 1, long prompts, bad input)
# for a bounded time; fails on any 5xx, leaked KV blocks or descriptors, or growing memory.
stage "soak"
"$PY" scripts/soak.py --bin "$BIN" --duration "${SOAK_SECONDS:-90}" --workers 8
# Deployment files (Dockerfiles + scripts/build-release.sh, Kubernetes overlays) against the binary.
stage "deploy checks"
"$PY" tests/deploy_test.py "$BIN"
stage "done"
