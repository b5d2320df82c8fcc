#!/usr/bin/env bash
# The Arm NEON kernels on an x86-64 machine: cross-compiles for aarch64-unknown-linux-gnu and runs
# the CPU backend's kernel tests under qemu-user, once as a CPU with the dot-product extension
# (QEMU_CPU=max: levels scalar, neon, neondot) and once without it (cortex-a72: scalar, neon);
# with MODELS=1 also the real-model tests (golden tokens and logits against llama.cpp, batch
# invariance) under emulation, which takes much longer. Then checks that the whole workspace
# builds for aarch64. Installs what it needs (rustup target, Debian's cross gcc and
# qemu-user-static) when missing. On an aarch64 machine plain `cargo test` covers all of this.
set -euo pipefail
cd "$(dirname "$0")/.."
T=aarch64-unknown-linux-gnu
rustup target list --installed | grep -qx "$T" || rustup target add "$T"
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
for cpu in max cortex-a72; do
  echo "== kernel tests under qemu-aarch64, QEMU_CPU=$cpu"
  QEMU_CPU=$cpu cargo test --release --target "$T" -p switchyard-backend-cpu --lib
done
if [ "${MODELS:-0}" = 1 ]; then
  bash scripts/fetch-models.sh
  echo "== real-model tests under qemu-aarch64, QEMU_CPU=max"
  QEMU_CPU=max cargo test --release --target "$T" -p switchyard --test golden --test batched_forward
fi
echo "== cargo check --workspace --all-targets --target $T"
cargo check --workspace --all-targets --target "$T"
