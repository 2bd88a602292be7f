"""Chat templates, rendered bounded: the one way distill renders a chat template from a model folder.

A chat template is a Jinja program shipped in the model folder (tokenizer_config.json or chat_template.jinja), so
it is code from whoever made the folder. transformers runs it in jinja2's ImmutableSandboxedEnvironment, which
keeps it away from Python's internals but bounds neither memory nor time: `{{ 'x' * 300000000 }}` allocates
gigabytes, nested `range` loops run for hours. `install()` swaps in BoundedSandbox, a subclass of that sandbox,
inside transformers, so every render in the process (ours, TRL's while training, vLLM's offline chat) is bounded:

- a string or list built by `*`, `+`, `~` or a filter (or read back from a namespace) is refused past MAX_TEXT
  characters (items), and so is any integer argument of a call or filter past it (`center(10**9)`) and any `**`
  result past a million digits;
- the rendered output is refused past MAX_OUTPUT characters;
- wall-clock: a render past MAX_SECONDS stops at the next `range` step, call, filter, attribute or item access
  (the places a Jinja loop passes through); jinja's own sandbox already caps `range` at 100,000 items and
  recursion ends at Python's recursion limit.

Not bounded: a single library call that is slow on its own within those sizes (a regex-free template cannot
start one), and templates rendered outside transformers (an `openai` server renders its own).

`render_chat(tokenizer, messages, ...)` renders through the tokenizer and turns a bound (or any template error)
into one DistillError naming the model folder and the fix.
"""

import contextvars
import functools
import time
from collections.abc import Iterator

from distill.errors import DistillError

MAX_TEXT = 32 * 2**20  # characters in one string built by the template (a long conversation is a few MiB)
MAX_OUTPUT = 64 * 2**20  # characters in the whole rendered chat
MAX_SECONDS = 5.0  # a normal render takes milliseconds
MAX_POWER_BITS = 3_400_000  # about a million decimal digits

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("chat_template_deadline", default=None)
_installed = False


class TemplateBoundExceeded(DistillError):
    """A chat template went past a size or time bound (also a jinja2 SecurityError: see _exceeded)."""


@functools.cache
def _exceeded_type() -> type:
    from jinja2.exceptions import SecurityError  # only where a chat template is rendered

    # Both types: library code that catches jinja's errors treats it as one, our CLI prints it as one line.
    return type("TemplateBoundExceeded", (TemplateBoundExceeded, SecurityError), {})


def _exceeded(what: str) -> Exception:
    return _exceeded_type()(
        f"the chat template {what}: a chat template renders a conversation in milliseconds, so this one is "
        "broken or hostile; fix or replace the chat_template in the model folder"
    )


def _check_time() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise _exceeded(f"ran past {MAX_SECONDS:.0f} s")


def _check_size(value, what: str = "built a text"):
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > MAX_TEXT:
        raise _exceeded(f"{what} of over {MAX_TEXT // 2**20} Mi characters")
    return value


def _check_args(args, kwargs) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TEXT:
            raise _exceeded(f"passed a size of {value} to a call")


def _bounded_range(*args) -> Iterator[int]:
    from jinja2.sandbox import safe_range  # only where a chat template is rendered

    for number in safe_range(*args):  # jinja's own cap: 100,000 items
        _check_time()
        yield number


def _sandbox_class():
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # only where a chat template is rendered

    class BoundedTemplate(ImmutableSandboxedEnvironment.template_class):
        def render(self, *args, **kwargs) -> str:
            return "".join(self.generate(*args, **kwargs))

        def generate(self, *args, **kwargs) -> Iterator[str]:
            token = _deadline.set(time.monotonic() + MAX_SECONDS) if _deadline.get() is None else None
            try:
                size = 0
                for block in super().generate(*args, **kwargs):
                    size += len(block)
                    if size > MAX_OUTPUT:
                        raise _exceeded(f"rendered over {MAX_OUTPUT // 2**20} Mi characters")
                    _check_time()
                    yield block
            finally:
                if token is not None:
                    _deadline.reset(token)

    class BoundedCodeGenerator(ImmutableSandboxedEnvironment.code_generator_class):
        def visit_Concat(self, node, frame):
            # `a ~ b` compiles to a plain join that no sandbox hook sees: wrap it in a size check.
            self.write("environment.checked_text(")
            super().visit_Concat(node, frame)
            self.write(")")

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        template_class = BoundedTemplate
        code_generator_class = BoundedCodeGenerator

        @staticmethod
        def checked_text(value):
            _check_time()
            return _check_size(value)

        intercepted_binops = frozenset({"*", "**", "+"})

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.globals["range"] = _bounded_range

        def call_binop(self, context, op, left, right):
            _check_time()
            if op == "*":
                for seq, times in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_TEXT:
                        raise _exceeded(f"built a text of over {MAX_TEXT // 2**20} Mi characters")
            if op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
                if right * abs(left).bit_length() > MAX_POWER_BITS:
                    raise _exceeded("raised a number to a huge power")
            if op == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                if len(left) + len(right) > MAX_TEXT:
                    raise _exceeded(f"built a text of over {MAX_TEXT // 2**20} Mi characters")
            return super().call_binop(context, op, left, right)

        def call(self, __context, __obj, *args, **kwargs):
            _check_time()
            _check_args(args, kwargs)
            return _check_size(super().call(__context, __obj, *args, **kwargs))

        def call_filter(self, name, value, args=None, kwargs=None, context=None, eval_ctx=None):
            _check_time()
            _check_args(args or (), kwargs or {})
            return _check_size(super().call_filter(name, value, args, kwargs, context, eval_ctx))

        def getattr(self, obj, attribute):
            _check_time()
            return _check_size(super().getattr(obj, attribute))

        def getitem(self, obj, argument):
            _check_time()
            return _check_size(super().getitem(obj, argument))

    return BoundedSandbox


def _wrap_filters(filters: dict) -> None:
    """Filters are looked up and called directly by compiled templates: wrap each so it passes the checks too."""
    for name, function in list(filters.items()):
        if getattr(function, "_distill_bounded", False):
            continue

        @functools.wraps(function)
        def bounded(*args, __function=function, **kwargs):
            _check_time()
            _check_args(args[1:], kwargs)  # the first argument is the value being filtered
            return _check_size(__function(*args, **kwargs), "built a text")

        bounded._distill_bounded = True
        filters[name] = bounded


def install() -> None:
    """Make transformers compile every chat template into BoundedSandbox (once per process)."""
    global _installed
    if _installed:
        return
    from transformers.utils import chat_template_utils  # imports torch; only where a model runs

    sandbox = _sandbox_class()

    def make_environment(*args, **kwargs):
        env = sandbox(*args, **kwargs)
        _wrap_filters(env.filters)
        env.filters = _WrappingDict(env.filters)  # transformers adds `tojson` after building the environment
        return env

    # transformers builds its environment by this module-level name; the compiled templates are cached, so the
    # cache is cleared for templates compiled before (unbounded) to be compiled again.
    chat_template_utils.ImmutableSandboxedEnvironment = make_environment
    chat_template_utils._compile_jinja_template.cache_clear()
    _installed = True


class _WrappingDict(dict):
    def __setitem__(self, name, function):
        wrapped = {name: function}
        _wrap_filters(wrapped)
        super().__setitem__(name, wrapped[name])


def render_chat(tokenizer, messages, *, what: str = "", **kwargs):
    """`tokenizer.apply_chat_template(messages, **kwargs)`, bounded; a bound or a template error is one
    DistillError naming the model folder (`what` overrides the tokenizer's name_or_path)."""
    install()
    folder = what or getattr(tokenizer, "name_or_path", "") or "the model"
    from jinja2.exceptions import TemplateError  # only where a chat template is rendered

    try:
        return tokenizer.apply_chat_template(messages, **kwargs)
    except TemplateBoundExceeded as exc:
        raise DistillError(f"{folder}: {exc}") from None
    except (TemplateError, RecursionError) as exc:  # a broken template, or one that calls itself without end
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise DistillError(
            f"{folder}: the chat template fails to render ({type(exc).__name__}: {detail}): fix or replace the "
            "chat_template in the model folder"
        ) from None
