"""The paired bootstrap behind the eval table's gain row, and the lenient column next to strict."""

import random

import pytest

from distill.train.compare import format_gain, paired_bootstrap, per_prompt_rates
from distill.train.eval import format_table, summarize


def test_interval_contains_the_true_difference_on_known_data():
    # 200 prompts whose pass rate rises by exactly 0.2 after training, plus noise that differs per prompt.
    rng = random.Random(1)
    before = {f"p{i}": rng.random() * 0.6 for i in range(200)}
    after = {p: r + 0.2 + rng.uniform(-0.05, 0.05) for p, r in before.items()}
    result = paired_bootstrap(before, after)
    assert result["prompts"] == 200
    assert result["low"] < 0.2 < result["high"]
    assert abs(result["gain"] - 0.2) < 0.01
    # The pairing removes the large between-prompt spread: the interval is far narrower than that spread.
    assert result["high"] - result["low"] < 0.03


def test_pairing_is_over_prompts():
    # Same per-prompt difference everywhere: every resample has the same mean, so the interval is a point,
    # however different the prompts are. An unpaired bootstrap would give a wide interval here.
    before = {f"p{i}": i / 100 for i in range(50)}
    after = {p: r + 0.1 for p, r in before.items()}
    result = paired_bootstrap(before, after)
    assert result["low"] == pytest.approx(0.1) and result["high"] == pytest.approx(0.1)


def test_no_difference_gives_an_interval_around_zero_and_prompts_not_shared_are_ignored():
    # The same rates, shuffled across prompts: the mean difference is exactly 0, the differences spread wide.
    rng = random.Random(2)
    rates = [rng.choice([0, 0.5, 1]) for _ in range(100)]
    before = {f"p{i}": r for i, r in enumerate(rates)}
    rng.shuffle(rates)
    after = {f"p{i}": r for i, r in enumerate(rates)}
    after["only-after"] = 1.0
    result = paired_bootstrap(before, after)
    assert result["prompts"] == 100
    assert result["low"] < 0 < result["high"]


def test_coverage_of_the_interval_over_many_experiments():
    # With 0/1 outcomes at 30% vs 50%, the 95% interval should contain the true +0.2 most of the time.
    hits = 0
    for trial in range(40):
        rng = random.Random(100 + trial)
        before = {f"p{i}": float(rng.random() < 0.3) for i in range(120)}
        after = {f"p{i}": float(rng.random() < 0.5) for i in range(120)}
        result = paired_bootstrap(before, after, resamples=500, seed=trial)
        hits += result["low"] <= 0.2 <= result["high"]
    assert hits >= 33  # 95% nominal; binomial slack for 40 trials


def test_degenerate_inputs():
    assert paired_bootstrap({}, {})["gain"] is None
    one = paired_bootstrap({"a": 0.0}, {"a": 1.0})
    assert one["gain"] == 1.0 and one["low"] is None
    with pytest.raises(ValueError):
        paired_bootstrap({"a": 0}, {"a": 1}, level=1.5)


def test_per_prompt_rates_and_the_table_shows_strict_lenient_and_gain():
    def rows(correct, lenient):
        return [
            {"prompt_id": f"p{i // 2}", "correct": c, "correct_lenient": ln, "reason": "ok", "truncated": False,
             "completion_tokens": 10}
            for i, (c, ln) in enumerate(zip(correct, lenient, strict=True))
        ]  # fmt: skip

    before = rows([False, False, False, True], [True, False, True, True])
    after = rows([True, False, True, True], [True, False, True, True])
    assert per_prompt_rates(before) == {"p0": 0.0, "p1": 0.5}
    assert per_prompt_rates(before, "correct_lenient") == {"p0": 0.5, "p1": 1.0}
    summary = {"samples_per_prompt": 2, "models": {"before": summarize(before), "after": summarize(after)}}
    assert summary["models"]["before"]["pass@1_lenient"] == 0.75
    from distill.train.compare import gain_between

    summary["gain"] = gain_between(summary, {"before": before, "after": after}, "before", "after")
    assert summary["gain"]["strict"]["gain"] == pytest.approx(0.5)
    assert summary["gain"]["lenient"]["gain"] == pytest.approx(0.0)
    table = format_table(summary)
    assert "lenient" in table.splitlines()[0]
    assert "strict +50.0 pts" in table and "lenient +0.0 pts" in table
    assert format_gain({"gain": 0.1, "low": -0.05, "high": 0.2}) == "+10.0 pts [-5.0, +20.0]"
