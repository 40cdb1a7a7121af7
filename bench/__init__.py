"""Reproducible benchmarks; results and the machine they ran on are in docs/benchmarks.md."""
