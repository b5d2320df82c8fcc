#!/usr/bin/env bash
# Runs the CUDA backend's tests on the CPU against an emulated GPU: a fake libcuda/libcublas
# (fake_cuda.cpp) that executes kernels.cu compiled as C++, with the real NVRTC from the
# nvidia-cuda-nvrtc-cu12 wheel. It checks the kernels' logic and the backend's orchestration
# end to end (kernel tests, CPU parity, batch invariance); it says nothing about speed, real
# cuBLAS, the real driver or the GPU memory model. Needs g++ (C++20) and python3 with pip.
#
#   crates/backend-cuda/emulator/run.sh [cargo test args, e.g. --test kernels] [-- test args]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
BUILD="$ROOT/target/cuda-emulator"
mkdir -p "$BUILD/lib"
python3 "$HERE/gen.py" "$HERE/../src/kernels.cu" "$BUILD/kernels_emu.cpp"
cp "$HERE/prelude.hpp" "$HERE/fake_cuda.cpp" "$BUILD/"
g++ -O2 -g -std=c++20 -shared -fPIC -Wall -Wno-unknown-pragmas -Wno-unused-function \
    -Wl,--version-script="$HERE/exports.map" -static-libstdc++ -static-libgcc \
    -o "$BUILD/libfakecuda.so" "$BUILD/fake_cuda.cpp"
for name in libcuda.so libcuda.so.1 libcublas.so; do ln -sf ../libfakecuda.so "$BUILD/lib/$name"; done
NVRTC_DIR=$(ls -d "$BUILD"/venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib 2>/dev/null | head -1 || true)
if [ -z "$NVRTC_DIR" ]; then
    python3 -m venv "$BUILD/venv"
    "$BUILD/venv/bin/pip" install -q "nvidia-cuda-nvrtc-cu12==12.9.86"
    NVRTC_DIR=$(ls -d "$BUILD"/venv/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib | head -1)
fi
export LD_LIBRARY_PATH="$BUILD/lib:$NVRTC_DIR"
export SWITCHYARD_CACHE="$BUILD/cache"
cd "$ROOT"
# Arguments before `--` go to cargo, after it to the test executables (e.g. `-- --skip long`).
cargo_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do cargo_args+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
cargo test -p switchyard-backend-cuda --release "${cargo_args[@]}" -- --nocapture --test-threads=1 "$@"
