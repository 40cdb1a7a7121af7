"""prometheus_client Collector: a snapshot in, metric families out.

The reference for every family in :mod:`retransmon.export.families`. `serve`
writes the per-flow counter families itself (:mod:`retransmon.export.exposition`,
much faster at 100,000 series) and asks this collector only for the rest
(``series=False``); a unit test checks the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from retransmon.export.families import HEALTH, SERIES
from retransmon.export.harvester import Snapshot

_METRIC_TYPES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


class RetransmonCollector(Collector):
    def __init__(self, source: Callable[[], Snapshot], labels: tuple[str, ...], series: bool = True) -> None:
        self._source = source
        # False: the per-flow counter families are written elsewhere.
        self._series = [(f, f.label_names(labels)) for f in SERIES] if series else []

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not trigger a harvest.
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._source())

    def _families(self, snap: Snapshot | None) -> list[Metric]:
        families: list[Metric] = []
        for series, label_names in self._series:
            counter = CounterMetricFamily(series.name, series.help, labels=label_names)
            if snap is not None:
                for s in series.samples(snap):
                    counter.add_metric(s.labels, series.value(s))
            families.append(counter)
        for health in HEALTH:
            metric = _METRIC_TYPES[health.kind](health.name, health.help, labels=health.labels)
            if snap is not None:
                for values, value in health.read(snap):
                    metric.add_metric(values, value)
            families.append(metric)
        return families
