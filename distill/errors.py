"""Our own exception types. The CLI turns them into one-line errors with exit status 1."""


class DistillError(Exception):
    """An error the user can fix; the message says how, in one sentence."""


class MissingDependency(DistillError):
    """An optional dependency is not installed; the message names the pip extra or command."""

    def __init__(self, module: str, install: str):
        super().__init__(f"{module} is not installed: run `{install}`")
