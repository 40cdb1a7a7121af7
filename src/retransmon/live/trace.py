"""`retransmon trace`: one line per retransmit, like bcc's tcpretrans, or JSON lines.

Records come from the same kernel handlers as `serve`'s counts, so the
`segments` of every line for a network namespace add up to the growth of its
`RetransSegs`. A line whose segments were found late (their own run was
skipped by the kernel, or the socket closed first) is marked `C>` instead of
`R>` in the text output.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from retransmon import defaults
from retransmon.attribution.cgroups import UNKNOWN, CgroupResolver
from retransmon.attribution.flows import cause_name
from retransmon.live.clock import BootClock, Rfc3339
from retransmon.live.decode import NO_TIMING, DecodeError, Decoder, Event, EventFlow, Timing
from retransmon.live.filter import EventFilter
from retransmon.live.stream import EventStream

POLL_MS = 100
LOST_CHECK_SECONDS = 1.0
BATCH_LINES = 4096  # written out at least this often while one poll keeps finding records

TEXT_HEADER = (
    f"{'TIME':<8} {'PID':<7} {'COMM':<12} {'IP':<2} {'LADDR:LPORT':<21} {'T>':<2} "
    f"{'RADDR:RPORT':<21} {'STATE':<11} {'KIND':<10} {'SEGS':>4} "
    f"{'CAUSE':<15} {'SRTT_US':>8} {'RTO_MS':>7} {'BO':>2}"
)
COUNT_HEADER = f"{'NETNS':<10} {'IP':<2} {'LADDR:LPORT':<21} {'RADDR:RPORT':<21} {'EVENTS':>8} {'SEGS':>8}"


def endpoint(ip_version: int, address: str, port: int) -> str:
    """198.18.0.1:5001, [2001:db8::1]:5001."""
    return f"[{address}]:{port}" if ip_version == 6 else f"{address}:{port}"


def type_mark(flow: EventFlow, reconciled: bool) -> str:
    if reconciled:
        return "C>"
    return "S>" if flow.kind == "synack" else "R>"


class LocalClock:
    """HH:MM:SS local time of wall-clock nanoseconds, cached per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def format(self, wall_ns: int) -> str:
        second = wall_ns // 1_000_000_000
        if second != self._second:
            self._second = second
            self._text = time.strftime("%H:%M:%S", time.localtime(second))
        return self._text


Prepared = tuple[str, str, str]  # the constant parts of one flow's lines


class _Formatter(ABC):
    """prepare() once per flow (the decoder caches it), render() per record."""

    @abstractmethod
    def prepare(self, flow: EventFlow) -> Prepared: ...

    @abstractmethod
    def render(
        self, prepared: Prepared, boot_ns: int, segments: int, reconciled: bool, timing: Timing = NO_TIMING
    ) -> str: ...

    def line(self, event: Event) -> str:
        return self.render(
            self.prepare(event.flow), event.boot_ns, event.segments, event.reconciled, event.timing
        )


class TextFormatter(_Formatter):
    """tcpretrans-like columns."""

    header = TEXT_HEADER

    def __init__(self, clock: BootClock) -> None:
        self._clock = clock
        self._time = LocalClock()

    def prepare(self, flow: EventFlow) -> Prepared:
        """(the part between TIME and T>, the part after T> up to SEGS, the T> mark) of a flow's lines."""
        pid = str(flow.pid) if flow.pid is not None else "-"
        comm = flow.comm if flow.comm is not None else "-"
        local = endpoint(flow.ip_version, flow.src_ip, flow.src_port)
        remote = endpoint(flow.ip_version, flow.dst_ip, flow.dst_port)
        left = f"{pid:<7} {comm[:12]:<12} {flow.ip_version:<2} {local:<21}"
        right = f"{remote:<21} {flow.state:<11} {flow.kind:<10}"
        return left, right, type_mark(flow, False)

    def render(
        self, prepared: Prepared, boot_ns: int, segments: int, reconciled: bool, timing: Timing = NO_TIMING
    ) -> str:
        left, right, mark = prepared
        when = self._time.format(self._clock.wall_ns(boot_ns))
        cause, backoff, srtt_us, rto_ms = timing
        return (
            f"{when:<8} {left} {'C>' if reconciled else mark} {right} {segments:>4} "
            f"{cause_name(cause) or '-':<15} {srtt_us:>8} {rto_ms:>7} {backoff:>2}\n"
        )


class JsonFormatter(_Formatter):
    """One JSON object per line, with exactly the keys of the documented record."""

    header = None

    def __init__(self, clock: BootClock, cgroup_path: Callable[[int], str]) -> None:
        self._clock = clock
        self._cgroup_path = cgroup_path
        self._time = Rfc3339()

    def prepare(self, flow: EventFlow) -> Prepared:
        path = self._cgroup_path(flow.cgroup) if flow.cgroup else UNKNOWN
        head = {
            "ip_version": flow.ip_version,
            "src_ip": flow.src_ip,
            "src_port": flow.src_port,
            "dst_ip": flow.dst_ip,
            "dst_port": flow.dst_port,
            "state": flow.state,
            "kind": flow.kind,
        }
        tail = {
            "netns": flow.netns,
            "cgroup": None if path == UNKNOWN else path,
            "pid": flow.pid,
            "comm": flow.comm,
        }
        return json.dumps(head)[1:-1], json.dumps(tail)[1:-1], ""

    def render(
        self, prepared: Prepared, boot_ns: int, segments: int, reconciled: bool, timing: Timing = NO_TIMING
    ) -> str:
        head, tail, _ = prepared
        when = self._time.format(self._clock.wall_ns(boot_ns))
        cause, backoff, srtt_us, rto_ms = timing
        return (
            f'{{"time": "{when}", {head}, "cause": "{cause_name(cause)}", "segments": {segments}, '
            f'"srtt_us": {srtt_us}, "rto_ms": {rto_ms}, "backoff": {backoff}, {tail}}}\n'
        )


FlowId = tuple[int, int, str, int, str, int]  # netns, ip_version, src_ip, src_port, dst_ip, dst_port


@dataclass
class FlowTotals:
    events: int = 0  # retransmitted skbs (records not marked reconciled)
    segments: int = 0


@dataclass
class Counter:
    """--count: retransmits per flow, printed at exit."""

    flows: dict[FlowId, FlowTotals] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        self.add_flow(event.flow, event.segments, event.reconciled)

    def add_flow(self, f: EventFlow, segments: int, reconciled: bool) -> None:
        key = (f.netns, f.ip_version, f.src_ip, f.src_port, f.dst_ip, f.dst_port)
        totals = self.flows.get(key)
        if totals is None:
            totals = self.flows[key] = FlowTotals()
        totals.segments += segments
        if not reconciled:
            totals.events += 1

    def ranked(self) -> list[tuple[FlowId, FlowTotals]]:
        return sorted(self.flows.items(), key=lambda kv: (-kv[1].segments, -kv[1].events, kv[0]))

    def render_text(self) -> str:
        lines = [COUNT_HEADER]
        for (netns, ver, src, sport, dst, dport), t in self.ranked():
            local, remote = endpoint(ver, src, sport), endpoint(ver, dst, dport)
            lines.append(f"{netns:<10} {ver:<2} {local:<21} {remote:<21} {t.events:>8} {t.segments:>8}")
        return "\n".join(lines) + "\n"

    def render_json(self) -> str:
        out = []
        for (netns, ver, src, sport, dst, dport), t in self.ranked():
            record = {
                "ip_version": ver,
                "src_ip": src,
                "src_port": sport,
                "dst_ip": dst,
                "dst_port": dport,
                "netns": netns,
                "events": t.events,
                "segments": t.segments,
            }
            out.append(json.dumps(record) + "\n")
        return "".join(out)


@dataclass
class TraceOptions:
    json: bool = False
    count: bool = False
    duration: float | None = None
    event_filter: EventFilter = field(default_factory=EventFilter)
    hooks: str = "auto"
    ring_buffer_bytes: int = defaults.RING_BUFFER_BYTES
    drop_capabilities: bool = False  # give up every capability once attached (the CLI: on)


@dataclass
class TraceStats:
    events: int = 0  # records shown (or counted)
    segments: int = 0
    filtered: int = 0  # records the filters left out
    lost: int = 0  # records the kernel could not write (ring buffer full)
    undecodable: int = 0  # records that are no retrans_event (a mismatched BPF object)


class _Stop(Exception):
    """Raised from the record callback to leave a poll that keeps finding records."""


class Tracer:
    """Formats, filters and counts records; writes lines to *out* in batches."""

    def __init__(self, options: TraceOptions, out: TextIO, clock: BootClock, stop: threading.Event) -> None:
        self.options = options
        self.out = out
        self.stats = TraceStats()
        self.counter = Counter()
        self._stop = stop
        self._deadline = None if options.duration is None else time.monotonic() + options.duration
        self._pending: list[str] = []
        self.draining = False  # reading what is left after records were switched off: never stop early
        self.formatter: TextFormatter | JsonFormatter = (
            JsonFormatter(clock, CgroupResolver().path) if options.json else TextFormatter(clock)
        )
        self._decoder = Decoder(self._prepare, options.event_filter.matches)

    def _prepare(self, flow: EventFlow) -> tuple[EventFlow, Prepared]:
        """What is kept per flow: the flow (for --count) and the constant parts of its lines."""
        return flow, self.formatter.prepare(flow)

    def expired(self) -> bool:
        return self._stop.is_set() or (self._deadline is not None and time.monotonic() >= self._deadline)

    def remaining_ms(self) -> int:
        if self._deadline is None:
            return POLL_MS
        return max(0, min(POLL_MS, int((self._deadline - time.monotonic()) * 1000)))

    def on_record(self, raw: bytes) -> None:
        """One ring buffer record. The hot path: one cache lookup, one unpack, one format."""
        try:
            decoded = self._decoder.decode(raw)
        except DecodeError:
            self.stats.undecodable += 1
            return
        if decoded is None:
            self.stats.filtered += 1
            return
        (flow, prepared), boot_ns, segments, reconciled, timing = decoded
        self.stats.events += 1
        self.stats.segments += segments
        if self.options.count:
            self.counter.add_flow(flow, segments, reconciled)
            return
        self._pending.append(self.formatter.render(prepared, boot_ns, segments, reconciled, timing))
        if len(self._pending) >= BATCH_LINES:
            self.flush()
            if self.expired() and not self.draining:
                raise _Stop

    def flush(self) -> None:
        if self._pending:
            self.out.write("".join(self._pending))
            self._pending.clear()
            self.out.flush()

    def summary(self) -> str:
        if self.options.json:
            return self.counter.render_json()
        return self.counter.render_text()


def run_trace(options: TraceOptions, stop: threading.Event, out: TextIO, err: TextIO) -> TraceStats:
    """Trace until *stop* is set or the duration ends; returns what was seen and lost."""
    clock = BootClock()
    tracer = Tracer(options, out, clock, stop)
    with EventStream(
        tracer.on_record, options.hooks, options.ring_buffer_bytes, options.drop_capabilities
    ) as stream:
        note = "" if stream.exact else " (per-event counting: segments of skipped runs are not recovered)"
        ready = f"Tracing TCP retransmits with hooks {stream.hooks}{note}. Ctrl-C to end."
        print(ready, file=err, flush=True)
        if tracer.formatter.header and not options.count:
            out.write(tracer.formatter.header + "\n")
            out.flush()
        reported_lost = 0
        next_check = time.monotonic() + LOST_CHECK_SECONDS
        while not tracer.expired():
            with contextlib.suppress(_Stop):
                stream.poll(tracer.remaining_ms())
            tracer.flush()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + LOST_CHECK_SECONDS
                clock.resync()
                lost = stream.lost()
                if lost > reported_lost:
                    print(
                        f"retransmon: {lost - reported_lost} records lost (ring buffer full); "
                        "the output misses them",
                        file=err,
                        flush=True,
                    )
                    reported_lost = lost
        tracer.draining = True
        stream.stop()  # records off; what is already in the ring buffer is read
        tracer.flush()
        tracer.stats.lost = stream.lost()
    if options.count:
        out.write(tracer.summary())
        out.flush()
    return tracer.stats


def render_stats(stats: TraceStats) -> str:
    text = f"retransmon: {stats.events} events ({stats.segments} segments) seen, {stats.lost} lost"
    if stats.filtered:
        text += f", {stats.filtered} filtered out"
    if stats.undecodable:
        text += f", {stats.undecodable} undecodable (is the BPF object from this version?)"
    return text
