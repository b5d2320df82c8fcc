"""Helpers shared by the scripts that write GGUF test and benchmark models with gguf-py."""
import gguf


def copy_tokenizer(w, src):
    """Copies every `tokenizer.*` metadata entry of GGUFReader `src` into GGUFWriter `w`."""
    for name, field in src.fields.items():
        if not name.startswith("tokenizer."):
            continue
        v, t = field.contents(), field.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            w.add_array(name, v)
        elif t == gguf.GGUFValueType.STRING:
            w.add_string(name, v)
        elif t == gguf.GGUFValueType.BOOL:
            w.add_bool(name, v)
        elif t == gguf.GGUFValueType.FLOAT32:
            w.add_float32(name, v)
        else:
            w.add_uint32(name, int(v))
