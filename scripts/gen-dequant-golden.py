"""Writes the dequantization golden file (see scripts/gen-dequant-golden.sh).

Format, little-endian, one record per type:
  u32 GGUF type id, u32 block count n, u32 block bytes bb, u32 elements per block bs,
  n * bb bytes of blocks, n * bs f32 values (gguf-py's dequantization of those blocks).
Blocks: random bytes with every f16 scale field overwritten by a finite value (random bytes
could be NaN / inf), plus an all-ones block and an all-zero block with the same scales.
"""

import struct
import sys

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize

# Byte offsets of each type's f16 scale fields in a block.
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q5_0: [0],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    # Appended after the others, so that the records above keep their random bytes.
    T.Q4_1: [0, 2],
    T.Q5_1: [0, 2],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
}
BLOCKS = 12


def blocks_of(qtype, rng):
    bs, bb = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(BLOCKS, bb), dtype=np.uint8)
    raw[-2, :] = 0xFF
    raw[-1, :] = 0
    for off in F16_FIELDS[qtype]:
        vals = rng.uniform(-2.0, 2.0, size=BLOCKS).astype(np.float16)
        vals[-2:] = np.float16(0.75)
        raw[:, off : off + 2] = vals.view(np.uint8).reshape(BLOCKS, 2)
    return bs, bb, raw


def main(path):
    rng = np.random.default_rng(20240611)
    out = bytearray()
    for qtype in F16_FIELDS:
        bs, bb, raw = blocks_of(qtype, rng)
        y = dequantize(raw, qtype).astype(np.float32).reshape(-1)
        assert y.size == BLOCKS * bs and np.all(np.isfinite(y))
        out += struct.pack("<4I", int(qtype), BLOCKS, bb, bs)
        out += raw.tobytes()
        out += y.astype("<f4").tobytes()
    with open(path, "wb") as f:
        f.write(out)
    print(f"wrote {path}: {len(out)} bytes, types {[t.name for t in F16_FIELDS]}")


if __name__ == "__main__":
    main(sys.argv[1])
