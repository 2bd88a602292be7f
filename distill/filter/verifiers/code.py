"""The `code` verifier: run the final code block of an answer against the sample's tests, in the sandbox.

Tests (the `tests` column, JSON) come in two shapes:
- `{"stdin_stdout": [{"input": "...", "output": "..."}, ...]}`: the program reads the input on stdin; its stdout
  must equal the output, up to trailing spaces on each line and trailing newlines.
- `{"asserts": "<python>", "entry_point": "<name>"}` (HumanEval style): the program, then the asserts in its
  namespace, must run to the end; when the asserts define `check(candidate)`, `check(<entry_point>)` is called.

Asserts run in two places (asserts.py): the tests in this process, interpreted, and every expression of the
program's they reach (a call of `candidate`, a helper of the prompt, a class) in the sandbox, where a small harness
(`CALLS_HARNESS`) runs the program, then answers each request over the sandbox's channel with the value as tagged
plain data (plain.py: only exact plain types come out here) or a handle to an object it keeps. Comparisons and the
asserts themselves run here; the sandbox never holds an expected value or a secret, so nothing a program does to its
own process (shadowed builtins, patched modules or `Fraction.__eq__`, an object equal to everything, reading frames,
memory or the asserts' source) helps it pass: it must return the right values. This covers every test of HumanEval
(164) and MBPP (974), loops, helpers, random inputs and setup code included.

Asserts outside the interpreter's part of Python (classes, `with`, imports of other modules) run whole through
`HARNESS`, in one process after the program: it reads the asserts and a random token from stdin before the program
runs (so they are in no file), runs the program, restores what it may have tampered with (builtins, `sys.modules`,
`sys.path`, trace and profile hooks, `sys.excepthook`), runs the asserts, and prints the token only when they all
held; `python -I` keeps the working folder off the import path. What remains possible there, for a program written
to beat its tests: digging the token out of its own memory or frames, module-level names that shadow builtins,
patching objects the asserts reach, an `__eq__` that is always true. The stdin/stdout shape is immune to all of it
(its expected output never enters the sandbox).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from distill.errors import DistillError
from distill.filter.verifiers.asserts import (
    DETAILS_LIMIT,
    AssertsProgram,
    AssertsRun,
    Calls,
    compile_tests,
    program_names,
)
from distill.filter.verifiers.base import BaseVerifier, Verdict, safe_verify
from distill.sandbox.bwrap import FIX, RunResult, Sandbox


@dataclass(frozen=True)
class Language:
    """How to run one language: the program's file name, the command (the interpreter must live under /usr, the
    only host folder the sandbox sees), the fence tags that mark its code blocks, and a program printing "ok"
    that checks the interpreter runs in the sandbox."""

    filename: str
    command: tuple[str, ...]
    fence_tags: tuple[str, ...]
    hello: str


# One entry per language; a new language is a line here (its tests must be stdin/stdout ones: the asserts shape
# is Python).
LANGUAGES: dict[str, Language] = {
    "python": Language("main.py", ("python3", "-B", "main.py"), ("python", "py", "python3"), "print('ok')"),
}

# A fence line, matched one line at a time: an opener (with its tag) and a closer (a bare fence).
FENCE_OPEN = re.compile(r"[ \t]*```[ \t]*([\w+#.-]*)")
FENCE_CLOSE = re.compile(r"[ \t]*```[ \t]*")
HARNESS_FILE = "_distill_harness.py"
HARNESS = """\
import builtins, json, linecache, os, sys, threading, types

# Everything used after the program ran is bound here, before it runs: it may replace module attributes and builtins.
def _run(run=exec, write=os.write, exit_now=os._exit, stdout=sys.stdout, stderr=sys.stderr,
         settrace=sys.settrace, setprofile=sys.setprofile, thread_hooks=(threading.settrace, threading.setprofile),
         builtins_dict=vars(builtins), clear=dict.clear, update=dict.update, excepthook=sys.__excepthook__,
         monitoring=getattr(sys, "monitoring", None), modules=sys.modules, path=sys.path, kind=type,
         attr=getattr, module_type=types.ModuleType, names=list):
    given = json.loads(sys.stdin.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    token, tests = given.pop("token"), given.pop("tests")
    clean_builtins = dict(builtins_dict)
    clean_modules, clean_path = dict(modules), list(path)
    linecache.cache["<tests>"] = (len(tests), None, tests.splitlines(True), "<tests>")
    checks = compile(tests, "<tests>", "exec")
    with open("main.py", encoding="utf-8") as f:
        program = compile(f.read(), os.path.abspath("main.py"), "exec")
    module = types.ModuleType("__main__")
    module.__file__ = os.path.abspath("main.py")
    sys.modules["__main__"] = module
    sys.argv = ["main.py"]
    try:
        run(program, module.__dict__)
    except SystemExit as exc:
        stderr.write("the program exited (status %r) before the tests ran\\n" % (exc.code,))
        stderr.flush()
        exit_now(1)
    settrace(None)
    setprofile(None)
    for hook in thread_hooks:
        hook(None)
    if monitoring is not None:
        for tool in range(6):
            try:
                monitoring.set_events(tool, 0)
            except ValueError:  # not in use
                pass
    clear(builtins_dict)
    update(builtins_dict, clean_builtins)
    # Modules the program replaced are put back; ones it brought from outside /usr (or planted as other objects)
    # are dropped, so the asserts import the real ones. (Modules it imported from /usr stay: a fresh copy would
    # make its objects compare unequal to the asserts' own.)
    clean_modules["__main__"] = module
    for name in names(modules):
        if name in clean_modules:
            continue
        mod = modules[name]
        origin = attr(mod, "__file__", None) if kind(mod) is module_type else "planted"
        if origin is not None and not (kind(origin) is str and origin.startswith("/usr/")):
            del modules[name]
    update(modules, clean_modules)
    path[:] = clean_path
    sys.excepthook, sys.stdout, sys.stderr = excepthook, stdout, stderr
    try:
        run(checks, module.__dict__)
    except SystemExit as exc:
        stderr.write("the program exited (status %r) during the tests\\n" % (exc.code,))
        stderr.flush()
        exit_now(1)
    stdout.flush()
    stderr.flush()
    write(1, ("\\n" + token + "\\n").encode())
    exit_now(0)

_run()
"""

CALLS_HARNESS_FILE = "_distill_calls.py"
# Runs the program, then serves the tests' requests (asserts.py) over the channel: each request is an expression
# of the program's (a call, an attribute, an operator on program objects), each reply its value as tagged plain data
# or a handle to an object kept here. It holds no secret and no expected value: whatever the program does to it
# (or writes on the reply pipe in its place), the tests here compare what comes back with values the sandbox never
# saw. Everything it uses is bound before the program runs, which may replace builtins and modules.
CALLS_HARNESS = """\
import builtins, fractions, decimal, json, math, operator, os, sys, types

def _main(argv=list(sys.argv), loads=json.loads, dumps=json.dumps, read=os.read, write=os.write,
          exit_now=os._exit, saved=dict(vars(builtins)), ops=dict(vars(operator)), modules=dict(sys.modules),
          Fraction=fractions.Fraction, Decimal=decimal.Decimal, numerator=fractions.Fraction.numerator,
          denominator=fractions.Fraction.denominator, dec_str=decimal.Decimal.__str__, _type=type,
          isinst=isinstance, int_=int, float_=float, str_=str, bytes_=bytes, list_=list, tuple_=tuple, dict_=dict,
          set_=set, frozenset_=frozenset, complex_=complex, bool_=bool, none=type(None), hex_=hex,
          repr_=float.__repr__, items=dict.items, len_=len, getattr_=getattr, setattr_=setattr, iter_=iter,
          range_=range, import_=__import__, eval_=eval, compile_=compile, exc_base=BaseException):
    requests, replies = int_(argv[-2]), int_(argv[-1])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    with open("main.py", encoding="utf-8") as f:
        program = compile_(f.read(), os.path.abspath("main.py"), "exec")
    module = types.ModuleType("__main__")
    module.__file__ = os.path.abspath("main.py")
    sys.modules["__main__"] = module
    sys.argv = ["main.py"]
    try:
        exec(program, module.__dict__)
    except SystemExit as exc:
        sys.stderr.write("the program exited (status %r) before the tests ran\\n" % (exc.code,))
        sys.stderr.flush()
        exit_now(1)
    space = module.__dict__
    handles = []

    def enc(v, depth=0):
        if depth > 32:
            raise ValueError("nested too deep")
        t = _type(v)
        if v is None or t is bool_ or t is str_:
            return v
        if t is int_:
            return {"int": hex_(v)}
        if t is float_:
            return {"float": repr_(v)}
        if t is complex_:
            return {"complex": [repr_(v.real), repr_(v.imag)]}
        if t is bytes_:
            return {"bytes": v.hex()}
        if t is Fraction:
            return {"fraction": [hex_(numerator.__get__(v)), hex_(denominator.__get__(v))]}
        if t is Decimal:
            return {"decimal": dec_str(v)}
        # Subclasses of plain types are sent as their base value, read with the base type's own methods: what
        # the subclass overrides (__eq__, __iter__, __repr__) is never asked.
        if isinst(v, int_):
            return {"int": hex_(int_.__index__(v))}
        if isinst(v, float_):
            return {"float": repr_(float_.__float__(v))}
        if isinst(v, str_):
            return str_.__str__(v)
        if isinst(v, bytes_):
            return {"bytes": bytes_.__bytes__(v).hex()}
        if isinst(v, (list_, tuple_)):
            base = list_ if isinst(v, list_) else tuple_
            return {base.__name__: [enc(x, depth + 1) for x in base.__iter__(v)]}
        if isinst(v, (set_, frozenset_)):
            base = set_ if isinst(v, set_) else frozenset_
            out = [enc(x, depth + 1) for x in base.__iter__(v)]
            if not any(isinst(x, dict_) and "h" in x for x in out):
                return {base.__name__: out}
        elif isinst(v, dict_):
            out = [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in items(v)]
            if not any(isinst(k, dict_) and "h" in k for k, _ in out):
                return {"dict": out}
        handles.append(v)
        return {"h": len_(handles) - 1, "t": _type(v).__name__[:80]}

    def ev(w, depth=0):
        if depth > 64:
            raise ValueError("nested too deep")
        if w is None or _type(w) in (bool_, str_):
            return w
        ((tag, body),) = items(w)
        if tag == "h":
            return handles[body]
        if tag == "n":
            if body in space:
                return space[body]
            if body in saved:
                return saved[body]
            raise NameError("name %r is not defined" % body)
        if tag == "a":
            return getattr_(ev(body[0], depth + 1), body[1])
        if tag == "call":
            fn, args, kwargs = body
            return ev(fn, depth + 1)(*[ev(a, depth + 1) for a in args], **{ev(k, depth + 1): ev(x, depth + 1)
                                                                         for k, x in kwargs})
        if tag == "b":
            return saved[body]
        if tag == "m":
            return getattr_(modules.get(body[0]) or import_(body[0]), body[1])
        if tag == "mod":
            return modules.get(body) or import_(body)
        if tag == "op":
            return ops[body[0]](*[ev(a, depth + 1) for a in body[1:]])
        if tag == "setattr":
            setattr_(ev(body[0], depth + 1), body[1], ev(body[2], depth + 1))
            return None
        if tag == "setitem":
            ev(body[0], depth + 1)[ev(body[1], depth + 1)] = ev(body[2], depth + 1)
            return None
        if tag == "lambda":
            source, env = body
            names = list_(env)
            made = eval_(compile_("lambda %s: (%s)" % (", ".join(names), source), "<test lambda>", "eval"), space)
            return made(*[ev(env[n], depth + 1) for n in names])
        if tag == "int":
            return int_(body, 16)
        if tag == "float":
            return float_(body)
        if tag == "complex":
            return complex_(float_(body[0]), float_(body[1]))
        if tag == "bytes":
            return bytes_.fromhex(body)
        if tag == "fraction":
            return Fraction(int_(body[0], 16), int_(body[1], 16))
        if tag == "decimal":
            return Decimal(body)
        if tag == "range":
            return range_(*body)
        if tag == "iter":
            return iter_([ev(x, depth + 1) for x in body])
        if tag in ("list", "tuple", "set", "frozenset"):
            return {"list": list_, "tuple": tuple_, "set": set_, "frozenset": frozenset_}[tag](
                ev(x, depth + 1) for x in body)
        if tag == "dict":
            return dict_((ev(k, depth + 1), ev(x, depth + 1)) for k, x in body)
        raise ValueError("unknown request %r" % tag)

    pending = b""
    while True:
        while b"\\n" not in pending:
            chunk = read(requests, 1 << 16)
            if not chunk:
                exit_now(0)
            pending += chunk
        line, _, pending = pending.partition(b"\\n")
        try:
            reply = {"v": enc(ev(loads(line)["x"]))}
        except exc_base as exc:  # SystemExit included: the call did not return a value
            kind = _type(exc)
            mro = [k.__name__ for k in kind.__mro__]
            try:
                message = str_(exc)[:200]
            except exc_base:
                message = ""
            reply = {"e": [kind.__name__, mro, message]}
        try:
            data = (dumps(reply, separators=(",", ":")) + "\\n").encode()
        except exc_base as exc:
            data = (dumps({"e": [_type(exc).__name__, [], "the value cannot be sent back"]}) + "\\n").encode()
        view = memoryview(data)
        while view:
            view = view[write(replies, view):]

_main()
"""


_warned_unsandboxed = False
_warn_lock = threading.Lock()


def extract_code(answer: str | None, fence_tags: Sequence[str] = ("python", "py", "python3")) -> str | None:
    """The final fenced block tagged with one of `fence_tags` or untagged; else the final block of any tag.

    One pass over the lines (linear in the answer's length): a fence line opens a block, the next bare fence line
    closes it, and an unclosed block at the end is no block. (A regex searching for the closer from every opener
    is quadratic on an answer of many unclosed fences: 26 s for 78 KB.)
    """
    text = answer or ""
    blocks: list[tuple[str, str]] = []
    open_tag: str | None = None  # the tag of the block being read, None outside a block
    start = 0
    pos = text.find("```")
    while pos >= 0:
        # Only lines holding a fence matter: jump from one to the next, each line looked at once.
        line_start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        line = text[line_start : len(text) if end < 0 else end]
        if open_tag is None:
            opener = FENCE_OPEN.match(line)
            if opener and end >= 0:  # an opener needs its newline
                open_tag, start = opener.group(1).lower(), end + 1
        elif FENCE_CLOSE.fullmatch(line):
            blocks.append((open_tag, text[start:line_start]))
            open_tag = None
        if end < 0:
            break
        pos = text.find("```", end + 1)
    if not blocks:
        return None
    preferred = [code for tag, code in blocks if tag in fence_tags or tag == ""]
    return preferred[-1] if preferred else blocks[-1][1]


def normalize_output(text: str) -> str:
    """Whitespace that judges ignore: carriage returns, trailing spaces on each line, trailing newlines."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")


@dataclass(frozen=True)
class _Case:
    stdin: str = ""
    expected: str | None = None  # None: an asserts test
    asserts: str = ""  # the asserts (and the call to check); run whole by HARNESS when they cannot be compiled
    program: AssertsProgram | None = None  # the asserts as asserts.py runs them, the program's calls in the sandbox


def parse_tests(tests: str | dict | None) -> list[_Case]:
    """The test cases of a sample; an empty list when there are none or they cannot be read."""
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except ValueError:
            return []
    if not isinstance(tests, dict):
        return []
    cases: list[_Case] = []
    for item in tests.get("stdin_stdout") or []:
        if isinstance(item, dict) and isinstance(item.get("output"), str):
            cases.append(_Case(stdin=str(item.get("input") or ""), expected=item["output"]))
    asserts = tests.get("asserts")
    if isinstance(asserts, str) and asserts.strip():
        asserts += "\n"
        entry_point = tests.get("entry_point")
        entry_point = entry_point if isinstance(entry_point, str) and entry_point.isidentifier() else None
        program = compile_tests(asserts, entry_point)
        if entry_point and re.search(r"^def check\(", asserts, re.M):
            asserts += f"\ncheck({entry_point})\n"
        cases.append(_Case(asserts=asserts, program=program))
    return cases


class CodeVerifier(BaseVerifier):
    """Rejection sampling for code: passes when the answer's final code block passes every test."""

    name = "code"
    domains = ("code",)

    def __init__(
        self,
        *,
        timeout_per_test: float = 5.0,
        timeout_per_sample: float = 30.0,
        memory_mb: int = 512,
        max_processes: int = 32,
        max_file_size_mb: int = 16,
        cpu_seconds: float | None = None,
        workers: int | None = None,
        language: str = "python",
        allow_unsandboxed: bool = False,
    ):
        if language not in LANGUAGES:
            raise DistillError(f"unknown code language {language!r}: use one of {', '.join(sorted(LANGUAGES))}")
        self.language = LANGUAGES[language]
        self.timeout_per_test = timeout_per_test
        self.timeout_per_sample = timeout_per_sample
        self.workers = max(1, workers or os.cpu_count() or 1)
        limits = dict(
            memory_mb=memory_mb,
            max_processes=max_processes,
            max_file_size_mb=max_file_size_mb,
            cpu_seconds=cpu_seconds,
            slots=self.workers,
        )
        self.sandbox = Sandbox(**limits)
        try:
            self.sandbox.check(self.language.command, {self.language.filename: self.language.hello})
        except DistillError as exc:
            if not allow_unsandboxed:
                raise
            self.sandbox.close()
            self.sandbox = Sandbox(unsandboxed=True, **limits)
            _warn_unsandboxed(str(exc))

    def verify(self, sample: dict) -> Verdict:
        code = extract_code(sample.get("answer"), self.language.fence_tags)
        if code is None:
            return Verdict(False, "no_code_block")
        cases = parse_tests(sample.get("tests"))
        if not cases:
            return Verdict(None, "no_tests")
        deadline = time.monotonic() + self.timeout_per_sample
        passed = 0
        first_failure: tuple[str, str] | None = None  # (reason, details)
        for index, case in enumerate(cases):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                first_failure = first_failure or ("timeout", f"test {index}: sample time limit reached")
                break
            token = session = None
            outcome: list[tuple[str, str]] = []  # the session's verdict, when it finished
            files, argv, stdin = {self.language.filename: code}, self.language.command, case.stdin
            if case.program is not None:
                # The tests run here, the program's calls in the sandbox (asserts.py).
                files[CALLS_HARNESS_FILE] = CALLS_HARNESS
                argv = (*self.language.command[:-1], "-I", CALLS_HARNESS_FILE)
                stdin = ""
                session = _session(case.program, outcome, program_names(code))
            elif case.expected is None:
                # Asserts that cannot be split: the harness runs the program, then the asserts, in one process.
                token = secrets.token_hex(16)
                files[HARNESS_FILE] = HARNESS
                argv = (*self.language.command[:-1], "-I", HARNESS_FILE)
                stdin = json.dumps({"token": token, "tests": case.asserts})
            result = self.sandbox.run(
                files, argv, stdin=stdin, timeout=min(self.timeout_per_test, remaining), session=session
            )
            reason, details = _judge(case, result, token, outcome[0] if outcome else None)
            if reason == "ok":
                passed += 1
                continue
            if first_failure is None:
                first_failure = (reason, f"test {index}: {details}" if details else f"test {index}")
            # A wrong answer or a crash is cheap: keep going for the score. A timeout, the memory limit or a broken
            # sandbox would likely repeat on every test and burn the sample's time.
            if reason not in ("wrong_answer", "runtime_error"):
                break
        score = passed / len(cases)
        if first_failure is None:
            return Verdict(True, "ok", score=1.0)
        reason, details = first_failure
        passed_flag = None if reason == "sandbox_error" else False
        return Verdict(passed_flag, reason, score=score, details=details[:DETAILS_LIMIT])

    def verify_batch(self, samples: Sequence[dict]) -> list[Verdict]:
        """Samples run in parallel threads (each test is a subprocess); verdicts come back in order."""
        if len(samples) <= 1 or self.workers == 1:
            return [safe_verify(self, s) for s in samples]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(samples)), thread_name_prefix="code") as pool:
            return list(pool.map(lambda s: safe_verify(self, s), samples))

    def close(self) -> None:
        self.sandbox.close()


def _session(program: AssertsProgram, outcome: list, defined: frozenset):
    """What runs here while the program runs: the tests, calling it over the channel; their verdict into `outcome`."""

    def session(channel) -> None:
        outcome.append(AssertsRun(program, Calls(channel), channel.deadline, defined).run())

    return session


def _judge(
    case: _Case, result: RunResult, token: str | None = None, outcome: tuple[str, str] | None = None
) -> tuple[str, str]:
    """The reason code of one test run, and a short note. An asserts test passes only on the harness's `token`,
    or on the verdict of the tests run here (`outcome`)."""
    if not result.started:
        return "sandbox_error", _tail(result.stderr)
    if result.memory_error:
        return "memory", ""
    if result.timed_out or result.cpu_limited:
        return "timeout", ""
    if case.program is not None:
        if outcome is not None:
            return outcome
        if result.output_truncated:
            return "runtime_error", "a reply over the output limit"
        if result.returncode != 0:
            note = f"exit status {result.returncode}"
            return "runtime_error", f"{note}: {_tail(result.stderr)}" if result.stderr.strip() else note
        return outcome or ("runtime_error", "the program stopped before the tests ran to the end")
    if result.returncode != 0:
        if case.expected is None and "AssertionError" in result.stderr[-2000:]:
            return "wrong_answer", _tail(result.stderr)
        if result.file_size_limited:
            return "runtime_error", "output or file size limit exceeded"
        note = f"exit status {result.returncode}"
        return "runtime_error", f"{note}: {_tail(result.stderr)}" if result.stderr.strip() else note
    if case.expected is None:
        if token is not None and token in result.stdout.splitlines():
            return "ok", ""
        if result.output_truncated:
            return "runtime_error", "output over the limit: the end of the tests was not seen"
        return "runtime_error", "exit status 0 before the tests ran to the end"
    if result.output_truncated or normalize_output(result.stdout) != normalize_output(case.expected):
        return "wrong_answer", "output differs"
    return "ok", ""


def _tail(text: str, lines: int = 3) -> str:
    """The last lines of stderr: for Python, the exception."""
    tail = "\n".join(text.strip().splitlines()[-lines:])
    return tail[-(DETAILS_LIMIT - 20) :]


def _warn_unsandboxed(why: str) -> None:
    global _warned_unsandboxed
    with _warn_lock:
        if not _warned_unsandboxed:
            _warned_unsandboxed = True
            why = why.removesuffix(f": {FIX}")  # "the code sandbox cannot start (...)", without the advice
            print(f"warning: {why}; running model-written code WITHOUT isolation (allow_unsandboxed)", file=sys.stderr)
