"""Ring buffer records (``struct retrans_event``, mirrored in :mod:`retransmon.kernel.structs`) decoded.

A record's time is ``bpf_ktime_get_boot_ns()``: nanoseconds since boot on
``CLOCK_BOOTTIME``, which keeps counting through suspend. :class:`BootClock`
turns it into wall-clock time with the offset between ``CLOCK_REALTIME`` and
``CLOCK_BOOTTIME``, read once at start (and again with :meth:`BootClock.resync`).

Decoding is on the hot path of ``trace`` (tens of thousands of records a
second), so the part of a record that is the same for every retransmit of a
flow (addresses, ports, owner, state) is decoded once and cached by its bytes.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from retransmon.attribution.addresses import decode_address
from retransmon.attribution.flows import KIND_NAMES, cause_name
from retransmon.attribution.tcpstates import state_name
from retransmon.kernel.structs import EVENT_RECONCILED, RETRANS_EVENT

_OFF = RETRANS_EVENT.offsets
# The per-record fields (ts_ns, segments, flags, cause, backoff, srtt_us, rto_ms) in one unpack.
PER_RECORD = struct.Struct(f"=Q{_OFF['segments'] - 8}xI{_OFF['flags'] - _OFF['segments'] - 4}xBBBxII")
# Everything else (the flow and its owner) is the same for every record of one flow: the cache key.
_K1, _K2, _K3, _K4, _K5 = _OFF["cgroup"], _OFF["segments"], _OFF["family"], _OFF["flags"], _OFF["comm"]
_CACHE_LIMIT = 65536


class DecodeError(ValueError):
    """A record that is not a retrans_event (wrong size, unknown address family)."""


@dataclass(frozen=True, slots=True)
class EventFlow:
    """What a record says about its flow and owner: the same for all its retransmits."""

    netns: int
    cgroup: int  # cgroup v2 id, 0 when unknown
    pid: int | None  # owner process, None when it could not be known
    comm: str | None
    ip_version: int
    src_ip: str  # the local end: a retransmitted segment is always sent by this host
    src_port: int
    dst_ip: str
    dst_port: int
    state: str
    kind: str


@dataclass(frozen=True, slots=True)
class Event:
    """One ring buffer record. ``key`` identifies the flow part, for callers' caches."""

    boot_ns: int
    segments: int
    reconciled: bool
    flow: EventFlow
    key: bytes
    cause: str = ""
    srtt_us: int = 0  # the socket's smoothed RTT at the retransmit
    rto_ms: int = 0  # its retransmission timeout (0 when the kernel's HZ is unknown)
    backoff: int = 0  # how many times the RTO has doubled


def decode_flow_part(raw: bytes) -> EventFlow:
    """The flow and owner fields of a record (no cache)."""
    if len(raw) < RETRANS_EVENT.size:
        raise DecodeError(f"ring buffer record of {len(raw)} bytes, expected {RETRANS_EVENT.size}")
    f = dict(zip(RETRANS_EVENT.offsets, RETRANS_EVENT.unpack(raw), strict=True))
    family, state, kind, comm = f["family"], f["state"], f["kind"], f["comm"]
    cgroup, netns, pid, lport, rport, laddr, raddr = (
        f[n] for n in ("cgroup", "netns", "pid", "lport", "rport", "laddr", "raddr")
    )
    try:
        version, src = decode_address(family, laddr)
        _, dst = decode_address(family, raddr)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    name = comm.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return EventFlow(
        netns=int(netns),
        cgroup=int(cgroup),
        pid=int(pid) or None,
        comm=name or None,
        ip_version=version,
        src_ip=src,
        src_port=int(lport),
        dst_ip=dst,
        dst_port=int(rport),
        state=state_name(state),
        kind=KIND_NAMES.get(kind, f"kind_{kind}"),
    )


def flow_key_of(raw: bytes) -> bytes:
    """The bytes of a record that identify its flow and owner (all but ts_ns, segments, flags)."""
    return raw[_K1:_K2] + raw[_K3:_K4] + raw[_K5:]


class EventDecoder:
    """Decodes records, caching the flow part by its bytes (bounded)."""

    def __init__(self) -> None:
        self._flows: dict[bytes, EventFlow] = {}

    def decode(self, raw: bytes) -> Event:
        if len(raw) < RETRANS_EVENT.size:
            raise DecodeError(f"ring buffer record of {len(raw)} bytes, expected {RETRANS_EVENT.size}")
        key = flow_key_of(raw)
        flow = self._flows.get(key)
        if flow is None:
            flow = decode_flow_part(raw)
            if len(self._flows) >= _CACHE_LIMIT:
                self._flows.clear()
            self._flows[key] = flow
        boot_ns, segments, flags, cause, backoff, srtt_us, rto_ms = PER_RECORD.unpack_from(raw)
        reconciled = bool(flags & EVENT_RECONCILED)
        return Event(boot_ns, segments, reconciled, flow, key, cause_name(cause), srtt_us, rto_ms, backoff)


def encode_event(  # the inverse of decoding, for tests and benchmarks
    *,
    boot_ns: int = 0,
    cgroup: int = 0,
    netns: int = 0,
    pid: int = 0,
    segments: int = 1,
    family: int = 2,
    state: int = 1,
    kind: int = 0,
    lport: int = 0,
    rport: int = 0,
    flags: int = 0,
    cause: int = 0,
    backoff: int = 0,
    srtt_us: int = 0,
    rto_ms: int = 0,
    comm: bytes = b"",
    laddr: bytes = bytes(16),
    raddr: bytes = bytes(16),
) -> bytes:
    fields = (boot_ns, cgroup, netns, pid, segments, family, state, kind, lport, rport, flags, cause, backoff)
    return RETRANS_EVENT.pack(*fields, 0, srtt_us, rto_ms, comm, laddr, raddr)


# -- time ---------------------------------------------------------------------

ClockNs = Callable[[], int]


def _realtime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_REALTIME)


def _boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class BootClock:
    """Converts CLOCK_BOOTTIME nanoseconds (bpf_ktime_get_boot_ns) to wall-clock nanoseconds.

    The offset is taken between two reads of the real-time clock around one of
    the boot clock, keeping the tightest of a few tries, so it is off by at most
    half the time one clock read takes. Call :meth:`resync` now and then to follow
    steps of the wall clock (NTP, an administrator).
    """

    def __init__(self, realtime_ns: ClockNs = _realtime_ns, boottime_ns: ClockNs = _boottime_ns) -> None:
        self._realtime = realtime_ns
        self._boottime = boottime_ns
        self.offset_ns = 0
        self.resync()

    def resync(self, tries: int = 5) -> None:
        best: tuple[int, int] | None = None  # (window, offset)
        for _ in range(tries):
            before = self._realtime()
            boot = self._boottime()
            after = self._realtime()
            window = after - before
            offset = before + window // 2 - boot
            if best is None or window < best[0]:
                best = (window, offset)
        assert best is not None
        self.offset_ns = best[1]

    def wall_ns(self, boot_ns: int) -> int:
        return boot_ns + self.offset_ns


class Rfc3339:
    """RFC 3339 UTC text with microseconds, e.g. ``2026-12-02T03:50:51.123456Z``.

    The date-and-seconds part is cached: consecutive records share it.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, wall_ns: int) -> str:
        second, rest = divmod(wall_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{rest // 1000:06d}Z"
