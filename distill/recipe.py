"""Recipes and config files: the bounded YAML loader, `--set` overrides, and a recipe's input paths resolved against
its own folder.

A recipe names files beside it (prompt files, data folders, benchmark files, chat templates): like docker compose,
a relative input path is read from the recipe's folder, so `distill run /path/to/recipes/quickstart.yaml` works from
any working directory. Outputs (`out`) stay relative to the working directory, where a user expects a run to
write. A relative input that is not in the recipe's folder is left as written: it may be an alias
(`smollm2-135m`), a hub id (`org/name`), `reasoning-gym:TASK`, or a path from the working directory, as before.
"""

import copy
import os
import sys
from pathlib import Path

import yaml

from distill.errors import DistillError, shown

# The sections of a recipe, in the order they run.
STAGES = ("rl", "generate", "filter", "mix", "train", "eval", "publish")
# The keys of each section that name something to read, which may be a path.
INPUT_KEYS = {
    "rl": ("source", "model"),
    "generate": ("source", "model"),
    "filter": ("inputs", "decontaminate"),
    "train": ("data", "student", "chat_template", "accelerate_config"),
    "eval": ("source", "models", "teacher"),
    "publish": ("eval_summary",),
}
# Verifier options that name a model (the judge's): a path too.
VERIFIER_INPUT_KEYS = ("model",)


# A recipe is a few hundred values. YAML aliases can make a few bytes stand for exponentially many (nested
# anchors, "billion laughs": a 300-byte file expanded to 10^7 items, 4 GB, 138 s), so the size of a document
# with every alias expanded is counted before anything is built from it, and a document past this is refused.
MAX_YAML_NODES = 100_000
MAX_YAML_BYTES = 1 << 20  # and the file itself: 1 MiB is thousands of recipes; YAML parses ~0.4 MB/s in Python
# And the text of its values, expanded: a 104 KB recipe whose aliases repeated a 100 KB string 1,000 times stayed
# under the node count, wrote a 97 MB config.resolved.yaml and reached 3.7 GB before it crashed.
MAX_YAML_EXPANDED_BYTES = 4 << 20


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document whose aliases would expand past MAX_YAML_NODES nodes or
    MAX_YAML_EXPANDED_BYTES of text, or refer to themselves; counted on the composed node graph (one visit per
    distinct node), before construction."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            expanded_size(node, MAX_YAML_NODES, MAX_YAML_EXPANDED_BYTES)
        return node


class YamlTooLarge(DistillError):
    pass


def expanded_size(node, limit: int, byte_limit: int = MAX_YAML_EXPANDED_BYTES) -> int:
    """Nodes in `node` with every alias expanded (a shared node counts at each use), up to `limit` nodes and
    `byte_limit` bytes of scalar text."""
    sizes: dict[int, tuple[int, int]] = {}
    busy: set[int] = set()

    def size(n) -> tuple[int, int]:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in busy:
            raise YamlTooLarge("refers to itself through an alias: write the value out")
        busy.add(key)
        total, text = 1, 0
        if isinstance(n, yaml.ScalarNode):
            text = len(n.value.encode("utf-8", "replace")) if isinstance(n.value, str) else 0
        children = (
            n.value
            if isinstance(n, yaml.SequenceNode)
            else [c for kv in n.value for c in kv]
            if isinstance(n, yaml.MappingNode)
            else []
        )
        for child in children:
            nodes, chars = size(child)
            total, text = total + nodes, text + chars
        busy.discard(key)
        if total > limit:
            raise YamlTooLarge(
                f"expands to more than {limit:,} values through its aliases (&anchor, *alias): use fewer aliases"
            )
        if text > byte_limit:
            raise YamlTooLarge(
                f"expands to more than {byte_limit >> 20} MiB of text through its aliases (&anchor, *alias): use "
                "fewer aliases"
            )
        sizes[key] = (total, text)
        return total, text

    return size(node)[0]


def yaml_value(text: str, where: str):
    """A value typed on the command line (`--set`, `--option`, KEY=VALUE), read as YAML with the same bounds."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader, bounded
    except YamlTooLarge as exc:
        raise DistillError(f"{where}: the value {exc}") from None


def load_yaml(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_YAML_BYTES:
                raise YamlTooLarge(
                    f"is {size / 2**20:.1f} MiB, more than a recipe's {MAX_YAML_BYTES >> 20} MiB: shorten it (prompts "
                    "belong in a --source file)"
                )
            data = yaml.load(fh, Loader=BoundedLoader) or {}  # noqa: S506 - a SafeLoader, bounded
    except YamlTooLarge as exc:
        raise DistillError(f"config file {path} {exc}") from None
    except FileNotFoundError:
        raise DistillError(f"config file not found: {path}") from None
    except OSError as exc:  # a folder, no permission
        raise DistillError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise DistillError(f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except yaml.YAMLError as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise DistillError(f"config file {path} is not valid YAML: {shown(lines[0], limit=200)}") from None
    except RecursionError:
        raise DistillError(f"config file {path} nests too deeply to read: flatten its lists and mappings") from None
    except ValueError:  # the one ValueError YAML lets through: int() of a number too long to convert
        raise DistillError(
            f"config file {path} holds a number with more than {sys.get_int_max_str_digits()} digits: shorten it"
        ) from None
    if not isinstance(data, dict):
        raise DistillError(f"config file {path} must hold a mapping of keys to values")
    return data


def apply_sets(recipe: dict, sets: tuple[str, ...]) -> dict:
    """`--set train.max_steps=5`, `--set generate.math.num_prompts=4` or `--set out=DIR`: values are read as YAML."""
    recipe = copy.deepcopy(recipe)
    for item in sets:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if sep and parts == ["out"]:  # the one top-level key worth changing per run: where the outputs go
            recipe["out"] = value
            continue
        if not sep or len(parts) < 2 or not all(parts):
            raise DistillError(f"--set expects SECTION.KEY=VALUE or out=DIR, got `{shown(item)}`")
        if parts[0] not in STAGES:
            raise DistillError(f"--set names unknown section `{shown(parts[0])}`: use one of {', '.join(STAGES)}")
        node = recipe
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):  # a named entry of a generate/filter list
                matches = [entry for entry in node if isinstance(entry, dict) and entry.get("name") == part]
                if not matches:
                    raise DistillError(f"--set {shown(key)}: no `{shown(part)}` entry in section `{parts[0]}`")
                node = matches[0]
                continue
            if not isinstance(node, dict):
                raise DistillError(
                    f"--set {shown(key)}: `{'.'.join(parts[:depth])}` in the recipe is not a mapping of keys"
                )
            if node.get(part) is None:  # missing, or left empty (`train:` with nothing under it)
                node[part] = {}
            node = node[part]
        if isinstance(node, list):
            raise DistillError(
                f"--set {shown(key)}: section `{parts[0]}` is a list; name the entry, e.g. {parts[0]}.NAME.KEY"
            )
        if not isinstance(node, dict):
            raise DistillError(f"--set {shown(key)}: `{'.'.join(parts[:-1])}` in the recipe is not a mapping of keys")
        try:
            node[parts[-1]] = yaml_value(value, f"--set {shown(key)}")
        except (yaml.YAMLError, ValueError, RecursionError):
            raise DistillError(f"--set {shown(key)}: the value `{shown(value)}` is not valid YAML: quote it") from None
    return recipe


def load_recipe(path: str, sets: tuple[str, ...] = (), out: str | None = None) -> dict:
    """A recipe as `distill run` reads it: its input paths resolved against its folder, then `--set` values (typed
    in the shell: relative to the working directory, as written), then `--out`."""
    recipe = resolve_inputs(load_yaml(path), Path(path).parent)
    recipe = apply_sets(recipe, sets)
    if out is not None:
        recipe["out"] = out
    return recipe


def resolve_inputs(recipe: dict, folder: Path) -> dict:
    """The recipe with each relative input path that exists in `folder` replaced by that path (relative to the
    working directory when it lies under it, else absolute); every other value as written."""
    recipe = copy.deepcopy(recipe)
    for stage, keys in INPUT_KEYS.items():
        for section in _sections(recipe.get(stage)):
            for key in keys:
                if key in section:
                    section[key] = _resolved(section[key], folder)
            verifiers = section.get("verifiers") if stage in ("filter", "eval") else None
            if isinstance(verifiers, dict):
                for options in verifiers.values():
                    if isinstance(options, dict):
                        for key in VERIFIER_INPUT_KEYS:
                            if key in options:
                                options[key] = _resolved(options[key], folder)
    return recipe


def _sections(section) -> list[dict]:
    if isinstance(section, dict):
        return [section]
    if isinstance(section, list):
        return [entry for entry in section if isinstance(entry, dict)]
    return []


def _resolved(value, folder: Path):
    if isinstance(value, list):
        return [_resolved(v, folder) for v in value]
    if not isinstance(value, str) or not value or Path(value).is_absolute() or ":" in value.split("/")[0]:
        return value  # not a relative path: an absolute one, a URL or `reasoning-gym:TASK`, a number, null
    candidate = folder / value
    try:
        if not candidate.exists():
            return value
    except (OSError, ValueError):  # a name too long or with a NUL byte is no file of the recipe's
        return value
    here = Path.cwd()
    absolute = Path(os.path.abspath(candidate))
    return str(absolute.relative_to(here)) if absolute.is_relative_to(here) else str(absolute)
