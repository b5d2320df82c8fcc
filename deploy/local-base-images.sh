#!/usr/bin/env bash
# Offline stand-ins for the public base images, for machines whose Docker daemon cannot reach
# Docker Hub (see deploy/BUILD-NOTES.md). Builds, from the Debian archive and the local Rust
# toolchain only:
#   debian:bookworm-slim   - `debootstrap --variant=minbase bookworm`, imported
#   rust:1-slim-bookworm   - the above + gcc/libc6-dev/ca-certificates + the host's stable
#                            toolchain (rustc, cargo, std) laid out like the official image
#                            (CARGO_HOME=/usr/local/cargo, RUSTUP_HOME=/usr/local/rustup)
# so that `docker build -f Dockerfile.cpu .` runs unchanged. Never use these for a release.
# EXTRA_CA_DIR: a folder of *.crt CA certificates to trust inside both images (a TLS-inspecting
# proxy in front of the Debian/crates.io/PyPI mirrors); installed under
# /usr/local/share/ca-certificates, where `ca-certificates` picks them up.
# Usage: [EXTRA_CA_DIR=dir] deploy/local-base-images.sh   (root; needs debootstrap, docker)
set -euo pipefail
WORK="${WORK:-/tmp/switchyard-base-images}"
TOOLCHAIN="${TOOLCHAIN:-$(rustc --print sysroot)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$WORK"
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  rootfs="$WORK/rootfs"
  [ -x "$rootfs/bin/bash" ] || debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  if [ -n "${EXTRA_CA_DIR:-}" ]; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp "$EXTRA_CA_DIR"/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' - debian:bookworm-slim
fi
if ! docker image inspect rust:1-slim-bookworm >/dev/null 2>&1; then
  ctx="$WORK/rust"
  rm -rf "$ctx"; mkdir -p "$ctx/toolchain"
  # rustc, cargo and the x86_64 std only (no docs, sources, clippy).
  cp -a "$TOOLCHAIN/bin" "$TOOLCHAIN/lib" "$TOOLCHAIN/libexec" "$ctx/toolchain/" 2>/dev/null || true
  rm -rf "$ctx/toolchain/lib/rustlib/src" "$ctx/toolchain/lib/rustlib/"*/analysis
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rustup/toolchains/stable
RUN mkdir -p /usr/local/cargo/bin \
    && for b in cargo rustc rustdoc; do \
         ln -s /usr/local/rustup/toolchains/stable/bin/$b /usr/local/cargo/bin/$b; done
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rustc --version && cargo --version
DOCKERFILE
  docker build --network host -t rust:1-slim-bookworm "$ctx"
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian|rust):'
