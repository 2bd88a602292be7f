"""Asserts-style code tests (HumanEval, MBPP) run in two places: the tests here, the program's code in the sandbox.

`compile_tests` reads the asserts with `ast` and accepts the part of Python tests are written in (asserts, loops,
helper functions, comprehensions, try/except, `random`, `math`, `string`, `copy` and a few more modules);
`AssertsRun` interprets them in this process. Every time the tests touch the program (call `candidate`, a helper of
the prompt like HumanEval's `poly`, a class like MBPP's `Node`), that expression is sent over the sandbox's channel
and the program evaluates it; what comes back is plain data (decoded by plain.py into fresh objects of exact
types) or a handle to a program object that stays in the sandbox. Comparisons, arithmetic on plain data and the
asserts themselves run here, so the sample never holds an expected value, and nothing it does to its own process
(patched builtins or modules, `fractions.Fraction.__eq__`, an object equal to everything, frames, memory) bears on
a verdict: it must return the right values. A program object is never compared (`plain.Remote`).

What remains the program's: names the tests take from it (HumanEval 32's `poly`, 38's `encode_cyclic`) run in the
sandbox like the candidate, so a program may define them as it likes, as under HumanEval's own harness; and the
arguments it receives (HumanEval 38 encodes the string the candidate must then decode).

Work here is bounded: a step budget and the run's deadline, sizes checked before anything large is built
(plain.py), no set or dict of values crafted to share a hash, no attribute or method outside an allowlist, and no
function that reads files, the environment or the interpreter itself.
"""

from __future__ import annotations

import ast
import collections
import copy
import hashlib
import json
import random
import time
from dataclasses import dataclass

from distill.filter.verifiers import plain
from distill.filter.verifiers.asserts_env import (
    BINOPS,
    BUILTIN_NAMES,
    COMPARE,
    CONSTANTS,
    EXCEPTIONS,
    ITERABLE,
    METHODS,
    MODULES,
    NODES,
    UNARY,
    WIDTH,
    Bounded,
    Closure,
    Function,
    Module,
    RandomProxy,
    Scope,
    call_parent,
)
from distill.filter.verifiers.plain import NotPlain, Remote, Unsafe, check_plain, safe_dict, safe_set
from distill.sandbox.channel import ChannelClosed, ChannelTimeout, ReplyTooLarge

DETAILS_LIMIT = 300
MAX_STEPS = 2_000_000  # statements, calls, loop turns and items of the tests, per test case
MAX_DEPTH = 40  # calls of the tests' own functions inside each other


@dataclass(frozen=True)
class AssertsProgram:
    tree: ast.Module
    seed: int
    # Builtin names the tests call as the function under test (MBPP 126 tests a function named `sum`): when the
    # program defines one, the tests mean the program's. Never with an entry point (the tests then call
    # `candidate`), and never a builtin wrapped around another call of the program's (`abs(half(3.0) - 1.5)`):
    # a program defining `abs` must not decide that assert.
    own_builtins: frozenset = frozenset()


def compile_tests(asserts: str, entry_point: str | None) -> AssertsProgram | None:
    """The tests as a program this module can run, or None when they use Python outside its part (classes, `with`,
    decorators, imports of other modules, dunder attributes): those run whole in the sandbox (code.py)."""
    try:
        tree = ast.parse(asserts)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in ast.walk(tree):
        if not isinstance(node, NODES):
            return None
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                name = module or alias.name
                if name not in MODULES or (module and alias.name not in MODULES[module] and alias.name != "*"):
                    return None
                if module and alias.name == "*":
                    return None
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return None
        if isinstance(node, ast.FunctionDef) and (node.decorator_list or node.returns is not None):
            return None
    defines_check = any(isinstance(s, ast.FunctionDef) and s.name == "check" for s in tree.body)
    calls_check = any(
        isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and getattr(s.value.func, "id", None) == "check"
        for s in tree.body
    )
    if defines_check and not calls_check:
        if not entry_point:
            return None
        tree.body.append(ast.Expr(ast.Call(ast.Name("check", ast.Load()), [ast.Name(entry_point, ast.Load())], [])))
        ast.fix_missing_locations(tree)
    seed = int.from_bytes(hashlib.sha256(asserts.encode("utf-8", "replace")).digest()[:8], "big")
    return AssertsProgram(tree, seed, frozenset() if entry_point else _called_under_test(tree))


def _called_under_test(tree: ast.Module) -> frozenset:
    """Builtin names the tests call with arguments that call nothing of the program's (see AssertsProgram)."""
    own = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    own |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    own |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
    called, wrappers = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BUILTIN_NAMES:
            name = node.func.id
            called.add(name)
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                for sub in ast.walk(arg):
                    if isinstance(sub, ast.Name) and sub.id not in BUILTIN_NAMES and sub.id not in own:
                        if sub.id not in CONSTANTS and sub.id not in EXCEPTIONS:
                            wrappers.add(name)
    return frozenset(called - wrappers)


def program_names(code: str) -> frozenset:
    """The names a program defines at its top level, read without running it (a syntax error: none)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return frozenset()
    names = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in stmt.names}
    return frozenset(names)


# --------------------------------------------------------------------------------------------------------------
# the program's side: requests over the channel
# --------------------------------------------------------------------------------------------------------------


class RemoteError(Exception):
    """An exception the program raised while the tests called it."""

    def __init__(self, kind: str, mro: list[str], message: str):
        super().__init__(message)
        self.kind, self.mro, self.message = kind, mro, message

    def as_exception(self) -> BaseException:
        """The same exception as a builtin class here (what `except ValueError as e` binds)."""
        for name in self.mro:
            if name in EXCEPTIONS:
                return EXCEPTIONS[name](self.message)
        return Exception(self.message)


class Calls:
    """Evaluates wires in the program: one request line, one reply line, over the sandbox's channel."""

    def __init__(self, channel):
        self.channel = channel
        self.count = 0

    def eval(self, wire):
        self.count += 1
        line = self.channel.ask(json.dumps({"x": wire}, separators=(",", ":")).encode())
        try:
            reply = json.loads(line)
            if not isinstance(reply, dict):
                raise ValueError("a reply that is not an object")
            if "e" not in reply:
                return plain.decode(reply["v"])
            kind, mro, message = reply["e"]
            error = RemoteError(str(kind)[:80], [str(m)[:80] for m in list(mro)[:40]], str(message)[:200])
        except (ValueError, TypeError, KeyError, RecursionError, MemoryError) as exc:
            raise Unsafe(f"an unreadable reply from the program ({type(exc).__name__}: {str(exc)[:80]})") from None
        raise error


# --------------------------------------------------------------------------------------------------------------
# values of the tests' own
# --------------------------------------------------------------------------------------------------------------


class OutOfTime(Exception):
    pass


class AssertFailed(AssertionError):
    def __init__(self, source: str):
        super().__init__(source)
        self.source = source


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


FATAL = (OutOfTime, Unsafe, NotPlain, ChannelClosed, ChannelTimeout, ReplyTooLarge, _Return, _Break, _Continue)


# --------------------------------------------------------------------------------------------------------------
# the interpreter
# --------------------------------------------------------------------------------------------------------------


class AssertsRun:
    """Runs a AssertsProgram: `run()` gives (reason, details) as the code verifier reports them."""

    def __init__(
        self,
        program: AssertsProgram,
        calls: Calls | None,
        deadline: float,
        defined: frozenset = frozenset(),
        max_steps: int = MAX_STEPS,
    ):
        self.program, self.calls, self.deadline = program, calls, deadline
        self.steps, self.max_steps, self.depth = 0, max_steps, 0
        self.rng = random.Random(program.seed)
        self.globals = Scope()
        builtins = __import__("builtins")
        self.builtins = {name: getattr(builtins, name) for name in BUILTIN_NAMES}
        self.builtin_names = {id(value): name for name, value in self.builtins.items()}
        self.builtins.update(EXCEPTIONS)
        for name in program.own_builtins & defined:  # the function under test is named like a builtin
            self.builtins.pop(name, None)

    def run(self) -> tuple[str, str]:
        try:
            self.block(self.program.tree.body, self.globals)
        except AssertFailed as exc:
            return "wrong_answer", f"AssertionError: assert {exc.source}"[:DETAILS_LIMIT]
        except RemoteError as exc:
            return "runtime_error", f"{exc.kind}: {exc.message}"[:DETAILS_LIMIT]
        except (ChannelClosed, ChannelTimeout, ReplyTooLarge):
            raise  # the sandbox's: it decides how the run ended
        except OutOfTime:
            return "timeout", "the tests ran out of time"
        except (NotPlain, Unsafe) as exc:
            return "runtime_error", str(exc)[:DETAILS_LIMIT]
        except (RecursionError, MemoryError) as exc:
            return "runtime_error", f"the tests: {type(exc).__name__}"
        except Exception as exc:  # noqa: BLE001 - the tests raised on what the program returned (TypeError, ...)
            return "runtime_error", f"{type(exc).__name__}: {str(exc)[:200]}"[:DETAILS_LIMIT]
        return "ok", ""

    def tick(self) -> None:
        self.steps += 1
        if self.steps & 255 == 0:
            if self.steps > self.max_steps:
                raise Unsafe(f"the tests took more than {self.max_steps:,} steps")
            if time.monotonic() > self.deadline:
                raise OutOfTime

    def remote(self, wire):
        if self.calls is None:
            raise NotPlain("the tests reach the program, which is not running")
        return self.calls.eval(wire)

    # ---------------------------------------------------------------------------------------------- names

    def lookup(self, name: str, scope: Scope):
        while scope is not None:
            if name in scope:
                return scope[name]
            scope = scope.parent
        if name in self.builtins:
            return self.builtins[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        return Remote({"n": name}, name)  # the program's: its function, class or constant

    def resolve(self, value):
        """A program name or attribute fetched (plain data, or a handle); other values as they are."""
        if isinstance(value, Remote) and "h" not in value.wire:
            return self.remote(value.wire)
        return value

    def random_function(self, name: str):
        if name == "Random":
            return Function(lambda seed=None: RandomProxy(random.Random(seed), self), "Random", "random", self)
        return Function(getattr(self.rng, name), name, "random", self)

    # ------------------------------------------------------------------------------------------ statements

    def block(self, body: list, scope: dict) -> None:
        for stmt in body:
            self.statement(stmt, scope)

    def statement(self, node: ast.stmt, scope: dict) -> None:
        self.tick()
        kind = type(node)
        if kind is ast.Assert:
            if not self.truth(self.expr(node.test, scope)):
                raise AssertFailed(ast.unparse(node.test)[:200])
        elif kind is ast.Expr:
            self.expr(node.value, scope)
        elif kind is ast.Assign:
            value = self.expr(node.value, scope)
            for target in node.targets:
                self.assign(target, value, scope)
        elif kind is ast.AugAssign:
            current = self.expr(_load(node.target), scope)
            self.assign(node.target, self.binop(node.op, current, self.expr(node.value, scope)), scope)
        elif kind is ast.AnnAssign:
            if node.value is not None:
                self.assign(node.target, self.expr(node.value, scope), scope)
        elif kind is ast.For:
            self.for_loop(node, scope)
        elif kind is ast.While:
            while self.truth(self.expr(node.test, scope)):
                self.tick()
                try:
                    self.block(node.body, scope)
                except _Break:
                    break
                except _Continue:
                    continue
            else:
                self.block(node.orelse, scope)
        elif kind is ast.If:
            self.block(node.body if self.truth(self.expr(node.test, scope)) else node.orelse, scope)
        elif kind is ast.Try:
            self.try_block(node, scope)
        elif kind is ast.Raise:
            exc = self.expr(node.exc, scope) if node.exc is not None else RuntimeError("re-raise")
            if isinstance(exc, type) and issubclass(exc, BaseException):
                exc = exc()
            if not isinstance(exc, BaseException) or isinstance(exc, FATAL):
                raise NotPlain("the tests raise something that is not an exception")
            raise exc
        elif kind is ast.FunctionDef:
            scope[node.name] = Closure(node, scope, self)
        elif kind is ast.Return:
            raise _Return(self.expr(node.value, scope) if node.value is not None else None)
        elif kind is ast.Import:
            for alias in node.names:
                scope[alias.asname or alias.name] = Module(alias.name, self)
        elif kind is ast.ImportFrom:
            module = Module(node.module, self)
            for alias in node.names:
                scope[alias.asname or alias.name] = module.attribute(alias.name)
        elif kind is ast.Delete:
            for target in node.targets:
                self.delete(target, scope)
        elif kind is ast.Break:
            raise _Break
        elif kind is ast.Continue:
            raise _Continue
        # Pass, Global, Nonlocal: nothing to do (a test's functions see its module-level names anyway)

    def for_loop(self, node: ast.For, scope: dict) -> None:
        for item in self.iterate(self.expr(node.iter, scope)):
            self.tick()
            self.assign(node.target, item, scope)
            try:
                self.block(node.body, scope)
            except _Break:
                return
            except _Continue:
                continue
        self.block(node.orelse, scope)

    def try_block(self, node: ast.Try, scope: dict) -> None:
        try:
            try:
                self.block(node.body, scope)
            except FATAL:
                raise
            except Exception as exc:  # noqa: BLE001 - matched against the test's own handlers below
                caught = exc.as_exception() if isinstance(exc, RemoteError) else exc
                for handler in node.handlers:
                    if self.matches(handler, exc, scope):
                        if handler.name:
                            scope[handler.name] = caught
                        self.block(handler.body, scope)
                        break
                else:
                    raise
            else:
                self.block(node.orelse, scope)
        finally:
            self.block(node.finalbody, scope)

    def matches(self, handler: ast.ExceptHandler, exc: Exception, scope: dict) -> bool:
        if handler.type is None:
            return True
        wanted = self.expr(handler.type, scope)
        wanted = wanted if isinstance(wanted, tuple) else (wanted,)
        for cls in wanted:
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise NotPlain("an except clause names something that is not an exception")
            if isinstance(exc, RemoteError) and cls.__name__ in exc.mro:
                return True
            if not isinstance(exc, RemoteError) and isinstance(exc, cls):
                return True
        return False

    def assign(self, target: ast.expr, value, scope: dict) -> None:
        kind = type(target)
        if kind is ast.Name:
            scope[target.id] = value
        elif kind in (ast.Tuple, ast.List):
            items = list(self.iterate(value))
            starred = [i for i, t in enumerate(target.elts) if isinstance(t, ast.Starred)]
            if starred:
                i = starred[0]
                after = len(target.elts) - i - 1
                if len(items) < len(target.elts) - 1:
                    raise ValueError("not enough values to unpack")
                parts = items[:i] + [items[i : len(items) - after]] + items[len(items) - after :]
            else:
                if len(items) != len(target.elts):
                    raise ValueError(f"cannot unpack {len(items)} values into {len(target.elts)}")
                parts = items
            for sub, item in zip(target.elts, parts, strict=True):
                self.assign(sub.value if isinstance(sub, ast.Starred) else sub, item, scope)
        elif kind is ast.Subscript:
            base, key = self.expr(target.value, scope), self.expr(target.slice, scope)
            if isinstance(base, Remote):
                self.remote({"setitem": [base.wire, plain.encode(key), plain.encode(value)]})
            elif isinstance(base, (list, dict, collections.deque)):
                if isinstance(base, dict):
                    check_plain(key)
                base[key] = value
            else:
                raise NotPlain(f"cannot assign into a {type(base).__name__} here")
        elif kind is ast.Attribute:
            base = self.expr(target.value, scope)
            if not isinstance(base, Remote):
                raise NotPlain("the tests set an attribute of something that is not the program's")
            self.remote({"setattr": [base.wire, target.attr, plain.encode(value)]})
        else:
            raise NotPlain(f"cannot assign to {kind.__name__}")

    def delete(self, target: ast.expr, scope: dict) -> None:
        if isinstance(target, ast.Name):
            scope.pop(target.id, None)
        elif isinstance(target, ast.Subscript):
            base = self.expr(target.value, scope)
            if not isinstance(base, (list, dict)):
                raise NotPlain("cannot delete from that here")
            del base[self.expr(target.slice, scope)]

    # ----------------------------------------------------------------------------------------- expressions

    def expr(self, node: ast.expr, scope: dict):
        kind = type(node)
        if kind is ast.Constant:
            return node.value
        if kind is ast.Name:
            return self.lookup(node.id, scope)
        if kind is ast.Call:
            return self.call(node, scope)
        if kind is ast.Compare:
            left = self.resolve(self.expr(node.left, scope))
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.resolve(self.expr(right_node, scope))
                if type(op) not in (ast.Is, ast.IsNot):  # identity needs no value; every other test compares one
                    check_plain(left)
                    check_plain(right)
                result = COMPARE[type(op)](left, right)
                if not result:
                    return False
                left = right
            return True
        if kind is ast.BinOp:
            return self.binop(node.op, self.expr(node.left, scope), self.expr(node.right, scope))
        if kind is ast.UnaryOp:
            operand = self.expr(node.operand, scope)
            if type(node.op) is ast.Not:
                return not self.truth(operand)
            name, func = UNARY[type(node.op)]
            operand = self.resolve(operand)
            if isinstance(operand, Remote):
                return self.remote({"op": [name, operand.wire]})
            return func(operand)
        if kind is ast.BoolOp:
            result = None
            for value_node in node.values:
                result = self.expr(value_node, scope)
                truth = self.truth(result)
                if isinstance(node.op, ast.And) and not truth or isinstance(node.op, ast.Or) and truth:
                    return result
            return result
        if kind is ast.IfExp:
            return self.expr(node.body if self.truth(self.expr(node.test, scope)) else node.orelse, scope)
        if kind is ast.Attribute:
            return self.attribute(self.expr(node.value, scope), node.attr)
        if kind is ast.Subscript:
            base, key = self.expr(node.value, scope), self.expr(node.slice, scope)
            base = self.resolve(base)
            if isinstance(base, Remote) or isinstance(key, Remote):
                return self.remote({"op": ["getitem", plain.encode(base), plain.encode(key)]})
            return base[key]
        if kind is ast.Slice:
            parts = (node.lower, node.upper, node.step)
            return slice(*(None if p is None else self.resolve(self.expr(p, scope)) for p in parts))
        if kind in (ast.List, ast.Tuple, ast.Set):
            items = self.elements(node.elts, scope)
            if kind is ast.Set:
                return safe_set(items)
            return items if kind is ast.List else tuple(items)
        if kind is ast.Dict:
            pairs = []
            for key_node, value_node in zip(node.keys, node.values, strict=True):
                if key_node is None:  # {**other}
                    pairs += list(self.resolve(self.expr(value_node, scope)).items())
                else:
                    pairs.append((self.expr(key_node, scope), self.expr(value_node, scope)))
            for key, _ in pairs:
                check_plain(key)
            return safe_dict(pairs)
        if kind in (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp):
            return self.comprehension(node, scope)
        if kind is ast.Lambda:
            return Closure(node, scope, self)
        if kind is ast.JoinedStr:
            return "".join(self.formatted(v, scope) for v in node.values)
        if kind is ast.FormattedValue:
            return self.formatted(node, scope)
        if kind is ast.NamedExpr:
            value = self.expr(node.value, scope)
            scope[node.target.id] = value
            return value
        if kind is ast.Starred:
            raise NotPlain("a starred expression outside a call or display")
        raise NotPlain(f"cannot evaluate {kind.__name__}")

    def elements(self, nodes: list, scope: dict) -> list:
        items = []
        for element in nodes:
            if isinstance(element, ast.Starred):
                items.extend(self.iterate(self.expr(element.value, scope)))
            else:
                items.append(self.expr(element, scope))
            if len(items) > plain.SIZE_LIMIT:
                raise Unsafe("a display too large to build here")
        return items

    def formatted(self, node, scope: dict) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        value = self.plain_value(self.expr(node.value, scope))
        if node.conversion == ord("r"):
            value = repr(value)
        elif node.conversion == ord("s"):
            value = str(value)
        elif node.conversion == ord("a"):
            value = ascii(value)
        spec = "".join(self.formatted(v, scope) for v in node.format_spec.values) if node.format_spec else ""
        if WIDTH.search(spec):
            raise Unsafe("a format width too large to compute here")
        return format(value, spec)

    def comprehension(self, node, scope: dict):
        inner = Scope(scope)  # the comprehension's own names; the tests' names stay visible
        results: list = []

        def loop(generators: list) -> None:
            if not generators:
                self.tick()
                if isinstance(node, ast.DictComp):
                    results.append((self.expr(node.key, inner), self.expr(node.value, inner)))
                else:
                    results.append(self.expr(node.elt, inner))
                if len(results) > plain.SIZE_LIMIT:
                    raise Unsafe("a comprehension too large to build here")
                return
            first, rest = generators[0], generators[1:]
            for item in self.iterate(self.expr(first.iter, inner)):
                self.assign(first.target, item, inner)
                if all(self.truth(self.expr(cond, inner)) for cond in first.ifs):
                    loop(rest)

        loop(node.generators)
        if isinstance(node, ast.SetComp):
            return safe_set(results)
        if isinstance(node, ast.DictComp):
            for key, _ in results:
                check_plain(key)
            return safe_dict(results)
        return results if isinstance(node, ast.ListComp) else Bounded(iter(results), self)

    def binop(self, op: ast.operator, left, right):
        name, func = BINOPS[type(op)]
        left, right = self.resolve(left), self.resolve(right)
        if isinstance(left, Remote) or isinstance(right, Remote):
            return self.remote({"op": [name, plain.encode(left), plain.encode(right)]})
        plain.guard_binop(type(op).__name__, left, right)
        if type(op) is ast.Mod and isinstance(left, (str, bytes)) and WIDTH.search(str(left)):
            raise Unsafe("a format width too large to compute here")
        return func(left, right)

    def truth(self, value) -> bool:
        value = self.resolve(value)
        if isinstance(value, Remote):
            answer = self.remote({"op": ["truth", value.wire]})
            if type(answer) is not bool:
                raise NotPlain("the program's truth value is not a bool")
            return answer
        return bool(value)

    def plain_value(self, value):
        value = self.resolve(value)
        check_plain(value)
        return value

    def iterate(self, value):
        """The items of something the tests loop over: program values become a plain list first (one request)."""
        value = self.resolve(value)
        if isinstance(value, Remote):
            value = self.remote({"call": [{"b": "list"}, [value.wire], {}]})
        if isinstance(value, Bounded):
            return value
        if isinstance(value, ITERABLE):
            return Bounded(iter(value), self)
        if hasattr(value, "__next__"):
            return Bounded(value, self)
        raise NotPlain(f"cannot loop over a {type(value).__name__} here")

    def attribute(self, base, attr: str):
        if isinstance(base, Remote):
            return Remote({"a": [base.wire, attr]}, attr)
        if isinstance(base, Module):
            return base.attribute(attr)
        if isinstance(base, RandomProxy):
            return base.attribute(attr)
        for kind, names in METHODS.items():
            if isinstance(base, kind) and attr in names:
                value = getattr(base, attr)
                return Function(value, attr, "", self) if callable(value) else value
        raise NotPlain(f"the tests use `.{attr}` of a {type(base).__name__}, which is not allowed here")

    def call(self, node: ast.Call, scope: dict):
        func = self.expr(node.func, scope)
        args = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                args.extend(self.iterate(self.expr(arg.value, scope)))
            else:
                args.append(self.expr(arg, scope))
        kwargs = {}
        for keyword in node.keywords:
            value = self.expr(keyword.value, scope)
            if keyword.arg is None:
                value = self.resolve(value)
                if not isinstance(value, dict):
                    raise NotPlain("** of something that is not a dict")
                kwargs.update(value)
            else:
                kwargs[keyword.arg] = value
        self.tick()
        if isinstance(func, Remote):
            return self.remote({"call": [func.wire, [self.encode(a) for a in args], self.encode(kwargs)["dict"]]})
        if isinstance(func, type) and issubclass(func, BaseException):
            return func(*[self.plain_value(a) for a in args])
        if id(func) in self.builtin_names:
            return call_parent(self, Function(func, self.builtin_names[id(func)], None, self), args, kwargs)
        if isinstance(func, (Function, Closure)):
            return func(*args, **kwargs)
        raise NotPlain(f"the tests call a {type(func).__name__}, which is not allowed here")

    def encode(self, value, depth: int = 0):
        """A value as the program receives it: plain data, handles, and what the program can rebuild itself (a
        builtin or module function by name, a lambda of the tests from its source)."""
        if depth > plain.MAX_DEPTH:
            raise Unsafe("nested too deep")
        if id(value) in self.builtin_names:
            return {"b": self.builtin_names[id(value)]}
        if isinstance(value, (Function, Closure)):
            return value.wire()
        if isinstance(value, Module):
            return value.wire
        if isinstance(value, Bounded):
            return {"iter": [self.encode(item, depth + 1) for item in value]}
        if isinstance(value, range):
            return {"range": [value.start, value.stop, value.step]}
        if type(value) in (list, tuple, set, frozenset) or isinstance(value, collections.deque):
            kind = "list" if isinstance(value, collections.deque) else type(value).__name__
            return {kind: [self.encode(item, depth + 1) for item in value]}
        if isinstance(value, dict):
            return {"dict": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()]}
        return plain.encode(value, depth)

    def call_closure(self, closure: Closure, args: tuple, kwargs: dict):
        self.tick()
        if self.depth >= MAX_DEPTH:
            raise Unsafe("the tests' own functions call each other too deep")
        node = closure.node
        scope = Scope(closure.scope)
        spec = node.args
        params = [a.arg for a in spec.posonlyargs + spec.args]
        defaults = [self.expr(d, closure.scope) for d in spec.defaults]
        bound = dict(zip(params[len(params) - len(defaults) :], defaults, strict=True))
        for name, value in zip(params, args, strict=False):
            bound[name] = value
        extra = list(args[len(params) :])
        if extra and spec.vararg is None:
            raise TypeError(f"too many arguments ({len(args)})")
        if spec.vararg is not None:
            bound[spec.vararg.arg] = tuple(extra)
        for kw, default in zip(spec.kwonlyargs, spec.kw_defaults, strict=True):
            if default is not None:
                bound[kw.arg] = self.expr(default, closure.scope)
        named = {k: v for k, v in kwargs.items() if k not in params and k not in {a.arg for a in spec.kwonlyargs}}
        bound.update({k: v for k, v in kwargs.items() if k not in named})
        if named:
            if spec.kwarg is None:
                raise TypeError(f"unexpected keyword argument {next(iter(named))}")
            bound[spec.kwarg.arg] = named
        elif spec.kwarg is not None:
            bound[spec.kwarg.arg] = {}
        missing = [p for p in params if p not in bound]
        if missing:
            raise TypeError(f"missing argument {missing[0]}")
        scope.update(bound)
        self.depth += 1
        try:
            if isinstance(node, ast.Lambda):
                return self.expr(node.body, scope)
            self.block(node.body, scope)
            return None
        except _Return as ret:
            return ret.value
        finally:
            self.depth -= 1


def _load(target: ast.expr) -> ast.expr:
    """The value of an augmented assignment's target, read before it is written."""
    node = copy.deepcopy(target)
    for sub in ast.walk(node):
        if hasattr(sub, "ctx"):
            sub.ctx = ast.Load()
    return node
