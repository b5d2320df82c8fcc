"""Drive `switchyard serve` with the official `openai` Python package.

Starts the release binary on free loopback ports (Gemma for completions, Qwen for chat) and
checks completions, chat, streaming, n > 1, logprobs, a tool-call round trip, and that the client raises the right
error classes. Run by scripts/test.sh after `cargo test` (which builds the binary):

    python3 tests/openai_client.py [path/to/switchyard]
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "switchyard")
GEMMA = "gemma-3-270m"
QWEN = "qwen2.5-coder-0.5b-instruct"


class Server:
    def __init__(self, model, *args):
        self.p = subprocess.Popen(
            [BIN, "serve", "--no-fetch", "--port", "0", "--model", model, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SWITCHYARD_LOG": "warn"},
        )
        deadline = time.time() + 120
        self.base = None
        while time.time() < deadline:
            line = self.p.stderr.readline()
            if not line:
                break
            sys.stderr.write("[server] " + line)
            m = re.search(r"on (http://\S+)", line)
            if m:
                self.base = m.group(1)
                break
        if self.base is None:
            self.p.kill()
            raise RuntimeError(f"server for {model} did not start")
        # Keep draining stderr so the pipe never fills.
        threading.Thread(target=lambda: [None for _ in self.p.stderr], daemon=True).start()

    def client(self, api_key="none"):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=api_key, max_retries=0)

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


def expect(exc, fn):
    try:
        fn()
    except exc as e:
        return e
    raise AssertionError(f"expected {exc.__name__}")


def completions(s):
    c = s.client()
    # Greedy on request: the default follows the model (else OpenAI's temperature 1).
    r = c.completions.create(model=GEMMA, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text, r
    assert r.usage.completion_tokens == 8 and r.choices[0].finish_reason == "length", r
    text = r.choices[0].text
    # Streaming gives the same greedy text; the usage chunk comes last.
    chunks = list(
        c.completions.create(
            model=GEMMA,
            prompt="The capital of France is",
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == text
    assert chunks[-1].usage.completion_tokens == 8
    # n > 1 with a seed; logprobs.
    r = c.completions.create(
        model=GEMMA, prompt="Once upon a time", max_tokens=4, n=3, temperature=1.0, seed=5, logprobs=2
    )
    assert [ch.index for ch in r.choices] == [0, 1, 2], r
    for ch in r.choices:
        assert len(ch.logprobs.tokens) == 4 and len(ch.logprobs.top_logprobs[0]) == 2, ch
    # Extensions pass through extra_body.
    r = c.completions.create(
        model=GEMMA, prompt="Hi", max_tokens=5, extra_body={"ignore_eos": True, "top_k": 1, "min_tokens": 5}
    )
    assert r.usage.completion_tokens == 5
    # Error classes.
    e = expect(openai.BadRequestError, lambda: c.completions.create(model=GEMMA, prompt="x", suffix="y"))
    assert e.body["param"] == "suffix", e.body
    expect(openai.BadRequestError, lambda: c.completions.create(model=GEMMA, prompt="x", temperature=-3))
    expect(openai.BadRequestError, lambda: c.completions.create(model=GEMMA, prompt="x", max_tokens=10**6))
    expect(openai.NotFoundError, lambda: c.completions.create(model="gpt-5", prompt="x"))
    models = c.models.list()
    assert [m.id for m in models.data] == [GEMMA]
    print("completions: ok")


def auth(s):
    e = expect(
        openai.AuthenticationError,
        lambda: s.client("wrong").completions.create(model=GEMMA, prompt="x", max_tokens=1),
    )
    assert e.status_code == 401
    r = s.client("key-1").completions.create(model=GEMMA, prompt="x", max_tokens=1)
    assert r.usage.completion_tokens == 1
    print("auth: ok")


def rate_limit(s):
    c = s.client()
    stream = c.completions.create(
        model=GEMMA, prompt="Once", max_tokens=1000, stream=True, extra_body={"ignore_eos": True}
    )
    next(iter(stream))  # the only slot is taken
    e = expect(openai.RateLimitError, lambda: c.completions.create(model=GEMMA, prompt="x", max_tokens=1))
    assert e.status_code == 429 and e.response.headers.get("retry-after"), e
    stream.close()
    print("rate limit: ok")


def chat(s):
    c = s.client()
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
    r = c.chat.completions.create(model=QWEN, messages=msgs, max_tokens=16, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant", r
    text = r.choices[0].message.content
    assert text, r
    chunks = list(c.chat.completions.create(model=QWEN, messages=msgs, max_tokens=16, temperature=0, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
    # The role comes with the first generated text, not in an empty chunk before it.
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content, chunks[0]
    r = c.chat.completions.create(
        model=QWEN, messages=msgs, max_completion_tokens=4, n=2, seed=3, temperature=0.7, logprobs=True, top_logprobs=3
    )
    assert len(r.choices) == 2
    lp = r.choices[0].logprobs.content
    assert lp and len(lp[0].top_logprobs) == 3, r
    expect(openai.BadRequestError, lambda: c.chat.completions.create(
        model=QWEN, messages=msgs, tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]))
    expect(openai.BadRequestError, lambda: c.chat.completions.create(model=QWEN, messages=[]))
    print("chat: ok")


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}


def tools(s):
    """A tool round trip as an agent framework runs it: the model calls get_weather (the 0.5B
    model does so on its own for this question), the client sends the call back with the tool's
    result, and the model answers. At temperature 0; the final step adds a user turn asking for
    the answer, without which this small model repeats the call."""
    c = s.client()
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = c.chat.completions.create(model=QWEN, messages=msgs, tools=[WEATHER], temperature=0, max_tokens=100)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None, r
    (call,) = ch.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather", r
    assert json.loads(call.function.arguments) == {"city": "Paris"}, call
    # Streamed, reassembled by index as clients do: the same call.
    calls = {}
    content = ""
    finish = None
    for chunk in c.chat.completions.create(model=QWEN, messages=msgs, tools=[WEATHER], temperature=0,
                                           max_tokens=100, stream=True):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            e = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            e["id"] = tc.id or e["id"]
            if tc.function:
                e["name"] = tc.function.name or e["name"]
                e["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert content == "" and finish == "tool_calls", (content, finish)
    assert list(calls) == [0] and calls[0]["name"] == "get_weather", calls
    assert calls[0]["arguments"] == call.function.arguments and calls[0]["id"].startswith("call_"), calls
    # The call and its result go back; the model answers from the result.
    msgs.append(ch.message.model_dump(exclude_none=True))
    msgs.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 18, "sky": "sunny"})})
    msgs.append({"role": "user", "content": "Now answer my question in one sentence."})
    r = c.chat.completions.create(model=QWEN, messages=msgs, tools=[WEATHER], temperature=0, max_tokens=60)
    ch = r.choices[0]
    assert ch.finish_reason == "stop" and not ch.message.tool_calls, r
    assert "18" in ch.message.content and "sunny" in ch.message.content.lower(), r
    streamed = "".join(
        x.choices[0].delta.content or ""
        for x in c.chat.completions.create(model=QWEN, messages=msgs, tools=[WEATHER], temperature=0,
                                           max_tokens=60, stream=True)
        if x.choices)
    assert streamed == ch.message.content, (streamed, ch.message.content)
    # A tool result that answers no call, and a tool_choice naming an unknown function: 400.
    expect(openai.BadRequestError, lambda: c.chat.completions.create(
        model=QWEN, messages=[msgs[0], {"role": "tool", "tool_call_id": "call_x", "content": "1"}], tools=[WEATHER]))
    expect(openai.BadRequestError, lambda: c.chat.completions.create(
        model=QWEN, messages=msgs[:1], tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}))
    print("tools: ok")


def main():
    s = Server(GEMMA)
    try:
        completions(s)
    finally:
        s.stop()
    s = Server(GEMMA, "--api-key", "key-1")
    try:
        auth(s)
    finally:
        s.stop()
    s = Server(GEMMA, "--max-num-seqs", "1", "--max-queued-requests", "0")
    try:
        rate_limit(s)
    finally:
        s.stop()
    s = Server(QWEN)
    try:
        chat(s)
        tools(s)
    finally:
        s.stop()
    print("openai client tests: all passed")


if __name__ == "__main__":
    main()
