"""Our own exception types, and the two helpers every error message uses. The CLI turns them into one-line errors
with exit status 1."""

import difflib


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
    near = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean `{near[0]}`?)" if near else ""


def shown(value, limit: int = 80) -> str:
    """A value from a user's file or flags, for an error message: on one line, with control characters and lone
    surrogates escaped (they garble the terminal or cannot be printed at all), and cut to `limit` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."
