"""Medians and ratios: what the benchmarks report, since single timings on a shared machine are noise."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """min..max, for the report."""
    return f"{min(values):.4g}..{max(values):.4g}" if values else "-"
