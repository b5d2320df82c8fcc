#!/usr/bin/env python3
"""Embeddings per second for 512-token inputs: switchyard beside llama-server on the same GGUF,
in one run (a benchmark, not a test).

Each server gets the same closed-loop workload: CONCURRENCY clients, each sending
/v1/embeddings requests of BATCH inputs one after another, every input exactly 512 tokens (token
ids, the same for both servers, BOS first where the model adds one), REQUESTS requests in all,
after a warm-up. Both run with THREADS threads (switchyard `--threads`, llama-server `-t -tb`),
mean pooling, one step / ubatch large enough for the batch. Reports embeddings/s of each, their
ratio, and the cosine of the two servers' vectors for the first input (a sanity check).

usage: bench-embeddings.py [--model gemma-3-270m] [--threads 2] [--concurrency 2]
                           [--batch 4] [--requests 16] [--tokens 512] [--out FILE]
"""

import argparse
import concurrent.futures as cf
import json
import math
import os
import socket
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def post(base, path, body, timeout=900):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(base, proc, path, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + path, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError("server did not come up")


def inputs(base, n, tokens):
    """`n` distinct token-id inputs of exactly `tokens` tokens, from our tokenizer."""
    out = []
    for i in range(n):
        text = " ".join(f"Record {i}-{j}: the river rose {j % 7} metres after the storm." for j in range(120))
        ids = post(base, "/tokenize", {"prompt": text})["tokens"]
        assert len(ids) >= tokens, len(ids)
        out.append(ids[:tokens])
    return out


def run(base, model, data, batch, conc):
    def one(i):
        chunk = [data[(i * batch + k) % len(data)] for k in range(batch)]
        r = post(base, "/v1/embeddings", {"model": model, "input": chunk, "encoding_format": "float"})
        assert len(r["data"]) == batch
        return r["data"][0]["embedding"]

    n = len(data) // batch
    t0 = time.time()
    with cf.ThreadPoolExecutor(conc) as ex:
        vecs = list(ex.map(one, range(n)))
    dt = time.time() - t0
    return {"embeddings": n * batch, "seconds": round(dt, 2), "per_s": round(n * batch / dt, 3)}, vecs[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    binp = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "switchyard")
    cache = os.environ.get("SWITCHYARD_CACHE", os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "switchyard"))
    gguf = os.path.join(cache, "models", f"{a.model}-q4_k_m.gguf")
    lb = subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-llamacpp.sh")],
                        capture_output=True, text=True, check=True).stdout.strip()
    total = a.requests * a.batch
    step = a.batch * a.tokens
    out = {"model": a.model, "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": "),
           "threads": a.threads, "concurrency": a.concurrency, "batch": a.batch, "tokens": a.tokens,
           "embeddings": total,
           "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()}

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    p = subprocess.Popen([binp, "serve", "--no-fetch", "--model", a.model, "--port", str(port),
                          "--threads", str(a.threads), "--pooling", "mean",
                          "--max-num-batched-tokens", str(step), "--max-model-len", str(a.tokens + 64)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "SWITCHYARD_LOG": "warn"})
    try:
        wait_up(base, p, "/ready")
        data = inputs(base, total, a.tokens)
        run(base, a.model, data[: a.batch * 2], a.batch, a.concurrency)  # warm-up
        out["switchyard"], v_sw = run(base, a.model, data, a.batch, a.concurrency)
    finally:
        p.terminate()
        p.wait(timeout=60)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    slots = a.concurrency * a.batch
    p = subprocess.Popen([os.path.join(lb, "llama-server"), "-m", gguf, "--port", str(port), "--host", "127.0.0.1",
                          "--embeddings", "--pooling", "mean", "-t", str(a.threads), "-tb", str(a.threads),
                          "-np", str(slots), "-c", str(slots * (a.tokens + 64)), "-b", str(step), "-ub", str(step)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(base, p, "/health")
        run(base, a.model, data[: a.batch * 2], a.batch, a.concurrency)  # warm-up
        out["llama_server"], v_lc = run(base, a.model, data, a.batch, a.concurrency)
    finally:
        p.terminate()
        p.wait(timeout=60)

    dot = sum(x * y for x, y in zip(v_sw, v_lc))
    out["cosine_first_input"] = round(dot / math.sqrt(sum(x * x for x in v_sw) * sum(y * y for y in v_lc)), 6)
    out["ratio_switchyard_over_llama_server"] = round(out["switchyard"]["per_s"] / out["llama_server"]["per_s"], 3)
    s = json.dumps(out, indent=1)
    print(s)
    if a.out:
        with open(a.out, "w") as f:
            f.write(s + "\n")


if __name__ == "__main__":
    main()
