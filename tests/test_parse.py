from distill.generate.parse import assemble_completion, parse_trace


def test_closed_think_block():
    t = parse_trace("<think>\n2 + 3 is 5\n</think>\n\nThe answer is \\boxed{5}.")
    assert (t.reasoning, t.answer, t.think_closed) == ("2 + 3 is 5", "The answer is \\boxed{5}.", True)


def test_missing_opening_tag_from_prefilled_template():
    t = parse_trace("2 + 3 is 5\n</think>\n\n\\boxed{5}")
    assert (t.reasoning, t.answer, t.think_closed) == ("2 + 3 is 5", "\\boxed{5}", True)


def test_unclosed_block_is_truncated_reasoning():
    t = parse_trace("<think>\nlet me count: 1, 2, 3")
    assert (t.reasoning, t.answer, t.think_closed) == ("let me count: 1, 2, 3", "", False)


def test_no_block_is_all_answer():
    t = parse_trace("  Paris.  ")
    assert (t.reasoning, t.answer, t.think_closed) == ("", "Paris.", True)


def test_only_first_closing_tag_splits():
    t = parse_trace("<think>a</think>b</think>c")
    assert (t.reasoning, t.answer) == ("a", "b</think>c")


def test_assemble_puts_prefill_and_server_reasoning_back():
    assert assemble_completion("x</think>y", "<think>\n", None) == "<think>\nx</think>y"
    full = assemble_completion("The answer is 5.", "", "2 + 3 = 5")
    assert full == "<think>\n2 + 3 = 5\n</think>\n\nThe answer is 5."
    assert parse_trace(full).reasoning == "2 + 3 = 5"
