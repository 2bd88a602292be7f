"""The `language` verifier: reasoning and answer are in the prompt's language (R1's language-consistency reward)."""

import bisect
import functools
import json
import re
import unicodedata
from collections import Counter

from distill.errors import DistillError, near_hint
from distill.filter.verifiers.base import ALL_DOMAINS, BaseVerifier, Verdict, reasoning_and_answer

# Unicode blocks of the scripts we tell apart. A character outside them that is still a letter counts as "other".
SCRIPT_RANGES = [
    ("latin", 0x0041, 0x005A),
    ("latin", 0x0061, 0x007A),
    ("latin", 0x00C0, 0x024F),
    ("latin", 0x1E00, 0x1EFF),
    ("greek", 0x0370, 0x03FF),
    ("greek", 0x1F00, 0x1FFF),
    ("cyrillic", 0x0400, 0x052F),
    ("hebrew", 0x0590, 0x05FF),
    ("arabic", 0x0600, 0x06FF),
    ("arabic", 0x0750, 0x077F),
    ("arabic", 0x08A0, 0x08FF),
    ("arabic", 0xFB50, 0xFDFF),
    ("arabic", 0xFE70, 0xFEFF),
    ("devanagari", 0x0900, 0x097F),
    ("thai", 0x0E00, 0x0E7F),
    ("hangul", 0x1100, 0x11FF),
    ("hangul", 0x3130, 0x318F),
    ("hangul", 0xAC00, 0xD7AF),
    ("kana", 0x3040, 0x30FF),
    ("kana", 0x31F0, 0x31FF),
    ("han", 0x3400, 0x4DBF),
    ("han", 0x4E00, 0x9FFF),
    ("han", 0xF900, 0xFAFF),
    ("han", 0x20000, 0x2FFFF),
]
# Scripts written without spaces: every character is one unit (a CJK character carries about a word's meaning);
# in the other scripts a run of letters is one unit (a word).
CHARACTER_SCRIPTS = {"han", "kana"}
# Single Latin or Greek letters are variables (x, n, π) far more often than words, in every language.
VARIABLE_SCRIPTS = {"latin", "greek"}

# Which scripts count as "in the language". Unlisted Latin-script codes (en, fr, de, es, vi, ...) map to latin.
LANGUAGE_SCRIPTS = {
    "zh": {"han"},
    "ja": {"han", "kana"},
    "ko": {"hangul", "han"},
    "ru": {"cyrillic"},
    "uk": {"cyrillic"},
    "bg": {"cyrillic"},
    "sr": {"cyrillic"},
    "kk": {"cyrillic"},
    "ar": {"arabic"},
    "fa": {"arabic"},
    "ur": {"arabic"},
    "he": {"hebrew"},
    "el": {"greek"},
    "hi": {"devanagari"},
    "mr": {"devanagari"},
    "ne": {"devanagari"},
    "th": {"thai"},
}
LATIN_LANGUAGES = {
    "en", "fr", "de", "es", "it", "pt", "nl", "sv", "da", "no", "nb", "fi", "pl", "cs", "sk", "sl", "hr", "ro",
    "hu", "tr", "vi", "id", "ms", "tl", "sw", "ca", "eu", "gl", "et", "lv", "lt", "af", "latin",
}  # fmt: skip
SCRIPT_NAMES = {script for script, _, _ in SCRIPT_RANGES}

# Text that is not prose in any language: code, LaTeX, URLs, identifiers. Removed before counting.
# Each is linear in the text: a lazy `\\[.*?\\]` would rescan to the end from every unclosed `\\[` (quadratic on
# hostile output), so delimiters whose opener differs from their closer are removed by the functions below instead.
NON_PROSE_RES = [
    re.compile(r"```.*?(?:```|\Z)", re.DOTALL),  # fenced code (an unclosed fence runs to the end)
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"\$\$.*?\$\$", re.DOTALL),  # linear: a start that finds no closing `$$` is the last `$$`
    ("\\[", "\\]"),  # display math: see _remove_between
    ("\\(", "\\)"),
    ("\\begin{", "\\end{"),  # environments, \\begin{x} ... \\end{x}: see _remove_environments
    re.compile(r"(?<!\\)\$[^$\n]*\$"),  # inline $...$
    re.compile(r"\\[A-Za-z]+"),  # stray LaTeX commands (\boxed, \frac, \times) outside math delimiters
    re.compile(r"https?://\S+"),
    # identifiers written in prose: snake_case, names with digits (x1, nums2), calls and attributes (f(, a.b)
    re.compile(r"\b\w*_\w*\b|\b[A-Za-z]+\d\w*\b|\b[A-Za-z]\w*(?=\()|\b[A-Za-z]\w*\.[A-Za-z]\w*\b"),
]

# The commonest English function words. English prose has about 40% of its words here; other Latin-script
# languages share only a handful ("a", "in", "is" in some), so the share tells English from French or Spanish.
ENGLISH_STOPWORDS = frozenset(
    "a about after all also an and are as at be because been but by can could did do does for from had has have he "
    "her here his how i if in into is it its let me more my no not now of on one only or other our out so some "
    "such than that the their them then there these they this to up us was we were what when where which while "
    "who will with would you your".split()
)


@functools.lru_cache(maxsize=65536)  # traces are long but use few distinct characters: classify each once
def _script_of(ch: str) -> str | None:
    """The script of a letter; None for anything else (digits, punctuation, symbols such as × inside Latin-1)."""
    if not ch.isalpha():
        return None
    code = ord(ch)
    for script, lo, hi in SCRIPT_RANGES:
        if lo <= code <= hi:
            return script
    return "other"


def strip_non_prose(text: str) -> str:
    for pattern in NON_PROSE_RES:
        if pattern == ("\\begin{", "\\end{"):
            text = _remove_environments(text)
        elif isinstance(pattern, tuple):
            text = _remove_between(text, *pattern)
        else:
            text = pattern.sub(" ", text)
    return text


def _remove_between(text: str, opener: str, closer: str) -> str:
    """Each `opener ... closer` (the nearest closer, as a lazy regex would take) replaced by a space, in one pass.

    When an opener has no closer after it, no later opener has one either: the scan stops there.
    """
    out, at = [], 0
    while (start := text.find(opener, at)) != -1:
        end = text.find(closer, start + len(opener))
        if end == -1:
            break
        out += [text[at:start], " "]
        at = end + len(closer)
    return "".join(out) + text[at:] if out else text


BEGIN_RE = re.compile(r"\\begin\{([a-zA-Z*]+)\}")
END_RE = re.compile(r"\\end\{([a-zA-Z*]+)\}")


def _remove_environments(text: str) -> str:
    """Each `\\begin{x} ... \\end{x}` (to the nearest `\\end` of the same name) replaced by a space.

    The ends of each name are listed once and looked up by bisection, so an unclosed `\\begin` costs a lookup, not
    a scan to the end of the text.
    """
    if "\\begin{" not in text:
        return text
    ends: dict[str, list[int]] = {}
    for match in END_RE.finditer(text):
        ends.setdefault(match.group(1), []).append(match.start())
    out, at = [], 0
    for match in BEGIN_RE.finditer(text):
        name = match.group(1)
        if match.start() < at or name not in ends:
            continue  # inside an environment already removed, or never closed
        i = bisect.bisect_left(ends[name], match.end())
        if i == len(ends[name]):
            continue
        out += [text[at : match.start()], " "]
        at = ends[name][i] + len(name) + len("\\end{}")
    return "".join(out) + text[at:] if out else text


def script_units(text: str) -> Counter:
    """Units of prose per script: a word in alphabetic scripts, a character in Chinese and Japanese.

    Numbers, punctuation, LaTeX and code are not counted (see strip_non_prose).
    """
    return _count_units(strip_non_prose(text))


# A word of two or more ASCII letters: what _count_units counts in ASCII text (single letters are variables).
ASCII_WORD_RE = re.compile(r"[A-Za-z]{2,}")


def _count_units(prose: str) -> Counter:
    if prose.isascii():
        # The common case, and 10x faster than the loop below: ASCII has one script (Latin) and no combining
        # marks, so the units are the maximal runs of letters, less the single letters. Same counts, by design.
        words = len(ASCII_WORD_RE.findall(prose))
        return Counter({"latin": words}) if words else Counter()
    return _count_units_by_char(prose)


def _count_units_by_char(prose: str) -> Counter:
    units: Counter = Counter()
    run_script, run_len = None, 0

    def end_run() -> None:
        if run_script is not None and not (run_script in VARIABLE_SCRIPTS and run_len == 1):
            units[run_script] += 1

    for ch in prose:
        script = _script_of(ch)
        if script is None and run_script is not None and _is_mark(ch):
            run_len += 1  # combining marks (Devanagari vowel signs, Arabic harakat) continue the word
            continue
        if script in CHARACTER_SCRIPTS:
            end_run()
            run_script, run_len = None, 0
            units[script] += 1
        elif script is not None and script == run_script:
            run_len += 1
        else:
            end_run()
            run_script, run_len = script, (1 if script else 0)
    end_run()
    return units


# Sentence ends in Latin and CJK punctuation, and line breaks.
SENTENCE_END_RE = re.compile(r"[.!?;\n\u3002\uff01\uff1f\uff1b]+")


def target_share(text: str, scripts: set[str]) -> tuple[float | None, Counter]:
    """The share of prose units that sit in sentences written (mostly) in `scripts`, and the units per script.

    Judged sentence by sentence: a sentence belongs to the target when at least half of its units are in the
    target script. So a borrowed term, a name or an identifier ("we call max_sum on nums" inside a Chinese
    sentence) costs nothing, while a sentence or paragraph in another language (R1's language mixing) counts
    against the trace in full. None when the text has no prose.
    """
    total_units: Counter = Counter()
    in_target = total = 0
    for sentence in SENTENCE_END_RE.split(strip_non_prose(text)):
        units = _count_units(sentence)
        size = sum(units.values())
        if not size:
            continue
        total_units += units
        total += size
        if 2 * sum(units[s] for s in scripts) >= size:
            in_target += size
    return (in_target / total if total else None), total_units


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch).startswith("M")


def _latin_words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", strip_non_prose(text).lower())


def english_stopword_share(text: str) -> float | None:
    """Share of the Latin words that are English function words; None with fewer than 10 words to judge."""
    words = _latin_words(text)
    if len(words) < 10:
        return None
    return sum(w in ENGLISH_STOPWORDS for w in words) / len(words)


def detect_language(text: str) -> str | None:
    """A language code from the dominant script ("en" for Latin text that reads as English), None without prose."""
    units = script_units(text)
    if not units:
        return None
    script = units.most_common(1)[0][0]
    if script == "han":
        return "ja" if units["kana"] else "zh"
    if script == "kana":
        return "ja"
    if script == "latin":
        words = _latin_words(text)
        # Short prompts ("Calculate 2 + 3.") say too little; 10% stop words over 3+ words reads as English.
        if len(words) >= 3 and sum(w in ENGLISH_STOPWORDS for w in words) / len(words) >= 0.1:
            return "en"
        return "latin"
    return script  # a script name stands for its languages (cyrillic, arabic, ...)


def target_scripts(language: str) -> set[str]:
    if language in SCRIPT_NAMES:
        return {language}
    primary = language.lower().replace("_", "-").split("-")[0]
    if primary in LANGUAGE_SCRIPTS:
        return LANGUAGE_SCRIPTS[primary]
    if primary in LATIN_LANGUAGES:
        return {"latin"}
    known = ["auto", *LANGUAGE_SCRIPTS, *sorted(LATIN_LANGUAGES), *sorted(SCRIPT_NAMES)]
    raise DistillError(
        f"verifier `language`: unknown language {language!r}{near_hint(language, known)}: use auto, a code such as "
        f"en, fr, zh, ja, ko, ru, ar, hi, or a script name ({', '.join(sorted(SCRIPT_NAMES))})"
    )


def _user_prompt(sample: dict) -> str:
    """The user's own words: `problem` (without our template's English instruction), else the last user turn."""
    if sample.get("problem"):
        return sample["problem"]
    try:
        messages = json.loads(sample.get("prompt_messages") or "[]")
    except ValueError:
        return ""
    user = [m.get("content") or "" for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return user[-1] if user else ""


class LanguageVerifier(BaseVerifier):
    """The reasoning and the answer are written in the prompt's language (R1's language-consistency reward).

    score = the share of the prose (counted in words; in characters for Chinese and Japanese) that sits in
    sentences written in the target language's script, taken over the reasoning and over the answer separately,
    the lower of the two (an English trace ending in a Chinese answer is mixed too). Sentence by sentence, so that
    borrowed terms and identifiers inside a sentence do not count but a sentence in another language counts in
    full (see target_share). Code, LaTeX, numbers, URLs and single-letter variables are not prose and are ignored.
    Verdicts: (True, "ok"); (False, "language_mixing") below the threshold; (False, "wrong_language") with no
    target-language prose at all; (None, "empty") when there is no text, (None, "no_prose") when the text is all
    math or code.

    The detector tells scripts apart, not languages of one script: French reasoning for an English prompt passes
    unless min_english_stopword_share is set.

    Options:
    - language: "auto" (default: detected from the user's prompt, i.e. `problem`, which excludes our template's
      English instruction; when the prompt has no prose, e.g. a bare formula, the trace's own dominant script is
      the target, so mixing is still caught), or a code ("en", "zh", "ja", "ru", ...) or script name ("latin").
    - threshold: the pass mark (default 0.95: one stray sentence in twenty is tolerated). The failure R1 filtered
      is switching language for sentences or paragraphs, which puts the share far below it (a trace that
      switches halfway scores 0.5, a switched paragraph in a trace of five 0.8); since the score is counted
      sentence by sentence, the English terms and code names that a Chinese or Russian trace legitimately
      borrows do not lower it, so a good trace scores 1.0 and a high mark costs no good data. Prompts that ask
      for another language (translation) need language= set or this verifier left out.
    - min_english_stopword_share: when the target is English (given, or a prompt that reads as English), also
      require this share of English function words among the Latin words of each part with 10+ words (default
      0.0: off; about 0.15 catches other Latin-script languages, English prose sits near 0.4).
    """

    name = "language"
    domains = ALL_DOMAINS

    def __init__(self, language: str = "auto", threshold: float = 0.95, min_english_stopword_share: float = 0.0):
        if not isinstance(language, str):
            raise DistillError(f"verifier `language`: language must be auto or a language code, got {language!r}")
        if language != "auto":
            target_scripts(language)  # refuse an unknown code now, not on the first row
        if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise DistillError(f"verifier `language`: threshold must be between 0 and 1, got {threshold!r}")
        if not isinstance(min_english_stopword_share, int | float) or not 0 <= min_english_stopword_share <= 1:
            raise DistillError(
                "verifier `language`: min_english_stopword_share must be between 0 and 1, "
                f"got {min_english_stopword_share!r}"
            )
        self.language = language
        self.threshold = float(threshold)
        self.min_english_stopword_share = float(min_english_stopword_share)

    def verify(self, sample: dict) -> Verdict:
        reasoning, answer = reasoning_and_answer(sample)
        if not reasoning.strip() and not answer.strip():
            return Verdict(None, "empty")
        language = self.language
        if language == "auto":
            language = detect_language(_user_prompt(sample)) or detect_language(reasoning + "\n" + answer) or ""
        scripts = target_scripts(language) if language else set()

        shares, total = {}, Counter()
        for part, text in (("reasoning", reasoning), ("answer", answer)):
            share, units = target_share(text, scripts)
            total += units
            if share is not None:
                shares[part] = share
        if not shares:
            return Verdict(None, "no_prose", details="only math, code or numbers")
        worst = min(shares, key=shares.get)
        score = shares[worst]
        if score < self.threshold:
            found = ", ".join(f"{s} {n}" for s, n in total.most_common(3))
            details = f"target {language}: {worst} {score:.0%} in {'/'.join(sorted(scripts))} ({found} units)"
            reason = "wrong_language" if sum(total[s] for s in scripts) == 0 else "language_mixing"
            return Verdict(False, reason, score=score, details=details)

        if self.min_english_stopword_share > 0 and language.split("-")[0].lower() == "en":
            for part, text in (("reasoning", reasoning), ("answer", answer)):
                share = english_stopword_share(text)
                if share is not None and share < self.min_english_stopword_share:
                    details = f"{part}: {share:.0%} English function words, not English prose"
                    return Verdict(False, "language_mixing", score=score, details=details)
        return Verdict(True, "ok", score=score)
