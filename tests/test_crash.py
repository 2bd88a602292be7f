"""SIGKILL at random moments, then --resume: the ids of an uninterrupted run, none twice, every file readable."""

import random

import pytest

from benchmarks.checks import crash


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("crash")


def test_generate_survives_kills(work, tiny_model):
    prompts = crash._prompts(work, 10)
    outcome = crash._crash_check(
        work / "generate", "generate", lambda out: crash._generate_args(tiny_model, prompts, out), 2,
        random.Random(1), same_stats=False,
    )  # fmt: skip
    assert outcome.tried >= 1 and outcome.ok, outcome


def test_filter_survives_kills_with_identical_results(work):
    outcome = crash._crash_check(
        work / "filter", "filter", lambda out: crash._filter_args(work, out, quick=True), 2, random.Random(2),
        same_stats=True,
    )  # fmt: skip
    assert outcome.tried >= 1 and outcome.ok, outcome


@pytest.mark.slow
def test_run_survives_kills_between_stages(work, tiny_model):
    prompts = crash._prompts(work, 10)
    outcome = crash._crash_check(
        work / "run", "run", lambda out: crash._run_args(work, tiny_model, prompts, out), 2, random.Random(3),
        same_stats=False,
    )  # fmt: skip
    assert outcome.tried >= 1 and outcome.ok, outcome
