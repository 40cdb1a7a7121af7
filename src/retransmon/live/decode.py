"""Ring buffer records to flows and counts: the one decoder `trace` and `top` share.

Decoding is on the hot path of ``trace`` (tens of thousands of records a
second). The part of a record that is the same for every retransmit of a flow
(addresses, ports, owner, state) is decoded once per flow; :class:`Decoder`
keeps it, together with the caller's filter verdict and whatever the caller
makes of the flow (trace: its formatted columns), in one bounded cache keyed
by those bytes. Only the time, the segments and the flags are read per record.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from retransmon.attribution.addresses import decode_address
from retransmon.attribution.flows import CAUSE_NAMES, KIND_NAMES, cause_name
from retransmon.attribution.tcpstates import state_name
from retransmon.kernel.structs import EVENT_RECONCILED, RETRANS_EVENT

_OFF = RETRANS_EVENT.offsets
# The per-record fields (ts_ns, segments, flags, cause, backoff, srtt_us, rto_ms) in one unpack.
PER_RECORD = struct.Struct(f"=Q{_OFF['segments'] - 8}xI{_OFF['flags'] - _OFF['segments'] - 4}xBBBxII")
# What a record says about the socket at its retransmit: (cause code, backoff, srtt_us, rto_ms).
Timing = tuple[int, int, int, int]
NO_TIMING: Timing = (0, 0, 0, 0)
CAUSE_CODES = {name: code for code, name in CAUSE_NAMES.items()}
# Everything else (the flow and its owner) is the same for every record of one flow: the cache key.
_K1, _K2, _K3, _K4, _K5 = _OFF["cgroup"], _OFF["segments"], _OFF["family"], _OFF["flags"], _OFF["comm"]
CACHE_LIMIT = 65536  # flows remembered; past it the cache starts over

T = TypeVar("T")


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
    """One ring buffer record, decoded whole."""

    boot_ns: int
    segments: int
    reconciled: bool
    flow: EventFlow
    cause: str = ""
    srtt_us: int = 0  # the socket's smoothed RTT at the retransmit
    rto_ms: int = 0  # its retransmission timeout (0 when the kernel's HZ is unknown)
    backoff: int = 0  # how many times the RTO has doubled

    @property
    def timing(self) -> Timing:
        return (CAUSE_CODES.get(self.cause, 0), self.backoff, self.srtt_us, self.rto_ms)


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


def decode_event(raw: bytes) -> Event:
    """One record, decoded whole and not cached (tests, one-off reads)."""
    flow = decode_flow_part(raw)
    boot_ns, segments, flags, cause, backoff, srtt_us, rto_ms = PER_RECORD.unpack_from(raw)
    reconciled = bool(flags & EVENT_RECONCILED)
    return Event(boot_ns, segments, reconciled, flow, cause_name(cause), srtt_us, rto_ms, backoff)


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


def _keep_all(_flow: EventFlow) -> bool:
    return True


Decoded = tuple[T, int, int, bool, Timing]  # (the flow's view, boot_ns, segments, reconciled, timing)


class Decoder(Generic[T]):
    """Decodes records; each flow is decoded, filtered and viewed once, then found by its bytes.

    *view* turns a flow into what the caller keeps of it (e.g. its formatted
    columns); *keep* is the filter. Both run once per flow, not per record.
    """

    def __init__(
        self,
        view: Callable[[EventFlow], T],
        keep: Callable[[EventFlow], bool] = _keep_all,
        limit: int = CACHE_LIMIT,
    ) -> None:
        self._view = view
        self._keep = keep
        self._limit = limit
        self._flows: dict[bytes, T | None] = {}  # None: the filter leaves this flow out

    def decode(self, raw: bytes) -> Decoded[T] | None:
        """The record's flow view, time, segments and reconciled mark; None if the filter leaves it out.

        Raises DecodeError for a record that is no retrans_event.
        """
        key = raw[_K1:_K2] + raw[_K3:_K4] + raw[_K5:]  # flow_key_of, inlined: once per record
        flows = self._flows
        view = flows[key] if key in flows else self._learn(raw, key)
        if view is None:
            return None
        boot_ns, segments, flags, cause, backoff, srtt_us, rto_ms = PER_RECORD.unpack_from(raw)
        return view, boot_ns, segments, bool(flags & EVENT_RECONCILED), (cause, backoff, srtt_us, rto_ms)

    def _learn(self, raw: bytes, key: bytes) -> T | None:
        flow = decode_flow_part(raw)  # a short record raises here, before it is cached
        view = self._view(flow) if self._keep(flow) else None
        if len(self._flows) >= self._limit:
            self._flows.clear()
        self._flows[key] = view
        return view

    def __len__(self) -> int:
        return len(self._flows)
