#!/usr/bin/env bash
# Builds the release binary exactly as CI and both container images do, and copies it into
# OUT_DIR (default: dist/). One binary serves CPUs and GPUs: the CUDA libraries are loaded at run
# time, and CPU SIMD paths are picked at run time (no target-cpu=native), so the same build runs
# on any x86-64 CPU; on arm64 the scalar kernels serve.
# Usage: scripts/build-release.sh [OUT_DIR]
# Extra cargo flags: CARGO_BUILD_FLAGS (e.g. "--offline").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-dist}"
# shellcheck disable=SC2086
cargo build --release --locked -p switchyard ${CARGO_BUILD_FLAGS:-}
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
mkdir -p "$OUT_DIR"
install -m 0755 "$TARGET_DIR/release/switchyard" "$OUT_DIR/switchyard"
echo "build-release: $OUT_DIR/switchyard ($("$OUT_DIR/switchyard" --version))"
