"""Turns kernels.cu into C++ for the emulator: drops the inline-PTX helpers (the prelude provides
host versions) and makes dynamic shared memory a pointer the emulator hands out."""
import re
import sys

src = open(sys.argv[1]).read()
for name in ["f16_to_f32", "f32_to_f16", "shfl_xor_f32", "shfl_xor_i32"]:
    m = re.search(r"__device__ __forceinline__ \w+ " + name + r"\([^)]*\) \{.*?\n\}\n", src, re.S)
    if not m:
        sys.exit(f"gen.py: helper {name} not found in {sys.argv[1]}")
    src = src[: m.start()] + src[m.end():]
src = re.sub(r"extern __shared__ (\w+) (\w+)\[\];", r"\1* \2 = (\1*)emu_dyn_smem();", src)
if "asm(" in src or "asm volatile" in src:
    sys.exit("gen.py: inline PTX left in the kernels; give it a host version in prelude.hpp")
open(sys.argv[2], "w").write('#include "prelude.hpp"\n' + src)
