"""What the interpreted tests see (asserts.py runs them): the builtins, modules and methods of plain values they may
use, each with its size guards, their own functions and scopes, and the operators. Nothing here reads a file, the
environment or the interpreter itself; a name the tests do not define and this module does not offer is the
program's (`plain.Remote`).
"""

from __future__ import annotations

import ast
import bisect
import collections
import functools
import heapq
import itertools
import math
import operator
import random
import re
import string
import sys

from distill.filter.verifiers import plain
from distill.filter.verifiers.plain import NotPlain, Remote, Unsafe, check_plain, check_size, safe_dict, safe_set

BUILTIN_NAMES = (
    "abs all any bin bool bytes chr complex dict divmod enumerate filter float format frozenset hex int isinstance "
    "issubclass iter len list map max min next oct ord pow print range repr reversed round set slice sorted str "
    "sum tuple type zip"
).split()
EXCEPTIONS = {
    cls.__name__: cls
    for cls in (
        BaseException, Exception, ArithmeticError, AssertionError, AttributeError, IndexError, KeyError,
        LookupError, NameError, NotImplementedError, OverflowError, RecursionError, RuntimeError, StopIteration,
        TypeError, ValueError, ZeroDivisionError, UnicodeError, OSError, MemoryError,
    )
}  # fmt: skip
CONSTANTS = {"True": True, "False": False, "None": None, "NotImplemented": NotImplemented, "Ellipsis": ...}
# Modules the tests may import, and what of each: pure functions and constants.
MODULES = {
    "math": [n for n in dir(math) if not n.startswith("_")],
    "cmath": [n for n in dir(__import__("cmath")) if not n.startswith("_")],
    "string": "ascii_letters ascii_lowercase ascii_uppercase digits hexdigits octdigits punctuation printable "
    "whitespace capwords".split(),
    "random": "random randint randrange choice choices shuffle sample uniform gauss seed getrandbits Random".split(),
    "copy": ["copy", "deepcopy"],
    "itertools": "accumulate chain combinations combinations_with_replacement compress count cycle dropwhile "
    "filterfalse groupby islice pairwise permutations product repeat starmap takewhile zip_longest".split(),
    "collections": ["Counter", "OrderedDict", "defaultdict", "deque"],
    "functools": ["reduce", "cmp_to_key"],
    "operator": "add sub mul truediv floordiv mod neg pos abs eq ne lt le gt ge not_ itemgetter".split(),
    "heapq": "heapify heappush heappop heappushpop heapreplace nlargest nsmallest merge".split(),
    "bisect": "bisect bisect_left bisect_right insort insort_left insort_right".split(),
    "fractions": ["Fraction"],
    "decimal": ["Decimal"],
    "statistics": "mean median median_low median_high mode multimode stdev pstdev variance pvariance fmean".split(),
    "sys": ["maxsize", "getsizeof"],
}
METHODS = {
    str: "capitalize casefold center count encode endswith expandtabs find format_map index isalnum isalpha isascii "
    "isdecimal isdigit isidentifier islower isnumeric isprintable isspace istitle isupper join ljust lower lstrip "
    "partition removeprefix removesuffix replace rfind rindex rjust rpartition rsplit rstrip split splitlines "
    "startswith strip swapcase title upper zfill",
    bytes: "count decode endswith find hex index join lower replace split startswith strip upper",
    list: "append clear copy count extend index insert pop remove reverse sort",
    tuple: "count index",
    dict: "clear copy get items keys pop popitem setdefault update values most_common elements",
    set: "add clear copy difference difference_update discard intersection intersection_update isdisjoint "
    "issubset issuperset pop remove symmetric_difference symmetric_difference_update union update",
    frozenset: "copy difference intersection isdisjoint issubset issuperset symmetric_difference union",
    int: "bit_length bit_count conjugate real imag numerator denominator as_integer_ratio",
    float: "is_integer real imag conjugate as_integer_ratio hex",
    complex: "real imag conjugate",
    collections.deque: "append appendleft clear copy count extend extendleft index insert pop popleft remove "
    "reverse rotate maxlen",
}
METHODS = {kind: set(names.replace("format_map ", "").split()) for kind, names in METHODS.items()}
WIDE = {"center", "ljust", "rjust", "zfill", "expandtabs"}  # methods whose argument sets the result's size
NODES = (
    ast.Module, ast.Expr, ast.Assert, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.While, ast.If,
    ast.Pass, ast.Break, ast.Continue, ast.Try, ast.ExceptHandler, ast.Raise, ast.FunctionDef, ast.Return,
    ast.Import, ast.ImportFrom, ast.alias, ast.Delete, ast.Global, ast.Nonlocal, ast.arguments, ast.arg,
    ast.keyword, ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Slice, ast.Starred, ast.List,
    ast.Tuple, ast.Set, ast.Dict, ast.Call, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
    ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.JoinedStr,
    ast.FormattedValue, ast.NamedExpr, ast.Load, ast.Store, ast.Del, ast.expr_context, ast.operator,
    ast.unaryop, ast.boolop, ast.cmpop,
)  # fmt: skip
ITERABLE = (str, bytes, list, tuple, set, frozenset, dict, range, collections.deque, type({}.keys()),
            type({}.values()), type({}.items()))  # fmt: skip
WIDTH = re.compile(r"(\d{7,})")  # a format width or precision of a million or more


class Scope(dict):
    """Names of the tests: a function's or comprehension's own, then the scopes around it."""

    __slots__ = ("parent",)

    def __init__(self, parent: Scope | None = None):
        super().__init__()
        self.parent = parent


class Function:
    """A parent function the tests call: a builtin or a module's function, with its size guards; sent to the
    program by name (`wire`) when the tests pass it to the program."""

    def __init__(self, func, name: str, module: str | None, run):
        self.func, self.name, self.module, self.run = func, name, module, run

    def wire(self):
        if not self.module:
            raise NotPlain(f"the method {self.name}() cannot be sent to the program")
        return {"m": [self.module, self.name]}

    def __call__(self, *args, **kwargs):
        return call_parent(self.run, self, args, kwargs)


class Closure:
    """A function or lambda the tests define, run by the interpreter; a lambda can be sent to the program (its
    source, with the values of the test's names it uses)."""

    def __init__(self, node, scope: dict, run):
        self.node, self.scope, self.run = node, scope, run

    def wire(self):
        if not isinstance(self.node, ast.Lambda):
            raise NotPlain("a function of the tests cannot be sent to the program")
        params = {a.arg for a in self.node.args.args}
        env = {}
        for node in ast.walk(self.node.body):
            if isinstance(node, ast.Name) and node.id not in params and node.id not in env:
                value = self.run.lookup(node.id, self.scope)
                if not isinstance(value, Remote) or "n" not in value.wire:  # the program's own names resolve there
                    env[node.id] = self.run.encode(value)
        return {"lambda": [ast.unparse(self.node), env]}

    def __call__(self, *args, **kwargs):
        return self.run.call_closure(self, args, kwargs)


class Module:
    def __init__(self, name: str, run):
        self.name, self.run = name, run
        self.wire = {"mod": name}

    def attribute(self, attr: str):
        if attr not in MODULES[self.name]:
            raise AttributeError(f"module {self.name} has no attribute {attr} here")
        if self.name == "random":
            return self.run.random_function(attr)
        value = getattr(__import__(self.name), attr)
        return Function(value, attr, self.name, self.run) if callable(value) else value


class Bounded:
    """An iterator the tests consume: each item is a step, and at most SIZE_LIMIT of them."""

    def __init__(self, iterator, run):
        self.iterator, self.run, self.count = iterator, run, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.count += 1
        if self.count > plain.SIZE_LIMIT:
            raise Unsafe("an iterator too long to consume here")
        self.run.tick()
        return next(self.iterator)


def _bin(op):
    return lambda a, b: op(a, b)


BINOPS = {
    ast.Add: ("add", operator.add), ast.Sub: ("sub", operator.sub), ast.Mult: ("mul", operator.mul),
    ast.Div: ("truediv", operator.truediv), ast.FloorDiv: ("floordiv", operator.floordiv),
    ast.Mod: ("mod", operator.mod), ast.Pow: ("pow", operator.pow), ast.LShift: ("lshift", operator.lshift),
    ast.RShift: ("rshift", operator.rshift), ast.BitAnd: ("and_", operator.and_), ast.BitOr: ("or_", operator.or_),
    ast.BitXor: ("xor", operator.xor), ast.MatMult: ("matmul", operator.matmul),
}  # fmt: skip
UNARY = {ast.USub: ("neg", operator.neg), ast.UAdd: ("pos", operator.pos), ast.Invert: ("invert", operator.invert),
         ast.Not: ("not_", operator.not_)}  # fmt: skip
COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
}  # fmt: skip


class RandomProxy:
    """`random.Random(seed)` in the tests: its drawing methods only."""

    def __init__(self, rng: random.Random, run):
        self.rng, self.run = rng, run

    def attribute(self, attr: str):
        if attr not in MODULES["random"] or attr == "Random":
            raise NotPlain(f"random.Random has no `{attr}` here")
        return Function(getattr(self.rng, attr), attr, "random", self.run)


# --------------------------------------------------------------------------------------------------------------
# calling a builtin, a module's function or a method of a plain value, with its guards
# --------------------------------------------------------------------------------------------------------------


def call_parent(run, func: Function, args: tuple, kwargs: dict):
    """A builtin or module function: applied in the program when the tests hand it a program object, else
    here with its size guards."""
    args = [run.resolve(a) for a in args]
    kwargs = {k: run.resolve(v) for k, v in kwargs.items()}
    if func.module != "" and any(isinstance(a, Remote) for a in [*args, *kwargs.values()]):
        fn = {"b": func.name} if func.module is None else func.wire()
        return run.remote({"call": [fn, [run.encode(a) for a in args], run.encode(kwargs)["dict"]]})
    name = func.name
    for arg in args:
        if not isinstance(arg, Bounded) and plain.size_of(arg) > plain.SIZE_LIMIT and hasattr(arg, "__len__"):
            raise Unsafe(f"{name}() of a value too large to use here")
    if func.module is None:
        return builtin(run, name, func.func, args, kwargs)
    if func.module == "math":
        plain.guarded_math(name, args)
    if func.module == "":  # a method of a plain value
        if name in WIDE and any(isinstance(a, int) and a > plain.SIZE_LIMIT for a in args):
            raise Unsafe(f"{name}() too wide to compute here")
        if name == "join" and args:
            args[0] = list(run.iterate(args[0]))
            if sum(plain.size_of(x) for x in args[0]) > plain.SIZE_LIMIT:
                raise Unsafe("a join too large to compute here")
        if name == "replace" and len(args) >= 2 and isinstance(args[0], (str, bytes)) and args[0]:
            base = func.func.__self__
            grown = base.count(args[0]) * max(0, len(args[1]) - len(args[0]))
            if len(base) + grown > plain.SIZE_LIMIT:
                raise Unsafe("a replace too large to compute here")
    if func.module == "random" and name in ("choices", "sample") and int(kwargs.get("k", 1)) > plain.SIZE_LIMIT:
        raise Unsafe("too many random draws")
    if func.module == "random" and name == "getrandbits" and args and args[0] > plain.SIZE_LIMIT:
        raise Unsafe("too many random bits")
    if func.module == "collections" and name in ("Counter", "OrderedDict") and args:
        items = list(run.iterate(args[0])) if not isinstance(args[0], dict) else list(args[0])
        plain.check_spread(items)
    if func.module == "itertools" and name == "repeat" and len(args) < 2 and "times" not in kwargs:
        raise Unsafe("an endless repeat")
    result = func.func(*args, **kwargs)
    return wrap(run, result)


def builtin(run, name: str, func, args: list, kwargs: dict):
    if name == "print":
        return None
    if name not in ("isinstance", "issubclass"):
        # A builtin handed on (`map(int, xs)`, `sorted(xs, key=len)`) is called from C: with its guards.
        args = [Function(a, run.builtin_names[id(a)], None, run) if id(a) in run.builtin_names else a
                for a in args]  # fmt: skip
        kwargs = {k: Function(v, run.builtin_names[id(v)], None, run) if id(v) in run.builtin_names else v
                  for k, v in kwargs.items()}  # fmt: skip
    if name in ("set", "frozenset"):
        return safe_set(run.iterate(args[0]) if args else (), func)
    if name == "dict":
        pairs = (
            list(args[0].items()) if args and isinstance(args[0], dict) else list(run.iterate(args[0])) if args else []
        )
        return safe_dict(pairs + list(kwargs.items()))
    if name == "iter" and len(args) != 1:
        raise NotPlain("iter() with a sentinel is not allowed here")
    if name == "type" and len(args) != 1:
        raise NotPlain("type() makes classes only in the program")
    if name == "bytes" and args and isinstance(args[0], int) and args[0] > plain.SIZE_LIMIT:
        raise Unsafe("bytes too large to build here")
    if name == "pow" and len(args) == 2:
        plain.guard_binop("Pow", args[0], args[1])
    if name == "format" and len(args) == 2 and WIDTH.search(str(args[1])):
        raise Unsafe("a format width too large to compute here")
    if name in ("list", "tuple", "sorted", "sum", "any", "all", "enumerate", "filter") and args:
        args[0] = run.iterate(args[0])
    elif name in ("min", "max") and len(args) == 1:
        args[0] = run.iterate(args[0])
    elif name in ("zip", "map"):
        args = [a if name == "map" and i == 0 else run.iterate(a) for i, a in enumerate(args)]
    if name in ("sorted", "sum", "min", "max"):  # they compare or add the items here: plain data only
        args[0] = list(args[0]) if len(args) == 1 or name != "min" and name != "max" else args[0]
        for arg in args[:1] if name in ("sorted", "sum") or len(args) == 1 else args:
            check_plain(arg)
    if name == "sum" and len(args) == 2 and isinstance(args[1], (list, tuple, str)) and len(args[0]) > 10_000:
        raise Unsafe("sum() of sequences too long to compute here")
    result = func(*args, **kwargs)
    if name == "int" and isinstance(result, int):
        check_size(result)
    return wrap(run, result)


def wrap(run, result):
    if hasattr(result, "__next__") and not isinstance(result, Bounded):
        return Bounded(result, run)
    if isinstance(result, (str, bytes, list, tuple)):
        check_size(result)
    return result


# The modules `Module.attribute` serves (imported here so they are loaded once, before any test runs).
_SERVED = (bisect, functools, heapq, itertools, string, sys)
