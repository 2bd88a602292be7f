"""Asserts-style code tests split in two: the calls run in the sandbox, the checks run here.

`split_asserts` reads HumanEval/MBPP-style asserts (`assert candidate(1, 2) == 3`) in this process with `ast` and
turns each into calls, which the sandbox runs and returns as tagged plain data, and a check (`_Slot(0) == 3`) that
`judge_split` evaluates here on those values, so the sample never sees an expected value or a secret. The harness
that runs the calls lives in code.py beside the verifier; see code.py's docstring for what is split and what runs
whole.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

DETAILS_LIMIT = 300
RESULTS_PREFIX = "__distill_results__ "


class _Slot(ast.expr):
    """A place in an assert where the parent puts the value the sandbox returned for call `index`."""

    _fields = ("index",)


@dataclass(frozen=True)
class _Check:
    source: str  # the assert, for the verdict's details
    test: ast.expr  # its test with _Slots, evaluated in the parent by `_evaluate`


# Functions and constants the parent evaluates itself (on plain data only): what asserts wrap results in.
SAFE_FUNCTIONS = {
    f.__name__: f
    for f in (
        abs,
        len,
        round,
        sorted,
        set,
        list,
        tuple,
        sum,
        min,
        max,
        int,
        float,
        str,
        bool,
        all,
        any,
        frozenset,
        dict,
        isinstance,
        type,
        repr,
        divmod,
        complex,
        bytes,
    )
}
SAFE_FUNCTIONS["reversed"] = lambda x: list(reversed(x))
SAFE_FUNCTIONS["enumerate"] = lambda x, start=0: list(enumerate(x, start))
SAFE_FUNCTIONS["zip"] = lambda *xs: list(zip(*xs, strict=False))
SAFE_FUNCTIONS["range"] = lambda *a: list(range(*a)) if len(range(*a)) <= 10**6 else _too_big()
SAFE_NAMES = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "tuple": tuple,
    "dict": dict,
    "set": set,
    "frozenset": frozenset,
    "bytes": bytes,
    "complex": complex,
    "NoneType": type(None),
}
MATH_NAMES = (
    "isclose",
    "fabs",
    "sqrt",
    "floor",
    "ceil",
    "isnan",
    "isinf",
    "isfinite",
    "log",
    "log2",
    "log10",
    "exp",
    "pi",
    "e",
    "inf",
    "nan",
    "tau",
    "gcd",
    "trunc",
    "hypot",
    "copysign",
    "prod",
    "fsum",
)
SIZE_LIMIT = 10**7  # elements or digits: what a parent-side operation may build from the sandbox's values
# Statements a test may hold besides asserts, skipped: the parent needs no imports (only `math`, which it has).
_SKIPPED_IMPORTS = {"math"}


def _too_big():
    raise ValueError("too large to evaluate")


def split_asserts(asserts: str, entry_point: str | None) -> tuple[tuple[str, ...], tuple[_Check, ...]] | None:
    """The call expressions the sandbox evaluates and the checks the parent makes of their values, or None when
    the asserts do more than assert on calls (loops, helpers, try/except, ...): those run whole in the sandbox.

    `assert candidate(1, 2) == 3` becomes the call `add(1, 2)` (sent to the sandbox) and the check `_Slot(0) == 3`
    (kept here): the sandbox never sees an expected value. Only calls, names and attributes the parent cannot
    evaluate itself go to the sandbox; comparisons, arithmetic, `abs`, `len`, `sorted`, `math.isclose` and the
    like run in the parent on the returned plain data.
    """
    try:
        tree = ast.parse(asserts)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    env: dict[str, ast.expr] = {}  # top-level NAME = <literal>: inlined where used
    asserts_found: list[tuple[ast.Assert, dict[str, str]]] = []
    check: ast.FunctionDef | None = None
    check_args: list[str] = []
    for stmt in tree.body:
        if _skippable(stmt):
            continue
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "check" and check is None:
            args = stmt.args
            if len(args.args) != 1 or args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
                return None
            if stmt.decorator_list:
                return None
            check = stmt
            continue
        if isinstance(stmt, ast.Assign) and _literal_assign(stmt):
            env[stmt.targets[0].id] = stmt.value
            continue
        if isinstance(stmt, ast.Assert):
            asserts_found.append((stmt, {}))
            continue
        if (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Name)
            and stmt.value.func.id == "check"
            and len(stmt.value.args) == 1
            and not stmt.value.keywords
            and isinstance(stmt.value.args[0], ast.Name)
        ):
            check_args.append(stmt.value.args[0].id)
            continue
        return None
    if check is not None:
        if not check_args and entry_point:
            check_args.append(entry_point)
        if len(check_args) != 1:
            return None
        renames = {check.args.args[0].arg: check_args[0]}
        local_env = dict(env)
        for stmt in check.body:
            if _skippable(stmt):
                continue
            if isinstance(stmt, ast.Assign) and _literal_assign(stmt):
                local_env[stmt.targets[0].id] = stmt.value
                continue
            if not isinstance(stmt, ast.Assert):
                return None
            asserts_found.append((stmt, renames))
        env = local_env
    elif check_args:
        return None
    if not asserts_found:
        return None
    calls: list[str] = []
    checks: list[_Check] = []
    for stmt, renames in asserts_found:
        try:
            test = _lift(stmt.test, env, renames, calls)
        except _Unsplittable:
            return None
        checks.append(_Check(_source(stmt.test, renames), test))
    return tuple(calls), tuple(checks)


class _Unsplittable(Exception):
    pass


def _skippable(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):  # a docstring
        return True
    if isinstance(stmt, ast.Import):
        return all(alias.name in _SKIPPED_IMPORTS and alias.asname is None for alias in stmt.names)
    return False


def _literal_assign(stmt: ast.Assign) -> bool:
    if len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
        return False
    try:
        ast.literal_eval(stmt.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


class _Rename(ast.NodeTransformer):
    def __init__(self, renames: dict[str, str], env: dict[str, ast.expr]):
        self.renames, self.env = renames, env

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if node.id in self.renames:
            return ast.copy_location(ast.Name(self.renames[node.id], node.ctx), node)
        if node.id in self.env:
            return self.env[node.id]
        return node


def _source(node: ast.expr, renames: dict[str, str]) -> str:
    return ast.unparse(_Rename(renames, {}).visit(copy.deepcopy(node)))


_PARENT_NODES = (
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.UnaryOp,
    ast.BinOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Subscript,
    ast.Slice,
)
_JUDGING = (ast.Compare, ast.BoolOp, ast.IfExp)


def _lift(node: ast.expr, env: dict[str, ast.expr], renames: dict[str, str], calls: list[str]) -> ast.expr:
    """`node` with every part the parent cannot evaluate replaced by a _Slot whose expression joins `calls`."""
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in SAFE_NAMES and node.id not in renames:
            return node
        return _to_sandbox(node, env, renames, calls)
    if isinstance(node, ast.Starred):
        raise _Unsplittable
    if isinstance(node, ast.Attribute) and _is_math(node):
        return node
    if isinstance(node, ast.Call):
        func = node.func
        safe = (isinstance(func, ast.Name) and func.id in SAFE_FUNCTIONS and func.id not in renames) or (
            isinstance(func, ast.Attribute) and _is_math(func)
        )
        if safe:
            if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                raise _Unsplittable
            args = [_lift(a, env, renames, calls) for a in node.args]
            keywords = [ast.keyword(k.arg, _lift(k.value, env, renames, calls)) for k in node.keywords]
            return ast.Call(func, args, keywords)
        return _to_sandbox(node, env, renames, calls)
    if isinstance(node, _PARENT_NODES):
        lifted = copy.copy(node)
        for name, value in ast.iter_fields(node):
            if isinstance(value, ast.expr):
                setattr(lifted, name, _lift(value, env, renames, calls))
            elif isinstance(value, list):
                setattr(lifted, name, [_lift(v, env, renames, calls) if isinstance(v, ast.expr) else v for v in value])
        return lifted
    return _to_sandbox(node, env, renames, calls)


def _is_math(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in MATH_NAMES


def _to_sandbox(node: ast.expr, env: dict[str, ast.expr], renames: dict[str, str], calls: list[str]) -> _Slot:
    """Send `node` to the sandbox. It must hold no judgement (a comparison would carry an expected value in)."""
    for inner in ast.walk(node):
        if isinstance(inner, _JUDGING):
            raise _Unsplittable
        if isinstance(inner, ast.Name) and inner.id == "math":
            raise _Unsplittable
    calls.append(ast.unparse(_Rename(renames, env).visit(copy.deepcopy(node))))
    return _Slot(len(calls) - 1)


def decode_plain(value: object) -> object:
    """The harness's tagged plain data back into Python values (only plain types can come out)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((tag, body),) = value.items()
        if tag == "int" and isinstance(body, str):
            return int(body, 16)
        if tag == "float" and isinstance(body, str):
            return float(body)
        if tag == "complex" and isinstance(body, list) and len(body) == 2:
            return complex(float(body[0]), float(body[1]))
        if tag == "bytes" and isinstance(body, str):
            return bytes.fromhex(body)
        if isinstance(body, list):
            if tag == "list":
                return [decode_plain(v) for v in body]
            if tag == "tuple":
                return tuple(decode_plain(v) for v in body)
            if tag == "set":
                return {decode_plain(v) for v in body}
            if tag == "frozenset":
                return frozenset(decode_plain(v) for v in body)
            if tag == "dict":
                return {decode_plain(k): decode_plain(v) for k, v in body}
    raise ValueError(f"not tagged plain data: {str(value)[:60]}")


class _CallFailed(Exception):
    pass


_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
}
_CMPOPS = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert}


def _size(value: object) -> int:
    if isinstance(value, int):
        return value.bit_length() // 3
    try:
        return len(value)  # type: ignore[arg-type]
    except TypeError:
        return 1


def _evaluate(node: ast.expr, values: list) -> object:
    """Evaluate a lifted assert on plain data: only the node types `_lift` lets through, with size guards."""
    if isinstance(node, _Slot):
        kind, value = values[node.index]
        if kind == "error":
            raise _CallFailed(value)
        return value
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return SAFE_NAMES[node.id]
    if isinstance(node, ast.Attribute):  # math.<name>, the only attribute `_lift` leaves here
        return getattr(math, node.attr)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_evaluate(e, values) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        return {_evaluate(k, values): _evaluate(v, values) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, values))
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, values), _evaluate(node.right, values)
        op = type(node.op)
        if op is ast.Pow and isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(left.bit_length(), 1) * right > SIZE_LIMIT * 3:
                _too_big()
        if op is ast.LShift and isinstance(right, int) and right > SIZE_LIMIT * 3:
            _too_big()
        if op is ast.Mult and isinstance(left, int) != isinstance(right, int):
            count, seq = (left, right) if isinstance(left, int) else (right, left)
            if not isinstance(count, bool) and count * _size(seq) > SIZE_LIMIT:
                _too_big()
        return _BINOPS[op](left, right)
    if isinstance(node, ast.BoolOp):
        result: object = None
        for value_node in node.values:
            result = _evaluate(value_node, values)
            if isinstance(node.op, ast.And) and not result:
                return result
            if isinstance(node.op, ast.Or) and result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(right_node, values)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, values) else node.orelse, values)
    if isinstance(node, ast.Subscript):
        return _evaluate(node.value, values)[_evaluate(node.slice, values)]
    if isinstance(node, ast.Slice):
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if p is None else _evaluate(p, values) for p in parts))
    if isinstance(node, ast.Call):
        func = getattr(math, node.func.attr) if isinstance(node.func, ast.Attribute) else SAFE_FUNCTIONS[node.func.id]
        args = [_evaluate(a, values) for a in node.args]
        kwargs = {k.arg: _evaluate(k.value, values) for k in node.keywords}
        if func is math.factorial and args and isinstance(args[0], int) and args[0] > 10**4:
            _too_big()
        return func(*args, **kwargs)
    raise TypeError(f"cannot evaluate {type(node).__name__}")


def judge_split(checks: Sequence[_Check], calls: Sequence[str], stdout: str) -> tuple[str, str]:
    """Compare what the sandbox returned for `calls` with the checks, in this process; (reason, details)."""
    line = next((x for x in reversed(stdout.splitlines()) if x.startswith(RESULTS_PREFIX)), None)
    if line is None:
        return "runtime_error", "exit status 0 before the tests ran to the end"
    try:
        raw = json.loads(line[len(RESULTS_PREFIX) :])
        if not isinstance(raw, list) or len(raw) != len(calls):
            raise ValueError("wrong number of results")
        values: list[tuple[str, object]] = []
        for item in raw:
            if isinstance(item, dict) and isinstance(item.get("error"), str):
                values.append(("error", item["error"]))
            elif isinstance(item, dict) and "value" in item:
                values.append(("value", decode_plain(item["value"])))
            else:
                raise ValueError("a result is neither a value nor an error")
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        return "runtime_error", f"unreadable results: {exc}"[:DETAILS_LIMIT]
    for check in checks:
        try:
            held = bool(_evaluate(check.test, values))
        except _CallFailed as exc:
            return "runtime_error", f"{check.source[:120]}: {exc}"
        except (RecursionError, MemoryError) as exc:
            return "runtime_error", f"{check.source[:120]}: {type(exc).__name__}"
        except Exception as exc:  # noqa: BLE001 - an assert that raises on the returned value (TypeError, ...)
            return "runtime_error", f"{check.source[:120]}: {type(exc).__name__}: {str(exc)[:80]}"
        if not held:
            return "wrong_answer", f"AssertionError: assert {check.source[:200]}"
    return "ok", ""
