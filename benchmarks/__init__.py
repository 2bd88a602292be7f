"""Benchmarks and reliability checks: scripts that measure, side by side, on this machine."""
