"""Every metric family retransmon exports, declared once: name, type, help, labels, and what it reads.

Both ways of writing /metrics read this table: the prometheus_client Collector
(:mod:`retransmon.export.collector`, every family) and the fast writer for the
per-flow counters (:mod:`retransmon.export.exposition`). Adding a health metric
is one row in :data:`HEALTH` and, if it needs one, a field of the
:class:`~retransmon.export.harvester.Snapshot` it reads.

Names are given as Prometheus families: a counter's samples add ``_total``.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

from retransmon import __version__
from retransmon.attribution.labels import sent_labels
from retransmon.export.harvester import Snapshot
from retransmon.export.series import Sample

Kind = Literal["counter", "gauge"]
Reading = Iterable[tuple[Sequence[str], float]]  # (label values, value) of each sample


@dataclass(frozen=True)
class SeriesFamily:
    """A per-flow counter: one sample per series of the snapshot's retransmit or sent table."""

    name: str
    help: str
    value: Callable[[Sample], int]  # the sample's count this family exports
    sent: bool = False  # from the sent table, with only the labels that make sense for sent segments

    def label_names(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        """The family's label names when serve was started with *labels*."""
        return sent_labels(labels) if self.sent else labels

    def samples(self, snap: Snapshot) -> list[Sample]:
        return snap.sent if self.sent else snap.retransmits


@dataclass(frozen=True)
class HealthFamily:
    """One of the agent's own metrics, read from a snapshot."""

    name: str
    kind: Kind
    help: str
    read: Callable[[Snapshot], Reading]
    labels: tuple[str, ...] = ()


def _one(value: Callable[[Snapshot], float]) -> Callable[[Snapshot], Reading]:
    """A family with a single unlabelled sample."""
    return lambda snap: [((), value(snap))]


def _per_program(values: Callable[[Snapshot], Mapping[str, float]]) -> Callable[[Snapshot], Reading]:
    """A family with one sample per program label, in name order."""
    return lambda snap: [((program,), value) for program, value in sorted(values(snap).items())]


def _build_info(snap: Snapshot) -> Reading:
    counting = "exact" if snap.exact else "per_event"
    return [((__version__, snap.hooks, counting, platform.release(), platform.python_version()), 1)]


SERIES: tuple[SeriesFamily, ...] = (
    SeriesFamily(
        "tcp_retransmitted_segments",
        "TCP segments retransmitted by this host, in the unit of the kernel's RetransSegs "
        "(src is the local end, dst the remote end).",
        attrgetter("segments"),
    ),
    SeriesFamily(
        "tcp_retransmissions",
        "TCP retransmit events (one per retransmitted skb, which may carry several segments).",
        attrgetter("events"),
    ),
    SeriesFamily(
        "tcp_segments_sent",
        "TCP segments sent by this host, retransmissions included: the retransmission rate's denominator.",
        attrgetter("segments"),
        sent=True,
    ),
)

HEALTH: tuple[HealthFamily, ...] = (
    HealthFamily(
        "retransmon_build_info",
        "gauge",
        "retransmon version, the hooks in use and whether counting is exact; always 1.",
        _build_info,
        ("version", "hooks", "counting", "kernel", "python"),
    ),
    HealthFamily(
        "retransmon_bpf_program_attached",
        "gauge",
        "Whether the BPF program is attached (1) or not (0).",
        _per_program(lambda snap: {p: int(on) for p, on in snap.attached.items()}),
        ("program",),
    ),
    HealthFamily(
        "retransmon_bpf_recursion_misses",
        "counter",
        "Runs of a BPF program the kernel skipped because it would have nested on one CPU.",
        _per_program(lambda snap: snap.recursion_misses),
        ("program",),
    ),
    HealthFamily(
        "retransmon_events_lost",
        "counter",
        "Per-event records dropped because the ring buffer was full (trace and top only).",
        _one(lambda snap: snap.losses.events_lost),
    ),
    HealthFamily(
        "retransmon_unaccounted_events",
        "counter",
        "Retransmit events with no room in the flow table, not even in its reserve for folds: "
        "tcp_retransmissions_total misses them.",
        _one(lambda snap: snap.losses.unaccounted_events),
    ),
    HealthFamily(
        "retransmon_unaccounted_segments",
        "counter",
        "Retransmitted segments with no room in the flow table, not even in its reserve for folds.",
        _one(lambda snap: snap.losses.unaccounted_segments),
    ),
    HealthFamily(
        "retransmon_unclassified_segments",
        "counter",
        "Retransmitted segments whose cause could not be known (their own BPF run was skipped and they "
        'were found later or at close); counted with cause="timeout".',
        _one(lambda snap: snap.losses.unclassified_segments),
    ),
    HealthFamily(
        "retransmon_untracked_sockets",
        "counter",
        "TCP sockets whose segments sent are not counted: the kernel's socket table was full "
        "(raise --socket-capacity).",
        _one(lambda snap: snap.losses.untracked_sockets),
    ),
    HealthFamily(
        "retransmon_flow_map_entries",
        "gauge",
        "Flows the kernel's flow table held at the last harvest.",
        _one(lambda snap: snap.flow_entries),
    ),
    HealthFamily(
        "retransmon_flow_map_capacity",
        "gauge",
        "Flows the kernel's flow table holds per harvest interval before folding new flows.",
        _one(lambda snap: snap.flow_capacity),
    ),
    HealthFamily(
        "retransmon_series_overflow",
        "counter",
        "Flow records folded into an `other` series because --max-series was reached.",
        _one(lambda snap: snap.series_folded),
    ),
    HealthFamily(
        "retransmon_harvests",
        "counter",
        "Times the kernel's flow table was drained.",
        _one(lambda snap: snap.harvests),
    ),
    HealthFamily(
        "retransmon_harvest_seconds",
        "counter",
        "Time spent draining the kernel's flow table.",
        _one(lambda snap: snap.harvest_seconds),
    ),
)
