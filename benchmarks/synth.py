"""Seeded synthetic data with the shapes of real distillation data, for the stage benchmarks (benchmarks/stages.py).

Three generators:

- `generate_rows`: rows of a `distill generate` output (GENERATE_SCHEMA exactly; `write_generate_output` writes
  them with the generate stage's ShardWriter, so `distill filter` reads them as it reads a real run). N samples
  per prompt; reasoning lengths long-tailed like R1 traces (lognormal in tokens, scaled down for a CPU: median
  300 tokens, ~4 characters a token, a few percent past 2,000 tokens, capped at the max-token budget, where the
  sample is cut off); final answers in `\\boxed{}` with a realistic mix (see ANSWER_MIX): the gold literally, an
  equivalent form (`\\frac{1}{2}` for `0.5`, `\\sqrt{12}` for `2\\sqrt{3}`, ...), a wrong value, no box,
  truncated (finish_reason "length", think block never closed), no think block, and reasoning that switches
  language halfway; a share of prompts in Chinese answered in Chinese, a share of general prompts without gold,
  and a few golds that math-verify cannot parse.
- `dedupe_prompts`: prompts in batches with a controlled fraction of near duplicates of earlier prompts (a
  number changed, two adjacent words swapped, a word replaced, whitespace and case changed); distinct prompts
  are random word sequences over a large vocabulary, so two of them share almost no word bigrams.
- `sft_rows`: filter-output rows (`messages`, through the filter's own `to_messages`) of passing samples,
  with the same long-tailed assistant turns, for `distill train`.

Everything is a function of the seed: the same call gives the same rows.
"""

import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.filter.cascade import to_messages
from distill.generate.run import sample_id
from distill.generate.sources import DEFAULT_TEMPLATES
from distill.io import ShardWriter, shard_prefix
from distill.schema import GENERATE_SCHEMA, MESSAGES_TYPE
from distill.testing import example_row

TEACHER = "deepseek-ai/DeepSeek-R1"
SAMPLING = json.dumps({"temperature": 0.6, "top_p": 0.95, "max_tokens": 4096, "n": 4}, sort_keys=True)
CHARS_PER_TOKEN = 4  # English prose in a BPE vocabulary; a CJK character counts as one token
MEDIAN_TOKENS = 300  # R1 traces run to thousands of tokens; scaled down ~10x so the CPU benchmarks stay short
SIGMA = 1.0  # lognormal spread: p90 ~ 3.6x the median, p99 ~ 10x
MAX_TOKENS = 4096  # the sampling budget: a longer draw is cut off there (finish_reason "length")

# Per math sample: what its final answer looks like. Hard prompts (HARD_SHARE) shift mass from correct to wrong.
ANSWER_MIX = {
    "literal": 0.50,  # \boxed{gold} as written
    "equivalent": 0.14,  # another form of the same value
    "wrong": 0.16,
    "no_box": 0.05,  # a final answer in words, no \boxed{}
    "truncated": 0.06,  # ran out of tokens inside the think block
    "no_think": 0.03,  # answered without a think block
    "mixed_language": 0.06,  # reasoning switches to Chinese halfway (R1-Zero's failure)
}
HARD_SHARE = 0.2
CHINESE_PROMPT_SHARE = 0.06  # prompts written (and answered) in Chinese: these must pass the language check
GENERAL_SHARE = 0.1  # general prompts: no gold, no box, judged by format and language only
UNPARSEABLE_GOLD_SHARE = 0.01  # math-verify cannot parse the gold: the row is unverified

EN_SENTENCES = [
    "Let me compute {a} + {b} first, which gives {c}.",
    "Wait, I should double-check the denominator before going on.",
    "So the total is {c}, and I still need to divide by {b}.",
    "Hmm, maybe I should consider the case where x = {a} separately.",
    "Multiplying both sides by {b}, we get {c}x = {a}.",
    "Let me verify this by substituting back into the original equation.",
    "That gives {a} squared, which is {c}, so the inequality holds.",
    "Alternatively, I could count the complementary cases and subtract from {c}.",
    "Okay, so the remainder when {c} is divided by {b} is {a}.",
    "I think I made an arithmetic slip earlier; recomputing {a} times {b} gives {c}.",
    "The problem asks for the sum, not the product, so I add {a} and {b}.",
    "By the Pythagorean theorem, the hypotenuse squared is {c}.",
    "Since the sequence is arithmetic with difference {b}, the {a}th term follows.",
    "Now factor the quadratic: the roots must multiply to {c} and add to {a}.",
    "This matches the earlier estimate, so I am fairly confident in {c}.",
]
ZH_SENTENCES = [
    "让我先计算 {a} 加 {b}，结果是 {c}。",
    "等等，我应该再检查一下分母。",
    "所以总数是 {c}，我还需要除以 {b}。",
    "也许我应该单独考虑 x 等于 {a} 的情况。",
    "两边同时乘以 {b}，得到 {c}x 等于 {a}。",
    "让我把结果代回原方程验证一下。",
    "这与前面的估计一致，所以答案应该是 {c}。",
    "我之前可能算错了，重新计算 {a} 乘以 {b} 得到 {c}。",
]
EN_PROBLEMS = [
    "A store sells pencils in packs of {a}. If Maria buys {b} packs and gives away {c} pencils, how many remain?",
    "Find the value of $x$ such that ${a}x + {b} = {c}$.",
    "What is the remainder when ${c}$ is divided by ${b}$?",
    "A rectangle has sides {a} and {b}. What is the length of its diagonal?",
    "Compute the sum of the first {a} terms of the arithmetic sequence starting at {b} with difference {c}.",
    "In how many ways can {a} books be chosen from a shelf of {c} books?",
    "Simplify the expression $\\frac{{{c}}}{{{b}}} + \\frac{{{a}}}{{{b}}}$.",
]
ZH_PROBLEMS = [
    "商店里铅笔每包 {a} 支。玛丽买了 {b} 包，送出 {c} 支，还剩多少支？",
    "求 $x$ 的值，使得 ${a}x + {b} = {c}$。",
    "${c}$ 除以 ${b}$ 的余数是多少？",
]
GENERAL_PROBLEMS = [
    "Write a short note to a colleague explaining why the release slipped by {a} days.",
    "Summarize the main causes of the {a}th-century trade expansion in a paragraph.",
    "Give {a} tips for keeping a sourdough starter healthy.",
    "Explain the difference between a process and a thread to a new programmer.",
]


def _sentence_corpus(rng: np.random.Generator, templates: list[str], count: int, sep: str) -> str:
    """A long text of filled-in template sentences; reasoning is a slice of it (slicing costs no Python loop)."""
    picks = rng.integers(0, len(templates), count)
    nums = rng.integers(2, 999, (count, 3))
    return sep.join(templates[t].format(a=a, b=b, c=c) for t, (a, b, c) in zip(picks, nums.tolist(), strict=True))


@functools.lru_cache(maxsize=8)
def _corpus(seed: int, language: str, count: int = 20000) -> str:
    templates, sep = (ZH_SENTENCES, "") if language == "zh" else (EN_SENTENCES, " ")
    corpus = _sentence_corpus(np.random.default_rng([seed, len(language)]), templates, count, sep)
    return corpus + sep + corpus  # wrap around without a modulo per character


class _Text:
    """Reasoning text of a given length cut from a seeded corpus (built once per seed) at a random offset."""

    def __init__(self, rng: np.random.Generator, seed: int, language: str):
        self.corpus = _corpus(seed, language)
        self.size = len(self.corpus) // 2
        self.rng = rng

    def take(self, chars: int) -> str:
        chars = min(chars, self.size)
        start = int(self.rng.integers(0, self.size))
        return self.corpus[start : start + chars].strip()


def reasoning_tokens(rng: np.random.Generator, n: int, median: float = MEDIAN_TOKENS, sigma: float = SIGMA):
    """Long-tailed reasoning lengths in tokens (lognormal), at least 8; not capped (the caller cuts at the budget)."""
    return np.maximum(8, rng.lognormal(math.log(median), sigma, n)).astype(np.int64)


def _gold_and_forms(rng: np.random.Generator) -> tuple[str, list[str], list[str]]:
    """A gold answer, equivalent forms of it, and wrong values, in the shapes MATH-style golds take."""
    kind = rng.choice(["int", "frac", "sqrt", "decimal", "pi", "poly"], p=[0.4, 0.2, 0.1, 0.1, 0.1, 0.1])
    a, b = (int(v) for v in rng.integers(2, 60, 2))
    if kind == "int":
        n = int(rng.integers(-50, 2000))
        return str(n), [f"{n}.0", f"\\dfrac{{{2 * n}}}{{2}}"], [str(n + int(rng.integers(1, 9))), str(-n - 1)]
    if kind == "frac":
        q = int(rng.choice([2, 4, 5, 8, 3, 7]))
        p = int(rng.integers(1, 40)) * q + 1  # coprime-ish with q for 2, 4, 8
        p = p if math.gcd(p, q) == 1 else p + 1
        forms = [f"{p}/{q}", f"\\dfrac{{{p}}}{{{q}}}"]
        if q in (2, 4, 5, 8):
            forms.append(f"{p / q:g}")
        return f"\\frac{{{p}}}{{{q}}}", forms, [f"\\frac{{{p + 1}}}{{{q}}}", f"\\frac{{{q}}}{{{p}}}"]
    if kind == "sqrt":
        s = int(rng.choice([2, 3, 5, 6, 7]))
        return f"{a}\\sqrt{{{s}}}", [f"\\sqrt{{{a * a * s}}}"], [f"{a + 1}\\sqrt{{{s}}}", f"{a}\\sqrt{{{s + 1}}}"]
    if kind == "decimal":
        q = int(rng.choice([4, 5, 8, 20]))
        value = a / q
        return f"{value:g}", [f"\\frac{{{a}}}{{{q}}}"], [f"{value + 0.5:g}", f"{value * 10:g}"]
    if kind == "pi":
        return f"\\frac{{{a}\\pi}}{{{b}}}", [f"\\frac{{{a}}}{{{b}}}\\pi"], [f"\\frac{{{a + 1}\\pi}}{{{b}}}"]
    # A polynomial answer: math-verify has sympy expand it to compare.
    return f"x^2 + {2 * a}x + {a * a}", [f"(x + {a})^2"], [f"(x + {a + 1})^2", f"x^2 + {a}x + {a * a}"]


def generate_rows(num_prompts: int, samples: int = 4, seed: int = 0, start: int = 0) -> list[dict]:
    """Rows of a `distill generate` output for prompts start..start+num_prompts-1, `samples` each.

    `start` lets a large input be written shard by shard with distinct prompt ids and the same seed.
    """
    rng = np.random.default_rng([seed, start])
    en, zh = _Text(rng, seed, "en"), _Text(rng, seed, "zh")
    kinds, probs = list(ANSWER_MIX), np.array(list(ANSWER_MIX.values()))
    hard = probs.copy()
    hard[kinds.index("wrong")] += 0.35
    hard[kinds.index("literal")] -= 0.35
    rows = []
    for p in range(start, start + num_prompts):
        prompt_id = f"synth-{seed}-{p:08d}"
        a, b, c = (int(v) for v in rng.integers(2, 999, 3))
        roll = rng.random()
        domain, language = ("general", "en") if roll < GENERAL_SHARE else ("math", "en")
        if domain == "math" and roll < GENERAL_SHARE + CHINESE_PROMPT_SHARE:
            language = "zh"
        if domain == "general":
            problem = GENERAL_PROBLEMS[int(rng.integers(len(GENERAL_PROBLEMS)))].format(a=a)
            gold, equivalents, wrongs = None, [], []
        else:
            pool = ZH_PROBLEMS if language == "zh" else EN_PROBLEMS
            problem = pool[int(rng.integers(len(pool)))].format(a=a, b=b, c=c)
            gold, equivalents, wrongs = _gold_and_forms(rng)
            if rng.random() < UNPARSEABLE_GOLD_SHARE:
                gold = "See the worked solution above; the answer depends on the chosen branch."
        prompt = DEFAULT_TEMPLATES[domain].replace("{problem}", problem)
        prompt_messages = json.dumps([{"role": "user", "content": prompt}], ensure_ascii=False)
        mix = hard if rng.random() < HARD_SHARE else probs
        lengths = reasoning_tokens(rng, samples)
        picks = rng.choice(len(kinds), size=samples, p=mix).tolist()
        for index in range(samples):
            kind = kinds[picks[index]] if domain == "math" else "general"
            rows.append(
                _sample(rng, en, zh, prompt_id, index, domain, language, problem, prompt_messages, gold,
                        equivalents, wrongs, kind, int(lengths[index]), len(prompt))
            )  # fmt: skip
    return rows


def _sample(rng, en, zh, prompt_id, index, domain, language, problem, prompt_messages, gold, equivalents, wrongs,
            kind, tokens, prompt_chars) -> dict:  # fmt: skip
    text = zh if language == "zh" else en
    per_token = 1 if language == "zh" else CHARS_PER_TOKEN
    truncated = kind == "truncated" or tokens >= MAX_TOKENS
    tokens = min(tokens, MAX_TOKENS)
    reasoning = text.take(tokens * per_token)
    if kind == "mixed_language":
        half = len(reasoning) // 2
        reasoning = reasoning[:half] + " " + zh.take(tokens // 2)
    if domain == "general":
        answer = en.take(int(rng.integers(200, 1200)))
    else:
        boxed = {
            "literal": gold,
            "equivalent": equivalents[int(rng.integers(len(equivalents)))] if equivalents else gold,
            "wrong": wrongs[int(rng.integers(len(wrongs)))] if wrongs else "0",
        }.get(kind, gold)
        recap = text.take(int(rng.integers(120, 600)))
        if kind == "no_box":
            answer = f"{recap}\n\nSo the answer is {boxed}."
        else:
            final = "最终答案是" if language == "zh" else "**Final Answer**\n"
            answer = f"{recap}\n\n{final}\\[\n\\boxed{{{boxed}}}\n\\]"
    if truncated:
        completion, answer, finish = reasoning, "", "length"  # the think block was never closed
    elif kind == "no_think":
        completion, answer, reasoning, finish = f"{reasoning}\n\n{answer}", f"{reasoning}\n\n{answer}", "", "stop"
    else:
        completion, finish = f"{reasoning}\n</think>\n\n{answer}", "stop"  # R1 templates prefill "<think>\n"
    return example_row(
        id=sample_id(prompt_id, index, TEACHER, SAMPLING),
        prompt_id=prompt_id,
        sample_index=index,
        domain=domain,
        source="synthetic",
        problem=problem,
        prompt_messages=prompt_messages,
        gold=gold,
        reasoning=reasoning,
        answer=answer,
        completion="<think>\n" + completion if kind != "no_think" else completion,
        finish_reason=finish,
        truncated=truncated,
        prompt_tokens=prompt_chars // CHARS_PER_TOKEN,
        completion_tokens=max(1, len(completion) // per_token),
        teacher=TEACHER,
        sampling=SAMPLING,
    )


def write_generate_output(out: Path, num_rows: int, samples: int = 4, seed: int = 0, rows_per_file: int = 10000):
    """A folder that looks like `distill generate` output: data/train-*.parquet via ShardWriter, and stats.json.

    Rows are made and written a shard at a time, so a million rows never sit in memory at once.
    """
    writer = ShardWriter(out / "data", shard_prefix(0, 1), GENERATE_SCHEMA)
    prompts_per_file = max(1, rows_per_file // samples)
    num_prompts = math.ceil(num_rows / samples)
    written = 0
    for start in range(0, num_prompts, prompts_per_file):
        rows = generate_rows(min(prompts_per_file, num_prompts - start), samples, seed, start)
        rows = rows[: num_rows - written]
        writer.write(rows)
        written += len(rows)
    stats = {"prompts": num_prompts, "samples": written, "errors": 0, "synthetic": True, "seed": seed}
    (out / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------------------------
# dedupe prompts
# --------------------------------------------------------------------------------------------------------------

SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sa", "vel", "do", "pri", "na", "gor", "e", "fin", "ul", "bra", "zo"]
EDITS = ("number", "swap", "word", "whitespace")


def _vocabulary(rng: np.random.Generator, size: int = 20000) -> list[str]:
    words = set()
    while len(words) < size:
        parts = rng.integers(0, len(SYLLABLES), int(rng.integers(2, 5)))
        words.add("".join(SYLLABLES[i] for i in parts))
    return sorted(words)


def _near_copy(rng: np.random.Generator, words: list[str], vocab: list[str]) -> str:
    """One small edit of a prompt: it stays a near duplicate (word-bigram Jaccard ~0.8 to 0.95) or exact."""
    words = list(words)
    edit = EDITS[int(rng.integers(len(EDITS)))]
    if edit == "number":
        numbers = [i for i, w in enumerate(words) if w.isdigit()]
        i = numbers[int(rng.integers(len(numbers)))]
        words[i] = str(int(words[i]) + int(rng.integers(1, 50)))
    elif edit == "swap":
        i = int(rng.integers(0, len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    elif edit == "word":
        words[int(rng.integers(len(words)))] = vocab[int(rng.integers(len(vocab)))]
    else:  # spacing and case only: the same prompt after normalization (an exact duplicate)
        return "  ".join(words).upper() + "\n"
    return " ".join(words)


def dedupe_prompts(
    num_prompts: int, near_fraction: float = 0.1, seed: int = 0, batch: int = 256, words: tuple[int, int] = (30, 60)
) -> Iterator[list[tuple[str, str, str | None]]]:
    """Batches of (prompt_id, text, source_id): source_id is the earlier prompt a near copy was made from.

    A `near_fraction` share of the prompts are edits of an earlier distinct prompt (chosen at random among the
    last 100k, so a copy often sits far from its source, as in merged datasets); the rest are new word sequences
    with a few numbers in them. Batches are made on demand, so a million prompts never sit in memory.
    """
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng)
    recent: list[list[str]] = []  # distinct prompts' words, a ring of the last 100k
    recent_ids: list[str] = []
    ring = 100_000
    made = 0
    while made < num_prompts:
        size = min(batch, num_prompts - made)
        out = []
        lengths = rng.integers(words[0], words[1] + 1, size)
        is_copy = rng.random(size) < near_fraction
        for k in range(size):
            prompt_id = f"p{seed}-{made + k:08d}"
            if is_copy[k] and recent:
                j = int(rng.integers(len(recent)))
                out.append((prompt_id, _near_copy(rng, recent[j], vocab), recent_ids[j]))
                continue
            picks = rng.integers(0, len(vocab), int(lengths[k])).tolist()
            ws = [vocab[i] for i in picks]
            for pos in rng.integers(0, len(ws), 3).tolist():  # a few numbers, as in math prompts
                ws[pos] = str(int(rng.integers(2, 1000)))
            if len(recent) < ring:
                recent.append(ws)
                recent_ids.append(prompt_id)
            else:
                slot = int(rng.integers(ring))
                recent[slot], recent_ids[slot] = ws, prompt_id
            out.append((prompt_id, " ".join(ws), None))
        made += size
        yield out


# --------------------------------------------------------------------------------------------------------------
# SFT rows
# --------------------------------------------------------------------------------------------------------------


def sft_rows(
    num_rows: int,
    seed: int = 0,
    median_tokens: float = MEDIAN_TOKENS,
    sigma: float = SIGMA,
    answer_chars: tuple[int, int] = (120, 400),
) -> list[dict]:
    """Filter-output rows (`id`, `messages`) of passing samples with long-tailed assistant turns (English math).

    The messages come from the filter's own `to_messages`, so the assistant turn has its exact shape:
    `<think>\\n…\\n</think>\\n\\n<answer>`.
    """
    rng = np.random.default_rng([seed, 7])
    en = _Text(rng, seed, "en")
    lengths = reasoning_tokens(rng, num_rows, median_tokens, sigma)
    rows = []
    for i in range(num_rows):
        a, b, c = (int(v) for v in rng.integers(2, 999, 3))
        problem = EN_PROBLEMS[int(rng.integers(len(EN_PROBLEMS)))].format(a=a, b=b, c=c)
        gold, _, _ = _gold_and_forms(rng)
        row = {
            "error": None,
            "prompt_messages": json.dumps(
                [{"role": "user", "content": DEFAULT_TEMPLATES["math"].replace("{problem}", problem)}]
            ),
            "reasoning": en.take(int(min(lengths[i], MAX_TOKENS)) * CHARS_PER_TOKEN),
            "answer": f"{en.take(int(rng.integers(*answer_chars)))}\n\n**Final Answer**\n\\[\n\\boxed{{{gold}}}\n\\]",
        }
        rows.append({"id": f"sft-{seed}-{i:07d}", "messages": to_messages(row)})
    return rows


def write_sft_output(out: Path, num_rows: int, seed: int = 0, **kwargs) -> Path:
    """A folder like `distill filter` output as `distill train` reads it: data/*.parquet with `messages`."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    schema = pa.schema([pa.field("id", pa.string()), pa.field("messages", MESSAGES_TYPE)])
    table = pa.Table.from_pylist(sft_rows(num_rows, seed, **kwargs), schema=schema)
    pq.write_table(table, out / "data" / "train-00000-of-00001-part-00000.parquet")
    return out
