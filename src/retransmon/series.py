"""Monotonic per-series accumulators with a cap on the number of series.

A series, once admitted, keeps its own counter for the life of the process
(so Prometheus sees it rise monotonically). A new series arriving when the
table already holds ``max_series`` admitted series is folded into its
``other`` series (endpoint labels replaced, the rest kept), so the sum over
all series never changes. Folded series do not count against the cap; there
is at most one per combination of the non-endpoint labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from retransmon.flows import Counts
from retransmon.labels import fold


@dataclass(frozen=True)
class Sample:
    labels: tuple[str, ...]
    events: int
    segments: int


class SeriesTable:
    def __init__(self, label_names: tuple[str, ...], max_series: int) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.label_names = label_names
        self.max_series = max_series
        self._admitted: dict[tuple[str, ...], Counts] = {}
        self._folded: dict[tuple[str, ...], Counts] = {}
        self.folded_records = 0  # additions that went to an `other` series

    def add(self, values: tuple[str, ...], events: int, segments: int) -> None:
        if len(values) != len(self.label_names):
            raise ValueError(f"{len(values)} label values for {len(self.label_names)} labels")
        counts = self._admitted.get(values)
        if counts is None:
            if len(self._admitted) < self.max_series:
                counts = self._admitted[values] = Counts()
            else:
                self.folded_records += 1
                key = fold(self.label_names, values)
                counts = self._folded.get(key)
                if counts is None:
                    counts = self._folded[key] = Counts()
        counts.add(events, segments)

    def samples(self) -> list[Sample]:
        """Every series; an `other` series identical to an admitted one is merged into it."""
        merged: dict[tuple[str, ...], Counts] = {
            k: Counts(c.events, c.segments) for k, c in self._admitted.items()
        }
        for key, c in self._folded.items():
            merged.setdefault(key, Counts()).add(c.events, c.segments)
        return [Sample(k, c.events, c.segments) for k, c in merged.items()]

    def __len__(self) -> int:
        return len(self._admitted) + sum(1 for k in self._folded if k not in self._admitted)

    def totals(self) -> Counts:
        total = Counts()
        for c in (*self._admitted.values(), *self._folded.values()):
            total.add(c.events, c.segments)
        return total
