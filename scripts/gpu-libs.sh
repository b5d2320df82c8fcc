# Sourced by scripts/gpu-check.sh and scripts/gpu-real.sh. Here: `test_executables` lists the
# test executables of a cargo build. On a GPU machine: `setup_libs` finds NVRTC and cuBLAS (a
# CUDA toolkit or pip `nvidia-*` wheels) and puts them first on LD_LIBRARY_PATH, so cudarc's
# dynamic loader finds exactly these.

# "<target name> <executable>" for every test executable in the JSON messages of
# `cargo test --no-run --message-format=json-render-diagnostics` (file $1); a library's unit
# tests are named "unit".
test_executables() {
    python3 - "$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        name = m["target"]["name"]
        if "lib" in m["target"]["kind"]:
            name = "unit"
        print(name, m["executable"])
EOF
}

# Directories that may hold NVRTC / cuBLAS, most preferred first.
candidate_dirs() {
    local d sp
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && echo "$d"
    done
    for d in $(ls -d /usr/local/cuda-*/lib64 2>/dev/null | sort -rV); do echo "$d"; done
    for sp in $(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
        for d in "$sp"/nvidia/*/lib; do
            [ -d "$d" ] && echo "$d"
        done
    done
    for d in /usr/lib/x86_64-linux-gnu /usr/lib64; do
        [ -d "$d" ] && echo "$d"
    done
}

# Picks one library file named lib$1.so.<major>... from the candidate dirs, major 12 first (the
# ABI cudarc's bindings were generated for), then any other.
pick_lib() {
    local base=$1 f
    local files
    files=$(for d in $(candidate_dirs); do ls "$d"/lib"$base".so.[0-9]* 2>/dev/null; done | grep -v -e builtins -e '\.alt\.')
    f=$(echo "$files" | grep "lib$base.so.12" | head -1)
    [ -z "$f" ] && f=$(echo "$files" | head -1)
    echo "$f"
}

setup_libs() {
    local shim dirs="" f base
    shim=$(mktemp -d /tmp/switchyard-cuda-libs.XXXX)
    for base in nvrtc cublas cublasLt; do
        f=$(pick_lib "$base")
        if [ -n "$f" ]; then
            echo "lib$base: $f"
            # Unversioned names first in the search path, so cudarc's loader finds exactly these.
            ln -sf "$f" "$shim/lib$base.so"
            dirs="$dirs:$(dirname "$f")"
        else
            echo "lib$base: NOT FOUND"
        fi
    done
    export LD_LIBRARY_PATH="$shim$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldconfig -p 2>/dev/null | grep -m2 'libcuda\.so' || echo "libcuda.so not in the loader cache"
}
