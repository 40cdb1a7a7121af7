"""Drain the kernel's flow tables into monotonic per-series accumulators.

One harvest: run the iterator that adds what live sockets sent since the
last harvest to the live table, point the programs at the spare table (the
kernel returns only after an RCU grace period, so no program still writes to
the old one), read and delete everything in the old table, feed it to the
series tables, drop series idle longer than --series-ttl. Runs
on a timer and before every scrape; a lock makes concurrent callers take
turns, and each sees a consistent snapshot.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass, field

from retransmon.attribution.flows import (
    FLOW_COUNTS,
    FLOW_KEY,
    LISTEN_KEY,
    META_KEY,
    ZERO_COUNTS,
    decode_counts,
    decode_flow,
    is_meta,
)
from retransmon.attribution.labels import Projector
from retransmon.attribution.listening import ListeningPorts
from retransmon.export.series import Sample, SeriesTable
from retransmon.kernel import libbpf
from retransmon.kernel.layout import Field, Layout
from retransmon.kernel.skeleton import PROGRAM_LABELS, RetransmonBPF

log = logging.getLogger(__name__)

LOSS_COUNTS = Layout(
    "loss_counts",
    [
        Field("events_lost", "Q"),
        Field("unaccounted_events", "Q"),
        Field("unaccounted_segments", "Q"),
        Field("untracked_sockets", "Q"),
    ],
)
ZERO_U32 = (0).to_bytes(4, "little")


@dataclass(frozen=True)
class Snapshot:
    """Everything the collector exports, taken at one instant."""

    retransmits: list[Sample]
    sent: list[Sample]
    losses: Losses
    series_folded: int
    flow_entries: int
    flow_capacity: int
    recursion_misses: dict[str, int]
    attached: dict[str, bool]
    hooks: str
    exact: bool
    harvests: int
    harvest_seconds: float


@dataclass
class Losses:
    events_lost: int = 0
    unaccounted_events: int = 0
    unaccounted_segments: int = 0
    untracked_sockets: int = 0


@dataclass
class _State:
    last_entries: int = 0
    harvests: int = 0
    harvest_seconds: float = 0.0
    losses: Losses = field(default_factory=Losses)


class Harvester:
    def __init__(
        self,
        bpf: RetransmonBPF,
        projector: Projector,
        retransmits: SeriesTable,
        sent: SeriesTable,
        listening: ListeningPorts,
    ) -> None:
        self._bpf = bpf
        self._projector = projector
        self.retransmits = retransmits
        self.sent = sent
        self._listening = listening
        self._lock = threading.Lock()
        self._state = _State()
        self._batch_ok = True

    def harvest(self) -> None:
        with self._lock:
            start = time.monotonic()
            tables = self._bpf.tables
            if tables is None:
                return  # detached: nothing more will come
            # Into the live table, before the swap: counted in this harvest, exactly once.
            self._bpf.collect_sent()
            old = tables.live
            spare = 1 - old
            # Swapping an array-of-maps entry waits for an RCU grace period.
            libbpf.map_update(tables.outer_fd, ZERO_U32, tables.table_fds[spare].to_bytes(4, "little"))
            tables.live = spare
            old_fd = tables.table_fds[old]
            entries = self._drain(old_fd, tables.max_entries)
            libbpf.map_update(old_fd, META_KEY, ZERO_COUNTS)
            flows = 0
            for raw_key, raw_value in entries:
                if is_meta(raw_key):
                    continue
                flows += 1
                flow = decode_flow(raw_key)
                events, segments = decode_counts(raw_value)
                table = self.sent if flow.kind == "sent" else self.retransmits
                table.add(self._projector.project(flow), events, segments)
            self.retransmits.expire()
            self.sent.expire()
            self._state.last_entries = flows
            self._state.losses = self._read_losses()
            self._listening.update(self._read_listeners())
            self._state.harvests += 1
            self._state.harvest_seconds += time.monotonic() - start

    def _drain(self, fd: int, max_entries: int) -> list[tuple[bytes, bytes]]:
        if self._batch_ok:
            try:
                return libbpf.map_lookup_and_delete_batch(fd, FLOW_KEY.size, FLOW_COUNTS.size, max_entries)
            except libbpf.LibbpfError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                log.info("batch lookup-and-delete unsupported (%s); draining key by key", exc.strerror)
                self._batch_ok = False
        # No program writes to this table any more, so key-by-key is consistent too.
        out = []
        for key in libbpf.map_keys(fd, FLOW_KEY.size):
            value = libbpf.map_lookup(fd, key, FLOW_COUNTS.size)
            if value is not None:
                out.append((key, value))
            libbpf.map_delete(fd, key)
        return out

    def _read_losses(self) -> Losses:
        per_cpu = libbpf.map_lookup_percpu(self._bpf.map_fd("losses"), ZERO_U32, LOSS_COUNTS.size)
        total = Losses()
        for raw in per_cpu or []:
            lost, ev, seg, sockets = LOSS_COUNTS.unpack(raw)
            total.events_lost += lost
            total.unaccounted_events += ev
            total.unaccounted_segments += seg
            total.untracked_sockets += sockets
        return total

    def _read_listeners(self) -> set[tuple[int, int]]:
        live = set()
        for key in libbpf.map_keys(self._bpf.map_fd("listeners"), LISTEN_KEY.size):
            netns, port, _pad = LISTEN_KEY.unpack(key)
            live.add((int(netns), int(port)))
        return live

    def snapshot(self, harvest: bool = True) -> Snapshot:
        if harvest:
            self.harvest()
        with self._lock:
            st = self._state
            attached_labels = {p.label for p in self._bpf.programs}
            plan = self._bpf.plan
            return Snapshot(
                retransmits=self.retransmits.samples(),
                sent=self.sent.samples(),
                losses=st.losses,
                series_folded=self.retransmits.folded_records + self.sent.folded_records,
                flow_entries=st.last_entries,
                flow_capacity=self._bpf.options.flow_capacity,
                recursion_misses=self._bpf.recursion_misses() if self._bpf.programs else {},
                attached={label: label in attached_labels for label in sorted(set(PROGRAM_LABELS.values()))},
                hooks=plan.name if plan else "none",
                exact=self._bpf.exact,
                harvests=st.harvests,
                harvest_seconds=st.harvest_seconds,
            )


class HarvestTimer:
    """Harvest every *interval* seconds in a daemon thread until stopped."""

    def __init__(self, harvester: Harvester, interval: float) -> None:
        self._harvester = harvester
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harvest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._harvester.harvest()
            except Exception:  # keep harvesting; the next scrape reports health
                log.exception("harvest failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
