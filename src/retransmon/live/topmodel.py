"""What `retransmon top` shows: per-flow retransmit rates over the last refresh interval.

Pure bookkeeping, no terminal: records go in with :meth:`TopModel.add`, each
refresh calls :meth:`TopModel.roll` with the interval's length, and
:meth:`TopModel.ranked` gives the rows in the chosen order.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from retransmon.live.decode import EventFlow

SORT_KEYS = ("rate", "events", "total", "peer", "timeouts")
# Short cause names for a narrow column.
CAUSE_SHORT = {"fast": "fast", "slow_start": "slow", "timeout": "rto", "tail_loss_probe": "tlp", "syn": "syn"}
IDLE_ROLLS = 5  # a flow with no retransmit for this many intervals leaves the table

FlowId = tuple[int, int, str, int, str, int]  # netns, ip_version, src_ip, src_port, dst_ip, dst_port


@dataclass
class FlowRow:
    netns: int
    ip_version: int
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    pid: int | None
    comm: str | None
    state: str  # at the latest retransmit
    kind: str
    rate: float = 0.0  # segments per second over the last interval
    event_rate: float = 0.0
    total_segments: int = 0
    total_events: int = 0
    window_segments: int = 0
    window_events: int = 0
    idle_rolls: int = 0
    timeouts: int = 0  # RTO timeouts (retransmit events with cause timeout), in total
    cause_segments: dict[str, int] = field(default_factory=dict)  # total segments per cause

    @property
    def cause(self) -> str:
        """The cause of most of this flow's retransmitted segments ("" before any)."""
        if not self.cause_segments:
            return ""
        return max(self.cause_segments.items(), key=lambda kv: (kv[1], kv[0]))[0]

    def peer_order(self) -> tuple[int, int, int]:
        return (self.ip_version, int(ipaddress.ip_address(self.dst_ip)), self.dst_port)


@dataclass
class Totals:
    rate: float = 0.0
    event_rate: float = 0.0
    segments: int = 0
    events: int = 0
    lost: int = 0


@dataclass
class TopModel:
    flows: dict[FlowId, FlowRow] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)
    _window_segments: int = 0
    _window_events: int = 0

    def add(self, f: EventFlow, segments: int, reconciled: bool, cause: str = "") -> None:
        """One record of flow *f*: *segments* retransmitted, an event unless *reconciled* (found late)."""
        key = (f.netns, f.ip_version, f.src_ip, f.src_port, f.dst_ip, f.dst_port)
        row = self.flows.get(key)
        if row is None:
            ends = (f.ip_version, f.src_ip, f.src_port, f.dst_ip, f.dst_port)
            row = self.flows[key] = FlowRow(f.netns, *ends, f.pid, f.comm, f.state, f.kind)
        row.state = f.state
        if cause:
            row.cause_segments[cause] = row.cause_segments.get(cause, 0) + segments
        row.window_segments += segments
        row.total_segments += segments
        self._window_segments += segments
        self.totals.segments += segments
        if not reconciled:
            row.window_events += 1
            row.total_events += 1
            row.timeouts += cause == "timeout"
            self._window_events += 1
            self.totals.events += 1

    def roll(self, seconds: float) -> None:
        """End an interval of *seconds*: its counts become rates, idle flows leave."""
        seconds = max(seconds, 1e-6)
        for key, row in list(self.flows.items()):
            row.rate = row.window_segments / seconds
            row.event_rate = row.window_events / seconds
            row.idle_rolls = 0 if row.window_segments else row.idle_rolls + 1
            row.window_segments = row.window_events = 0
            if row.idle_rolls >= IDLE_ROLLS:
                del self.flows[key]
        self.totals.rate = self._window_segments / seconds
        self.totals.event_rate = self._window_events / seconds
        self._window_segments = self._window_events = 0

    def ranked(self, sort: str) -> list[FlowRow]:
        rows = list(self.flows.values())
        if sort == "peer":
            return sorted(rows, key=FlowRow.peer_order)
        if sort == "events":
            return sorted(rows, key=lambda r: (-r.event_rate, -r.rate, r.peer_order()))
        if sort == "total":
            return sorted(rows, key=lambda r: (-r.total_segments, r.peer_order()))
        if sort == "timeouts":
            return sorted(rows, key=lambda r: (-r.timeouts, -r.rate, r.peer_order()))
        if sort == "rate":
            return sorted(rows, key=lambda r: (-r.rate, -r.total_segments, r.peer_order()))
        raise ValueError(f"unknown sort key {sort!r}; choose one of {', '.join(SORT_KEYS)}")
