"""Benchmark decontamination: word n-gram candidates confirmed by overlap, benchmarks read from files and folders."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.errors import DistillError
from distill.filter.dataset.decontam import Decontaminator

AIME = [
    "Find the number of ordered pairs of positive integers (m, n) such that m^2 n = 20^20.",
    "Let ABC be a triangle inscribed in circle omega. The tangents to omega at B and C intersect at point D.",
]
MATH = [
    "What is the smallest positive integer that is divisible by each of the first eight primes and is a square?",
    "Compute 1+1.",
]


def test_copied_span_is_matched_and_named():
    # The plain n-gram rule (8-grams, no overlap check): any shared 8-word run flags the problem.
    decontam = Decontaminator({"aime24": AIME, "math500": MATH}, n=8, min_overlap=0)
    # A 10-word span of the second AIME question inside an otherwise new problem.
    problem = "Consider this: the tangents to omega at B and C intersect at a point; find BD."
    assert decontam.match(problem) == ["aime24"]
    details = decontam.match_details(problem)
    assert details == {"aime24": "the tangents to omega at b and c"}  # the first shared 8-gram
    assert len(details["aime24"].split()) == 8


def test_five_shared_words_do_not_match():
    decontam = Decontaminator({"aime24": AIME, "math500": MATH})
    problem = "Count the ordered pairs of positive integers whose product is 36."  # shares 5 words in a row
    assert decontam.match(problem) == []
    assert decontam.match_details(problem) == {}


def test_normalization_ignores_case_punctuation_and_latex_spacing():
    decontam = Decontaminator({"math500": MATH})
    problem = "WHAT is the smallest positive integer, that is divisible by each of the first $8$ primes?"
    assert decontam.match(problem) == ["math500"]


def test_texts_shorter_than_n_match_only_whole():
    decontam = Decontaminator({"math500": MATH})
    assert decontam.match("compute 1 + 1") == ["math500"]  # the same words as the short question
    assert decontam.match_details("Compute: 1 + 1!") == {"math500": "compute 1 1"}
    assert decontam.match("Compute 1+1, then multiply the result by seven and add three to it.") == []
    assert decontam.match("") == []


def test_several_benchmarks_in_benchmark_order():
    shared = "a b c d e f g h i j"
    decontam = Decontaminator({"first": [shared], "second": ["x y " + shared]}, n=8)
    assert decontam.match("z " + shared) == ["first", "second"]
    assert Decontaminator({"b": ["one two three"]}, n=3).match("zero one two three four") == ["b"]


def test_benchmark_files_in_every_format(tmp_path):
    (tmp_path / "aime24.jsonl").write_text("".join(json.dumps({"problem": p, "answer": "1"}) + "\n" for p in AIME))
    pq.write_table(pa.table({"question": MATH, "id": [1, 2]}), tmp_path / "math500.parquet")
    (tmp_path / "gpqa.json").write_text(json.dumps({"data": [{"prompt": "Which gas is the most abundant in air?"}]}))
    (tmp_path / "extra.csv").write_text("instruction,label\nName three primary colors of light please now,x\n")
    decontam = Decontaminator.from_sources(
        [str(tmp_path / name) for name in ("aime24.jsonl", "math500.parquet", "gpqa.json", "extra.csv")]
    )
    assert decontam.names == ["aime24", "math500", "gpqa", "extra"]
    copy = "Let ABC be a triangle inscribed in circle omega. The tangents to omega at B and C meet at point D."
    assert decontam.match(copy) == ["aime24"]
    assert decontam.match(MATH[0]) == ["math500"]
    assert decontam.match("which gas is the most abundant in air") == ["gpqa"]
    assert decontam.match("name three primary colors of light please now") == ["extra"]


def test_datasets_folder_reads_every_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "olympiad"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"problem": [AIME[0]]}),
            "test": datasets.Dataset.from_dict({"problem": [MATH[0]]}),
        }
    ).save_to_disk(str(folder))
    decontam = Decontaminator.from_sources([str(folder)])
    assert decontam.names == ["olympiad"]
    assert decontam.match(AIME[0]) == decontam.match(MATH[0]) == ["olympiad"]


def test_prompt_column_and_user_errors(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"text": AIME[0], "solution": "x"}) + "\n")
    with pytest.raises(DistillError, match="bench.jsonl.*no prompt column"):
        Decontaminator.from_sources([str(path)])
    assert Decontaminator.from_sources([str(path)], prompt_column="text").match(AIME[0]) == ["bench"]
    with pytest.raises(DistillError, match="not found.*fix --decontam-column"):
        Decontaminator.from_sources([str(path)], prompt_column="nope", flag="--decontam-column")

    other = tmp_path / "sub"
    other.mkdir()
    (other / "bench.jsonl").write_text(json.dumps({"problem": "x"}) + "\n")
    with pytest.raises(DistillError, match="both named `bench`"):
        Decontaminator.from_sources([str(path), str(other / "bench.jsonl")], prompt_column="text")
    with pytest.raises(DistillError, match="benchmark not found"):
        Decontaminator.from_sources([str(tmp_path / "missing.jsonl")])
    (tmp_path / "bench.txt").write_text("hello")
    with pytest.raises(DistillError, match="use a .jsonl"):
        Decontaminator.from_sources([str(tmp_path / "bench.txt")])
    with pytest.raises(DistillError):
        Decontaminator({"x": ["a"]}, n=0)


# Hand-written in the style of AIME and MATH problems (no downloads): different problems that share stock phrasing
# or Asymptote code, and copies of one of them, verbatim, embedded, or lightly reworded.
BENCH = [
    "Let x and y be real numbers such that x + y = 10 and xy = 21. The value of x^3 + y^3 can be written as "
    "m/n, where m and n are relatively prime positive integers. Find m+n.",
    "A bag holds 4 red marbles and 6 blue marbles. Two marbles are drawn at random without replacement. "
    "The probability that both are red is m/n, where m and n are relatively prime positive integers. Find m+n.",
    '[asy] size(120); draw((0,0)--(10,0)--(10,10)--(0,10)--cycle); draw((0,0)--(10,10)); label("$A$",(0,0),SW); '
    "[/asy] Square ABCD has side length 10. Find the area of triangle ABC.",
]
CLEAN = [  # other problems: only the stock phrase or the drawing code is shared
    "Six chairs stand in a row and three people sit down at random. The probability that no two of them sit "
    "next to each other is m/n, where m and n are relatively prime positive integers. Find m+n.",
    "The sum of the reciprocals of the roots of x^2 - 7x + 5 can be written as m/n, where m and n are relatively "
    "prime positive integers. Find m+n.",
    '[asy] size(120); draw((0,0)--(10,0)--(10,10)--(0,10)--cycle); draw((0,0)--(10,10)); label("$A$",(0,0),SW); '
    "[/asy] A circle is inscribed in the square shown, of side 6. Find the circumference of the circle.",
]
COPIES = [
    BENCH[0],  # verbatim
    "Answer the following. " + BENCH[1] + " Show your reasoning step by step before answering.",  # embedded
    # reworded lightly: numbers changed, one word swapped
    "Let x and y be real numbers such that x + y = 12 and xy = 35. The value of x^3 + y^3 can be expressed as "
    "m/n, where m and n are relatively prime positive integers. Find m+n.",
    "A bag holds 5 red marbles and 7 blue marbles. Two marbles are drawn at random without replacement. "
    "The probability that both are blue is m/n, where m and n are relatively prime positive integers. Find m+n.",
]


def test_plain_8_grams_flag_problems_that_only_share_stock_phrasing():
    """The rule before: any 8 consecutive normalized words in common, code and stock phrases included."""
    from distill.filter.dataset.decontam import words

    def grams(text):
        tokens = words(text)
        return {" ".join(tokens[i : i + 8]) for i in range(len(tokens) - 7)}

    bench = set().union(*(grams(b) for b in BENCH))
    assert sum(bool(grams(p) & bench) for p in CLEAN) == 3  # the false positives the default avoids


def test_default_is_precise_on_stock_phrases_and_asymptote_code():
    decontam = Decontaminator({"bench": BENCH})
    assert decontam.n == 8 and decontam.min_overlap == 0.5
    assert [decontam.match(p) for p in CLEAN] == [[], [], []]


def test_default_still_catches_verbatim_embedded_and_reworded_copies():
    decontam = Decontaminator({"bench": BENCH})
    assert [decontam.match(p) for p in COPIES] == [["bench"]] * 4


def test_overlap_is_of_the_shorter_text():
    from distill.filter.dataset.decontam import overlap

    assert overlap("a b c".split(), "x a b c y z w".split()) == 1.0
    assert overlap("a b c d e f".split(), "a b c x y z".split()) == 0.5
    assert overlap("a b c d".split(), "a b x y".split()) == 0.0  # blocks under 3 words do not count
    assert overlap("x 2 let y 3 z".split(), "x q 2 r let s y t 3 u z".split()) == 0.0  # scattered single words
    assert overlap([], ["a"]) == 0.0
