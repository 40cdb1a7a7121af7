"""prometheus_client Collector: a snapshot in, metric families out.

The reference for every family retransmon exports. `serve` writes the three
per-flow counter families itself (:mod:`retransmon.export.exposition`, much faster
at 100,000 series) and asks this collector only for the rest
(``series=False``); a unit test checks the two agree.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from retransmon import __version__
from retransmon.attribution.labels import sent_labels
from retransmon.export.harvester import Snapshot

SEGMENTS_HELP = (
    "TCP segments retransmitted by this host, in the unit of the kernel's RetransSegs "
    "(src is the local end, dst the remote end)."
)
EVENTS_HELP = "TCP retransmit events (one per retransmitted skb, which may carry several segments)."
SENT_HELP = "TCP segments sent by this host, retransmissions included: the retransmission rate's denominator."


class RetransmonCollector(Collector):
    def __init__(self, source: Callable[[], Snapshot], labels: tuple[str, ...], series: bool = True) -> None:
        self._source = source
        self._labels = labels
        self._sent_labels = sent_labels(labels)
        self._series = series  # False: the per-flow counter families are written elsewhere

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not trigger a harvest.
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._source())

    def _families(self, snap: Snapshot | None) -> list[Metric]:
        segments = CounterMetricFamily("tcp_retransmitted_segments", SEGMENTS_HELP, labels=self._labels)
        events = CounterMetricFamily("tcp_retransmissions", EVENTS_HELP, labels=self._labels)
        sent = CounterMetricFamily("tcp_segments_sent", SENT_HELP, labels=self._sent_labels)
        build = GaugeMetricFamily(
            "retransmon_build_info",
            "retransmon version, the hooks in use and whether counting is exact; always 1.",
            labels=["version", "hooks", "counting", "kernel", "python"],
        )
        attached = GaugeMetricFamily(
            "retransmon_bpf_program_attached",
            "Whether the BPF program is attached (1) or not (0).",
            labels=["program"],
        )
        misses = CounterMetricFamily(
            "retransmon_bpf_recursion_misses",
            "Runs of a BPF program the kernel skipped because it would have nested on one CPU.",
            labels=["program"],
        )
        lost = CounterMetricFamily(
            "retransmon_events_lost",
            "Per-event records dropped because the ring buffer was full (trace and top only).",
        )
        unaccounted = CounterMetricFamily(
            "retransmon_unaccounted_segments",
            "Retransmitted segments with no room in the flow table, not even in its reserve for folds.",
        )
        untracked = CounterMetricFamily(
            "retransmon_untracked_sockets",
            "TCP sockets whose segments sent are not counted: the kernel's socket table was full "
            "(raise --socket-capacity).",
        )
        entries = GaugeMetricFamily(
            "retransmon_flow_map_entries",
            "Flows the kernel's flow table held at the last harvest.",
        )
        capacity = GaugeMetricFamily(
            "retransmon_flow_map_capacity",
            "Flows the kernel's flow table holds per harvest interval before folding new flows.",
        )
        overflow = CounterMetricFamily(
            "retransmon_series_overflow",
            "Flow records folded into an `other` series because --max-series was reached.",
        )
        harvests = CounterMetricFamily("retransmon_harvests", "Times the kernel's flow table was drained.")
        harvest_time = CounterMetricFamily(
            "retransmon_harvest_seconds", "Time spent draining the kernel's flow table."
        )
        families: list[Metric] = [
            *((segments, events, sent) if self._series else ()),
            build,
            attached,
            misses,
            lost,
            unaccounted,
            untracked,
            entries,
            capacity,
            overflow,
            harvests,
            harvest_time,
        ]
        if snap is None:
            return families

        if self._series:
            for s in snap.retransmits:
                segments.add_metric(list(s.labels), s.segments)
                events.add_metric(list(s.labels), s.events)
            for s in snap.sent:
                sent.add_metric(list(s.labels), s.segments)
        build.add_metric(
            [
                __version__,
                snap.hooks,
                "exact" if snap.exact else "per_event",
                platform.release(),
                platform.python_version(),
            ],
            1,
        )
        for program, is_attached in sorted(snap.attached.items()):
            attached.add_metric([program], 1 if is_attached else 0)
        for program, n in sorted(snap.recursion_misses.items()):
            misses.add_metric([program], n)
        lost.add_metric([], snap.losses.events_lost)
        unaccounted.add_metric([], snap.losses.unaccounted_segments)
        untracked.add_metric([], snap.losses.untracked_sockets)
        entries.add_metric([], snap.flow_entries)
        capacity.add_metric([], snap.flow_capacity)
        overflow.add_metric([], snap.series_folded)
        harvests.add_metric([], snap.harvests)
        harvest_time.add_metric([], snap.harvest_seconds)
        return families
