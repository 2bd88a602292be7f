"""Decontamination on real benchmark text (tests/data, see its README): every verbatim copy caught, lightly
reworded short problems caught, clean problems left alone. benchmarks/decontam.py prints the same figures."""

import gzip
import json
from pathlib import Path

import pytest

from distill.filter.dataset.decontam import Decontaminator

DATA = Path(__file__).parent / "data"


def rows(name: str) -> list[dict]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def benchmarks() -> dict[str, list[str]]:
    found = {
        "math500": [r["problem"] for r in rows("math500.jsonl.gz")],
        "gsm8k": [r["question"] for r in rows("gsm8k_test.jsonl.gz")],
    }
    # AIME 2024/2025 ship with no package on PyPI: measured when a copy is put beside the others (see the README).
    for name in ("aime24", "aime25"):
        path = DATA / f"{name}.jsonl"
        if path.exists():
            found[name] = [json.loads(line)["problem"] for line in path.read_text(encoding="utf-8").splitlines()]
    return found


@pytest.fixture(scope="module")
def decontam(benchmarks) -> Decontaminator:
    return Decontaminator(benchmarks)


@pytest.mark.parametrize("name", ["math500", "gsm8k", "aime24", "aime25"])
def test_every_verbatim_copy_is_caught(benchmarks, decontam, name):
    if name not in benchmarks:
        pytest.skip(f"tests/data/{name}.jsonl is not here (no PyPI source); benchmarks/decontam.py --benchmark FILE")
    missed = [text[:80] for text in benchmarks[name] if name not in decontam.match(text)]
    assert not missed, f"{len(missed)} of {len(benchmarks[name])} verbatim copies missed: {missed[:3]}"


def test_a_short_problem_that_stock_phrases_cut_into_pieces():
    """The issue's case: "what is the value of" splits it into runs of 6 and 5 words, no 8-gram was left."""
    text = "If $x^2 - x - 1 = 0$, what is the value of $x^3 - 2x + 1$?"
    assert Decontaminator({"b": [text]}).match(text) == ["b"]
    assert Decontaminator({"b": [text]}).match(text.replace("what is the value of", "find the value of")) == ["b"]
    assert Decontaminator({"b": [text]}).match("If $y = 3$, what is the value of $y^2 + 4y$?") == []


def test_lightly_reworded_short_problems_are_caught(decontam):
    """Deterministic rewordings of MATH-500's short problems (benchmarks/decontam.py made them): a synonym for the
    verb or a stock phrase, or one number changed. Before: 126/158 and 80/142."""
    rewordings = [json.loads(line) for line in (DATA / "math500_short_rewordings.jsonl").read_text().splitlines()]
    for kind, at_least in (("synonym", 0.9), ("number", 0.9)):
        texts = [r["reworded"] for r in rewordings if r["kind"] == kind]
        caught = sum("math500" in decontam.match(text) for text in texts)
        assert caught / len(texts) >= at_least, f"{kind}: {caught} of {len(texts)}"


def test_clean_problems_are_left_alone(benchmarks):
    only_math500 = Decontaminator({"math500": benchmarks["math500"]})
    assert not [t for t in benchmarks["gsm8k"] if only_math500.match(t)]
    for name in ("aime24", "aime25"):  # were 1 of 30 each (stock phrasing and scattered one-word matches)
        if name in benchmarks:
            assert not [t[:80] for t in benchmarks[name] if only_math500.match(t)]
    # MATH test problems outside MATH-500: most flagged ones are the same problem with other numbers, which counts
    # as a copy; this pins the figure (41 of 1,000) so that a looser rule shows.
    clean = [r["problem"] for r in rows("math_test_clean.jsonl.gz")]
    assert sum(bool(only_math500.match(t)) for t in clean) <= 45
