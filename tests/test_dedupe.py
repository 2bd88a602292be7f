"""Prompt dedupe: exact and near duplicates on constructed prompts, decisions remembered per prompt id."""

import random

import pytest

from distill.errors import DistillError
from distill.filter.dataset.dedupe import EXACT, NEAR, Duplicate, PromptDeduper, choose_bands

VOCAB = [f"{stem}{i}" for stem in ("apple", "river", "prime", "angle", "vector", "sum") for i in range(200)]


def prompt(rng: random.Random, words: int = 40) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words))


def change_one_word(text: str, position: int) -> str:
    words = text.split()
    words[position] = "replaced"
    return " ".join(words)


def test_exact_duplicates_ignore_case_and_whitespace():
    dedupe = PromptDeduper()
    assert dedupe.check("a", "What is the sum of the first 10 primes?") is None
    found = dedupe.check("b", "  what IS the   sum of\nthe first 10\tprimes? ")
    assert found == Duplicate(EXACT, "a", 1.0)
    # A different operator is a different problem: punctuation is not stripped.
    assert dedupe.check("c", "What is 2+3?") is None
    assert dedupe.check("d", "What is 2-3?") is None
    assert dedupe.counts == {"unique": 3, EXACT: 1, NEAR: 0}


def test_one_word_changed_in_40_words_is_a_near_duplicate():
    rng = random.Random(0)
    dedupe = PromptDeduper(threshold=0.8)
    originals = [prompt(rng) for _ in range(30)]
    for i, text in enumerate(originals):
        assert dedupe.check(f"orig-{i}", text) is None
    # Every position, including the first and the last word, over 30 different prompts.
    for i, text in enumerate(originals):
        position = (i * 7) % 40
        found = dedupe.check(f"edit-{i}", change_one_word(text, position))
        assert found is not None and found.reason == NEAR and found.of_prompt_id == f"orig-{i}", (i, found)
        assert 0.8 <= found.similarity < 1


def test_unrelated_and_moderately_similar_prompts_are_kept():
    rng = random.Random(1)
    dedupe = PromptDeduper()
    texts = [prompt(rng) for _ in range(300)]
    assert dedupe.check_batch([(f"p{i}", t) for i, t in enumerate(texts)]) == [None] * 300
    # Four words changed, spread out: Jaccard about 0.66 on word bigrams, well under 0.8.
    words = texts[0].split()
    for position in (5, 15, 25, 35):
        words[position] = f"other{position}"
    assert dedupe.check("moderate", " ".join(words)) is None
    assert dedupe.counts["unique"] == 301


def test_same_prompt_id_gets_the_same_answer():
    dedupe = PromptDeduper()
    base = "Find all real x such that x^2 - 5x + 6 = 0, and give their sum."
    assert dedupe.check("p1", base) is None
    first = dedupe.check("p2", base.upper())
    assert first == Duplicate(EXACT, "p1", 1.0)
    # Other samples of the same prompts: same answers, whatever the text (it is decided per prompt id).
    for _ in range(3):
        assert dedupe.check("p1", base) is None
        assert dedupe.check("p2", base.upper()) == first
        assert dedupe.check("p2", "something else entirely") == first
    assert dedupe.counts == {"unique": 1, EXACT: 1, NEAR: 0}


def test_batches_answer_exactly_like_one_by_one():
    rng = random.Random(2)
    base = [prompt(rng, words=rng.randint(3, 50)) for _ in range(60)]
    rows = []
    for i in range(200):
        kind = rng.random()
        if kind < 0.2 and i:
            text = rng.choice(base).upper()  # exact duplicate, maybe of a prompt in the same batch
        elif kind < 0.4:
            text = rng.choice(base)
            words = len(text.split())
            text = change_one_word(text, rng.randrange(words)) if words >= 30 else text
        else:
            text = prompt(rng)
        rows.append((f"id{i % 170}", text))  # some ids repeat: more samples of one prompt
    one_by_one = PromptDeduper()
    expected = [one_by_one.check(pid, text) for pid, text in rows]
    batched = PromptDeduper()
    got = batched.check_batch(rows[:77]) + batched.check_batch(rows[77:])
    assert got == expected
    assert batched.counts == one_by_one.counts
    assert batched.counts[EXACT] > 0 and batched.counts[NEAR] > 0


def test_exact_only_skips_near_duplicates():
    rng = random.Random(3)
    text = prompt(rng)
    dedupe = PromptDeduper(exact_only=True)
    assert dedupe.check("a", text) is None
    assert dedupe.check("b", change_one_word(text, 20)) is None
    assert dedupe.check("c", text.upper()) == Duplicate(EXACT, "a", 1.0)


def test_short_and_empty_prompts():
    dedupe = PromptDeduper()
    assert dedupe.check("a", "Hi") is None
    assert dedupe.check("b", "Hello") is None
    assert dedupe.check("c", "hi") == Duplicate(EXACT, "a", 1.0)
    assert dedupe.check("d", "") is None
    assert dedupe.check("e", "   ") == Duplicate(EXACT, "d", 1.0)


def test_bands_match_the_threshold():
    assert choose_bands(0.8, 128) == (13, 7)
    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95):
        bands, rows = choose_bands(threshold, 128)
        assert bands * rows <= 128
        assert 1 - (1 - threshold**rows) ** bands >= 0.95  # a pair at the threshold becomes a candidate
    dedupe = PromptDeduper(threshold=0.9)
    assert (dedupe.bands, dedupe.rows) == choose_bands(0.9, 128)


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0}, {"threshold": 1.5}, {"num_perm": 1}, {"shingle": 0}, {"threshold": 0.5, "num_perm": 2}],
)
def test_bad_settings_are_user_errors(kwargs):
    with pytest.raises(DistillError):
        PromptDeduper(**kwargs)


@pytest.mark.parametrize("exact_only", [False, True])
def test_hashing_elsewhere_then_deciding_gives_the_same_answers(exact_only):
    """The Ray backend hashes on workers (`hash_batch`) and decides on the driver (`check_hashed`)."""
    import random

    rng = random.Random(5)
    words = "what is the sum of two and three numbers find value x y".split()
    items = []
    for _ in range(400):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        if items and rng.random() < 0.3:  # a copy of an earlier prompt, sometimes with one word changed
            text = rng.choice(items)[1] + rng.choice(["", " x"])
        items.append((f"p{rng.randint(0, 300)}", text))
    one = PromptDeduper(threshold=0.6, exact_only=exact_only)
    expected = [one.check(prompt_id, text) for prompt_id, text in items]
    two, got = PromptDeduper(threshold=0.6, exact_only=exact_only), []
    for start in range(0, len(items), 37):
        batch = items[start : start + 37]
        hashes = PromptDeduper(threshold=0.6, exact_only=exact_only).hash_batch([t for _, t in batch])
        got += two.check_hashed([p for p, _ in batch], hashes)
    assert got == expected
    assert sum(d is not None for d in expected) > 20  # duplicates, exact and near, were there to find
