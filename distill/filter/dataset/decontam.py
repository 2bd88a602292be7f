"""Benchmark decontamination: drop problems that share a word n-gram with a benchmark question.

The rule of open-r1 and OpenThoughts: a problem is contaminated by a benchmark when the two share at least one
run of `n` consecutive words (n = 8 by default: long enough that common phrasing such as "what is the value
of" does not match, short enough that a copied question with a changed number or an added sentence still
does). Text is normalized first: NFKC, case-folded, and reduced to its words (`\\w+`), so punctuation, LaTeX
spacing and symbols do not hide a copy (`$x^2 + 1$` and `x^2+1` both read "x 2 1").

A text shorter than n words has no n-gram: it is represented by its whole normalized text instead, so it
matches only a text with exactly the same words. (Matching it as a substring would flag countless problems
against a benchmark question like "Compute 1+1.")

Benchmarks are small (MATH-500, AIME, GPQA: thousands of questions), so the index is a plain dict from
n-gram to the benchmarks holding it; checking a problem costs one lookup per word.

Precise on competition text: 8-grams flagged 7 of 30 clean AIME 2024 and 12 of 30 AIME 2025 problems against
MATH-500, through stock phrases ("where m and n are relatively prime positive integers") and Asymptote code.
Longer n-grams alone (13: 7 of 60) also miss lightly reworded copies of short problems, whose unchanged runs
between two changed numbers are shorter than 13 words. So: `[asy]` and fenced code blocks are left out, stock
phrases split the text (no n-gram spans one), and a shared 8-gram only makes a candidate pair: it counts as a
copy when the matching word blocks of the two texts (difflib; blocks of 3 words or more) cover at least
`min_overlap` (0.5) of the shorter one, which a verbatim, embedded or lightly reworded copy does and two problems
sharing a phrase do not.
`min_overlap=0` gives the plain n-gram rule (on the text without code and stock phrases).

Short problems get rules of their own, since stock phrases can leave no 8-word run at all ("If $x^2 - x - 1 = 0$,
what is the value of $x^3 - 2x + 1$?" is runs of 6 and 5 words): a text whose normalized words equal a benchmark
text's is a copy whatever its length (every verbatim copy is caught), and two texts of at most SHORT_WORDS words
that share a word 3-gram count as a copy when their normalized characters are at least SHORT_SIMILARITY alike
(difflib ratio), which catches a short problem lightly reworded or with a number changed; long competition problems
never meet this rule (benchmarks/decontam.py measures both).
"""

import difflib
import re
import unicodedata
from pathlib import Path

from distill.errors import DistillError, MissingDependency
from distill.generate.sources import PROMPT_COLUMNS, dataset_rows, pick_column, read_file_rows

WORD_RE = re.compile(r"\w+")
DEFAULT_NGRAM = 8
DEFAULT_MIN_OVERLAP = 0.5
MAX_PAIRS = 50  # candidate benchmark texts compared per problem: a stock n-gram shared by hundreds costs no more
# Matching blocks shorter than this do not count towards the overlap: single shared words ("x", "2", "let") scattered
# over two different problems covered two thirds of a short MATH-500 problem against a long AIME one.
MIN_BLOCK = 3
SHORT_WORDS = 25  # a problem of at most this many words is matched by the short-text rule too
SHORT_GRAM = 3  # short texts are candidates for each other when they share a word 3-gram ...
SHORT_SIMILARITY = 0.8  # ... and count as a copy when their normalized characters are this alike (difflib ratio)
CODE_RE = re.compile(r"\[asy\].*?\[/asy\]|```.*?```", re.DOTALL | re.IGNORECASE)
# Phrasing that competition problems share whatever they ask (normalized words); an n-gram never spans one.
STOP_PHRASES = tuple(
    " ".join(WORD_RE.findall(p))
    for p in (
        "where m and n are relatively prime positive integers find m n",
        "where m and n are relatively prime positive integers",
        "can be written in the form",
        "can be written as",
        "express your answer as a common fraction",
        "express your answer in simplest radical form",
        "express your answer in simplest form",
        "find the remainder when",
        "is divided by 1000",
        "find the number of ordered pairs",
        "the probability that",
        "find the sum of all",
        "find the value of",
        "what is the value of",
        "the greatest integer less than or equal to",
    )
)
STOP_RE = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in STOP_PHRASES) + r")\b")


def words(text: str) -> list[str]:
    """The normalized words of a text: NFKC, case-folded, word characters only."""
    return WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


def segments(text: str) -> list[list[str]]:
    """The words of a text without its `[asy]`/code blocks, split where a stock competition phrase stood."""
    joined = " ".join(words(CODE_RE.sub(" ", text)))
    return [part.split() for part in STOP_RE.split(joined) if part.strip()]


def plain_words(text: str) -> list[str]:
    """The normalized words of a text without its `[asy]`/code blocks, stock phrases kept: the text as a whole."""
    return words(CODE_RE.sub(" ", text))


def short_grams(tokens: list[str]) -> list[str]:
    """Word 3-grams of a short text (the text itself when shorter): its candidates under the short-text rule."""
    if len(tokens) < SHORT_GRAM:
        return [" ".join(tokens)]
    return [" ".join(tokens[i : i + SHORT_GRAM]) for i in range(len(tokens) - SHORT_GRAM + 1)]


def overlap(a: list[str], b: list[str]) -> float:
    """Share of the shorter word list covered by the matching blocks of the two of at least MIN_BLOCK words
    (difflib, no junk heuristic)."""
    if not a or not b:
        return 0.0
    blocks = difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
    return sum(block.size for block in blocks if block.size >= MIN_BLOCK) / min(len(a), len(b))


class Decontaminator:
    """Which benchmarks a text shares a word n-gram with."""

    def __init__(
        self, benchmarks: dict[str, list[str]], n: int = DEFAULT_NGRAM, min_overlap: float = DEFAULT_MIN_OVERLAP
    ):
        if n < 1:
            raise DistillError(f"n-gram size must be at least 1 word, got {n}: the default is {DEFAULT_NGRAM}")
        if not 0 <= min_overlap <= 1:
            raise DistillError(f"the decontamination overlap is a share in [0, 1], got {min_overlap}")
        self.n = n
        self.min_overlap = min_overlap
        # For the second check: every benchmark text's words, and which texts hold each n-gram.
        self._texts: list[tuple[str, list[str]]] = []
        self._holders: dict[str, list[int]] = {}
        self.names = list(benchmarks)
        self._order = {name: i for i, name in enumerate(self.names)}
        # n-gram -> the benchmarks holding it. Most n-grams belong to one benchmark: equal tuples are shared.
        self._owners: dict[str, tuple[str, ...]] = {}
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}
        # Every text's whole normalized words (a verbatim copy of any length), and the short texts by word 3-gram.
        self._whole: dict[str, list[str]] = {}
        self._short: list[tuple[str, str]] = []
        self._short_holders: dict[str, list[int]] = {}
        for name, texts in benchmarks.items():
            for text in texts:
                tokens = plain_words(text)
                whole = " ".join(tokens)
                if whole and name not in self._whole.setdefault(whole, []):
                    self._whole[whole].append(name)
                if 0 < len(tokens) <= SHORT_WORDS:
                    self._short.append((name, whole))
                    for gram in set(short_grams(tokens)):
                        self._short_holders.setdefault(gram, []).append(len(self._short) - 1)
                if min_overlap > 0:
                    self._texts.append((name, [w for part in segments(text) for w in part]))
                    for gram in set(self.grams(text)):
                        self._holders.setdefault(gram, []).append(len(self._texts) - 1)
                for gram in self.grams(text):
                    owners = self._owners.get(gram, ())
                    if name not in owners:
                        grown = owners + (name,)
                        self._owners[gram] = shared.setdefault(grown, grown)

    @classmethod
    def from_sources(
        cls,
        paths: list[str],
        n: int = DEFAULT_NGRAM,
        prompt_column: str | None = None,
        flag: str = "prompt_column",
        min_overlap: float = DEFAULT_MIN_OVERLAP,
    ) -> "Decontaminator":
        """Benchmarks from files or folders, each named after its file stem (folder name, hub id's last part).

        Files: .jsonl, .json, .parquet, .csv (read like `distill generate --source`). Folders: `datasets`
        folders (save_to_disk or raw data files), every split read, since a benchmark is all of its questions.
        The question is the `prompt_column`, else the first of problem, prompt, question, instruction.
        `flag` is how the caller's user names prompt_column (a command-line flag), for error messages.
        """
        benchmarks: dict[str, list[str]] = {}
        where: dict[str, str] = {}
        for source in paths:
            name = benchmark_name(source)
            if name in benchmarks:
                raise DistillError(f"benchmarks {where[name]} and {source} are both named `{name}`: rename one")
            rows = read_benchmark_rows(source)
            if not rows:
                raise DistillError(f"benchmark {source} holds no rows: check the file")
            try:
                column = pick_column(list(rows[0]), prompt_column, PROMPT_COLUMNS, flag, required=True)
            except DistillError as exc:
                raise DistillError(f"benchmark {source}: {exc}") from None
            texts = [row[column] for row in rows if isinstance(row.get(column), str) and row[column].strip()]
            if not texts:
                raise DistillError(f"benchmark {source} has no text in column `{column}`: fix {flag}")
            benchmarks[name], where[name] = texts, source
        return cls(benchmarks, n=n, min_overlap=min_overlap)

    def grams(self, text: str) -> list[str]:
        """The text's word n-grams (none across a stock phrase or inside `[asy]`/code), or its whole normalized text
        when shorter than n words (none if empty)."""
        parts = segments(text)
        tokens = [w for part in parts for w in part]
        if len(tokens) < self.n:
            return [" ".join(tokens)] if tokens else []
        return [" ".join(part[i : i + self.n]) for part in parts for i in range(len(part) - self.n + 1)]

    def match(self, text: str) -> list[str]:
        """Names of the benchmarks sharing at least one n-gram with the text, in benchmark order."""
        return list(self.match_details(text))

    def match_details(self, text: str) -> dict[str, str]:
        """Benchmark name -> the first n-gram of the text (in text order) that it also holds (for a text matched only
        by the short-text rules: its normalized words)."""
        if self.min_overlap > 0:
            found = self._confirmed(text)
        else:
            found = {}
            for gram in self.grams(text):
                for name in self._owners.get(gram, ()):
                    found.setdefault(name, gram)
                if len(found) == len(self.names):
                    break  # every benchmark matched already
        if len(found) < len(self.names):
            found = {**self._short_copies(text), **found}
        return dict(sorted(found.items(), key=lambda item: self._order[item[0]]))

    def _short_copies(self, text: str) -> dict[str, str]:
        """Benchmarks holding this text word for word, or (both texts short) a text this one is SHORT_SIMILARITY
        alike, among those sharing a word 3-gram with it."""
        tokens = plain_words(text)
        whole = " ".join(tokens)
        found = dict.fromkeys(self._whole.get(whole, ()), whole)
        if not 0 < len(tokens) <= SHORT_WORDS or len(found) == len(self.names):
            return found
        compared: set[int] = set()
        for gram in short_grams(tokens):
            for index in self._short_holders.get(gram, ()):
                name, bench = self._short[index]
                if name in found or index in compared or len(compared) >= MAX_PAIRS:
                    continue
                compared.add(index)
                if difflib.SequenceMatcher(None, whole, bench, autojunk=False).ratio() >= SHORT_SIMILARITY:
                    found[name] = whole
        return found

    def _confirmed(self, text: str) -> dict[str, str]:
        """Benchmarks holding a text that shares an n-gram with this one and overlaps it by min_overlap."""
        found: dict[str, str] = {}
        tokens = None
        compared: set[int] = set()
        for gram in self.grams(text):
            for index in self._holders.get(gram, ()):
                name, bench = self._texts[index]
                if name in found or index in compared or len(compared) >= MAX_PAIRS:
                    continue
                compared.add(index)
                if tokens is None:
                    tokens = [w for part in segments(text) for w in part]
                if overlap(tokens, bench) >= self.min_overlap:
                    found[name] = gram
        return dict(sorted(found.items(), key=lambda item: self._order[item[0]]))


def benchmark_name(source: str) -> str:
    """The file stem (`aime24.jsonl` -> aime24), folder name, or last part of a hub id."""
    path = Path(source)
    return path.stem if path.is_file() else path.name or source


def read_benchmark_rows(source: str) -> list[dict]:
    """All rows of a benchmark file, folder (every split) or hub id, as dicts."""
    path = Path(source)
    if path.is_file():
        return list(read_file_rows(path, what="benchmark "))
    if not path.is_dir() and (path.suffix or source.startswith((".", "/", "~"))):
        raise DistillError(f"benchmark not found: {source}")
    return _read_all_splits(source, local=path.is_dir())


def _read_all_splits(source: str, local: bool) -> list[dict]:
    try:
        import datasets  # ~2 s to import; only for datasets folders and hub ids
    except ImportError as exc:
        raise MissingDependency("datasets", "pip install datasets") from exc
    try:
        if local and (Path(source, "dataset_info.json").exists() or Path(source, "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(source)  # a folder written by save_to_disk
        else:
            loaded = datasets.load_dataset(source)  # raw data files, or a hub id (needs the hub or its cache)
    except Exception as exc:  # datasets raises many types: no data files, no network, bad files
        where = "folder" if local else "dataset"
        raise DistillError(f"cannot load benchmark {where} {source}: {str(exc).splitlines()[0]}") from None
    splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
    return [row for split in splits for row in dataset_rows(split)]
