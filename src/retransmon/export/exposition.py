"""/metrics bodies: the per-flow counters written directly, the rest through prometheus_client.

prometheus_client validates and escapes every label of every sample on every
scrape: about 10 us a sample, over 3 s for 100,000 flows (300,000 samples).
The three per-flow counter families are nearly all of the output, and a
series' labels do not change, so :class:`SeriesWriter` renders each label set
once and reuses it while the series exists. The agent's health and process
metrics (a few dozen samples) still go through prometheus_client, from the
same snapshot. ``tests/unit/export/test_exposition.py`` checks that both ways give
the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from retransmon.export.collector import RetransmonCollector
from retransmon.export.families import SERIES
from retransmon.export.harvester import Snapshot
from retransmon.export.series import Sample

OPENMETRICS_TYPE = "application/openmetrics-text"


class Exposition(Protocol):
    def render(self, accept: str) -> tuple[bytes, str]:
        """The /metrics body for an Accept header, and its content type."""
        ...


class RegistryExposition:
    """A plain prometheus_client registry, negotiated as prometheus_client does."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class _LabelCache:
    """Rendered `{name="value",...}` strings, kept while their series exist."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self._rendered: dict[tuple[str, ...], str] = {}

    def _render(self, values: tuple[str, ...]) -> str:
        if not values:
            return ""
        pairs = ",".join(f'{n}="{_escape_value(v)}"' for n, v in zip(self._names, values, strict=True))
        return "{" + pairs + "}"

    def lookup(self, samples: list[Sample]) -> list[str]:
        """The label string of each sample; forgets series that are gone (--series-ttl)."""
        old = self._rendered
        new = {s.labels: old.get(s.labels) or self._render(s.labels) for s in samples}
        self._rendered = new  # one assignment: concurrent scrapes each see a whole dict
        return [new[s.labels] for s in samples]


class SeriesWriter:
    """The per-flow counter families of :data:`~retransmon.export.families.SERIES`."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        # One cache per series table (keyed by SeriesFamily.sent): its families share the label strings.
        self._caches = {f.sent: _LabelCache(f.label_names(labels)) for f in SERIES}

    def render(self, snap: Snapshot, openmetrics: bool) -> bytes:
        rendered: dict[bool, list[str]] = {}  # label strings of each series table, looked up once
        parts: list[str] = []
        for f in SERIES:
            samples = f.samples(snap)
            labels = rendered.get(f.sent)
            if labels is None:
                labels = rendered[f.sent] = self._caches[f.sent].lookup(samples)
            # OpenMetrics names the family without _total; the text format names it as its samples.
            family = f.name if openmetrics else f"{f.name}_total"
            parts.append(f"# HELP {family} {_escape_help(f.help)}\n# TYPE {family} counter\n")
            sample_name, value = f"{f.name}_total", f.value
            parts.extend(f"{sample_name}{lab} {value(s)}\n" for s, lab in zip(samples, labels, strict=True))
        return "".join(parts).encode()


class AgentExposition:
    """What `serve` answers on /metrics: one snapshot per scrape, rendered in two parts."""

    def __init__(
        self, source: Callable[[], Snapshot], labels: tuple[str, ...], others: Iterable[Collector] = ()
    ) -> None:
        self._source = source
        self._labels = labels
        self._others = list(others)
        self._writer = SeriesWriter(labels)

    def render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        snap = self._source()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RetransmonCollector(lambda: snap, self._labels, series=False))
        for collector in self._others:
            registry.register(collector)
        openmetrics = content_type.startswith(OPENMETRICS_TYPE)
        # The rest last: in OpenMetrics it ends with the one `# EOF`.
        return self._writer.render(snap, openmetrics) + encoder(registry), content_type
