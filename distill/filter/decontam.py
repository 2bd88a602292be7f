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
"""

import re
import unicodedata
from pathlib import Path

from distill.errors import DistillError, MissingDependency
from distill.generate.sources import PROMPT_COLUMNS, dataset_rows, pick_column, read_file_rows

WORD_RE = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The normalized words of a text: NFKC, case-folded, word characters only."""
    return WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


class Decontaminator:
    """Which benchmarks a text shares a word n-gram with."""

    def __init__(self, benchmarks: dict[str, list[str]], n: int = 8):
        if n < 1:
            raise DistillError(f"n-gram size must be at least 1 word, got {n}: the default is 8")
        self.n = n
        self.names = list(benchmarks)
        self._order = {name: i for i, name in enumerate(self.names)}
        # n-gram -> the benchmarks holding it. Most n-grams belong to one benchmark: equal tuples are shared.
        self._owners: dict[str, tuple[str, ...]] = {}
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}
        for name, texts in benchmarks.items():
            for text in texts:
                for gram in self.grams(text):
                    owners = self._owners.get(gram, ())
                    if name not in owners:
                        grown = owners + (name,)
                        self._owners[gram] = shared.setdefault(grown, grown)

    @classmethod
    def from_sources(
        cls, paths: list[str], n: int = 8, prompt_column: str | None = None, flag: str = "prompt_column"
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
        return cls(benchmarks, n=n)

    def grams(self, text: str) -> list[str]:
        """The text's word n-grams, or its whole normalized text when shorter than n words (none if empty)."""
        tokens = words(text)
        if len(tokens) < self.n:
            return [" ".join(tokens)] if tokens else []
        return [" ".join(tokens[i : i + self.n]) for i in range(len(tokens) - self.n + 1)]

    def match(self, text: str) -> list[str]:
        """Names of the benchmarks sharing at least one n-gram with the text, in benchmark order."""
        return list(self.match_details(text))

    def match_details(self, text: str) -> dict[str, str]:
        """Benchmark name -> the first n-gram of the text (in text order) that it also holds."""
        found: dict[str, str] = {}
        for gram in self.grams(text):
            for name in self._owners.get(gram, ()):
                found.setdefault(name, gram)
            if len(found) == len(self.names):
                break  # every benchmark matched already
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
        import datasets
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
