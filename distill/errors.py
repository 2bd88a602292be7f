"""Our own exception types. The CLI turns them into one-line errors with exit status 1."""


class DistillError(Exception):
    """An error the user can fix; the message says how, in one sentence."""


class MissingDependency(DistillError):
    """An optional dependency is not installed; the message names the pip extra or command."""

    def __init__(self, module: str, install: str):
        super().__init__(f"{module} is not installed: run `{install}`")


def near_hint(name, choices) -> str:
    """` (did you mean `x`?)` for the choice closest to a misspelt name, or "" when none is close.

    The one place the near-name hint is written: config keys, verifier names and options, recipe sections and
    fixed vocabularies (domains, extraction, mode, ...) all use it, so every such error reads the same.
    """
    import difflib

    near = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean `{near[0]}`?)" if near else ""
