"""`--consensus majority`: a pseudo-gold for prompts without one, from the agreement of their own samples.

NeMo-Skills labelled OpenMathReasoning this way: the final answers of a prompt's samples are grouped by
math-verify equivalence; when the largest group holds at least `--min-agreement` of the samples (and is larger
than the runner-up), its answer becomes the prompt's gold (`gold_source` majority) and every sample is verified
against it. Needs every sample of a prompt, so it is a first pass over the inputs before verification starts;
it reads only four columns and keeps answers of gold-less prompts only.
"""

from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from distill.errors import DistillError
from distill.filter.verifiers.math import check_math, last_boxed

CONSENSUS = ("none", "majority")
TIMEOUT_SECONDS = 5


def check_consensus(consensus: str, min_agreement: float) -> None:
    if consensus not in CONSENSUS:
        raise DistillError(f"unknown --consensus `{consensus}`: use none or majority")
    if not 0 < min_agreement <= 1:
        raise DistillError(f"--min-agreement is a share of a prompt's samples in (0, 1], got {min_agreement}")


def majority_golds(files: list[Path], min_agreement: float) -> dict[str, str]:
    """prompt_id -> the majority final answer (the content of its box), for prompts without a gold."""
    answers: dict[str, list[str | None]] = defaultdict(list)
    for path in files:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(columns=["prompt_id", "gold", "answer", "error"]):
            for row in batch.to_pylist():
                if row["gold"] is None and row["error"] is None:
                    answers[row["prompt_id"]].append(row["answer"])
    golds = {}
    for prompt_id, texts in answers.items():
        gold = majority_answer(texts, min_agreement)
        if gold is not None:
            golds[prompt_id] = gold
    return golds


def majority_answer(answers: list[str | None], min_agreement: float) -> str | None:
    """The boxed answer most samples agree on (math-verify equivalence), None when too few agree or it is a tie.

    Samples with no final answer count in the total: five samples of which two agree and three never answered
    are not a 0.5 consensus on anything worth keeping at --min-agreement 0.5.
    """

    groups: list[list] = []  # [representative box content, count]
    for text in answers:
        boxed = last_boxed(text or "")
        if boxed is None or not boxed.strip():
            continue
        for group in groups:
            if _same(group[0], boxed, text, check_math):
                group[1] += 1
                break
        else:
            groups.append([boxed, 1])
    if not groups:
        return None
    groups.sort(key=lambda g: -g[1])
    top = groups[0]
    if len(groups) > 1 and groups[1][1] == top[1]:
        return None
    return top[0] if top[1] >= min_agreement * len(answers) else None


def _same(representative: str, boxed: str, text: str, check_math) -> bool:
    if " ".join(representative.split()) == " ".join(boxed.split()):
        return True
    return check_math(representative, text, "boxed", TIMEOUT_SECONDS).passed is True


def label(batch: list[dict], golds: dict[str, str]) -> None:
    """Fill the pseudo-gold of gold-less rows and say where each row's gold came from."""
    for row in batch:
        if row["gold"] is not None:
            row["gold_source"] = "given"
        elif row["prompt_id"] in golds:
            row["gold"] = golds[row["prompt_id"]]
            row["gold_source"] = "majority"
        else:
            row["gold_source"] = None
