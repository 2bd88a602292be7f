"""`distill publish`: staged folders, cards, and the upload protocol against a fake HfApi (nothing reaches the Hub)."""

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from distill.cards import size_category
from distill.config import PublishConfig
from distill.errors import DistillError
from distill.hub import publish_dataset, publish_model
from distill.hub_cli import publish_group
from distill.schema import filter_schema
from distill.secrets import scrub, scrub_url
from distill.testing import example_row

TOKEN = "hf_MARKERSECRET123"
SAMPLING = json.dumps({"max_tokens": 4096, "prefill": "", "stop": [], "temperature": 0.6, "top_p": 0.95})


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """publish records its --stage-dir folders in distill's cache: a test's own, not the user's."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "distill-cache"))


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Every test runs offline: building a real HfApi is a test failure."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to build a real HfApi")

    monkeypatch.setattr(huggingface_hub, "HfApi", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


class FakeApi:
    """Records the calls distill makes; answers as a Hub where `existing` repos (and `branches`) exist."""

    def __init__(self, existing=False, branches=(), remote_files=(), fail_on=None, error=None):
        self.existing = existing
        self.branches = set(branches)
        self.remote_files = list(remote_files)
        self.fail_on = fail_on
        self.error = error
        self.calls = []

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if name == self.fail_on:
            raise self.error

    def repo_exists(self, repo_id, *, repo_type=None):
        self._record("repo_exists", repo_id, repo_type=repo_type)
        return self.existing

    def revision_exists(self, repo_id, revision, *, repo_type=None):
        self._record("revision_exists", repo_id, revision, repo_type=repo_type)
        return revision in self.branches

    def create_repo(self, repo_id, **kwargs):
        self._record("create_repo", repo_id, **kwargs)

    def create_branch(self, repo_id, **kwargs):
        self._record("create_branch", repo_id, **kwargs)

    def list_repo_files(self, repo_id, **kwargs):
        self._record("list_repo_files", repo_id, **kwargs)
        return self.remote_files

    def create_commit(self, repo_id, operations, **kwargs):
        self._record("create_commit", repo_id, list(operations), **kwargs)

        class Info:
            commit_url = f"https://huggingface.co/datasets/{repo_id}/commit/abc123"

        return Info()

    def upload_folder(self, **kwargs):  # never used: it may split a folder into several commits
        self._record("upload_folder", **kwargs)

    def names(self):
        return [name for name, _, _ in self.calls]


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _row(i, domain="math"):
    prompt = [{"role": "user", "content": f"What is {i} + {i}?"}]
    answer = f"\\boxed{{{2 * i}}}"
    return example_row(
        id=f"id{i}", prompt_id=f"p{i}", domain=domain, source="bench.jsonl", problem=f"What is {i} + {i}?",
        prompt_messages=json.dumps(prompt), gold=str(2 * i), reasoning="add", answer=answer, completion="...",
        prompt_tokens=5, completion_tokens=9, teacher="deepseek-ai/DeepSeek-R1", sampling=SAMPLING,
        messages=prompt + [{"role": "assistant", "content": f"<think>\nadd\n</think>\n\n{answer}"}],
        verdict_math={"passed": True, "reason": "ok", "score": None, "details": None},
        verdict_format={"passed": True, "reason": "ok", "score": None, "details": None},
    )  # fmt: skip


@pytest.fixture
def filtered(tmp_path) -> Path:
    """A tiny `distill filter` output: data/*.parquet, stats.json, config.resolved.yaml naming its generate input."""
    generated = tmp_path / "generated"
    generated.mkdir()
    (generated / "config.resolved.yaml").write_text("source: /home/someone/secret-project/bench.jsonl\nmodel: x\n")
    folder = tmp_path / "filtered"
    (folder / "data").mkdir(parents=True)
    rows = [_row(i) for i in range(3)] + [_row(3, domain="science")]
    table = pa.Table.from_pylist(rows, schema=filter_schema(["math", "format"]))
    pq.write_table(table, folder / "data" / "train-00000-of-00001-part-00000.parquet")
    stats = {"total": 10, "kept": 4, "rejected": 6, "dropped_math_wrong_answer": 5, "dropped_unverified": 1,
             "prompts": 5, "prompts_without_kept_sample": 1, "verifiers": {"math": {}, "format": {}}}  # fmt: skip
    (folder / "stats.json").write_text(json.dumps(stats))
    config = {"inputs": [str(generated)], "verifiers": {"math": {"extraction": "lenient"}, "format": {}}}
    (folder / "config.resolved.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "rejected").mkdir()
    (folder / "report.html").write_text("<html></html>")
    return folder


@pytest.fixture
def trained(tmp_path, tiny_model) -> Path:
    """A training output: the saved model, plus what must never be uploaded."""
    folder = tmp_path / "run"
    shutil.copytree(tiny_model, folder)
    (folder / "training_args.bin").write_bytes(b"pickled args with " + TOKEN.encode())
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"state")
    train = {
        "student": "qwen2.5-math-1.5b", "dataset": "me/r1-traces", "learning_rate": 1e-5, "num_train_epochs": 2,
        "output_dir": "/home/someone/runs/sft", "hub_token": TOKEN, "lora": {"r": 16, "alpha": 32},
        "main_process_ip": "10.0.0.7", "quiet": True,
    }  # fmt: skip
    (folder / "config.resolved.yaml").write_text(yaml.safe_dump(train))
    (folder / "train_results.json").write_text(json.dumps({"train_rows": 800, "final_loss": 0.41}))
    return folder


@pytest.fixture
def eval_summary(tmp_path) -> Path:
    summary = {
        "source": "reasoning-gym:basic_arithmetic", "split": "train", "prompts": 50, "samples_per_prompt": 4,
        "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 2048}, "verifiers": {"math": {}},
        "models": {
            "before": {"pass@1": 0.25, "pass@1_se": 0.05, "pass@k": {"1": 0.25, "4": 0.5}, "samples": 200},
            "after": {"pass@1": 0.625, "pass@1_se": 0.04, "pass@k": {"1": 0.625, "4": 0.875}, "samples": 200},
        },
    }  # fmt: skip
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    return path


# --------------------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------------------


def test_dataset_dry_run_stages_exactly_the_upload(filtered, tmp_path):
    stage = tmp_path / "stage"
    api = FakeApi()
    result = publish_dataset(filtered, "me/r1-traces", PublishConfig(dry_run=True, stage_dir=str(stage)), api=api)
    assert api.calls == []  # a dry run talks to nobody
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert files == ["README.md", "data/train-00000-of-00001-part-00000.parquet"] == result["files"]
    original = pq.read_table(filtered / "data" / "train-00000-of-00001-part-00000.parquet")
    assert pq.read_table(stage / "data" / "train-00000-of-00001-part-00000.parquet").equals(original)
    assert result["rows"] == 4 and result["dry_run"] is True


def test_dataset_card_metadata_and_body(filtered, tmp_path):
    stage = tmp_path / "stage"
    publish_dataset(filtered, "me/r1-traces", PublishConfig(dry_run=True, stage_dir=str(stage)))
    card = (stage / "README.md").read_text()
    meta = front_matter(card)
    assert meta["license"] == "other"
    assert meta["task_categories"] == ["text-generation"]
    assert meta["tags"] == ["reasoning", "distillation", "synthetic"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}
    ]
    body = card.split("---\n", 2)[2]
    assert "`deepseek-ai/DeepSeek-R1`" in body
    assert "temperature 0.6, top-p 0.95, up to 4096 new tokens" in body
    assert "math (extraction=lenient), format" in body
    assert "4 of 10 samples (40.0%)" in body and "math_wrong_answer 5" in body
    assert "math 3, science 1" in body
    assert "`bench.jsonl`" in body and "/home/someone" not in body  # local paths shown by their last part only
    assert 'load_dataset("me/r1-traces", split="train")' in body and "SFTTrainer" in body
    assert "teacher's license terms" in body


def test_license_option_goes_into_the_card(filtered, tmp_path):
    stage = tmp_path / "stage"
    config = PublishConfig(dry_run=True, stage_dir=str(stage), license="mit")
    publish_dataset(filtered, "me/r1-traces", config)
    assert front_matter((stage / "README.md").read_text())["license"] == "mit"


@pytest.mark.parametrize(
    "rows, category",
    [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (12_345, "10K<n<100K"), (800_000, "100K<n<1M"),
     (1_000_000, "1M<n<10M"), (10**12, "n>1T")],
)  # fmt: skip
def test_size_category(rows, category):
    assert size_category(rows) == category


def test_new_repo_is_private_and_gets_one_commit(filtered):
    api = FakeApi()
    result = publish_dataset(filtered, "me/r1-traces", api=api)
    assert api.names() == ["repo_exists", "create_repo", "create_commit"]
    _, args, kwargs = api.calls[1]
    assert args == ("me/r1-traces",) and kwargs == {"repo_type": "dataset", "private": True}
    _, (repo_id, operations), kwargs = api.calls[2]
    assert sorted(op.path_in_repo for op in operations) == [
        "README.md",
        "data/train-00000-of-00001-part-00000.parquet",
    ]
    assert kwargs["repo_type"] == "dataset" and kwargs["revision"] is None
    assert "4 rows" in kwargs["commit_message"]
    # What our code reports: the repo's page, the rows, the staged files and their bytes (as the Hub counts them).
    assert result["url"] == "https://huggingface.co/datasets/me/r1-traces" and result["private"] is True
    assert result["rows"] == 4 and result["files"] == sorted(op.path_in_repo for op in operations)
    assert result["bytes"] == sum(op.upload_info.size for op in operations)


def test_public_and_commit_message(filtered):
    api = FakeApi()
    publish_dataset(filtered, "me/r1-traces", PublishConfig(private=False, commit_message="v1"), api=api)
    assert api.calls[1][2]["private"] is False
    assert api.calls[2][2]["commit_message"] == "v1"


def test_existing_repo_is_refused_without_overwrite(filtered):
    api = FakeApi(existing=True)
    with pytest.raises(DistillError, match="already exists on the Hub: pass --overwrite"):
        publish_dataset(filtered, "me/r1-traces", api=api)
    assert "create_commit" not in api.names() and "create_repo" not in api.names()


def test_overwrite_replaces_the_files_in_one_commit(filtered):
    remote = [".gitattributes", "README.md", "data/train-00000-of-00002-part-00000.parquet"]
    api = FakeApi(existing=True, remote_files=remote)
    publish_dataset(filtered, "me/r1-traces", PublishConfig(overwrite=True), api=api)
    assert api.names() == ["repo_exists", "list_repo_files", "create_commit"]
    operations = api.calls[-1][1][1]
    deleted = [op.path_in_repo for op in operations if type(op).__name__ == "CommitOperationDelete"]
    assert deleted == ["data/train-00000-of-00002-part-00000.parquet"]  # a stale shard would still load


def test_revision_new_branch_and_existing_branch(filtered):
    api = FakeApi(existing=True, branches={"main"})
    publish_dataset(filtered, "me/r1-traces", PublishConfig(revision="v2"), api=api)
    assert api.names() == ["repo_exists", "revision_exists", "create_branch", "create_commit"]
    assert api.calls[-1][2]["revision"] == "v2"

    api = FakeApi(existing=True, branches={"v2"})
    with pytest.raises(DistillError, match="branch `v2` of dataset repo me/r1-traces already exists"):
        publish_dataset(filtered, "me/r1-traces", PublishConfig(revision="v2"), api=api)


def test_token_never_surfaces(filtered, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    error = RuntimeError(f"401 Client Error: Unauthorized for url https://huggingface.co (token {TOKEN} invalid)")
    api = FakeApi(fail_on="create_commit", error=error)
    stage = tmp_path / "stage"
    with pytest.raises(DistillError) as caught:
        publish_dataset(filtered, "me/r1-traces", PublishConfig(stage_dir=str(stage)), api=api)
    message = str(caught.value)
    assert "401" in message and TOKEN not in message and "MARKERSECRET" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    for path in stage.rglob("*"):
        if path.is_file():
            assert b"MARKERSECRET" not in path.read_bytes(), path


def test_token_never_surfaces_through_the_cli(filtered, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    api = FakeApi(fail_on="repo_exists", error=ValueError(f"bad header Authorization: Bearer {TOKEN}"))
    monkeypatch.setattr("distill.hub._hf_api", lambda: api)
    result = CliRunner().invoke(publish_group, ["dataset", str(filtered), "me/r1-traces"])
    assert result.exit_code == 1 and "Error: Hugging Face Hub: ValueError" in result.output
    assert "MARKERSECRET" not in result.output


def test_cli_publishes_with_the_public_flag(filtered, monkeypatch):
    api = FakeApi()
    monkeypatch.setattr("distill.hub._hf_api", lambda: api)
    result = CliRunner().invoke(publish_group, ["dataset", str(filtered), "me/r1-traces", "--public"])
    assert result.exit_code == 0, result.output
    assert api.calls[1][2]["private"] is False and api.names().count("create_commit") == 1
    assert "published 2 files" in result.output and "(public)" in result.output


def test_no_token_is_a_one_line_error(filtered, monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    result = CliRunner().invoke(publish_group, ["dataset", str(filtered), "me/r1-traces"])
    assert result.exit_code == 1 and "no Hugging Face token: set HF_TOKEN" in result.output


def test_cli_dry_run_with_a_recipe(filtered, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("publish:\n  license: apache-2.0\n  private: false\n")
    stage = tmp_path / "stage"
    args = ["dataset", str(filtered), "me/r1-traces", "--config", str(recipe), "--dry-run", "--stage-dir", str(stage)]
    result = CliRunner().invoke(publish_group, args)
    assert result.exit_code == 0, result.output
    assert (
        "dry run: nothing uploaded" in result.output
        and "data/train-00000-of-00001-part-00000.parquet" in result.output
    )
    assert front_matter((stage / "README.md").read_text())["license"] == "apache-2.0"


@pytest.mark.parametrize(
    "make, repo, message",
    [
        (lambda f: shutil.rmtree(f / "data"), "me/x", "no data/*.parquet"),
        (lambda f: (f / "stats.json").unlink(), "me/x", "incomplete (no stats.json)"),
        (lambda f: None, "me/bad id", "bad repo id"),
        (lambda f: None, "a/b/c", "bad repo id"),
    ],
)
def test_dataset_errors_are_one_line(filtered, make, repo, message):
    make(filtered)
    result = CliRunner().invoke(publish_group, ["dataset", str(filtered), repo, "--dry-run", "--license", "mit"])
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_default_license_is_other_with_a_note_on_stderr(filtered, tmp_path):
    args = ["dataset", str(filtered), "me/x", "--dry-run", "--stage-dir", str(tmp_path / "stage")]
    result = CliRunner().invoke(publish_group, args)
    assert result.exit_code == 0 and "license is `other`" in result.stderr and "license is" not in result.stdout


def test_stage_dir_must_be_empty(filtered, tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "old.txt").write_text("x")
    with pytest.raises(DistillError, match="not an empty folder"):
        publish_dataset(filtered, "me/x", PublishConfig(dry_run=True, stage_dir=str(stage)))


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


def test_model_dry_run_stages_only_the_model_files(trained, eval_summary, tmp_path):
    stage = tmp_path / "stage"
    config = PublishConfig(dry_run=True, stage_dir=str(stage), eval_summary=str(eval_summary))
    result = publish_model(trained, "me/student", config)
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert files == result["files"]
    assert "README.md" in files and "model.safetensors" in files and "config.json" in files
    assert "tokenizer.json" in files and "tokenizer_config.json" in files
    for never in ("training_args.bin", "config.resolved.yaml", "checkpoint-10/optimizer.pt"):
        assert never not in files
    for path in stage.rglob("*"):
        if path.is_file():
            assert b"MARKERSECRET" not in path.read_bytes(), path


def test_model_card(trained, eval_summary, tmp_path):
    stage = tmp_path / "stage"
    config = PublishConfig(dry_run=True, stage_dir=str(stage), eval_summary=str(eval_summary))
    publish_model(trained, "me/student", config)
    card = (stage / "README.md").read_text()
    meta = front_matter(card)
    assert meta["base_model"] == "Qwen/Qwen2.5-Math-1.5B"  # the alias of the training config's student
    assert meta["base_model_relation"] == "finetune" and meta["library_name"] == "transformers"
    assert meta["datasets"] == ["me/r1-traces"] and meta["license"] == "other"
    assert meta["pipeline_tag"] == "text-generation" and "distillation" in meta["tags"]
    body = card.split("---\n", 2)[2]
    assert "| learning_rate | 1e-05 |" in body and "| lora.r | 16 |" in body
    for hidden in ("hub_token", "/home/someone", "output_dir", "10.0.0.7", "quiet"):
        assert hidden not in body
    assert "| before | 25.0% ± 5.0% | 50.0% | 200 |" in body and "| after | 62.5% ± 4.0% | 87.5% | 200 |" in body
    assert "reasoning-gym:basic_arithmetic" in body and "train_rows 800, final_loss 0.41" in body
    assert 'AutoModelForCausalLM.from_pretrained("me/student")' in body


def test_lora_adapter_model_card(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"base_model_name_or_path": "smollm2-135m", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    stage = tmp_path / "stage"
    result = publish_model(adapter, "me/student-lora", PublishConfig(dry_run=True, stage_dir=str(stage)))
    assert result["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    meta = front_matter((stage / "README.md").read_text())
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["base_model_relation"] == "adapter"
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    assert "AutoPeftModelForCausalLM" in (stage / "README.md").read_text()


def test_model_upload_is_one_commit_to_a_private_model_repo(trained):
    api = FakeApi()
    publish_model(trained, "me/student", api=api)
    assert api.names() == ["repo_exists", "create_repo", "create_commit"]
    assert api.calls[1][2] == {"repo_type": "model", "private": True}
    paths = [op.path_in_repo for op in api.calls[2][1][1]]
    assert "model.safetensors" in paths and "training_args.bin" not in paths


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda f: [p.unlink() for p in f.glob("*.safetensors")], "no weights"),
        (lambda f: (f / "config.json").unlink(), "no model in"),
    ],
)
def test_model_errors(trained, setup, message):
    setup(trained)
    with pytest.raises(DistillError, match=message):
        publish_model(trained, "me/student", PublishConfig(dry_run=True))


def test_bad_eval_summary(trained, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": 3}))
    result = CliRunner().invoke(
        publish_group, ["model", str(trained), "me/s", "--dry-run", "--eval-summary", str(bad)]
    )
    assert result.exit_code == 1 and "is not a `distill eval` summary" in result.output


@pytest.mark.parametrize("command", [[], ["dataset"], ["model"]])
def test_help(command):
    result = CliRunner().invoke(publish_group, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    if command:
        for flag in ("--public", "--overwrite", "--revision", "--commit-message", "--dry-run", "--stage-dir"):
            assert flag in result.output


# --------------------------------------------------------------------------------------------------------------
# Links out of the folder and credentials in URLs (issue 11)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def ssh_key(tmp_path) -> Path:
    """A stand-in private key outside every folder we publish."""
    key = tmp_path / "home" / ".ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nMARKERKEY\n-----END OPENSSH PRIVATE KEY-----\n")
    return key


@pytest.mark.parametrize("dry_run", [True, False])
def test_model_publish_refuses_files_that_link_out_of_the_folder(trained, ssh_key, tmp_path, dry_run):
    (trained / "tokenizer.json").unlink()
    (trained / "tokenizer.json").symlink_to(ssh_key)
    (trained / "merges.txt").symlink_to("/etc/passwd")
    api = FakeApi()
    stage = tmp_path / "stage"
    with pytest.raises(DistillError) as raised:
        publish_model(trained, "me/student", PublishConfig(dry_run=dry_run, stage_dir=str(stage)), api=api)
    message = str(raised.value)
    assert "tokenizer.json -> " + str(ssh_key) in message and "merges.txt -> /etc/passwd" in message
    assert "resolve outside it" in message and "\n" not in message
    assert api.calls == [] and not stage.exists()  # refused before staging: nothing copied, nothing sent


def test_dataset_publish_refuses_a_data_file_or_folder_linked_from_outside(filtered, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(filtered / "data", outside)
    (filtered / "data" / "train-00000-of-00001-part-00001.parquet").symlink_to(
        outside / "train-00000-of-00001-part-00000.parquet"
    )
    with pytest.raises(DistillError, match=r"data/train-00000-of-00001-part-00001.parquet -> .*elsewhere"):
        publish_dataset(filtered, "me/r1-traces", PublishConfig(dry_run=True))
    shutil.rmtree(filtered / "data")
    (filtered / "data").symlink_to(outside, target_is_directory=True)  # the whole data folder is a link out
    with pytest.raises(DistillError, match="resolves outside it"):
        publish_dataset(filtered, "me/r1-traces", PublishConfig(dry_run=True))


def test_links_inside_the_folder_are_published(trained, tmp_path):
    (trained / "checkpoint-10" / "model.safetensors").write_bytes((trained / "model.safetensors").read_bytes())
    (trained / "model.safetensors").unlink()
    (trained / "model.safetensors").symlink_to(trained / "checkpoint-10" / "model.safetensors")
    result = publish_model(trained, "me/student", PublishConfig(dry_run=True))
    assert "model.safetensors" in result["files"]


def test_no_url_credentials_in_the_dataset_card(filtered, tmp_path):
    url = "https://judge-user:p4ssw0rd@judge.example.com/v1?api-key=MARKERKEY1&apikey=MARKERKEY2&model=qwen"
    config = yaml.safe_load((filtered / "config.resolved.yaml").read_text())
    config["verifiers"]["judge"] = {"base_url": url, "model": "qwen"}
    (filtered / "config.resolved.yaml").write_text(yaml.safe_dump(config))
    result = publish_dataset(filtered, "me/r1-traces", PublishConfig(dry_run=True))
    card = result["card"]
    assert "judge.example.com/v1" in card  # still says which server judged
    for secret in ("judge-user", "p4ssw0rd", "MARKERKEY1", "MARKERKEY2"):
        assert secret not in card
    assert "https://***@judge.example.com/v1?api-key=***&apikey=***&model=qwen" in card


@pytest.mark.parametrize(
    "url, scrubbed",
    [
        ("https://user:pass@host/v1", "https://***@host/v1"),
        ("https://sk-MARKER@host:8000/v1", "https://***@host:8000/v1"),
        ("https://host/v1?api-key=a&apikey=b&key=c&token=d&access_token=e&model=m",
         "https://host/v1?api-key=***&apikey=***&key=***&token=***&access_token=***&model=m"),
        ("https://host/cb#access_token=z&state=1", "https://host/cb#access_token=***&state=1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("not a url", "not a url"),
    ],
)  # fmt: skip
def test_scrub_url(url, scrubbed):
    assert scrub_url(url) == scrubbed
    assert scrub(f"server ({url}), then") == f"server ({scrubbed}), then"  # inside text, punctuation kept


def test_resolved_configs_and_errors_hold_no_url_credentials(tmp_path, monkeypatch):
    from distill.cli_utils import _fail_cleanly
    from distill.config import GenerateConfig
    from distill.settings import dump_config

    url = "https://u:MARKERPASS@api.example.com/v1?token=MARKERTOKEN"
    config = GenerateConfig(source="x.jsonl", out=str(tmp_path / "o"), engine="openai", base_url=url)
    dump_config(config, tmp_path / "config.resolved.yaml")
    text = (tmp_path / "config.resolved.yaml").read_text()
    assert "api.example.com/v1" in text and "MARKER" not in text

    @_fail_cleanly
    def fails():
        raise DistillError(f"server at {url} refused the request")

    with pytest.raises(Exception) as raised:  # click.ClickException: the one line the CLI prints
        fails()
    assert "MARKER" not in raised.value.format_message() and "api.example.com" in raised.value.format_message()


def test_model_publish_refuses_a_hard_link_out_of_the_folder(trained, ssh_key, tmp_path):
    """A hard link has no target to resolve: its name is inside, its bytes are the key's. Refused by link count."""
    (trained / "tokenizer.json").unlink()
    os.link(ssh_key, trained / "tokenizer.json")
    api = FakeApi()
    with pytest.raises(DistillError, match="tokenizer.json has hard links outside it") as raised:
        publish_model(trained, "me/student", PublishConfig(dry_run=False), api=api)
    assert "\n" not in str(raised.value) and api.calls == []
    (trained / "tokenizer.json").unlink()
    (trained / "tokenizer.json").write_text("{}")
    os.link(trained / "tokenizer.json", trained / "checkpoint-10" / "tokenizer.json")  # both names inside: fine
    assert "tokenizer.json" in publish_model(trained, "me/student", PublishConfig(dry_run=True))["files"]


def test_a_dry_run_stage_does_not_block_the_real_upload(filtered, tmp_path):
    """--dry-run --stage-dir hard-links the files it stages: those links are ours, and the upload after it goes on."""
    publish_dataset(filtered, "me/r1-traces", PublishConfig(dry_run=True, stage_dir=str(tmp_path / "stage")))
    assert any(p.stat().st_nlink > 1 for p in (filtered / "data").glob("*.parquet"))
    api = FakeApi()
    publish_dataset(filtered, "me/r1-traces", PublishConfig(), api=api)
    assert api.calls
