"""A stage's settings from its three layers, defaults < recipe < command line: unknown keys name the near key, a
value of the wrong type names the type it takes; and the settings a run used, written as config.resolved.yaml.
The stage configs themselves (each setting declared once) are in distill/config.py."""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from distill.errors import DistillError, near_hint, shown
from distill.io import write_text_atomic
from distill.secrets import scrub_config


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def check_keys(cls, data: dict, where: str) -> None:
    """Refuse keys the dataclass does not have, naming the closest known key."""
    names = field_names(cls)
    for key in data:
        if not isinstance(key, str):  # YAML reads `1:` or `null:` as a number or null, never a name
            raise DistillError(
                f"key `{shown(key)}` in {where} is not a name: write the key as text, e.g. `{names[0]}`"
            )
        if key not in names:
            raise DistillError(f"unknown key `{shown(key)}` in {where}{near_hint(key, names)}")


def check_keys_of(names, data: dict, where: str) -> None:
    """check_keys for a mapping whose keys are a subset of a class's (`names`)."""
    for key in data:
        if not isinstance(key, str) or key not in names:
            raise DistillError(f"unknown key `{shown(key)}` in {where}{near_hint(str(key), names)}")


def check_types(cls, data: dict, where: str) -> None:
    """Refuse a value of the wrong type, naming the key and the type it takes.

    YAML decides types by the look of a value (`5` is a number, `1e-5` is text, `no` is false), and a value of
    the wrong type would otherwise fail much later, inside a stage, as a traceback.
    """
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if not _fits(value, hints[key]):
            hint = ""
            if isinstance(value, str) and _fits(1.0, hints[key]):
                hint = " (YAML reads 1e-5 as text: write 1.0e-5)" if _is_float(value) else ""
            raise DistillError(
                f"`{key}` in {where} must be {_describe(hints[key])}, got {_kind(value)} `{shown(value)}`{hint}"
            )


def _fits(value, annotation) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation in (int, float):  # a bool is an int to Python, never to a user; an int is a fine float
        return isinstance(value, int if annotation is int else (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is list or origin is list:
        # One string for a list of them: the stages wrap it (`inputs: out/generate`)
        if isinstance(value, str):
            return not args or _fits(value, args[0])
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    if annotation is dict or origin is dict:
        if args and args[1] is dict:  # verifier name -> options: also a list of names or "math,format"
            if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                return True
            # `math:` with nothing after it reads as null: that verifier with its default options
            return isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, dict | None) for k, v in value.items()
            )
        return isinstance(value, dict) and (
            not args or all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
        )
    return True  # a type this check does not know: the stage checks it


def _describe(annotation) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if typing.get_origin(annotation) is list:
        return f"a list of {_describe(args[0]).removeprefix('a ')}"
    if typing.get_origin(annotation) is dict:
        return "a mapping of verifier names to options" if args[1] is dict else "a mapping of keys to values"
    names = {type(None): "null", bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _kind(value) -> str:
    kinds = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "text"}
    return kinds.get(
        type(value),
        "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__,
    )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_config(cls, recipe: dict | None, overrides: dict, where: str = "the recipe"):
    """Defaults < recipe < overrides (the flags a user typed)."""
    if recipe is not None and not isinstance(recipe, dict):
        raise DistillError(f"{where} must be a mapping of keys to values, got {_kind(recipe)}")
    merged: dict = {}
    if recipe:
        check_keys(cls, recipe, where)
        check_types(cls, recipe, where)
        merged.update(recipe)
    check_keys(cls, overrides, "the command line")
    check_types(cls, overrides, "the command line")
    merged.update(overrides)
    return cls(**merged)


def dump_config(config, path: Path, extra: dict | None = None) -> None:
    """Write `config.resolved.yaml`. Configs hold the names of secret variables, never their values. `extra`: what
    the run found out besides its settings (generate: the teacher's tokenizer), as more top-level keys.

    Written under a temporary name and renamed: shards of one run rewrite it while others may read it.
    """

    text = yaml.safe_dump(scrub_config({**dataclasses.asdict(config), **(extra or {})}), sort_keys=False)
    write_text_atomic(text, Path(path), durable=False)
