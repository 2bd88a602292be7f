"""`distill train --method kd`: logit distillation on the teacher's top-k log-probs stored by `generate --logprobs`.

Offline: no teacher runs. Each training row is the prompt, rendered with the student's chat template (plus the
generation's prefill), followed by the teacher's own completion tokens (`token_ids`): the student is trained on the
very tokens the teacher's log-probs describe, so they align position by position without re-tokenizing the text.
That needs the student to share the teacher's tokenizer, checked by vocabulary hash (distill.models.vocab_hash).

The loss at each completion token, mixed by `ce_weight`:
    ce_weight x (-log q(token)) + (1 - ce_weight) x KL(p || q) over the teacher's top-k plus one tail bucket,
where p is the teacher's stored distribution, q the student's, and the tail bucket holds the probability outside
the top-k (1 - the sum over it) for each, so that a student putting its mass elsewhere pays for it (without it a
top-1 KL is zero whatever the student does). The KL and the tail come from TRL's server distillation, the same
divergence its OPD with a served teacher uses (pinned with TRL in pyproject.toml).
"""

import json
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq

from distill.engines.chat import render_chat
from distill.errors import DistillError

if TYPE_CHECKING:
    import torch
    from datasets import Dataset

KD_COLUMNS = ("prompt_messages", "sampling", "token_ids", "top_token_ids", "top_logprobs", "teacher_tokenizer",
              "teacher_vocab_hash")  # fmt: skip


def check_vocabulary(files: list[str], student: str, student_hash: str) -> int:
    """Refuse traces whose teacher tokenizer is not the student's (the stored ids would mean other tokens), or
    that hold no log-probs at all; returns how many rows have them."""

    usable = 0
    for file in files:
        names = pq.read_schema(file).names
        if "top_logprobs" not in names:
            raise DistillError(
                f"{file} has no teacher log-probs: generate the traces with `distill generate --logprobs K`, or "
                "train with --method sft"
            )
        table = pq.read_table(file, columns=["teacher_tokenizer", "teacher_vocab_hash", "top_logprobs"])
        seen = {
            (name, vocab)
            for name, vocab, values in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
            if values is not None
        }
        usable += table.num_rows - table.column("top_logprobs").null_count
        for name, vocab in seen:
            if vocab is None:
                raise DistillError(
                    f"the traces' teacher tokenizer `{name}` has no recorded vocabulary (a served model without a "
                    f"local tokenizer), so it cannot be checked against the student {student}'s: train with --method "
                    "sft or opd"
                )
            if vocab != student_hash:
                raise DistillError(
                    f"the traces' teacher tokenizer `{name}` ({vocab}) is not the student {student}'s "
                    f"({student_hash}): KD needs the same tokenizer; train with --method sft, or opd (which takes "
                    "other tokenizers too)"
                )
    if not usable:
        raise DistillError(
            "no row of the training data has teacher log-probs: generate them with `distill generate --logprobs K`"
        )
    return usable


def kd_dataset(
    files: list[str], tokenizer, max_length: int, cache: Path, quiet: bool = False
) -> "tuple[Dataset, dict]":
    """Rows of input_ids (prompt + the teacher's tokens), the prompt's length, and the teacher's top-k ids and
    log-probs at each completion token; rows without log-probs are dropped and counted. Written as Arrow files in
    `cache` as they are made (memory-mapped, so a large set need not fit in memory)."""

    import datasets  # ~2 s to import; only for datasets folders and hub ids

    if quiet:
        datasets.disable_progress_bars()
    counts = {"rows": 0, "dropped_no_logprobs": 0, "truncated": 0}

    def rows():
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=256, columns=list(KD_COLUMNS)):
                for row in batch.to_pylist():
                    if not row["token_ids"] or row["top_logprobs"] is None:
                        counts["dropped_no_logprobs"] += 1
                        continue
                    built = _row(row, tokenizer, max_length)
                    counts["truncated"] += built.pop("truncated")
                    counts["rows"] += 1
                    yield built

    # A fresh fingerprint: always built from the files (a cached set would skip the generator and its counts)
    dataset = datasets.Dataset.from_generator(rows, cache_dir=str(cache), fingerprint=uuid.uuid4().hex)
    if counts["dropped_no_logprobs"] and not quiet:
        print(f"kd: dropped {counts['dropped_no_logprobs']} rows without teacher log-probs", file=sys.stderr)
    return dataset, counts


def _row(row: dict, tokenizer, max_length: int) -> dict:
    messages = json.loads(row["prompt_messages"])
    prefill = json.loads(row["sampling"] or "{}").get("prefill") or ""
    text = render_chat(tokenizer, messages, tokenize=False, add_generation_prompt=True) + prefill
    prompt = tokenizer(text, add_special_tokens=False).input_ids
    completion = row["token_ids"]
    keep = max(0, min(len(completion), max_length - len(prompt)))
    top_ids, top_logprobs = row["top_token_ids"][:keep], row["top_logprobs"][:keep]
    return {
        "input_ids": prompt + completion[:keep],
        "prompt_length": len(prompt),
        "top_ids": top_ids,
        "top_logprobs": top_logprobs,
        "truncated": keep < len(completion),
    }


def collate(pad_id: int):
    """Right-padded tensors: input_ids, attention_mask, labels (-100 outside the completion), and top_ids /
    top_logprobs of shape (batch, length, k) at the positions of the completion tokens they describe (log-prob
    -inf, which the loss masks, elsewhere and where rows of different k are padded)."""

    def collator(examples: list[dict]) -> dict:
        import torch  # torch: seconds to import; only where a model runs

        length = max(len(e["input_ids"]) for e in examples)
        k = max((len(top) for e in examples for top in e["top_ids"]), default=1)
        batch = len(examples)
        input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), -100, dtype=torch.long)
        top_ids = torch.zeros((batch, length, k), dtype=torch.long)
        top_logprobs = torch.full((batch, length, k), float("-inf"), dtype=torch.float32)
        for i, e in enumerate(examples):
            n, start = len(e["input_ids"]), e["prompt_length"]
            input_ids[i, :n] = torch.tensor(e["input_ids"])
            attention[i, :n] = 1
            labels[i, start:n] = input_ids[i, start:n]
            for j, (ids, values) in enumerate(zip(e["top_ids"], e["top_logprobs"], strict=True)):
                top_ids[i, start + j, : len(ids)] = torch.tensor(ids)
                top_logprobs[i, start + j, : len(values)] = torch.tensor(values, dtype=torch.float32)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "top_ids": top_ids,
            "top_logprobs": top_logprobs,
        }

    return collator


def topk_forward_kl(student_logprobs: "torch.Tensor", top_ids: "torch.Tensor", top_logprobs: "torch.Tensor"):
    """Per position, KL(teacher || student) over the teacher's top-k and one tail bucket (TRL's); positions (N,),
    student_logprobs (N, vocab), top_ids and top_logprobs (N, k) with -inf where a row has fewer than k."""
    import torch  # torch: seconds to import; only where a model runs
    from trl.experimental.server_distillation.server_distillation_trainer import _add_tail_bucket, _jsd_divergence

    valid = torch.isfinite(top_logprobs)
    student = torch.where(valid, student_logprobs.gather(-1, top_ids), float("-inf"))
    teacher = torch.where(valid, top_logprobs, float("-inf"))
    student, support = _add_tail_bucket(student, valid)
    teacher, _ = _add_tail_bucket(teacher, valid)
    return _jsd_divergence(student, teacher, beta=0.0, support_mask=support).sum(-1)


def kd_loss(logits: "torch.Tensor", batch: dict, ce_weight: float):
    """(per-token loss, cross-entropy, KL) at the completion tokens of a collated batch, from the student's logits."""
    import torch  # torch: seconds to import; only where a model runs

    labels = batch["labels"][:, 1:]
    mask = labels != -100  # the logits at t predict the token at t + 1
    logprobs = torch.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    ce = -logprobs.gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
    kl = topk_forward_kl(logprobs, batch["top_ids"][:, 1:][mask], batch["top_logprobs"][:, 1:][mask])
    return ce_weight * ce + (1 - ce_weight) * kl, ce, kl


def kd_trainer_class(base: type) -> type:
    """`base` (TRL's SFTTrainer) with the KD loss: the loop, schedule, checkpoints and saving stay TRL's."""

    class KDTrainer(base):
        ce_weight = 0.5

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            per_token, ce, kl = kd_loss(outputs.logits, inputs, self.ce_weight)
            # normalized by the completion tokens of the whole accumulated batch when the trainer counts them
            count = max(per_token.numel(), 1)
            loss = per_token.sum() / (num_items_in_batch if num_items_in_batch is not None else count)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["kd_kl"].append(float(kl.detach().sum()) / count)
            self._metrics[mode]["kd_ce"].append(float(ce.detach().sum()) / count)
            return (loss, outputs) if return_outputs else loss

    return KDTrainer
