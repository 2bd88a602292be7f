"""Engines: one interface (distill.engines.base), four backends chosen by name.

Imports happen inside each branch so `distill --help` never imports torch, vllm or aiohttp.
"""

from distill.engines.base import Engine, Request, Result, Sampling
from distill.engines.hf import TransformersEngine
from distill.engines.openai_batch import OpenAIBatchEngine
from distill.engines.openai_engine import OpenAIEngine
from distill.engines.vllm_engine import VllmEngine
from distill.errors import DistillError

ENGINES = ("transformers", "vllm", "openai", "openai-batch")


def make_engine(config) -> Engine:
    """Build the engine a GenerateConfig names."""
    if config.engine == "transformers":
        return TransformersEngine.from_config(config)
    if config.engine == "vllm":
        return VllmEngine.from_config(config)
    if config.engine == "openai":
        return OpenAIEngine.from_config(config)
    if config.engine == "openai-batch":
        return OpenAIBatchEngine.from_config(config)
    raise DistillError(f"unknown engine `{config.engine}`: choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "Request", "Result", "Sampling", "make_engine"]
