#!/usr/bin/env python3
"""Golden embeddings from llama.cpp (the independent reference) for tests/http.rs.

For each (model, pooling) below, starts llama.cpp's `llama-server -m GGUF --embeddings
--pooling P` (built from the pinned sdist by scripts/build-llamacpp.sh) on a loopback port,
asks its /v1/embeddings for the INPUTS (strings, tokenized by llama.cpp with its special tokens,
as ours are), and writes tests/golden/<alias>/embeddings-<pooling>.json:
{"llama_cpp": version, "pooling": P, "inputs": [...], "embeddings": [[...], ...],
 "self_cosine": [...]} (llama-server's vectors with `-fa on`, L2-normalized as it returns them,
rounded to 6 significant digits; `self_cosine`: per input, the cosine between those and the
vectors of the same llama-server with `-fa off`, the reference's own numerical noise, which
the test's tolerance is scaled by where it exceeds 0.001).

    python3 scripts/gen-embedding-golden.py
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SWITCHYARD_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "switchyard"
)
RUNS = [
    ("gemma-3-270m", "mean"),
    ("qwen2.5-coder-0.5b-instruct", "last"),
    ("qwen2.5-coder-0.5b-instruct", "mean"),
]
INPUTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Embeddings map text to vectors.",
    "def add(a, b):\n    return a + b",
    "Le chat est sur la table. 猫はテーブルの上にいます。",
    "hello",
    # Long enough to be computed in several chunks when the step budget is small.
    " ".join(
        f"Sentence number {i} talks about rivers, mountains and the weather in spring."
        for i in range(12)
    ),
]


def manifest_file(alias):
    text = open(os.path.join(ROOT, "models", f"{alias}.toml")).read()
    return re.search(r'^file\s*=\s*"([^"]+)"', text, re.M).group(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5


def run(bin_dir, alias, pooling):
    vecs, version = embed(bin_dir, alias, pooling, "on")
    other, _ = embed(bin_dir, alias, pooling, "off")
    dest = os.path.join(ROOT, "tests", "golden", alias, f"embeddings-{pooling}.json")
    with open(dest, "w") as f:
        json.dump(
            {"llama_cpp": version, "pooling": pooling, "inputs": INPUTS, "embeddings": vecs,
             "self_cosine": [round(cosine(a, b), 7) for a, b in zip(vecs, other)]},
            f,
        )
        f.write("\n")
    print(f"gen-embedding-golden: {dest} ({len(vecs)} x {len(vecs[0])})", file=sys.stderr)


def embed(bin_dir, alias, pooling, fa):
    gguf = os.path.join(CACHE, "models", manifest_file(alias))
    port = free_port()
    p = subprocess.Popen(
        [
            os.path.join(bin_dir, "llama-server"), "-m", gguf, "--embeddings",
            "--pooling", pooling, "--port", str(port), "--host", "127.0.0.1",
            "-c", "4096", "-b", "2048", "-ub", "2048", "-t", "2", "-np", "1", "-fa", fa,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.2)
        else:
            raise RuntimeError("llama-server did not start")
        version = json.loads(urllib.request.urlopen(base + "/props").read()).get("build_info", "")
        vecs = []
        for text in INPUTS:
            out = post(base + "/v1/embeddings", {"input": text, "encoding_format": "float"})
            vecs.append([float(f"{x:.6g}") for x in out["data"][0]["embedding"]])
    finally:
        p.terminate()
        p.wait(timeout=30)
    return vecs, version


def main():
    bin_dir = subprocess.check_output(
        ["bash", os.path.join(ROOT, "scripts", "build-llamacpp.sh")], text=True
    ).strip()
    for alias, pooling in RUNS:
        run(bin_dir, alias, pooling)


if __name__ == "__main__":
    main()
