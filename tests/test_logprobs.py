"""`distill generate --logprobs K`: the teacher's top-K token ids and log-probs stored beside the text, per engine."""

import json

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from distill.cli import main
from distill.engines.base import Result, set_logprobs
from distill.models import vocab_hash

try:  # tests/ is on sys.path when it is not a package (pytest's default import mode)
    from fake_openai_server import Action, FakeOpenAIServer
except ImportError:  # tests/ became a package
    from tests.fake_openai_server import Action, FakeOpenAIServer


def generate(*args, expect=0):
    result = CliRunner().invoke(main, ["generate", *args])
    assert result.exit_code == expect, result.output
    return result


def rows(out):
    return pq.read_table(out / "data").to_pylist()


def teacher_logprobs(model_dir: str, row: dict):
    """The teacher's log-softmax at each generated token, recomputed with one forward pass over prompt + tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.engines.base import Request
    from distill.engines.hf import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = tokenizer(render_prompt(tokenizer, Request(json.loads(row["prompt_messages"]))), add_special_tokens=False)
    ids = prompt.input_ids + row["token_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, len(prompt.input_ids) - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1)


def test_transformers_engine_stores_the_teachers_top_k_aligned_with_the_text(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out"
    generate("--model", tiny_model, "--source", str(prompts_file), "--num-prompts", "3", "--max-tokens", "12",
             "--temperature", "1.0", "--top-p", "0.9", "--logprobs", "3", "--out", str(out), "-q")  # fmt: skip
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    got = rows(out)
    assert len(got) == 3
    for row in got:
        # token by token: the ids decode to the completion, one top-3 list per token
        assert tokenizer.decode(row["token_ids"], skip_special_tokens=True) == row["completion"]
        assert len(row["top_token_ids"]) == len(row["top_logprobs"]) == len(row["token_ids"]) > 0
        assert all(len(top) == 3 for top in row["top_token_ids"])
        # the values are the teacher's own distribution at temperature 1 (not the sampling's 1.0 / top-p 0.9 one)
        reference = teacher_logprobs(tiny_model, row)
        for position, (ids, values) in enumerate(zip(row["top_token_ids"], row["top_logprobs"], strict=True)):
            best = reference[position].topk(3)
            assert ids == best.indices.tolist()
            assert values == pytest.approx(best.values.tolist(), abs=2e-3)  # float16 storage
        assert row["teacher_tokenizer"] == tiny_model and row["teacher_vocab_hash"] == vocab_hash(tokenizer)
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["logprobs"] == 3
    assert resolved["teacher_tokenizer"] == {"name": tiny_model, "vocab_hash": vocab_hash(tokenizer)}
    assert (
        pq.read_schema(next((out / "data").iterdir())).field("top_logprobs").type.value_type.value_type == "halffloat"
    )


def test_without_logprobs_the_columns_are_null(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out"
    generate("--model", tiny_model, "--source", str(prompts_file), "--num-prompts", "2", "--max-tokens", "4",
             "--out", str(out), "-q")  # fmt: skip
    for row in rows(out):
        assert row["token_ids"] is None and row["top_logprobs"] is None and row["teacher_vocab_hash"] is None
    assert "teacher_tokenizer" not in yaml.safe_load((out / "config.resolved.yaml").read_text())


def test_resume_refuses_another_logprobs_setting(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out"
    args = ["--model", tiny_model, "--source", str(prompts_file), "--num-prompts", "2", "--max-tokens", "4", "-q"]
    generate(*args, "--out", str(out))
    result = generate(*args, "--out", str(out), "--resume", "--logprobs", "2", "--num-prompts", "3", expect=1)
    assert "logprobs" in result.output and "--overwrite" in result.output


def test_stop_string_tokens_past_the_text_are_dropped():
    """An engine cuts a stop string from the text but not from its tokens: the stored tokens end with the text."""

    class Words:  # a tokenizer of one word per id
        vocab = ["The", " answer", " is", " 5", ".", " ###", " more"]

        def decode(self, ids, skip_special_tokens=True):
            return "".join(self.vocab[i] for i in ids)

    result = Result(text="The answer is 5.")
    set_logprobs(result, Words(), [0, 1, 2, 3, 4, 5, 6], [[i, 0] for i in range(7)], [[-0.1, -2.0]] * 7)
    assert result.token_ids == [0, 1, 2, 3, 4] and len(result.top_ids) == len(result.top_logprobs) == 5


def logprob_choice(tokens: list[int], tops: list[list[tuple[int, float]]]) -> dict:
    """choices[0].logprobs as vLLM's OpenAI server writes it with return_tokens_as_token_ids."""
    content = [
        {
            "token": f"token_id:{token}",
            "logprob": top[0][1],
            "top_logprobs": [{"token": f"token_id:{i}", "logprob": v, "bytes": None} for i, v in top],
        }
        for token, top in zip(tokens, tops, strict=True)
    ]
    return {"logprobs": {"content": content}}


def test_openai_engine_asks_for_token_ids_and_stores_them(prompts_file, tmp_path):
    tops = [[(7, -0.25), (3, -1.5)], [(9, -0.5), (7, -2.0)], [(2, -0.125), (9, -3.0)]]
    script = [Action(message={"content": "a b"}, choice=logprob_choice([7, 9, 2], tops)) for _ in range(2)]
    out = tmp_path / "out"
    with FakeOpenAIServer(script=script) as server:
        generate("--engine", "openai", "--base-url", server.base_url, "--model", server.model_id, "--source",
                 str(prompts_file), "--num-prompts", "2", "--logprobs", "2", "--out", str(out), "-q")  # fmt: skip
        bodies = server.bodies
    assert all(b["logprobs"] is True and b["top_logprobs"] == 2 and b["return_tokens_as_token_ids"] for b in bodies)
    for row in rows(out):
        assert row["completion"] == "a b" and row["token_ids"] == [7, 9, 2]
        assert row["top_token_ids"] == [[i for i, _ in top] for top in tops]
        assert row["top_logprobs"] == [[v for _, v in top] for top in tops]  # exact in float16
        # the server's model is no local folder: named, with no vocabulary hash (KD then refuses the rows)
        assert row["teacher_tokenizer"] == "fake-model" and row["teacher_vocab_hash"] is None


def test_openai_engine_refuses_token_strings(prompts_file, tmp_path):
    choice = {"logprobs": {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": []}]}}
    with FakeOpenAIServer(script=[Action(choice=choice)] * 2) as server:
        result = generate("--engine", "openai", "--base-url", server.base_url, "--model", server.model_id,
                          "--source", str(prompts_file), "--num-prompts", "2", "--logprobs", "1",
                          "--out", str(tmp_path / "out"), "-q", expect=1)  # fmt: skip
    assert "token strings" in result.output and "return_tokens_as_token_ids" in result.output


def test_filter_and_mix_carry_the_logprob_columns(tiny_model, prompts_file, tmp_path):
    generated, filtered, mixed = tmp_path / "gen", tmp_path / "filtered", tmp_path / "mixed"
    generate("--model", tiny_model, "--source", str(prompts_file), "--num-prompts", "3", "--max-tokens", "6",
             "--logprobs", "2", "--out", str(generated), "-q")  # fmt: skip
    result = CliRunner().invoke(
        main, ["filter", str(generated), "--out", str(filtered), "--verifiers", "length", "-q"]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["mix", f"{filtered}:1.0", "--total", "3", "--out", str(mixed)])
    assert result.exit_code == 0, result.output
    before = {r["id"]: r for r in rows(generated)}
    for folder in (filtered, mixed):
        after = rows(folder)
        assert len(after) == 3
        for row in after:
            for column in ("token_ids", "top_token_ids", "top_logprobs", "teacher_vocab_hash"):
                assert row[column] == before[row["id"]][column] and row[column] is not None
        file = next((folder / "data").glob("*.parquet"))
        assert pq.ParquetFile(file).metadata.row_group(0).column(0).compression == "ZSTD"


@pytest.mark.slow
def test_vllm_engine_stores_the_teachers_top_k(prompts_file, tmp_path):
    """The CPU build of vLLM on the real SmolLM2: ids decode to the text, values match a transformers forward."""
    pytest.importorskip("vllm")
    from distill.models import EMBEDDED, embedded_model_dir

    out = tmp_path / "out"
    generate("--engine", "vllm", "--model", EMBEDDED, "--max-model-len", "1024", "--gpu-memory-utilization", "0.3",
             "--engine-arg", "enforce_eager=true", "--source", str(prompts_file), "--num-prompts", "2",
             "--max-tokens", "24", "--logprobs", "5", "--out", str(out), "-q")  # fmt: skip
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    for row in rows(out):
        assert tokenizer.decode(row["token_ids"], skip_special_tokens=True) == row["completion"]
        assert row["teacher_vocab_hash"] == vocab_hash(tokenizer)  # vLLM's tokenizer and transformers' agree
        reference = teacher_logprobs(str(embedded_model_dir()), row)
        for position, (ids, values) in enumerate(zip(row["top_token_ids"], row["top_logprobs"], strict=True)):
            assert ids[0] == int(reference[position].argmax())
            assert values == pytest.approx(reference[position][ids].tolist(), abs=2e-2)


@pytest.mark.slow
def test_a_vllm_server_returns_token_ids_that_align(vllm_server, prompts_file, tmp_path):
    """A real vLLM OpenAI server takes return_tokens_as_token_ids: the ids decode to the completion text."""
    from transformers import AutoTokenizer

    from distill.models import EMBEDDED, embedded_model_dir

    out = tmp_path / "out"
    generate("--engine", "openai", "--base-url", vllm_server, "--model", EMBEDDED, "--source", str(prompts_file),
             "--num-prompts", "2", "--max-tokens", "24", "--logprobs", "3", "--out", str(out), "-q")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    for row in rows(out):
        assert tokenizer.decode(row["token_ids"], skip_special_tokens=True) == row["completion"]
        assert all(len(top) == 3 for top in row["top_token_ids"]) and len(row["top_logprobs"]) == len(row["token_ids"])
        assert row["teacher_vocab_hash"] == vocab_hash(tokenizer)  # the served name is a local alias
