"""Monotonic per-series accumulators with a cap on the number of series.

A series, once admitted, keeps its own counter for the life of the process
(so Prometheus sees it rise monotonically). A new series arriving when the
table already holds ``max_series`` admitted series is folded into its
``other`` series (endpoint labels replaced, the rest kept), so the sum over
all series never changes. Folded series do not count against the cap; there
is at most one per combination of the non-endpoint labels.

With a ``ttl``, a series that has not grown for longer than ``ttl`` seconds is
dropped by :meth:`SeriesTable.expire` (an admitted one frees its slot under the
cap); should it grow again it starts over from zero, which Prometheus's
``rate()`` and ``increase()`` read as a counter reset. An admitted series and
the folded one exported under the same labels are one series to Prometheus:
they are dropped together, only when both are idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from retransmon.attribution.flows import Counts
from retransmon.attribution.labels import fold


@dataclass(frozen=True)
class Sample:
    labels: tuple[str, ...]
    events: int
    segments: int


class SeriesTable:
    def __init__(
        self,
        label_names: tuple[str, ...],
        max_series: int,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        if ttl is not None and not ttl > 0:
            raise ValueError("ttl must be positive (None: series never expire)")
        self.label_names = label_names
        self.max_series = max_series
        self.ttl = ttl
        self._clock = clock
        self._admitted: dict[tuple[str, ...], Counts] = {}
        self._folded: dict[tuple[str, ...], Counts] = {}
        self._grew: dict[tuple[str, ...], float] = {}  # exported labels -> when that series last grew
        self.folded_records = 0  # additions that went to an `other` series
        self.expired = 0  # series dropped by expire()

    def add(self, values: tuple[str, ...], events: int, segments: int) -> None:
        if len(values) != len(self.label_names):
            raise ValueError(f"{len(values)} label values for {len(self.label_names)} labels")
        key = values
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
        if self.ttl is not None and (events or segments or key not in self._grew):
            self._grew[key] = self._clock()

    def expire(self) -> int:
        """Drop series that have not grown for longer than the ttl; returns how many."""
        if self.ttl is None:
            return 0
        deadline = self._clock() - self.ttl
        idle = [key for key, when in self._grew.items() if when < deadline]
        for key in idle:
            del self._grew[key]
            self._admitted.pop(key, None)
            self._folded.pop(key, None)
        self.expired += len(idle)
        return len(idle)

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
