"""Drive `switchyard serve` with the clients coding agents use: `openai` (the Responses API,
`client.responses.create`) and `anthropic` (`client.messages.create` / `.stream` /
`.count_tokens`), both from PyPI, against the real Qwen2.5-Coder-0.5B-Instruct (its chat
template renders tools; the hermes parser reads its calls).

Checks the answer shapes, the streamed event order, function / tool round trips (arguments
validated against the tool's JSON schema), `previous_response_id` (the earlier turn is in the
prompt: the model answers from it and the input token count grows), `store: false` and store
eviction (404), `text.format` JSON schemas, `x-api-key`, and each API's error shape and status.
Run by scripts/test.sh after `cargo test` (which builds the binary):

    python3 tests/agent_clients.py [path/to/switchyard]
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import anthropic
import jsonschema
import openai

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "switchyard")
QWEN = "qwen2.5-coder-0.5b-instruct"

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}
WEATHER_RESULT = '{"temperature_c": 18, "sky": "sunny"}'
FOLLOW_UP = "Now answer my question in one sentence."
# anthropic 2.x's `messages.create` has no sampling arguments (older clients and raw requests
# send them; the server takes `temperature`, `top_p`, `top_k`): greedy through the body.
GREEDY = {"temperature": 0}


class Server:
    def __init__(self, *args):
        self.p = subprocess.Popen(
            [BIN, "serve", "--no-fetch", "--port", "0", "--model", QWEN, "--tool-call-parser", "hermes", *args],
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
            raise RuntimeError("server did not start")
        threading.Thread(target=lambda: [None for _ in self.p.stderr], daemon=True).start()

    def openai(self, api_key="none"):
        return openai.OpenAI(base_url=self.base + "/v1", api_key=api_key, max_retries=0)

    def anthropic(self, api_key="none"):
        return anthropic.Anthropic(base_url=self.base, api_key=api_key, max_retries=0)

    def post(self, path, body, headers=None):
        """A raw POST: (status, parsed JSON body)."""
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=60)


def expect(exc, fn):
    try:
        fn()
    except exc as e:
        return e
    raise AssertionError(f"expected {exc.__name__}")


def openai_error(e, status, param):
    """An OpenAI-shaped error with `status` naming `param`."""
    body = e.response.json()
    assert e.status_code == status, (e.status_code, body)
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, body
    assert err["param"] == param and err["message"], body
    return err


def anthropic_error(status, body, kind, needle):
    """An Anthropic-shaped error body: {"type": "error", "error": {"type": kind, "message"}}."""
    assert body["type"] == "error" and set(body) == {"type", "error"}, body
    assert body["error"]["type"] == kind, body
    assert needle in body["error"]["message"], (needle, body)


# --- OpenAI Responses API ---------------------------------------------------------------------


def responses_plain_and_stream(s):
    c = s.openai()
    q = "What is the capital of France? Answer with one word."
    r = c.responses.create(model=QWEN, input=q, max_output_tokens=16, temperature=0, metadata={"run": "1"}, user="u1")
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed", r
    assert r.model == QWEN and r.metadata == {"run": "1"} and r.user == "u1" and r.max_output_tokens == 16, r
    assert len(r.output) == 1 and r.output[0].type == "message" and r.output[0].role == "assistant", r
    assert r.output[0].content[0].type == "output_text", r
    assert "Paris" in r.output_text, r.output_text
    u = r.usage
    assert u.input_tokens > 10 and 0 < u.output_tokens <= 16 and u.total_tokens == u.input_tokens + u.output_tokens, u
    # The prompt is the chat template's rendering of the user message; `instructions` become
    # the system message (in place of Qwen's default one), and are echoed.
    assert s.post("/tokenize", {"messages": [{"role": "user", "content": q}]})[1]["count"] == u.input_tokens
    sys_msg = "You are a geography teacher who answers tersely."
    ri = c.responses.create(model=QWEN, input=q, instructions=sys_msg, max_output_tokens=16, temperature=0)
    assert ri.instructions == sys_msg, ri
    n = s.post("/tokenize", {"messages": [{"role": "system", "content": sys_msg}, {"role": "user", "content": q}]})[1]["count"]
    assert ri.usage.input_tokens == n != u.input_tokens, (ri.usage, n, u)
    # Cut at max_output_tokens: incomplete, with the reason.
    ri = c.responses.create(model=QWEN, input="Write a long poem about the sea.", max_output_tokens=3, temperature=0)
    assert ri.status == "incomplete" and ri.incomplete_details.reason == "max_output_tokens", ri
    assert ri.usage.output_tokens == 3 and ri.output[0].status == "incomplete", ri
    # Streaming: the documented event order, numbered from 0, the same greedy text.
    events = list(c.responses.create(model=QWEN, input=q, max_output_tokens=16, temperature=0, stream=True))
    types = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events))), types
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    n = len(deltas)
    assert n >= 1 and types == (
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
        + ["response.output_text.delta"] * n
        + ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    ), types
    assert events[0].response.status == "in_progress" and events[0].response.output == [], events[0]
    done = events[-4]
    assert "".join(deltas) == done.text == r.output_text, (deltas, done.text, r.output_text)
    final = events[-1].response
    assert final.status == "completed" and final.output_text == r.output_text and final.usage.output_tokens == u.output_tokens
    item_id = events[2].item.id
    assert all(e.item_id == item_id for e in events if hasattr(e, "item_id")), events
    assert final.output[0].id == item_id, final
    # The SDK's stream helper accumulates the events into the same response.
    with c.responses.stream(model=QWEN, input=q, max_output_tokens=16, temperature=0) as st:
        text = "".join(e.delta for e in st if e.type == "response.output_text.delta")
        acc = st.get_final_response()
    assert text == acc.output_text == r.output_text and acc.status == "completed" and acc.id.startswith("resp_"), acc
    print(f"responses: plain, instructions, incomplete, stream ({len(events)} events), stream helper ok")


def responses_conversation(s):
    c = s.openai()
    r1 = c.responses.create(model=QWEN, input="My name is Zanzibar Quill. Just say hello to me.", max_output_tokens=30, temperature=0)
    r2 = c.responses.create(model=QWEN, previous_response_id=r1.id, input="What is my name? Answer with my name only.",
                            max_output_tokens=10, temperature=0)
    assert r2.previous_response_id == r1.id
    assert "Zanzibar" in r2.output_text, r2.output_text
    # The earlier turn (question and answer) is in the prompt.
    assert r2.usage.input_tokens > r1.usage.input_tokens + r1.usage.output_tokens, (r1.usage, r2.usage)
    # Without the history the model cannot know.
    alone = c.responses.create(model=QWEN, input="What is my name? Answer with my name only.", max_output_tokens=10, temperature=0)
    assert "Zanzibar" not in alone.output_text and alone.usage.input_tokens < r2.usage.input_tokens, alone
    # Stored: retrievable; deleted: gone.
    got = c.responses.retrieve(r1.id)
    assert got.id == r1.id and got.output_text == r1.output_text, got
    # store: false is never kept.
    r3 = c.responses.create(model=QWEN, input="hi", max_output_tokens=2, store=False)
    assert r3.store is False
    e = expect(openai.NotFoundError, lambda: c.responses.create(model=QWEN, previous_response_id=r3.id, input="x"))
    openai_error(e, 404, "previous_response_id")
    e = expect(openai.NotFoundError, lambda: c.responses.retrieve(r3.id))
    openai_error(e, 404, "response_id")
    c.responses.delete(r2.id)
    e = expect(openai.NotFoundError, lambda: c.responses.retrieve(r2.id))
    print("responses: previous_response_id, retrieve, store=false, delete ok")


def responses_tools(s):
    c = s.openai()
    tools = [{"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
              "parameters": WEATHER_SCHEMA}]
    q = {"role": "user", "content": "What is the weather in Paris?"}
    r = c.responses.create(model=QWEN, input=[q], tools=tools, temperature=0, max_output_tokens=100)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and r.status == "completed", r.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id.startswith("fc_"), call
    args = json.loads(call.arguments)
    jsonschema.validate(args, WEATHER_SCHEMA)
    assert args["city"] == "Paris", args
    assert r.tools[0].name == "get_weather" and r.tool_choice == "auto", r
    # Streamed: the call as an item with its argument events.
    events = list(c.responses.create(model=QWEN, input=[q], tools=tools, temperature=0, max_output_tokens=100, stream=True))
    types = [e.type for e in events]
    i = types.index("response.function_call_arguments.delta")
    assert types[i - 1] == "response.output_item.added" and events[i - 1].item.type == "function_call", types
    assert types[i + 1: i + 3] == ["response.function_call_arguments.done", "response.output_item.done"], types
    assert json.loads(events[i + 1].arguments) == args and events[i + 2].item.name == "get_weather"
    assert types[-1] == "response.completed", types
    with c.responses.stream(model=QWEN, input=[q], tools=tools, temperature=0, max_output_tokens=100) as st:
        acc = st.get_final_response()
    sc = [o for o in acc.output if o.type == "function_call"]
    assert len(sc) == 1 and json.loads(sc[0].arguments) == args, acc.output
    # The round trip by resending the items: the model answers from the tool's result.
    output = {"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_RESULT}
    items = [q] + [o.model_dump(exclude_none=True) for o in r.output] + [output, {"role": "user", "content": FOLLOW_UP}]
    a = c.responses.create(model=QWEN, input=items, tools=tools, temperature=0, max_output_tokens=60)
    text = a.output_text
    assert a.output[0].type == "message" and "18" in text and "sunny" in text.lower(), text
    # The same with previous_response_id: only the result and the follow-up are sent.
    b = c.responses.create(model=QWEN, previous_response_id=r.id, input=[output, {"role": "user", "content": FOLLOW_UP}],
                           tools=tools, temperature=0, max_output_tokens=60)
    assert b.output_text == text, (b.output_text, text)
    assert b.usage.input_tokens == a.usage.input_tokens, (a.usage, b.usage)
    # A forced call, even for a prompt that needs none, has arguments valid under the schema.
    f = c.responses.create(model=QWEN, input="Say hello.", tools=tools, temperature=0, max_output_tokens=60,
                           tool_choice={"type": "function", "name": "get_weather"})
    fc = [o for o in f.output if o.type == "function_call"]
    assert len(fc) == 1, f.output
    jsonschema.validate(json.loads(fc[0].arguments), WEATHER_SCHEMA)
    print("responses: function call, streamed call, round trip (items and previous_response_id), forced call ok")


def responses_text_format(s):
    c = s.openai()
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = c.responses.create(model=QWEN, input="Invent a person.", max_output_tokens=60, temperature=0,
                           text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}})
    person = json.loads(r.output_text)
    jsonschema.validate(person, schema)
    assert r.text.format.type == "json_schema" and r.text.format.name == "person", r.text
    # Streamed too: the joined deltas are the JSON.
    events = list(c.responses.create(model=QWEN, input="Invent a person.", max_output_tokens=60, temperature=0, stream=True,
                                     text={"format": {"type": "json_schema", "name": "person", "schema": schema}}))
    jsonschema.validate(json.loads("".join(e.delta for e in events if e.type == "response.output_text.delta")), schema)
    j = c.responses.create(model=QWEN, input="List two colours as JSON.", max_output_tokens=60, temperature=0,
                           text={"format": {"type": "json_object"}})
    assert isinstance(json.loads(j.output_text), dict), j.output_text
    print("responses: text.format json_schema (plain and streamed), json_object ok")


def responses_errors(s):
    c = s.openai()
    for kwargs, param in [
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"text": {"format": {"type": "json_schema", "name": "bad name!", "schema": {}}}}, "text.format.name"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"extra_body": {"frequency_penalty": 1}}, "frequency_penalty"),
        ({"extra_body": {"priority": 1}}, "priority"),  # a non-zero priority under fcfs, as in vLLM
        ({"extra_body": {"top_logprobs": 3}}, "top_logprobs"),
    ]:
        e = expect(openai.BadRequestError, lambda: c.responses.create(model=QWEN, input="hi", **kwargs))
        err = openai_error(e, 400, param)
        assert err["type"] == "invalid_request_error", err
    e = expect(openai.BadRequestError, lambda: c.responses.create(
        model=QWEN, input=[{"type": "function_call_output", "call_id": "call_x", "output": "1"}]))
    openai_error(e, 400, "input[0].call_id")
    e = expect(openai.NotFoundError, lambda: c.responses.create(model=QWEN, input="hi", previous_response_id="resp_nope"))
    openai_error(e, 404, "previous_response_id")
    e = expect(openai.NotFoundError, lambda: c.responses.create(model="gpt-4o", input="hi"))
    openai_error(e, 404, "model")
    print("responses: errors ok")


def responses_store_eviction(s):
    """With --responses-store-size 1, a second response evicts the first."""
    c = s.openai("sekret")
    a = c.responses.create(model=QWEN, input="hi", max_output_tokens=2)
    c.responses.create(model=QWEN, previous_response_id=a.id, input="again", max_output_tokens=2)
    e = expect(openai.NotFoundError, lambda: c.responses.create(model=QWEN, previous_response_id=a.id, input="x"))
    assert "evicted" in openai_error(e, 404, "previous_response_id")["message"]
    e = expect(openai.AuthenticationError, lambda: s.openai("wrong").responses.create(model=QWEN, input="hi"))
    print("responses: eviction at --responses-store-size 1, API key ok")


# --- Anthropic Messages API -------------------------------------------------------------------


def messages_plain_and_stream(s):
    c = s.anthropic("sekret")
    kw = dict(model=QWEN, system="You answer with one word.", extra_body=GREEDY,
              messages=[{"role": "user", "content": "What is the capital of France?"}])
    m = c.messages.create(max_tokens=16, **kw)
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant" and m.model == QWEN, m
    assert m.content[0].type == "text" and "Paris" in m.content[0].text, m
    assert m.stop_reason == "end_turn" and m.stop_sequence is None, m
    n_in = m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0)
    assert n_in > 10 and 0 < m.usage.output_tokens <= 16, m.usage
    # count_tokens counts the same prompt; more with a longer system prompt.
    ct = c.messages.count_tokens(**{k: v for k, v in kw.items() if k != "extra_body"})
    assert ct.input_tokens == n_in, (ct, m.usage)
    ct2 = c.messages.count_tokens(model=QWEN, system="You answer with one word, always in capitals.", messages=kw["messages"])
    assert ct2.input_tokens > ct.input_tokens, (ct, ct2)
    # max_tokens and stop sequences.
    m3 = c.messages.create(max_tokens=3, model=QWEN, extra_body=GREEDY, messages=[{"role": "user", "content": "Write a poem."}])
    assert m3.stop_reason == "max_tokens" and m3.usage.output_tokens == 3, m3
    m4 = c.messages.create(max_tokens=60, model=QWEN, extra_body=GREEDY, stop_sequences=["4"],
                           messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}])
    assert m4.stop_reason == "stop_sequence" and m4.stop_sequence == "4", m4
    assert "3" in m4.content[0].text and "4" not in m4.content[0].text, m4
    # A final assistant message is a prefill: the answer continues it.
    pre = c.messages.create(max_tokens=10, model=QWEN, extra_body=GREEDY, messages=[
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is"}])
    cont = pre.content[0].text
    assert "Paris" in cont and "capital" not in cont, cont
    n_pre = c.messages.count_tokens(model=QWEN, messages=[
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is"}]).input_tokens
    assert n_pre == pre.usage.input_tokens + (pre.usage.cache_read_input_tokens or 0), (n_pre, pre.usage)
    # Structured output (output_config.format): the text is JSON valid under the schema.
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    j = c.messages.create(max_tokens=60, model=QWEN, extra_body=GREEDY, messages=[{"role": "user", "content": "Invent a person."}],
                          output_config={"format": {"type": "json_schema", "schema": schema}})
    jsonschema.validate(json.loads(j.content[0].text), schema)
    # Raw stream: Anthropic's event order (the SDK drops `ping`).
    events = list(c.messages.create(max_tokens=16, stream=True, **kw))
    types = [e.type for e in events]
    k = types.count("content_block_delta")
    assert k >= 1 and types == ["message_start", "content_block_start"] + ["content_block_delta"] * k + [
        "content_block_stop", "message_delta", "message_stop"], types
    start = events[0].message
    assert start.id.startswith("msg_") and start.content == [] and start.usage.input_tokens == n_in, start
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == m.content[0].text, (text, m.content)
    assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens == m.usage.output_tokens, events[-2]
    # The stream helper: text events and the final message.
    with c.messages.stream(max_tokens=16, **kw) as st:
        streamed = "".join(st.text_stream)
        final = st.get_final_message()
    assert streamed == m.content[0].text and final.content[0].text == streamed and final.stop_reason == "end_turn", final
    # The ping event is on the wire.
    raw = urllib.request.Request(s.base + "/v1/messages", data=json.dumps({**{k: v for k, v in kw.items() if k != "extra_body"}, **GREEDY,
                                                  "max_tokens": 4, "stream": True}).encode(),
                                 headers={"content-type": "application/json", "x-api-key": "sekret"})
    wire = urllib.request.urlopen(raw, timeout=300).read().decode()
    names = re.findall(r"^event: (\S+)", wire, re.M)
    assert names[:3] == ["message_start", "ping", "content_block_start"] and names[-1] == "message_stop", names
    print(f"messages: create, count_tokens, max_tokens, stop_sequences, prefill, output_config, stream ({len(events)} events), stream helper ok")


def messages_tools(s):
    c = s.anthropic("sekret")
    tools = [{"name": "get_weather", "description": "Get the current weather in a city", "input_schema": WEATHER_SCHEMA}]
    q = {"role": "user", "content": "What is the weather in Paris?"}
    m = c.messages.create(model=QWEN, max_tokens=100, extra_body=GREEDY, tools=tools, messages=[q])
    assert m.stop_reason == "tool_use", m
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id.startswith("toolu_"), m.content
    jsonschema.validate(uses[0].input, WEATHER_SCHEMA)
    assert uses[0].input["city"] == "Paris", uses[0].input
    # Streamed: the input arrives as input_json_delta, the helper assembles the same input.
    with c.messages.stream(model=QWEN, max_tokens=100, extra_body=GREEDY, tools=tools, messages=[q]) as st:
        evs = [e.type for e in st]
        final = st.get_final_message()
    assert "input_json" in evs or "content_block_delta" in evs, evs
    fu = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and len(fu) == 1 and fu[0].input == uses[0].input, final
    # The round trip: the tool_use block back, a tool_result, the answer from it.
    msgs = [q, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": WEATHER_RESULT},
                                         {"type": "text", "text": FOLLOW_UP}]}]
    a = c.messages.create(model=QWEN, max_tokens=60, extra_body=GREEDY, tools=tools, messages=msgs)
    text = "".join(b.text for b in a.content if b.type == "text")
    assert a.stop_reason == "end_turn" and "18" in text and "sunny" in text.lower(), a
    with c.messages.stream(model=QWEN, max_tokens=60, extra_body=GREEDY, tools=tools, messages=msgs) as st:
        assert "".join(st.text_stream) == text
    # The history's tool blocks are in the prompt: count_tokens grows with them.
    n1 = c.messages.count_tokens(model=QWEN, tools=tools, messages=[q]).input_tokens
    n2 = c.messages.count_tokens(model=QWEN, tools=tools, messages=msgs).input_tokens
    assert n2 > n1 + 20, (n1, n2)
    # tool_choice tool: a call even when none is needed; any; none: no parsing.
    f = c.messages.create(model=QWEN, max_tokens=60, extra_body=GREEDY, tools=tools, messages=[{"role": "user", "content": "Say hello."}],
                          tool_choice={"type": "tool", "name": "get_weather"})
    assert f.stop_reason == "tool_use" and f.content[-1].type == "tool_use", f
    jsonschema.validate(f.content[-1].input, WEATHER_SCHEMA)
    nn = c.messages.create(model=QWEN, max_tokens=100, extra_body=GREEDY, tools=tools, messages=[q], tool_choice={"type": "none"})
    assert nn.stop_reason == "end_turn" and all(b.type == "text" for b in nn.content), nn
    print("messages: tool_use, streamed tool_use, tool_result round trip, tool_choice tool/none ok")


def messages_errors(s):
    c = s.anthropic("sekret")
    user = [{"role": "user", "content": "hi"}]
    key = {"x-api-key": "sekret"}
    for body, needle in [
        ({"model": QWEN, "messages": user}, "max_tokens"),
        ({"model": QWEN, "max_tokens": 5, "messages": []}, "messages"),
        ({"model": QWEN, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
         "messages[0].content[0].type"),
        ({"model": QWEN, "max_tokens": 5, "messages": user, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
         "tools[0].type"),
        ({"model": QWEN, "max_tokens": 5, "messages": user, "bogus": 1}, "bogus"),
        ({"model": QWEN, "max_tokens": 5, "messages": user, "temperature": -1}, "temperature"),
        ({"model": QWEN, "max_tokens": 5, "messages": user, "priority": 1}, "priority"),
        ({"model": QWEN, "max_tokens": 5, "messages": user, "output_config": {"effort": "high"}}, "output_config.effort"),
        ("not json", "JSON"),
    ]:
        st, b = s.post("/v1/messages", body, key)
        assert st == 400, (body, st, b)
        anthropic_error(st, b, "invalid_request_error", needle)
    st, b = s.post("/v1/messages/count_tokens", {"model": QWEN, "messages": user, "max_tokens": 5}, key)
    assert st == 400, b
    anthropic_error(st, b, "invalid_request_error", "max_tokens")
    # Through the SDK: its error classes, with the body in Anthropic's shape.
    e = expect(anthropic.NotFoundError, lambda: c.messages.create(model="claude-x", max_tokens=5, messages=user))
    anthropic_error(404, e.body, "not_found_error", "claude-x")
    e = expect(anthropic.BadRequestError, lambda: c.messages.create(
        model=QWEN, max_tokens=5, messages=user, tool_choice={"type": "tool", "name": "nope"},
        tools=[{"name": "f", "input_schema": {"type": "object"}}]))
    anthropic_error(400, e.body, "invalid_request_error", "nope")
    # The key: x-api-key (the SDK's) or Bearer; a wrong one is 401 in Anthropic's shape.
    e = expect(anthropic.AuthenticationError, lambda: s.anthropic("wrong").messages.create(model=QWEN, max_tokens=5, messages=user))
    anthropic_error(401, e.body, "authentication_error", "API key")
    st, b = s.post("/v1/messages/count_tokens", {"model": QWEN, "messages": user}, {"authorization": "Bearer sekret"})
    assert st == 200 and b["input_tokens"] > 0, b
    st, b = s.post("/v1/messages/count_tokens", {"model": QWEN, "messages": user})
    assert st == 401, b
    anthropic_error(st, b, "authentication_error", "API key")
    print("messages: errors, auth ok")


def main():
    srv = Server()
    try:
        responses_plain_and_stream(srv)
        responses_conversation(srv)
        responses_tools(srv)
        responses_text_format(srv)
        responses_errors(srv)
    finally:
        srv.stop()
    srv = Server("--responses-store-size", "1", "--api-key", "sekret")
    try:
        responses_store_eviction(srv)
        messages_plain_and_stream(srv)
        messages_tools(srv)
        messages_errors(srv)
    finally:
        srv.stop()
    print("agent clients: all checks passed")


if __name__ == "__main__":
    main()
