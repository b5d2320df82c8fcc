#!/usr/bin/env python3
"""Structured outputs under load, beside llama-server, in one run (a benchmark, not a test).

For each server (switchyard, then llama-server on the same GGUF), the same closed-loop workload:
CONCURRENCY streams, each sending chat requests one after another (prompts asking for a JSON
record, max_tokens MAX_TOKENS), first unconstrained then with `response_format: json_schema`
(a typical record schema), after one pass over every prompt with max_tokens 1 so that both
timed passes see the same prompt cache. Reports output tokens/s of each and their ratio, switchyard's mask
time per token (p50 / p99, from its /metrics histograms: computing the mask on a mask worker,
and what sampling waited for it) and compile time of the schema.

usage: bench-structured.py [--model qwen2.5-coder-0.5b-instruct] [--concurrency 16]
                           [--requests 48] [--max-tokens 96] [--threads 2] [--out DIR]
"""

import argparse
import concurrent.futures as cf
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "maxLength": 60},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "age", "email", "tags", "address"],
    "additionalProperties": False,
}


def post(base, path, body, timeout=600):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_up(base, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode})")
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            return
        except Exception:  # noqa: BLE001
            time.sleep(0.5)
    raise RuntimeError("server did not come up")


def run(base, model, n, conc, max_tokens, constrained):
    def one(i):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"Invent person number {i} (name, age, email, tags, address) and give it as JSON."}],
            "max_tokens": max_tokens,
            "temperature": 0.8,
            "seed": i,
        }
        if constrained:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
        r = post(base, "/v1/chat/completions", body)
        text = r["choices"][0]["message"]["content"]
        ok = None
        if constrained:
            try:
                json.loads(text)
                ok = True
            except ValueError:
                ok = r["choices"][0]["finish_reason"] == "length"
        return r["usage"]["completion_tokens"], ok

    t0 = time.time()
    with cf.ThreadPoolExecutor(conc) as ex:
        res = list(ex.map(one, range(n)))
    dt = time.time() - t0
    toks = sum(t for t, _ in res)
    bad = sum(1 for _, ok in res if ok is False)
    return {"requests": n, "output_tokens": toks, "seconds": round(dt, 2), "tok_per_s": round(toks / dt, 2), "invalid": bad}


def histogram(metrics, name):
    buckets = []
    total = count = 0.0
    for line in metrics.splitlines():
        m = re.match(rf'{re.escape(name)}_bucket{{.*le="([^"]+)"}} (\S+)', line)
        if m:
            buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), float(m.group(2))))
        m = re.match(rf"{re.escape(name)}_sum{{.*}} (\S+)", line)
        if m:
            total = float(m.group(1))
        m = re.match(rf"{re.escape(name)}_count{{.*}} (\S+)", line)
        if m:
            count = float(m.group(1))

    def q(p):
        want = p * count
        for le, c in buckets:
            if c >= want:
                return le
        return float("inf")

    return {"count": int(count), "mean_ms": round(1e3 * total / count, 4) if count else None,
            "p50_le_ms": q(0.5) * 1e3 if count else None, "p99_le_ms": q(0.99) * 1e3 if count else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    binp = os.path.join(ROOT, "target", "release", "switchyard")
    cache = os.environ.get("SWITCHYARD_CACHE", os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "switchyard"))
    gguf = os.path.join(cache, "models", f"{a.model}-q4_k_m.gguf")
    lb = subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-llamacpp.sh")], capture_output=True, text=True, check=True).stdout.strip()
    out = {"cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": "),
           "threads": a.threads, "concurrency": a.concurrency, "requests": a.requests, "max_tokens": a.max_tokens,
           "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()}

    port = 8471
    base = f"http://127.0.0.1:{port}"
    p = subprocess.Popen([binp, "serve", "--no-fetch", "--model", a.model, "--port", str(port), "--threads", str(a.threads),
                          "--max-num-seqs", str(a.concurrency)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "SWITCHYARD_LOG": "warn"})
    try:
        wait_up(base, p)
        run(base, a.model, 4, 4, 16, True)  # warm-up (and the schema's compile)
        # Every prompt once, so both timed passes find the same prompts cached (without it the
        # second pass would be the only one to hit the prefix cache).
        run(base, a.model, a.requests, a.concurrency, 1, False)
        sw = {"plain": run(base, a.model, a.requests, a.concurrency, a.max_tokens, False)}
        urllib.request.urlopen(base + "/metrics").read()  # drop warm-up timings
        sw["json_schema"] = run(base, a.model, a.requests, a.concurrency, a.max_tokens, True)
        m = urllib.request.urlopen(base + "/metrics").read().decode()
        sw["mask"] = histogram(m, "switchyard:constraint_mask_seconds")
        sw["mask_wait"] = histogram(m, "switchyard:constraint_mask_wait_seconds")
        # A cold compile of a new schema (a changed bound, so the cache misses).
        s2 = json.loads(json.dumps(SCHEMA))
        s2["properties"]["age"]["maximum"] = 119
        t0 = time.time()
        post(base, "/v1/chat/completions", {"model": a.model, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                                             "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": s2}}})
        sw["cold_request_ms"] = round(1e3 * (time.time() - t0), 1)
        m = urllib.request.urlopen(base + "/metrics").read().decode()
        sw["compile"] = histogram(m, "switchyard:constraint_compile_seconds")
    finally:
        p.terminate()
        p.wait()
    out["switchyard"] = sw
    sw["ratio_json_vs_plain"] = round(sw["json_schema"]["tok_per_s"] / sw["plain"]["tok_per_s"], 3)

    port = 8472
    base = f"http://127.0.0.1:{port}"
    ctx = a.concurrency * 512
    p = subprocess.Popen([os.path.join(lb, "llama-server"), "-m", gguf, "--port", str(port), "-t", str(a.threads), "-np", str(a.concurrency),
                          "-c", str(ctx), "--jinja"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(base, p)
        run(base, a.model, 4, 4, 16, True)
        run(base, a.model, a.requests, a.concurrency, 1, False)  # every prompt once, as above
        ls = {"plain": run(base, a.model, a.requests, a.concurrency, a.max_tokens, False),
              "json_schema": run(base, a.model, a.requests, a.concurrency, a.max_tokens, True)}
    finally:
        p.terminate()
        p.wait()
    ls["ratio_json_vs_plain"] = round(ls["json_schema"]["tok_per_s"] / ls["plain"]["tok_per_s"], 3)
    out["llama_server"] = ls
    out["switchyard_vs_llama_server_json_schema"] = round(sw["json_schema"]["tok_per_s"] / ls["json_schema"]["tok_per_s"], 3)
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "structured.json"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
