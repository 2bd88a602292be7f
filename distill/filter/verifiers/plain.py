"""What crosses the channel between the asserts interpreter (asserts.py, in this process) and the program (in the
sandbox): plain data, tagged in JSON, and handles to program objects that stay in the sandbox.

Everything that comes back is decoded in time and memory linear in its size: a nesting bound, a byte cap (the
channel's), and no set or dict built from values that share one hash (a set of 80,000 integers that all hash alike
took 94 s to rebuild here: every insertion compares with every earlier one). Only exact plain types come out of a
decode, so nothing a program defines (an `__eq__` that is always true, a float subclass) is ever called here.
"""

from __future__ import annotations

from collections import Counter

MAX_DEPTH = 32  # nesting of a value sent or received
SPREAD = 32  # distinct values that may share one hash in a container built here (real data: 1, rarely 2)
SIZE_LIMIT = 10**6  # items, characters or digits in a value this process builds for a test


class NotPlain(Exception):
    """A value the tests would compare (or send) is a program object, not plain data."""


class Unsafe(Exception):
    """Building this value here would cost more than a test may: too large, or keys crafted to collide."""


class Remote:
    """A program object in the sandbox: a handle to a value it returned, or a name or attribute of the program,
    fetched when used. Never compared, hashed by identity: what a program object says about itself decides
    nothing here."""

    __slots__ = ("wire", "type_name")

    def __init__(self, wire: dict, type_name: str | None = None):
        self.wire, self.type_name = wire, type_name

    def __repr__(self) -> str:
        return f"<{self.type_name or 'program object'}>"

    def _refuse(self, *args):
        raise NotPlain(f"a {self.type_name or 'program object'} is not plain data: it cannot be compared")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse
    __hash__ = object.__hash__


def check_plain(value, depth: int = 0) -> None:
    """Raise NotPlain when `value` holds a program object anywhere (what the tests compare must be plain data)."""
    if isinstance(value, Remote):
        value._refuse()
    if depth > MAX_DEPTH:
        raise Unsafe("nested too deep")
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            if isinstance(item, (Remote, list, tuple, set, frozenset, dict)):
                check_plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_plain(key, depth + 1)
            check_plain(item, depth + 1)


def check_spread(items) -> None:
    """Refuse to hash `items` into one set or dict when more than SPREAD distinct ones share a hash.

    Linear: the hashes are counted (hash values are small ints, which never collide among themselves), and only a
    hash held by more than SPREAD items has its items compared, each with at most SPREAD distinct ones.
    """
    items = items if isinstance(items, (list, tuple)) else list(items)
    if len(items) <= SPREAD:
        return
    try:
        hashes = [hash(item) for item in items]
    except TypeError:
        return  # unhashable: the set or dict built from them fails on its own
    counts = Counter(hashes)
    crowded = {h for h, n in counts.items() if n > SPREAD}
    for h in crowded:
        distinct: list = []
        for item, item_hash in zip(items, hashes, strict=True):
            if item_hash == h and not any(_same(item, seen) for seen in distinct):
                distinct.append(item)
                if len(distinct) > SPREAD:
                    raise Unsafe(f"more than {SPREAD} distinct values share one hash")


def _same(a, b) -> bool:
    try:
        return a is b or (type(a) is type(b) and a == b)
    except Exception:  # noqa: BLE001 - a comparison that fails says they differ
        return False


def safe_set(items, kind=set):
    items = list(items)
    check_spread(items)
    return kind(items)


def safe_dict(pairs) -> dict:
    pairs = [tuple(pair) for pair in pairs]
    check_spread([key for key, _ in pairs])
    return dict(pairs)


# --------------------------------------------------------------------------------------------------------------
# the wire: JSON-able tags
# --------------------------------------------------------------------------------------------------------------


def decode(wire, depth: int = 0):
    """A reply's value as exact plain data (and Remote handles); raises ValueError on anything else."""
    if depth > MAX_DEPTH:
        raise Unsafe("nested too deep")
    if wire is None or isinstance(wire, (bool, str)):
        return wire
    if not isinstance(wire, dict) or len(wire) not in (1, 2):
        raise ValueError(f"not a tagged value: {str(wire)[:60]}")
    if "h" in wire:
        if not isinstance(wire["h"], int) or isinstance(wire["h"], bool):
            raise ValueError("a bad handle")
        return Remote({"h": wire["h"]}, str(wire.get("t", ""))[:80] or None)
    ((tag, body),) = wire.items()
    if tag == "int" and isinstance(body, str):
        return int(body, 16)
    if tag == "float" and isinstance(body, str):
        return float(body)
    if tag == "complex" and isinstance(body, list) and len(body) == 2:
        return complex(float(body[0]), float(body[1]))
    if tag == "bytes" and isinstance(body, str):
        return bytes.fromhex(body)
    if not isinstance(body, list):
        raise ValueError(f"not a tagged value: {str(wire)[:60]}")
    if tag in ("list", "tuple"):
        items = [decode(item, depth + 1) for item in body]
        check_spread([item for item in items if isinstance(item, (int, float, complex, str, bytes, tuple))])
        return items if tag == "list" else tuple(items)
    if tag in ("set", "frozenset"):
        return safe_set((decode(item, depth + 1) for item in body), set if tag == "set" else frozenset)
    if tag == "dict":
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in body):
            raise ValueError("a bad dict")
        return safe_dict((decode(k, depth + 1), decode(v, depth + 1)) for k, v in body)
    raise ValueError(f"unknown tag {tag[:20]!r}")


def encode(value, depth: int = 0):
    """A parent value as the program receives it: plain data, or the wire of a program object (a handle, a name).
    Other values (a parent function, a module) are encoded by the caller before they get here."""
    if depth > MAX_DEPTH:
        raise Unsafe("nested too deep")
    if isinstance(value, Remote):
        return value.wire
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return {"int": hex(value)}
    if kind is float:
        return {"float": repr(value)}
    if kind is complex:
        return {"complex": [repr(value.real), repr(value.imag)]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind in (list, tuple, set, frozenset):
        return {kind.__name__: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    wire = getattr(value, "wire", None)  # a parent function or module the interpreter knows how to send
    if wire is not None:
        return wire() if callable(wire) else wire
    raise NotPlain(f"a {kind.__name__} cannot be sent to the program")


# --------------------------------------------------------------------------------------------------------------
# size guards for what this process computes
# --------------------------------------------------------------------------------------------------------------


def size_of(value) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return value.bit_length() // 3 + 1  # about its decimal digits
    try:
        return len(value)
    except TypeError:
        return 1


def check_size(value) -> None:
    if size_of(value) > SIZE_LIMIT:
        raise Unsafe("a value too large to compute here")


def guard_binop(op: str, left, right) -> None:
    """Refuse an operation whose result would be huge before it is computed (the allocation itself is the cost)."""
    if op == "Pow" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if max(abs(left).bit_length(), 1) * right > SIZE_LIMIT * 4:
            raise Unsafe("a power too large to compute here")
    elif op == "LShift" and isinstance(right, int) and right > SIZE_LIMIT * 4:
        raise Unsafe("a shift too large to compute here")
    elif op == "Mult":
        for count, seq in ((left, right), (right, left)):
            if isinstance(count, int) and not isinstance(count, bool) and not isinstance(seq, (int, float, complex)):
                if count * size_of(seq) > SIZE_LIMIT:
                    raise Unsafe("a repetition too large to compute here")
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > SIZE_LIMIT * 4:
                raise Unsafe("a product too large to compute here")


def guarded_math(name: str, args) -> None:
    """math functions whose result grows with their argument."""
    if name == "factorial" and args and isinstance(args[0], int) and args[0] > 20_000:
        raise Unsafe("a factorial too large to compute here")
    if name in ("comb", "perm") and args and isinstance(args[0], int) and args[0] > 200_000:
        raise Unsafe(f"a {name} too large to compute here")
    if name == "prod" and args:
        items = list(args[0])
        if sum(size_of(x) for x in items if isinstance(x, int)) > SIZE_LIMIT:
            raise Unsafe("a product too large to compute here")
