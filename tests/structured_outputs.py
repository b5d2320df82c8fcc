"""Structured outputs end to end, with the official `openai` client and PyPI `jsonschema`.

Starts `switchyard serve` for each real model (Qwen2.5-Coder through chat with
`response_format: json_schema`; Gemma 3 270M, a base model without a chat template, through
completions with vLLM's `guided_json`) and checks that the output under each of 50+ varied JSON
schemas (nested objects, arrays with min/max items, enums, `pattern`, `anyOf`, `$ref`, numbers
with bounds, ...) parses and validates, at temperature 0 and 1. Also: the client's
`chat.completions.parse` with a Pydantic model, regex / choice / Lark grammar constraints, a
greedy unconstrained request whose text does not change when constrained requests share its
batch, bad constraints answered 400, and tool calls: `tool_choice: "required"` or a named function
always yields calls whose arguments validate under the tool's schema (even for prompts that
ask for no tool), and `auto` calls, constrained from the opening `<tool_call>` on, always parse.
Run by scripts/test.sh:

    python3 tests/structured_outputs.py [path/to/switchyard]
"""

import concurrent.futures as cf
import json
import os
import re
import sys
from typing import List, Literal, Optional

import jsonschema
import openai
import pydantic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from openai_client import GEMMA, QWEN, Server, expect  # noqa: E402

S = {"type": "string", "maxLength": 24}
I = {"type": "integer", "minimum": -1000, "maximum": 1000}

SCHEMAS = [
    {"type": "object", "properties": {"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 130}}, "required": ["name", "age"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False},
    {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": S, "minItems": 2, "maxItems": 4}}, "required": ["tags"]},
    {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, "required": ["zip"]},
    {"type": "object", "properties": {"x": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["x"]},
    {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 20}}, "required": ["n"]},
    {"type": "object", "properties": {"v": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, S]}}, "required": ["v"]},
    {"$defs": {"pt": {"type": "object", "properties": {"x": I, "y": I}, "required": ["x", "y"], "additionalProperties": False}},
     "type": "object", "properties": {"a": {"$ref": "#/$defs/pt"}, "b": {"$ref": "#/$defs/pt"}}, "required": ["a", "b"], "additionalProperties": False},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {"id": I, "email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.com$"}}, "required": ["id", "email"]}}, "required": ["user"]},
    {"type": "array", "items": I, "minItems": 1, "maxItems": 5},
    {"type": "array", "items": {"type": "object", "properties": {"k": S, "v": I}, "required": ["k", "v"], "additionalProperties": False}, "minItems": 1, "maxItems": 3},
    {"type": "string", "enum": ["alpha", "beta", "gamma"]},
    {"type": "integer", "minimum": 1, "maximum": 6},
    {"type": "boolean"},
    {"type": "null"},
    {"const": "fixed"},
    {"type": "object", "properties": {"status": {"const": "done"}, "count": I}, "required": ["status", "count"]},
    {"type": "object", "properties": {"maybe": {"type": ["string", "null"], "maxLength": 10}}, "required": ["maybe"]},
    {"type": "object", "properties": {"price": {"type": "number", "minimum": 0.5, "maximum": 99.5}, "currency": {"enum": ["USD", "EUR"]}}, "required": ["price", "currency"]},
    {"type": "object", "properties": {"matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 2}, "minItems": 2, "maxItems": 2}}, "required": ["matrix"]},
    {"type": "object", "properties": {"date": {"type": "string", "format": "date"}}, "required": ["date"]},
    {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}, "required": ["id"]},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}, "required": ["when"]},
    {"type": "object", "properties": {"code": {"type": "string", "minLength": 3, "maxLength": 3, "pattern": "^[A-Z]+$"}}, "required": ["code"]},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {"c": {"type": "object", "properties": {"d": I}, "required": ["d"]}}, "required": ["c"]}}, "required": ["b"]}}, "required": ["a"]},
    {"type": "object", "properties": {"items": {"type": "array", "items": {"enum": [1, 2, 3]}, "maxItems": 3}}, "required": ["items"]},
    {"type": "object", "properties": {"shape": {"anyOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number", "minimum": 0, "maximum": 10}}, "required": ["kind", "r"], "additionalProperties": False},
        {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "number", "minimum": 0, "maximum": 10}}, "required": ["kind", "side"], "additionalProperties": False}]}}, "required": ["shape"]},
    {"type": "object", "properties": {"first": S, "last": S, "middle": S}, "required": ["first", "last"], "additionalProperties": False},
    {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100, "multipleOf": 5}}, "required": ["score"]},
    {"type": "object", "properties": {"words": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{2,6}$"}, "minItems": 3, "maxItems": 3}}, "required": ["words"]},
    {"type": "object", "properties": {"hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}}, "required": ["hex"]},
    {"type": "object", "properties": {"ip": {"type": "string", "format": "ipv4"}}, "required": ["ip"]},
    {"type": "object", "properties": {"email": {"type": "string", "format": "email", "maxLength": 40}}, "required": ["email"]},
    {"type": "object", "properties": {"flags": {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "boolean"}}, "required": ["a", "b"], "additionalProperties": False}}, "required": ["flags"]},
    {"type": "object", "properties": {"temps": {"type": "array", "items": {"type": "number", "minimum": -50, "maximum": 50}, "minItems": 3, "maxItems": 3}}, "required": ["temps"]},
    {"type": "object", "properties": {"answer": {"enum": ["yes", "no", "maybe"]}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["answer", "confidence"]},
    {"$defs": {"node": {"type": "object", "properties": {"val": I, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}}, "required": ["val", "next"], "additionalProperties": False}},
     "$ref": "#/$defs/node"},
    {"type": "object", "properties": {"title": S, "year": {"type": "integer", "minimum": 1900, "maximum": 2030}, "genres": {"type": "array", "items": {"enum": ["drama", "comedy", "action"]}, "minItems": 1, "maxItems": 2}}, "required": ["title", "year", "genres"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "error": {"type": ["string", "null"], "maxLength": 20}}, "required": ["ok", "error"]},
    {"type": "object", "properties": {"coords": {"type": "array", "prefixItems": [{"type": "number", "minimum": -90, "maximum": 90}, {"type": "number", "minimum": -180, "maximum": 180}], "minItems": 2, "maxItems": 2, "items": False}}, "required": ["coords"]},
    {"type": "object", "properties": {"lang": {"type": "string", "enum": ["en", "fr", "de"]}, "text": S}, "required": ["lang", "text"], "additionalProperties": False},
    {"type": "object", "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 3}, "names": {"type": "array", "items": S, "maxItems": 3}}, "required": ["count", "names"]},
    {"type": "object", "properties": {"version": {"type": "string", "pattern": "^[0-9]\\.[0-9]\\.[0-9]$"}}, "required": ["version"]},
    {"type": "object", "properties": {"a": I, "b": I, "sum": I}, "required": ["a", "b", "sum"], "additionalProperties": False},
    {"type": "object", "properties": {"person": {"$ref": "#/$defs/p"}, "friends": {"type": "array", "items": {"$ref": "#/$defs/p"}, "maxItems": 2}},
     "required": ["person", "friends"], "additionalProperties": False, "$defs": {"p": {"type": "object", "properties": {"name": S}, "required": ["name"], "additionalProperties": False}}},
    {"type": "object", "properties": {"level": {"type": "integer", "enum": [1, 2, 3]}, "label": {"type": "string", "enum": ["low", "mid", "high"]}}, "required": ["level", "label"]},
    {"type": "object", "properties": {"empty": {"type": "array", "maxItems": 0}}, "required": ["empty"]},
    {"type": "object", "properties": {"nested": {"type": "array", "items": {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1, "maxItems": 2}}, "required": ["tags"]}, "minItems": 1, "maxItems": 2}}, "required": ["nested"]},
    {"type": "object", "properties": {"ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 2}}, "required": ["ratio"]},
    {"type": "object", "properties": {"id": {"type": "integer", "minimum": 100000, "maximum": 999999}}, "required": ["id"]},
    {"oneOf": [{"type": "object", "properties": {"t": {"const": "a"}}, "required": ["t"], "additionalProperties": False},
               {"type": "object", "properties": {"t": {"const": "b"}, "n": I}, "required": ["t", "n"], "additionalProperties": False}]},
    {"type": "object", "properties": {"s": {"type": "string", "minLength": 5, "maxLength": 8}}, "required": ["s"]},
    {"type": "object", "properties": {"kv": {"type": "object", "additionalProperties": I, "maxProperties": 3}}, "required": ["kv"]},
]

RECURSIVE = next(i for i, s in enumerate(SCHEMAS) if "node" in s.get("$defs", {}))

PROMPT = "Reply with a JSON value that follows this JSON schema, and nothing else.\nSchema: {}"


def check_schemas(srv, model, chat):
    c = srv.client()

    def one(job):
        i, schema, temp = job
        text, finish = ask(i, schema, temp, i)
        if finish == "length" and temp > 0 and not chat:
            # A base model sampled at temperature 1 may fill a schema's open parts (extra
            # properties, free strings) until max_tokens: the grammar allows it and cannot end it.
            # Such a draw is retried with two other seeds; one of the three must complete.
            for seed in (i + 1000, i + 2000):
                print(f"{model}: schema {i} at temperature {temp}: hit max_tokens, trying seed {seed}")
                text, finish = ask(i, schema, temp, seed)
                if finish != "length":
                    break
        return i, temp, text, finish

    def ask(i, schema, temp, seed):
        prompt = PROMPT.format(json.dumps(schema))
        if chat:
            r = c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}], temperature=temp,
                max_tokens=400, seed=seed,
                response_format={"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}})
            text, finish = r.choices[0].message.content, r.choices[0].finish_reason
        else:
            r = c.completions.create(model=model, prompt=prompt + "\nJSON:", temperature=temp, max_tokens=300,
                                     seed=seed, extra_body={"guided_json": schema})
            text, finish = r.choices[0].text, r.choices[0].finish_reason
        return text, finish

    jobs = [(i, s, t) for t in (0.0, 1.0) for i, s in enumerate(SCHEMAS)]
    bad = []
    with cf.ThreadPoolExecutor(16) as ex:
        for i, temp, text, finish in ex.map(one, jobs):
            try:
                if finish == "length" and i == RECURSIVE and not chat:
                    # A recursive schema cannot force its end: the base model (greedy) nests
                    # nodes until max_tokens. Say so; every other output must be complete.
                    print(f"{model}: schema {i} (recursive) at temperature {temp}: hit max_tokens")
                    continue
                if finish != "stop":
                    raise ValueError(f"finish_reason {finish}")
                jsonschema.validate(json.loads(text), SCHEMAS[i])
            except Exception as e:  # noqa: BLE001
                bad.append(f"schema {i} temperature {temp}: {type(e).__name__}: {str(e)[:200]} in {text!r:.300}")
    print(f"{model}: {len(jobs) - len(bad)}/{len(jobs)} outputs valid under {len(SCHEMAS)} schemas x 2 temperatures")
    assert not bad, "\n".join(bad)


class Step(pydantic.BaseModel):
    explanation: str = pydantic.Field(max_length=80)
    output: str = pydantic.Field(max_length=40)


class MathAnswer(pydantic.BaseModel):
    steps: List[Step] = pydantic.Field(max_length=3)
    final_answer: int
    unit: Optional[Literal["apples", "pears"]]


def check_parse_and_others(srv):
    c = srv.client()
    r = c.chat.completions.parse(
        model=QWEN, temperature=0, max_tokens=400,
        messages=[{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples? Answer step by step."}],
        response_format=MathAnswer)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, MathAnswer), r
    print("parse():", parsed)
    # json_object.
    r = c.chat.completions.create(model=QWEN, temperature=1, max_tokens=200, seed=3,
                                  messages=[{"role": "user", "content": "Describe a cat as JSON."}],
                                  response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict), r
    # Regex, choice and a Lark grammar (vLLM's structured_outputs), n > 1 and streaming.
    r = c.completions.create(model=QWEN, prompt="A US phone number:", temperature=1, max_tokens=30, n=4, seed=1,
                             extra_body={"structured_outputs": {"regex": r" \(\d{3}\) \d{3}-\d{4}"}})
    for ch in r.choices:
        assert re.fullmatch(r" \(\d{3}\) \d{3}-\d{4}", ch.text), ch
    r = c.chat.completions.create(model=QWEN, temperature=1, max_tokens=10, n=3, seed=2,
                                  messages=[{"role": "user", "content": "Is water wet?"}],
                                  extra_body={"guided_choice": ["yes", "no", "it depends"]})
    for ch in r.choices:
        assert ch.message.content in ("yes", "no", "it depends"), ch
    grammar = 'start: "The answer is " NUM "."\nNUM: /[0-9]{1,3}/'
    chunks = c.chat.completions.create(model=QWEN, temperature=0, max_tokens=20, stream=True,
                                       messages=[{"role": "user", "content": "What is 6 times 7?"}],
                                       extra_body={"structured_outputs": {"grammar": grammar}})
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert re.fullmatch(r"The answer is [0-9]{1,3}\.", text), text
    # Bad constraints: 400 naming the field, and the server keeps serving.
    for body, param in [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "if": {}}}}}, "response_format"),
        ({"guided_regex": "(unclosed"}, "guided_regex"),
        ({"structured_outputs": {"grammar": "start: undefined_rule"}}, "structured_outputs"),
        ({"guided_json": {"type": "integer", "minimum": 5, "maximum": 1}}, "guided_json"),
        ({"guided_json": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}, "required": ["a"]}}, "guided_json"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ]:
        e = expect(openai.BadRequestError, lambda: c.chat.completions.create(
            model=QWEN, max_tokens=5, messages=[{"role": "user", "content": "hi"}], extra_body=body))
        assert e.body.get("param") == param, (body, e.body)
    # A huge schema: refused by size, not a hang.
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string", "pattern": "^[a-z]{1,5}$"} for i in range(20000)}}
    e = expect(openai.BadRequestError, lambda: c.chat.completions.create(
        model=QWEN, max_tokens=5, messages=[{"role": "user", "content": "hi"}], extra_body={"guided_json": huge}))
    print("bad constraints: 400s with the field named")


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "book_table", "description": "Book a restaurant table",
        "parameters": {"type": "object", "properties": {
            "restaurant": {"type": "string", "maxLength": 40},
            "people": {"type": "integer", "minimum": 1, "maximum": 20},
            "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}},
            "required": ["restaurant", "people", "time"], "additionalProperties": False}}},
]
TOOL_SCHEMA = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
TOOL_PROMPTS = ["Tell me a joke about cats.", "What is the weather in Oslo?", "Book a table for 4 at Luigi's at 19:30.",
                "Write a haiku.", "What is 2 + 2?", "Is it raining in Lima? Use fahrenheit."]


def check_tool_calls(srv):
    """`required` and a named function: every answer is calls, each validating; `auto`: every
    call the model starts is completed under the grammar, so it parses."""
    c = srv.client()

    def run(job):
        prompt, temp, seed, choice = job
        r = c.chat.completions.create(model=QWEN, temperature=temp, seed=seed, max_tokens=150,
                                      messages=[{"role": "user", "content": prompt}], tools=TOOLS,
                                      tool_choice=choice,
                                      # Forced: exactly one call, then the grammar ends (with
                                      # parallel calls a small model may call until max_tokens).
                                      parallel_tool_calls=choice == "auto")
        return job, r.choices[0]

    jobs = [(p, t, i, ch) for i, p in enumerate(TOOL_PROMPTS) for t in (0, 1)
            for ch in ("required", {"type": "function", "function": {"name": "book_table"}}, "auto")]
    forced = auto_calls = 0
    with cf.ThreadPoolExecutor(8) as ex:
        for (prompt, temp, seed, choice), ch in ex.map(run, jobs):
            calls = ch.message.tool_calls or []
            if choice != "auto":
                forced += 1
                assert ch.finish_reason == "tool_calls" and len(calls) == 1, (prompt, choice, ch)
            else:
                if ch.finish_reason == "length":
                    continue
                # Text that opens a call but does not parse would be left in content.
                assert "<tool_call>" not in (ch.message.content or ""), (prompt, ch)
                auto_calls += len(calls)
            for call in calls:
                if isinstance(choice, dict):
                    assert call.function.name == "book_table", (prompt, call)
                args = json.loads(call.function.arguments)
                jsonschema.validate(args, TOOL_SCHEMA[call.function.name])
    assert auto_calls > 0, "no auto call at all: the auto half of the check tested nothing"
    print(f"tool calls: {forced} forced answers all valid calls; {auto_calls} auto calls all parsed and valid")
    # Combining a forced call with response_format, or naming an unknown tool: 400.
    e = expect(openai.BadRequestError, lambda: c.chat.completions.create(
        model=QWEN, max_tokens=5, messages=[{"role": "user", "content": "hi"}], tools=TOOLS, tool_choice="required",
        response_format={"type": "json_object"}))
    assert e.body.get("param") == "response_format", e.body


def check_neighbours(srv):
    """A greedy unconstrained request gives the same text alone and beside constrained ones."""
    c = srv.client()
    msgs = [{"role": "user", "content": "Write a haiku about rivers."}]
    alone = c.chat.completions.create(model=QWEN, messages=msgs, temperature=0, max_tokens=48).choices[0].message.content

    def constrained(i):
        return c.chat.completions.create(model=QWEN, temperature=1, max_tokens=60, seed=i,
                                         messages=[{"role": "user", "content": f"JSON for item {i}"}],
                                         response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMAS[i]}})

    with cf.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(constrained, i) for i in range(6)]
        together = c.chat.completions.create(model=QWEN, messages=msgs, temperature=0, max_tokens=48).choices[0].message.content
        for f in futs:
            f.result()
    assert together == alone, (alone, together)
    print("unconstrained greedy text unchanged beside 6 constrained requests")


def main():
    srv = Server(QWEN)
    try:
        check_parse_and_others(srv)
        check_neighbours(srv)
        check_tool_calls(srv)
        check_schemas(srv, QWEN, chat=True)
    finally:
        srv.stop()
    srv = Server(GEMMA)
    try:
        check_schemas(srv, GEMMA, chat=False)
    finally:
        srv.stop()
    print("structured outputs: all checks passed")


if __name__ == "__main__":
    main()
