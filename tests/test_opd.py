"""`distill train --method opd`: on-policy distillation on tiny in-process models (offline, seconds)."""

import json
import math
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import CHAT_TEMPLATE, CORPUS

from distill.cli import main


def invoke(*args, expect=0):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == expect, result.output
    return result


def sharper_teacher(model_dir: str, path: Path, scale: float = 20.0) -> Path:
    """The student with its output layer scaled: a teacher with the student's tokenizer whose next-token
    distributions are sharper versions of the student's, a target a few steps can measurably move toward."""
    from transformers import AutoModelForCausalLM

    shutil.copytree(model_dir, path)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    model.save_pretrained(path)
    return path


def byte_level_model(path: Path, vocab_size: int) -> Path:
    """A tiny Llama with a byte-level BPE tokenizer (as SmolLM2's and Qwen's): two vocabulary sizes give two
    tokenizers that split the same text differently, the cross-tokenizer case."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(CORPUS * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>",
                                        bos_token="<|im_start|>")  # fmt: skip
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(vocab_size)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def opd_args(student, teacher, prompts_file, out, *extra):
    return ["train", "--method", "opd", "--student", str(student), "--teacher", str(teacher), "--source",
            str(prompts_file), "--num-prompts", "4", "--max-completion-length", "8", "--batch-size", "2",
            "--out", str(out), "-q", *extra]  # fmt: skip


def logged(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "opd.jsonl").read_text().splitlines()]


def reverse_kl(student_dir, teacher_dir, sequences: list[list[int]], starts: list[int]) -> float:
    """Full-vocabulary KL(student || teacher) per token at the completion positions of fixed sequences."""
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, start in zip(sequences, starts, strict=True):
            x = torch.tensor([ids])
            q = torch.log_softmax(student(x).logits[0, start - 1 : -1], -1)
            p = torch.log_softmax(teacher(x).logits[0, start - 1 : -1], -1)
            total += float((q.exp() * (q - p)).sum())
            count += len(ids) - start
    return total / count


def student_samples(model_dir: str, prompts_file: Path, n: int = 4) -> tuple[list[list[int]], list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    sequences, starts = [], []
    for line in prompts_file.read_text().splitlines()[:n]:
        text = tokenizer.apply_chat_template([{"role": "user", "content": json.loads(line)["problem"]}],
                                             tokenize=False, add_generation_prompt=True)  # fmt: skip
        prompt = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        out = model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=True, pad_token_id=0)
        sequences.append(out[0].tolist())
        starts.append(prompt.size(1))
    return sequences, starts


def test_an_opd_run_moves_the_student_toward_the_teacher_on_its_own_samples(tiny_model, prompts_file, tmp_path):
    teacher = sharper_teacher(tiny_model, tmp_path / "teacher")
    sequences, starts = student_samples(tiny_model, prompts_file)
    before = reverse_kl(tiny_model, teacher, sequences, starts)
    out = tmp_path / "student"
    constant = ["--lr", "1e-2", "--lr-scheduler-type", "constant", "--warmup-ratio", "0"]
    result = invoke(*opd_args(tiny_model, teacher, prompts_file, out, "--max-steps", "8", *constant))
    assert "different tokenizers" not in result.stderr
    assert "trained 8 on-policy steps on 4 prompts" in result.output
    # on the samples the student drew before training, its distribution is now closer to the teacher's
    after = reverse_kl(out, teacher, sequences, starts)
    assert after < 0.85 * before, (before, after)
    rows = logged(out)
    assert [r["step"] for r in rows] == list(range(1, 9))
    for row in rows:
        assert math.isfinite(row["reverse_kl"]) and row["teacher_logprob"] < 0 and 0 < row["completion_length"] <= 8
    # and on its fresh samples of each step, the teacher likes them better
    assert rows[-1]["teacher_logprob"] > rows[0]["teacher_logprob"] and rows[-1]["loss"] < rows[0]["loss"]
    assert "reverse KL" in (out / "report.html").read_text()
    resolved = (out / "config.resolved.yaml").read_text()
    assert "method: opd" in resolved and "opd_trainer: local" in resolved and "learning_rate: 0.01" in resolved
    results = json.loads((out / "train_results.json").read_text())
    assert results["global_step"] == 8 and results["opd_trainer"] == "local"


def test_the_default_learning_rate_is_the_opd_one(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "student"
    result = invoke(*opd_args(tiny_model, tiny_model, prompts_file, out, "--max-steps", "1"))
    assert "trained 1 on-policy steps" in result.output
    assert "learning_rate: 2.0e-05" in (out / "config.resolved.yaml").read_text()
    assert logged(out)[0]["learning_rate"] == pytest.approx(2e-5)  # the one step trains: no warmup rounded up to it
    # the same weights: the teacher agrees with every sample (up to float rounding)
    assert abs(logged(out)[0]["reverse_kl"]) < 1e-4


def test_resume_continues_from_the_last_checkpoint(tiny_model, prompts_file, tmp_path):
    teacher = sharper_teacher(tiny_model, tmp_path / "teacher")
    out = tmp_path / "student"
    invoke(*opd_args(tiny_model, teacher, prompts_file, out, "--max-steps", "2", "--trl", "save_steps=1"))
    invoke(*opd_args(tiny_model, teacher, prompts_file, out, "--max-steps", "3", "--resume"))
    results = json.loads((out / "train_results.json").read_text())
    assert results["resumed_from_step"] == 2 and results["global_step"] == 3 and results["steps_this_run"] == 1
    assert [r["step"] for r in logged(out)] == [1, 2, 3]


def test_a_teacher_of_another_tokenizer_goes_through_gold(prompts_file, tmp_path):
    student = byte_level_model(tmp_path / "student-model", 300)
    teacher = byte_level_model(tmp_path / "teacher-model", 330)
    out = tmp_path / "student"
    result = invoke(*opd_args(student, teacher, prompts_file, out, "--max-steps", "2", "--lr", "1e-2"))
    assert "different tokenizers, so OPD runs on GOLD's ULD loss" in result.stderr  # measured harmful: said
    from safetensors.torch import load_file

    before, after = load_file(student / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert "opd_trainer: cross" in (out / "config.resolved.yaml").read_text()
    for row in logged(out):
        assert math.isfinite(row["loss"]) and math.isfinite(row["reverse_kl"]) and row["teacher_logprob"] < 0


class TeacherServer:
    """`vllm serve` as TRL's client uses it: /health, /v1/models, and /v1/completions scoring token-id prompts
    with `prompt_logprobs` (top-k and the actual token at each position), backed by a transformers model."""

    def __init__(self, model_dir: str, name: str):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.name, self.bodies = name, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, data: dict):
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                self._send({"data": [{"id": server.name}]} if self.path == "/v1/models" else {})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                self._send({"choices": [server.score(ids, body["prompt_logprobs"]) for ids in body["prompt"]]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def score(self, ids: list[int], k: int) -> dict:
        with torch.no_grad():
            logprobs = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)
        positions = [None]
        for t in range(1, len(ids)):
            row = logprobs[t - 1]
            top = row.topk(k)
            pairs = zip(top.indices.tolist(), top.values.tolist(), strict=True)
            entry = {str(i): {"logprob": v, "rank": r + 1} for r, (i, v) in enumerate(pairs)}
            entry.setdefault(str(ids[t]), {"logprob": float(row[ids[t]]), "rank": int((row > row[ids[t]]).sum()) + 1})
            positions.append(entry)
        return {"text": "", "prompt_logprobs": positions}

    def stop(self):
        self.httpd.shutdown()


def test_a_served_teacher_scores_the_students_tokens(tiny_model, prompts_file, tmp_path):
    teacher = sharper_teacher(tiny_model, tmp_path / "teacher")
    server = TeacherServer(str(teacher), str(teacher))
    try:
        out = tmp_path / "student"
        invoke(*opd_args(tiny_model, teacher, prompts_file, out, "--base-url", server.url, "--max-steps", "2",
                         "--lr", "1e-2"))  # fmt: skip
    finally:
        server.stop()
    assert server.bodies and all(b["prompt_logprobs"] == 1 and isinstance(b["prompt"][0][0], int)
                                 for b in server.bodies)  # fmt: skip
    assert "opd_trainer: server" in (out / "config.resolved.yaml").read_text()
    for row in logged(out):
        assert math.isfinite(row["reverse_kl"]) and row["teacher_logprob"] < 0 and math.isfinite(row["loss"])


def test_a_served_teacher_of_another_tokenizer_is_refused_naming_both(tiny_model, prompts_file, tmp_path):
    teacher = byte_level_model(tmp_path / "teacher-model", 300)
    result = invoke(*opd_args(tiny_model, teacher, prompts_file, tmp_path / "student", "--base-url",
                              "http://127.0.0.1:9/v1", "--max-steps", "1"), expect=1)  # fmt: skip
    message = result.output.strip().splitlines()[-1]
    assert f"tokenizer `{teacher}`" in message and f"student {tiny_model}" in message and "--base-url" in message


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["DATA"], "drop the DATA folders"),
        (["--teacher", ""], "needs a teacher"),
        (["--beta", "2"], "--beta must be in [0, 1]"),
        (["--temperature", "0"], "--temperature must be above 0"),
    ],
)
def test_settings_are_checked_before_anything_runs(tiny_model, prompts_file, tmp_path, extra, needle):
    args = opd_args(tiny_model, tiny_model, prompts_file, tmp_path / "student")
    if extra == ["DATA"]:
        args.insert(1, str(tmp_path))
    else:
        args += extra
    result = invoke(*args, expect=1)
    assert needle in result.output and not (tmp_path / "student").exists()


def test_help_names_the_methods_and_the_teacher_flags():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for flag in ("--method", "--ce-weight", "--teacher", "--base-url", "--source", "--prompt-seed", "--beta"):
        assert flag in result.output
    assert "--logprobs" in CliRunner().invoke(main, ["generate", "--help"]).output
    assert "--exclude" in CliRunner().invoke(main, ["eval", "--help"]).output


@pytest.mark.slow
def test_a_real_vllm_server_as_the_teacher(vllm_server, prompts_file, tmp_path):
    """One OPD step of the embedded SmolLM2 scored by a real `vllm serve` of itself (prompt_logprobs)."""
    out = tmp_path / "student"
    invoke("train", "--method", "opd", "--student", "smollm2-135m", "--teacher", "smollm2-135m", "--base-url",
           vllm_server, "--source", str(prompts_file), "--num-prompts", "2", "--max-completion-length", "16",
           "--batch-size", "2", "--max-steps", "1", "--out", str(out), "-q")  # fmt: skip
    (row,) = logged(out)
    # the same model on both sides: the sampled-token reverse KL is ~0 (float32 here, the server's kernels there)
    assert abs(row["reverse_kl"]) < 0.05 and row["teacher_logprob"] < 0
