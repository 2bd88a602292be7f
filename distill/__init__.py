"""distill: a distillation factory and dataset generator for reasoning models."""

__version__ = "0.1.0"
