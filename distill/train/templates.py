"""Chat templates for training: the student must see (and learn) the whole `<think>` block.

DeepSeek's R1-Distill templates render assistant history as `content.split('</think>')[-1]`: the reasoning is
dropped, so a student trained through them would learn answers without reasoning, silently. `check_template`
renders a probe conversation and refuses any template that loses the reasoning. The shipped templates below
keep it, and wrap the assistant turn (its end-of-turn token included, so the student learns to stop) in
`{% generation %}` markers, which is what `return_assistant_tokens_mask` and so TRL's assistant-only loss need.

Decision on templates without `{% generation %}` when assistant-only loss is on: TRL swaps in its own training
variant for templates it knows (same rendering, markers added); for any other template we stop with an error
that names `--chat-template think-preserving` and `--no-assistant-only-loss`. We never switch a student's
template silently: the template is saved with the model, and inference must render what training rendered.
"""

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING

from distill.engines.chat import TemplateBoundExceeded, install
from distill.errors import DistillError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# ChatML (Qwen2.5, SmolLM2, ...). No default system prompt: R1 used none.
CHATML = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Llama 3.x header tokens, without the default "Cutting Knowledge Date" system turn of Meta's template.
LLAMA3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}"
    "{{- message['content'] + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# DeepSeek's R1-Distill format (system text first, <｜User｜>/<｜Assistant｜> turns, `<think>\n` prefilled for
# generation) without the `</think>` split, for tokenizers that carry DeepSeek's tokens (R1-Distill students).
DEEPSEEK_R1 = (
    "{{- bos_token }}"
    "{%- for message in messages if message['role'] == 'system' %}{{- message['content'] }}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}"
    "{{- '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<｜Assistant｜>' }}"
    "{%- generation %}{{- message['content'] + '<｜end▁of▁sentence｜>' }}{%- endgeneration %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<｜Assistant｜><think>\\n' }}{%- endif %}"
)

# name -> (template, the special tokens it needs in the vocabulary, its end-of-turn token)
SHIPPED = {
    "deepseek-r1": (DEEPSEEK_R1, ["<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"], "<｜end▁of▁sentence｜>"),
    "llama3": (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>"),
    "chatml": (CHATML, ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
}
AUTO = "think-preserving"  # the first shipped template, in SHIPPED's order, whose tokens the tokenizer has

PROBE_REASONING = "PROBE-REASONING"
PROBE_ANSWER = "PROBE-ANSWER"
PROBE = [
    {"role": "user", "content": "PROBE-QUESTION"},
    {"role": "assistant", "content": f"<think>\n{PROBE_REASONING}\n</think>\n\n{PROBE_ANSWER}"},
]
_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
_ANY_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def has_generation_markers(template: str) -> bool:
    return _GENERATION_MARKER.search(template) is not None


def without_generation_markers(template: str) -> str:
    """The template saved with the model: same rendering, minus the training-only tags, which are a transformers
    extension that jinja engines elsewhere need not know."""
    return _ANY_GENERATION_TAG.sub("", template)


def resolve_template(
    choice: str | None, tokenizer: "PreTrainedTokenizerBase"
) -> tuple[str | None, str | None, str | None]:
    """`--chat-template` -> (template, its name, its end-of-turn token); (None, None, None) keeps the student's."""
    if choice is None:
        return None, None, None
    vocab = tokenizer.get_vocab()
    if choice == AUTO:
        for name, (_, tokens, _) in SHIPPED.items():
            if all(token in vocab for token in tokens):
                return resolve_template(name, tokenizer)
        raise DistillError(
            f"--chat-template {AUTO}: the tokenizer has the special tokens of none of the shipped templates "
            f"({', '.join(SHIPPED)}): pass a .jinja file written for its tokens"
        )
    if choice in SHIPPED:
        template, tokens, end_of_turn = SHIPPED[choice]
        missing = [token for token in tokens if token not in vocab]
        if missing:
            raise DistillError(
                f"--chat-template {choice} uses tokens the student's tokenizer lacks ({', '.join(missing)}): "
                f"pass --chat-template {AUTO} to pick one it has"
            )
        return template, choice, end_of_turn
    path = Path(choice)
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path), None
    raise DistillError(
        f"unknown --chat-template `{choice}`: use {AUTO}, {', '.join(SHIPPED)} or the path of a .jinja file"
    )


def check_template(
    tokenizer: "PreTrainedTokenizerBase", template: str | None, assistant_only_loss: bool, student: str
) -> str:
    """Refuse a template that drops the reasoning; return the one TRL will train with (`template` None: the
    tokenizer's own).

    With assistant-only loss and no `{% generation %}` markers, TRL's training variant is used when TRL has one
    for this template (it only adds the markers); otherwise this raises, naming the two ways out.
    """
    from trl.chat_template_utils import get_training_chat_template  # imports torch; only where a model trains

    template = template if template is not None else tokenizer.chat_template
    if isinstance(template, dict):  # named variants: the default one renders conversations
        template = template.get("default")
    if not template:
        raise DistillError(f"the tokenizer of {student} has no chat template: pass --chat-template {AUTO}")
    _check_keeps_reasoning(tokenizer, template, student)
    if not assistant_only_loss or has_generation_markers(template):
        return template
    try:
        patched = get_training_chat_template(_with_template(tokenizer, template))
    except ValueError:
        patched = None
    if not patched:
        raise DistillError(
            f"the chat template of {student} has no {{% generation %}} markers, so the assistant tokens cannot be "
            f"found for assistant-only loss: pass --chat-template {AUTO} (it has them) or --no-assistant-only-loss"
        )
    _check_keeps_reasoning(tokenizer, patched, student)
    return patched


def _check_keeps_reasoning(tokenizer, template: str, student: str) -> None:
    install()  # bounded, here and in TRL's renders while training (distill.engines.chat)
    try:
        rendered = tokenizer.apply_chat_template(PROBE, tokenize=False, chat_template=template)
    except TemplateBoundExceeded as exc:
        raise DistillError(f"{student}: {exc}") from None
    except Exception as exc:  # jinja errors of all kinds: the template cannot render a plain conversation
        raise DistillError(
            f"the chat template of {student} cannot render a user/assistant conversation "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): pass --chat-template {AUTO}"
        ) from None
    if PROBE_REASONING not in rendered:
        raise DistillError(
            f"the chat template of {student} drops the <think> block of assistant turns (as DeepSeek's R1-Distill "
            f"templates do), so the student would learn answers without reasoning: pass --chat-template {AUTO}"
        )
    if PROBE_ANSWER not in rendered:
        raise DistillError(
            f"the chat template of {student} drops the answer of assistant turns: pass --chat-template {AUTO}"
        )


def _with_template(tokenizer, template: str):
    """TRL's helpers read `tokenizer.chat_template`; give them a shallow copy that carries `template`."""
    clone = copy.copy(tokenizer)
    clone.chat_template = template
    return clone
