"""Chat templates from a model folder render bounded (distill/engines/chat.py): hostile ones fail fast with one
line naming the folder, normal ones render exactly as transformers renders them."""

import time

import pytest

from distill.engines import Request
from distill.engines import chat as chat_module
from distill.engines.chat import render_chat
from distill.errors import DistillError

MESSAGES = [
    {"role": "user", "content": "Calculate 2 + 3."},
    {"role": "assistant", "content": "<think>\nx\n</think>\n\n5"},
]
HUGE = "{{ 'x' * 300000000 }}"  # 1.7 GB before
ENDLESS = "{% for i in range(99999) %}{% for j in range(99999) %}{{ '' }}{% endfor %}{% endfor %}"  # until killed


@pytest.fixture
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_normal_templates_render_identically(tokenizer):
    from trl.chat_template_utils import qwen3_chat_template

    for template in (tokenizer.chat_template, qwen3_chat_template):
        for kwargs in ({"tokenize": False}, {"tokenize": False, "add_generation_prompt": True}, {"tokenize": True}):
            expected = tokenizer.apply_chat_template(MESSAGES[:1], chat_template=template, **kwargs)
            got = render_chat(tokenizer, MESSAGES[:1], chat_template=template, **kwargs)
            assert got == expected
    masks = render_chat(tokenizer, MESSAGES, return_assistant_tokens_mask=True, return_dict=True)
    assert sum(masks["assistant_masks"]) > 0  # {% generation %} tracking still works in the bounded sandbox


@pytest.mark.parametrize(
    "template, bound",
    [
        (HUGE, "built a text of over 32 Mi characters"),
        ("{{ 'x' | center(300000000) }}", "passed a size of 300000000"),
        ("{{ ['a'] * 300000000 }}", "built a text"),
        ("{{ 10 ** 100000000 }}", "huge power"),
        ("{% for i in range(99999) %}{{ 'x' * 30000 }}{% endfor %}", "rendered over 64 Mi characters"),
        ("{% set s = namespace(v='x') %}{% for i in range(60) %}{% set s.v = s.v + s.v %}{% endfor %}", "built a"),
        ("{% set s = namespace(v='x') %}{% for i in range(60) %}{% set s.v = s.v ~ s.v %}{% endfor %}", "built a"),
        ("{% set a = 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' %}" + "{% set a = a ~ a ~ a ~ a %}" * 20, "built a"),
    ],
)
def test_templates_that_allocate_fail_fast_with_one_line(tokenizer, tiny_model, template, bound):
    import tracemalloc

    tokenizer.chat_template = template
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(DistillError, match=bound) as err:
            render_chat(tokenizer, MESSAGES, tokenize=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 400 * 2**20
    message = str(err.value)
    assert message.startswith(f"{tiny_model}: the chat template") and "\n" not in message
    assert "fix or replace the chat_template in the model folder" in message


def test_endless_template_stops_at_the_time_bound(tokenizer, monkeypatch, tiny_model):
    monkeypatch.setattr(chat_module, "MAX_SECONDS", 0.5)
    tokenizer.chat_template = ENDLESS
    started = time.monotonic()
    with pytest.raises(DistillError, match=r"ran past 0 s") as err:
        render_chat(tokenizer, MESSAGES, tokenize=False)
    assert time.monotonic() - started < 3
    assert str(err.value).startswith(tiny_model)


def test_a_template_that_calls_itself_is_one_line(tokenizer):
    tokenizer.chat_template = "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"
    with pytest.raises(DistillError, match="fails to render .RecursionError"):
        render_chat(tokenizer, MESSAGES, tokenize=False)


def test_the_transformers_engine_renders_bounded(tiny_model, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    from distill.engines.hf import render_prompt

    folder = tmp_path / "hostile"
    shutil.copytree(tiny_model, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = HUGE
    tok.save_pretrained(folder)
    with pytest.raises(DistillError, match=rf"^{folder}: the chat template built a text"):
        render_prompt(AutoTokenizer.from_pretrained(folder), Request(MESSAGES[:1]))


def test_training_template_check_is_bounded(tokenizer):
    from distill.train.templates import check_template

    with pytest.raises(DistillError, match=r"^student: the chat template built a text"):
        check_template(tokenizer, HUGE, assistant_only_loss=False, student="student")
