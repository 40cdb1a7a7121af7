"""Drain the kernel's flow tables into monotonic per-series accumulators.

One harvest: take every flow counted since the last one from the kernel
(:meth:`retransmon.kernel.tables.FlowTables.drain`), decode and feed it to the
series tables, drop series idle longer than --series-ttl, and read the
kernel's loss counters and listening ports. Runs on a timer and before every
scrape; a lock makes concurrent callers take turns, and each sees a
consistent snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from retransmon.attribution.flows import decode_counts, decode_flow
from retransmon.attribution.labels import Projector
from retransmon.attribution.listening import ListeningPorts
from retransmon.export.series import Sample, SeriesTable
from retransmon.kernel.skeleton import RetransmonBPF
from retransmon.kernel.tables import Losses

log = logging.getLogger(__name__)


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

    def harvest(self) -> None:
        with self._lock:
            start = time.monotonic()
            tables = self._bpf.tables
            if tables is None:
                return  # detached: nothing more will come
            entries = tables.drain()
            for raw_key, raw_value in entries:
                flow = decode_flow(raw_key)
                events, segments = decode_counts(raw_value)
                table = self.sent if flow.kind == "sent" else self.retransmits
                table.add(self._projector.project(flow), events, segments)
            self.retransmits.expire()
            self.sent.expire()
            self._state.last_entries = len(entries)
            self._state.losses = tables.losses()
            self._listening.update(tables.listeners())
            self._state.harvests += 1
            self._state.harvest_seconds += time.monotonic() - start

    def snapshot(self, harvest: bool = True) -> Snapshot:
        if harvest:
            self.harvest()
        with self._lock:
            st = self._state
            kernel = self._bpf.status()
            return Snapshot(
                retransmits=self.retransmits.samples(),
                sent=self.sent.samples(),
                losses=st.losses,
                series_folded=self.retransmits.folded_records + self.sent.folded_records,
                flow_entries=st.last_entries,
                flow_capacity=kernel.flow_capacity,
                recursion_misses=kernel.recursion_misses,
                attached=kernel.attached,
                hooks=kernel.hooks,
                exact=kernel.exact,
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
