"""`distill train --method kd`: logit distillation on stored teacher log-probs (tiny in-process models, offline)."""

import json
import math
import shutil

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from distill.cli import main
from distill.train.kd import collate, kd_loss


def invoke(*args, expect=0):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture
def traces(tiny_model, prompts_file, tmp_path):
    """A filter output of the tiny teacher's traces with their top-3 log-probs."""
    generated, filtered = tmp_path / "gen", tmp_path / "filtered"
    invoke("generate", "--model", tiny_model, "--source", str(prompts_file), "--num-prompts", "4", "--max-tokens",
           "10", "--temperature", "1.0", "--logprobs", "3", "--out", str(generated), "-q")  # fmt: skip
    invoke("filter", str(generated), "--out", str(filtered), "--verifiers", "length", "-q")
    return filtered


def test_loss_matches_a_hand_computation(tiny_model):
    """One row: prompt of 3 tokens, 2 completion tokens with the teacher's top-2 (and a tail); the loss at each is
    ce_weight * -log q(token) + (1 - ce_weight) * sum over {top-2, tail} of p * (log p - log q)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    example = {
        "input_ids": [5, 6, 7, 8, 9],
        "prompt_length": 3,
        "top_ids": [[8, 4], [9, 8]],
        "top_logprobs": [[-0.5, -1.5], [-0.25, -3.0]],
    }
    batch = collate(pad_id=0)([example])
    logits = model(input_ids=batch["input_ids"]).logits
    per_token, ce, kl = kd_loss(logits, batch, ce_weight=0.3)

    q = torch.log_softmax(logits[0].double(), dim=-1).tolist()  # q[t][v]: log q of token v after position t
    expected = []
    for j, (token, ids, values) in enumerate(zip([8, 9], example["top_ids"], example["top_logprobs"], strict=True)):
        position = 3 + j - 1  # the logits before the completion token
        p = [math.exp(v) for v in values] + [1 - sum(math.exp(v) for v in values)]
        s = [math.exp(q[position][i]) for i in ids]
        s.append(1 - sum(s))
        forward_kl = sum(pi * (math.log(pi) - math.log(si)) for pi, si in zip(p, s, strict=True))
        expected.append(0.3 * -q[position][token] + 0.7 * forward_kl)
        assert ce[j].item() == pytest.approx(-q[position][token], rel=1e-4)
        assert kl[j].item() == pytest.approx(forward_kl, rel=1e-4)
    assert per_token.tolist() == pytest.approx(expected, rel=1e-4)


def test_rows_of_other_top_k_sizes_are_padded_and_masked(tiny_model):
    """A batch mixing top-1 and top-3 rows: the padded entries count for nothing (the KL of a top-1 row alone)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    one = {"input_ids": [5, 6, 8], "prompt_length": 2, "top_ids": [[8]], "top_logprobs": [[-0.1]]}
    three = {"input_ids": [5, 6, 7, 9], "prompt_length": 2, "top_ids": [[7, 1, 2], [9, 3, 4]],
             "top_logprobs": [[-0.2, -2.0, -3.0], [-0.3, -1.5, -4.0]]}  # fmt: skip
    batch = collate(pad_id=0)([one, three])
    assert batch["top_logprobs"].shape == (2, 4, 3) and batch["labels"][0].tolist() == [-100, -100, 8, -100]
    _, _, kl = kd_loss(model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits, batch, 0.5)
    alone = collate(pad_id=0)([one])
    _, _, kl_alone = kd_loss(model(input_ids=alone["input_ids"]).logits, alone, 0.5)
    assert torch.isfinite(kl).all() and kl[0].item() == pytest.approx(kl_alone[0].item(), rel=1e-5)


def test_kd_trains_on_the_stored_log_probs(tiny_model, traces, tmp_path):
    out = tmp_path / "student"
    invoke("train", str(traces), "--method", "kd", "--student", tiny_model, "--max-steps", "3", "--batch-size", "2",
           "--lr", "1e-2", "--ce-weight", "0.5", "--out", str(out), "-q")  # fmt: skip
    from safetensors.torch import load_file

    before = load_file(f"{tiny_model}/model.safetensors")
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    results = json.loads((out / "train_results.json").read_text())
    assert results["kd_rows"] == 4 and results["kd_dropped_no_logprobs"] == 0
    assert all(math.isfinite(e["loss"]) for e in json.loads((out / "trainer_state.json").read_text())["log_history"]
               if "loss" in e)  # fmt: skip
    assert not (out / ".kd-rows").exists()
    assert "method: kd" in (out / "config.resolved.yaml").read_text()


def test_rows_without_log_probs_are_dropped_and_counted(tiny_model, traces, tmp_path):
    """A folder mixing rows with and without log-probs: the latter are counted as dropped, the rest train."""
    mixed = tmp_path / "mixed" / "data"
    mixed.mkdir(parents=True)
    table = pq.read_table(traces / "data")
    rows = table.to_pylist()
    for row in rows[:1]:
        row.update(token_ids=None, top_token_ids=None, top_logprobs=None)
    pq.write_table(table.from_pylist(rows, schema=table.schema), mixed / "train-00000.parquet")
    out = tmp_path / "student"
    invoke("train", str(mixed.parent), "--method", "kd", "--student", tiny_model, "--max-steps", "1", "--out",
           str(out), "-q")  # fmt: skip
    results = json.loads((out / "train_results.json").read_text())
    assert results["kd_rows"] == 3 and results["kd_dropped_no_logprobs"] == 1


def test_another_tokenizer_is_refused_naming_both(tiny_model, traces, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other-student"
    shutil.copytree(tiny_model, other)
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["zebra"])
    tokenizer.save_pretrained(other)
    model = AutoModelForCausalLM.from_pretrained(other)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(other)
    result = invoke("train", str(traces), "--method", "kd", "--student", str(other), "--max-steps", "1", "--out",
                    str(tmp_path / "student"), "-q", expect=1)  # fmt: skip
    message = result.output.strip().splitlines()[-1]
    assert f"teacher tokenizer `{tiny_model}`" in message and f"student {other}" in message
    assert message.count("sha256:") == 2 and "--method sft" in message


def test_traces_without_log_probs_are_refused(tiny_model, prompts_file, tmp_path):
    generated, filtered = tmp_path / "gen", tmp_path / "filtered"
    invoke("generate", "--model", tiny_model, "--source", str(prompts_file), "--num-prompts", "2", "--max-tokens",
           "4", "--out", str(generated), "-q")  # fmt: skip
    invoke("filter", str(generated), "--out", str(filtered), "--verifiers", "length", "-q")
    result = invoke("train", str(filtered), "--method", "kd", "--student", tiny_model, "--out",
                    str(tmp_path / "student"), "-q", expect=1)  # fmt: skip
    assert "--logprobs" in result.output
