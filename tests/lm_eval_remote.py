"""lm-evaluation-harness (PyPI `lm_eval`) against `switchyard serve`, the way it runs against vLLM
without a Hugging Face download: `--model local-completions` with `tokenizer_backend=remote`, so
every tokenization goes through our `/tokenizer_info`, `/tokenize` and `/detokenize`.

The model is Qwen2.5-Coder-0.5B-Instruct (lm_eval sends token ids without BOS, which Qwen does
not use). Two tiny local tasks (no dataset download: custom task YAML over JSONL files written
here):
- `sy_mc`, multiple choice (loglikelihood requests: echo + logprobs over token-id prompts);
- `sy_gen`, generate_until with a stop string (greedy generations).

Checked: both tasks run to the end; each loglikelihood lm_eval reports equals the sum of the
continuation's prompt logprobs that this script gets from the server itself (context and
continuation split as lm_eval documents it: tokenize context + continuation, the context's
tokens first); `acc` is the share of questions whose best choice is the answer; each generation
equals the `openai` client's greedy completion of the same prompt with the same stops;
`exact_match` agrees with those generations. Run by scripts/test.sh:

    python3 tests/lm_eval_remote.py [path/to/switchyard]
"""

import json
import math
import os
import sys
import tempfile

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from openai_client import QWEN, Server  # noqa: E402

MC = [
    ("The capital of France is", ["Paris", "London", "Berlin"], 0),
    ("The opposite of hot is", ["banana", "cold", "seven"], 1),
    ("One, two, three, four,", ["purple", "dog", "five"], 2),
    ("The sun rises in the", ["east", "refrigerator", "spoon"], 0),
    ("Monday, Tuesday,", ["Wednesday", "January", "Saturn"], 0),
    ("Water is made of hydrogen and", ["oxygen", "cheese", "piano"], 0),
]
GEN = [
    ("Q: What is 2 + 2?\nA:", " 4"),
    ("The first letter of the English alphabet is", " A"),
    ("Translate to French: cat =>", " chat"),
    ("def add(a, b):\n    return", " a + b"),
]


def write_tasks(d):
    with open(os.path.join(d, "mc.jsonl"), "w") as f:
        for q, choices, answer in MC:
            f.write(json.dumps({"question": q, "choices": choices, "answer": answer}) + "\n")
    with open(os.path.join(d, "gen.jsonl"), "w") as f:
        for p, t in GEN:
            f.write(json.dumps({"prompt": p, "target": t}) + "\n")
    with open(os.path.join(d, "sy_mc.yaml"), "w") as f:
        f.write(
            f"""task: sy_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d}/mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: question
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
"""
        )
    with open(os.path.join(d, "sy_gen.yaml"), "w") as f:
        f.write(
            f"""task: sy_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d}/gen.jsonl
test_split: test
output_type: generate_until
doc_to_text: prompt
doc_to_target: target
target_delimiter: ""
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
    ignore_case: false
"""
        )


def run_lm_eval(base, d):
    import lm_eval
    from lm_eval.tasks import TaskManager

    model_args = (
        f"base_url={base}/v1/completions,model={QWEN},tokenizer_backend=remote,"
        "tokenized_requests=True,num_concurrent=2,max_retries=1,max_length=2048"
    )
    return lm_eval.simple_evaluate(
        model="local-completions",
        model_args=model_args,
        tasks=["sy_mc", "sy_gen"],
        task_manager=TaskManager(include_path=d),
        log_samples=True,
        batch_size=1,
    )


def tokenize(base, text):
    r = requests.post(f"{base}/tokenize", json={"prompt": text, "add_special_tokens": False})
    r.raise_for_status()
    return r.json()["tokens"]


def loglikelihood(base, context, continuation):
    """lm_eval's split: the whole string's tokens, the context's tokens first."""
    whole = tokenize(base, context + continuation)
    ctx = tokenize(base, context)
    assert whole[: len(ctx)] == ctx, (context, continuation)
    r = requests.post(
        f"{base}/v1/completions",
        json={"prompt": whole, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1},
    )
    r.raise_for_status()
    lp = r.json()["choices"][0]["logprobs"]
    n = len(whole)
    # Prompt positions len(ctx)..n-1 are the continuation's tokens.
    vals = lp["token_logprobs"][len(ctx) : n]
    tops = lp["top_logprobs"][len(ctx) : n]
    greedy = all(v >= max(t.values()) for v, t in zip(vals, tops))
    return sum(vals), greedy


def main():
    s = Server(QWEN)
    base = s.base
    try:
        info = requests.get(f"{base}/tokenizer_info").json()
        assert info["eos_token"] and info["tokenizer_class"], info
        with tempfile.TemporaryDirectory() as d:
            os.environ.setdefault("HF_HOME", os.path.join(d, "hf"))
            os.environ["HF_DATASETS_OFFLINE"] = "1"
            os.environ["HF_HUB_OFFLINE"] = "1"
            write_tasks(d)
            out = run_lm_eval(base, d)
        res, samples = out["results"], out["samples"]

        # Loglikelihood: every (context, continuation) as lm_eval scored it vs our own sum.
        mc = sorted(samples["sy_mc"], key=lambda x: x["doc_id"])
        assert len(mc) == len(MC), len(mc)
        correct = 0
        for smp in mc:
            doc = smp["doc"]
            lls = []
            for (ctx, cont), resp in zip(
                [a for a in smp["arguments"]], smp["resps"], strict=True
            ):
                got_ll, got_greedy = resp[0]
                ll, greedy = loglikelihood(base, ctx, cont)
                assert math.isclose(got_ll, ll, rel_tol=1e-5, abs_tol=1e-4), (ctx, cont, got_ll, ll)
                assert bool(got_greedy) == greedy, (ctx, cont)
                lls.append(ll)
            correct += max(range(len(lls)), key=lambda i: lls[i]) == doc["answer"]
            print(f"lm_eval mc: {doc['question']!r}: {[round(x, 2) for x in lls]}")
        acc = res["sy_mc"]["acc,none"]
        assert math.isclose(acc, correct / len(MC)), (acc, correct)
        # A model that reads the context at all gets these right more often than chance (1/3);
        # a wrong context/continuation split scores continuation tokens against the wrong
        # positions and lands near chance.
        assert correct >= 4, f"only {correct}/{len(MC)} easy questions right"

        # Generations equal the openai client's greedy completions with the same stops.
        c = s.client()
        gen = sorted(samples["sy_gen"], key=lambda x: x["doc_id"])
        assert len(gen) == len(GEN)
        matches = 0
        for smp in gen:
            prompt = smp["doc"]["prompt"]
            got = smp["resps"][0][0]
            ref = c.completions.create(
                model=QWEN,
                prompt=tokenize(base, prompt),
                max_tokens=12,
                temperature=0,
                stop=["\n", info["eos_token"]],
            )
            want = ref.choices[0].text
            assert got == want, (prompt, got, want)
            matches += got == smp["doc"]["target"]
            print(f"lm_eval gen: {prompt!r} -> {got!r}")
        em = res["sy_gen"]["exact_match,none"]
        assert math.isclose(em, matches / len(GEN)), (em, matches)
        print(f"lm_eval remote tokenizer: sy_mc acc {acc:.3f}, sy_gen exact_match {em:.3f}: OK")
    finally:
        s.stop()


if __name__ == "__main__":
    main()
