"""Trace inputs and dataset operations: third-party layouts, dedupe, decontamination, consensus, mixing."""
