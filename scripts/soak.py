#!/usr/bin/env python3
"""Soak test: mixed traffic against a real `switchyard serve` for a bounded time.

Starts the release binary on a free loopback port with the default model, then runs worker
threads that each loop over a random mix of requests until the time is up:

  short      non-streaming completion, greedy, 16 tokens (the latency probe)
  stream     streaming completion read to the end (with usage)
  disconnect streaming completion, the client hangs up after a few events
  abandon    non-streaming completion, the client hangs up before the answer
  long       a ~1000-token prompt, 8 tokens out
  n          n = 3 sampled completions with a seed
  chat       a streaming chat completion
  bad        an invalid request (expects a 400 in OpenAI's error shape)
  oversized  announces a 64 MiB body and sends 64 KiB (expects 413 at once, before the body)
  slowbody   sends the headers and half the body, then stalls (expects 408 after the body timeout)
  slowheader trickles header lines (expects the server to close the connection)
  toomany    n above --max-seqs-per-request (expects a 400 naming the limit)

Traffic pauses three times (after warm-up, at the middle, at the end) until the server is idle,
and each time the script records resident memory, open file descriptors, KV blocks in use and
running sequences: these must stay flat (no leaked blocks, memory or descriptors). Between the
pauses it samples the same every few seconds (the curve). The p99 latency of the probe is
reported per third of the run (drift).

    python3 scripts/soak.py [--bin target/release/switchyard] [--duration 600] [--workers 12]
                            [--json benches/results/soak.json]

Exits non-zero on any 5xx, any unexpected status, a connection error on a request that was not
abandoned on purpose, KV blocks or running sequences left at an idle pause, descriptors that
grow, or resident memory that grows more than --max-rss-growth-mib between the middle and the
end pause.
"""

import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORDS = (
    "river stone market window garden engine lantern harbor pencil mountain violet copper "
    "thunder silver meadow orchard canvas ember glacier compass"
).split()


def log(*a):
    print("[soak]", *a, file=sys.stderr, flush=True)


class Server:
    def __init__(self, binary, args):
        self.p = subprocess.Popen(
            [binary, "serve", "--no-fetch", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SWITCHYARD_LOG": "warn"},
        )
        deadline = time.time() + 180
        self.host = self.port = None
        while time.time() < deadline:
            line = self.p.stderr.readline()
            if not line:
                break
            m = re.search(r"on http://([\d.]+):(\d+)", line)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                break
        if self.port is None:
            self.p.kill()
            raise SystemExit("soak: the server did not start")
        threading.Thread(target=lambda: [None for _ in self.p.stderr], daemon=True).start()

    def conn(self, timeout=120):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path):
        c = self.conn(10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode()
        finally:
            c.close()

    def metrics(self):
        _, body = self.get("/metrics")
        out = {}
        for line in body.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            name = re.sub(r"\{.*\}", "", name)
            try:
                out[name.removeprefix("switchyard:")] = out.get(
                    name.removeprefix("switchyard:"), 0.0
                ) + float(value)
            except ValueError:
                pass
        return out

    def rss_mib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def fds(self):
        return len(os.listdir(f"/proc/{self.p.pid}/fd"))

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = {}  # (kind, outcome) -> n
        self.probe = []  # (t, latency s)
        self.failures = []
        self.failed = 0

    def add(self, kind, outcome, ok=True, note=""):
        with self.lock:
            self.count[(kind, outcome)] = self.count.get((kind, outcome), 0) + 1
            self.failed += 0 if ok else 1
            if not ok and len(self.failures) < 50:
                self.failures.append(f"{kind}: {outcome} {note[:300]}")


def prompt(rng, n_words):
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def post(server, path, body, timeout=120):
    c = server.conn(timeout)
    try:
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def is_openai_error(text):
    try:
        e = json.loads(text)["error"]
        return isinstance(e["message"], str) and isinstance(e["type"], str)
    except (ValueError, KeyError, TypeError):
        return False


def one_request(server, stats, rng, kind, model, t0):
    if kind == "short":
        body = {"model": model, "prompt": "The capital of France is", "max_tokens": 16,
                "temperature": 0}
        start = time.time()
        st, text = post(server, "/v1/completions", body)
        if st == 200:
            stats.probe.append((start - t0, time.time() - start))
        expect_ok(stats, kind, st, text)
    elif kind in ("stream", "chat"):
        if kind == "stream":
            path = "/v1/completions"
            body = {"model": model, "prompt": prompt(rng, rng.randint(4, 60)),
                    "max_tokens": rng.randint(8, 64), "stream": True,
                    "stream_options": {"include_usage": True},
                    "temperature": 0.8, "seed": rng.randint(0, 1 << 30)}
        else:
            path = "/v1/chat/completions"
            body = {"model": model, "stream": True, "max_tokens": rng.randint(8, 48),
                    "messages": [{"role": "user", "content": prompt(rng, rng.randint(3, 30))}]}
        c = server.conn()
        try:
            c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                expect_ok(stats, kind, r.status, r.read().decode(errors="replace"))
                return
            done = False
            for raw in r:
                line = raw.decode(errors="replace").strip()
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"error"' in line[:20]:
                    stats.add(kind, "stream error event", False, line)
                    return
            stats.add(kind, "200" if done else "200 without [DONE]", done)
        finally:
            c.close()
    elif kind == "disconnect":
        body = {"model": model, "prompt": prompt(rng, rng.randint(4, 40)), "max_tokens": 200,
                "stream": True, "ignore_eos": True}
        c = server.conn()
        try:
            c.request("POST", "/v1/completions", json.dumps(body),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            want = rng.randint(1, 6)
            seen = 0
            for raw in r:
                if raw.startswith(b"data: "):
                    seen += 1
                    if seen >= want:
                        break
            stats.add(kind, f"{r.status}, hung up after {seen} events", r.status == 200)
        finally:
            c.sock and c.sock.shutdown(socket.SHUT_RDWR)
            c.close()
    elif kind == "abandon":
        body = {"model": model, "prompt": prompt(rng, 20), "max_tokens": 200, "ignore_eos": True}
        c = server.conn(timeout=rng.uniform(0.2, 1.5))
        try:
            c.request("POST", "/v1/completions", json.dumps(body),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            stats.add(kind, f"{r.status} before the hang-up", r.status == 200)
        except (TimeoutError, socket.timeout):
            stats.add(kind, "hung up")
        finally:
            c.close()
    elif kind == "long":
        body = {"model": model, "prompt": prompt(rng, 1000), "max_tokens": 8, "temperature": 0}
        st, text = post(server, "/v1/completions", body)
        expect_ok(stats, kind, st, text)
    elif kind == "n":
        body = {"model": model, "prompt": prompt(rng, rng.randint(4, 40)), "max_tokens": 24,
                "n": 3, "temperature": 1.0, "seed": rng.randint(0, 1 << 30)}
        st, text = post(server, "/v1/completions", body)
        if st == 200 and len(json.loads(text)["choices"]) != 3:
            stats.add(kind, "200 with the wrong number of choices", False, text)
            return
        expect_ok(stats, kind, st, text)
    elif kind == "bad":
        body = rng.choice([
            {"model": model, "prompt": "x", "max_tokens": -1},
            {"model": model, "prompt": "x", "temperature": "hot"},
            {"model": model, "prompt": "x", "best_of": 2, "n": 1, "frobnicate": 1},
            {"model": model, "messages": "not a list"},
        ])
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        st, text = post(server, path, body)
        ok = st == 400 and is_openai_error(text)
        stats.add(kind, str(st), ok, text)


def raw_exchange(server, data, stall, timeout=30):
    """Sends `data` on a fresh connection, stays silent for `stall` seconds (or trickles when
    `stall` is a list of byte strings, one each 0.3 s), and returns what the server answered
    (b"" if it closed the connection without an answer)."""
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    try:
        sock.sendall(data)
        if isinstance(stall, list):
            for piece in stall:
                time.sleep(0.3)
                try:
                    sock.sendall(piece)
                except OSError:
                    break
        out = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out and len(out) > 200:
                    break
        except OSError:
            pass
        return out
    finally:
        sock.close()


def slow_client(server, stats, rng, kind, model):
    if kind == "oversized":
        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 67108864\r\n\r\n")
        start = time.time()
        out = raw_exchange(server, head + b" " * 65536, 0)
        took = time.time() - start
        ok = out.startswith(b"HTTP/1.1 413") and took < 2.0
        when = "within 2 s" if took < 2.0 else f"after {took:.1f} s"
        stats.add(kind, f"{out[:12].decode(errors='replace')} {when}", ok, out[:300])
    elif kind == "slowbody":
        body = json.dumps({"model": model, "prompt": "hello", "max_tokens": 1}).encode()
        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        out = raw_exchange(server, head + body[: len(body) // 2], 0)
        stats.add(kind, out[:12].decode(errors="replace") or "closed",
                  out.startswith(b"HTTP/1.1 408"), out[:300])
    elif kind == "slowheader":
        pieces = [b"X-Pad-%d: y\r\n" % i for i in range(60)]
        out = raw_exchange(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n", pieces)
        # Closed (no answer) or a 408: never a request served from a trickle.
        ok = out == b"" or out.startswith(b"HTTP/1.1 408")
        stats.add(kind, out[:12].decode(errors="replace") or "closed", ok, out[:300])
    elif kind == "toomany":
        body = {"model": model, "prompt": ["a", "b", "c"], "n": 30, "max_tokens": 1}
        st, text = post(server, "/v1/completions", body)
        ok = st == 400 and "--max-seqs-per-request" in text
        stats.add(kind, str(st), ok, text)


def expect_ok(stats, kind, st, text):
    if st == 200:
        stats.add(kind, "200")
    elif st == 429 and is_openai_error(text):
        stats.add(kind, "429 (admission limit)")  # back-pressure, counted, not a failure
    else:
        stats.add(kind, str(st), False, text)


MIX = [("short", 4), ("stream", 4), ("disconnect", 2), ("abandon", 1), ("long", 1), ("n", 2),
       ("chat", 2), ("bad", 1), ("oversized", 1), ("slowbody", 1), ("slowheader", 1),
       ("toomany", 1)]
SLOW_KINDS = ("oversized", "slowbody", "slowheader", "toomany")


BUSY = {"n": 0}
BUSY_LOCK = threading.Lock()


def busy(delta):
    with BUSY_LOCK:
        BUSY["n"] += delta


def worker(server, stats, seed, model, t0, stop, paused, mix):
    rng = random.Random(seed)
    kinds = [k for k, w in mix for _ in range(w)]
    while not stop.is_set():
        if paused.is_set():
            time.sleep(0.05)
            continue
        kind = rng.choice(kinds)
        busy(1)
        try:
            if kind in SLOW_KINDS:
                slow_client(server, stats, rng, kind, model)
            else:
                one_request(server, stats, rng, kind, model, t0)
        except (OSError, http.client.HTTPException) as e:
            stats.add(kind, f"connection error {type(e).__name__}", False, str(e))
        finally:
            busy(-1)


def snapshot(server, t0, label):
    m = server.metrics()
    used = m.get("kv_cache_num_blocks", 0) - m.get("kv_cache_free_blocks", 0)
    return {"label": label, "t": round(time.time() - t0, 1), "rss_mib": round(server.rss_mib(), 1),
            "fds": server.fds(), "kv_blocks_used": int(used),
            "running": int(m.get("num_requests_running", 0)),
            "waiting": int(m.get("num_requests_waiting", 0)),
            "preemptions": int(m.get("num_preemptions_total", 0))}


def wait_idle(server, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = server.metrics()
        if m.get("num_requests_running", 1) == 0 and m.get("num_requests_waiting", 1) == 0:
            time.sleep(0.5)  # let dropped connections finish closing
            return True
        time.sleep(0.2)
    return False


def p99(xs):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "switchyard"))
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--sample-every", type=float, default=5)
    ap.add_argument("--max-rss-growth-mib", type=float, default=32)
    ap.add_argument("--kv-cache-memory", default="32MiB",
                    help="a small pool: every block is touched during warm-up (the CPU backend's "
                    "pool is lazily paged in, so a large one makes resident memory creep up as "
                    "new blocks are first used) and bursts preempt")
    ap.add_argument("--json")
    ap.add_argument("server_args", nargs="*", help="extra `serve` arguments (after --)")
    a = ap.parse_args()

    # Short client timeouts, so the slow clients in the mix are cut off within the run.
    server = Server(a.bin, ["--model", a.model, "--max-num-seqs", "16",
                            "--kv-cache-memory", a.kv_cache_memory,
                            "--header-read-timeout", "2", "--body-read-timeout", "2",
                            "--max-seqs-per-request", "64", *a.server_args])
    st, text = post(server, "/v1/chat/completions",
                    {"model": a.model, "max_tokens": 1, "messages": [{"role": "user",
                                                                      "content": "hi"}]})
    mix = MIX
    if st == 400 and "no chat template" in text:
        log(f"{a.model} has no chat template: no chat requests in the mix")
        mix = [(k, w) for k, w in MIX if k != "chat"]
    stats = Stats()
    stop, paused = threading.Event(), threading.Event()
    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(server, stats, 1000 + i, a.model, t0, stop,
                                                       paused, mix), daemon=True)
               for i in range(a.workers)]
    for t in threads:
        t.start()
    curve, pauses = [], []
    problems = []

    def pause(label):
        paused.set()
        # Every worker between requests first (a slow client holds its connection for seconds).
        deadline = time.time() + 60
        while BUSY["n"] > 0 and time.time() < deadline:
            time.sleep(0.05)
        if not wait_idle(server):
            problems.append(f"{label}: the server did not become idle within 60 s")
        s = snapshot(server, t0, label)
        pauses.append(s)
        curve.append(s)
        log(s)
        if s["kv_blocks_used"] != 0 or s["running"] != 0 or s["waiting"] != 0:
            problems.append(f"{label}: not idle: {s}")
        paused.clear()

    warm = min(30.0, a.duration / 6)
    marks = [(warm, "start"), (warm + (a.duration - warm) / 2, "middle")]
    next_sample = time.time() + a.sample_every
    try:
        while time.time() - t0 < a.duration:
            time.sleep(0.2)
            el = time.time() - t0
            if marks and el >= marks[0][0]:
                pause(marks.pop(0)[1])
            elif time.time() >= next_sample:
                s = snapshot(server, t0, "")
                curve.append(s)
                next_sample = time.time() + a.sample_every
        stop.set()
        for t in threads:
            t.join(timeout=180)
        pause("end")
        ready = server.get("/ready")[0]
    finally:
        server.stop()

    start, middle, end = pauses[0], pauses[1], pauses[-1]
    if end["fds"] > start["fds"] + 2:
        problems.append(f"file descriptors grew: {start['fds']} -> {end['fds']}")
    if end["rss_mib"] - middle["rss_mib"] > a.max_rss_growth_mib:
        problems.append(f"resident memory grew {middle['rss_mib']} -> {end['rss_mib']} MiB "
                        "in the second half")
    if ready != 200:
        problems.append(f"/ready answered {ready} at the end")
    # Every outcome was judged where it was recorded (expected statuses per kind).
    failures = stats.failed
    if failures:
        problems.append(f"{failures} failed requests: {stats.failures[:10]}")

    probe = stats.probe
    thirds = []
    for i in range(3):
        lo, hi = a.duration * i / 3, a.duration * (i + 1) / 3
        xs = [l for t, l in probe if lo <= t < hi]
        thirds.append({"third": i + 1, "requests": len(xs), "p50_s": round(sorted(xs)[len(xs) // 2], 3) if xs else None,
                       "p99_s": round(p99(xs), 3) if xs else None})
    total = sum(stats.count.values())
    by_outcome = {f"{k} {o}": n for (k, o), n in sorted(stats.count.items())}
    result = {"duration_s": a.duration, "workers": a.workers, "model": a.model,
              "requests": total, "outcomes": by_outcome, "pauses": pauses,
              "probe_latency_by_third": thirds, "curve": curve, "problems": problems}
    print(f"soak: {total} requests in {a.duration:.0f} s with {a.workers} workers")
    for k, n in by_outcome.items():
        print(f"  {k:45s} {n}")
    print("  idle pauses (rss MiB / fds / KV blocks used / preemptions so far):")
    for p in pauses:
        print(f"    {p['label']:7s} t={p['t']:7.1f}s  {p['rss_mib']:8.1f}  {p['fds']:4d}  "
              f"{p['kv_blocks_used']:4d}  {p['preemptions']}")
    print("  probe latency by third (requests, p50 s, p99 s):",
          ", ".join(f"{t['requests']}/{t['p50_s']}/{t['p99_s']}" for t in thirds))
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    if problems:
        for p in problems:
            print("soak: FAIL:", p)
        sys.exit(1)
    print("soak: ok")


if __name__ == "__main__":
    main()
