"""Flow table entries (``struct flow_key`` / ``struct flow_counts``, mirrored in
:mod:`retransmon.kernel.structs`) decoded into :class:`Flow` and counts."""

from __future__ import annotations

from dataclasses import dataclass

from retransmon.attribution.addresses import decode_address
from retransmon.attribution.tcpstates import state_name
from retransmon.kernel.structs import (
    CAUSE_FAST,
    CAUSE_SLOW_START,
    CAUSE_SYN,
    CAUSE_TAIL_LOSS_PROBE,
    CAUSE_TIMEOUT,
    FLOW_COARSE,
    FLOW_COUNTS,
    FLOW_KEY,
    FLOW_PASSIVE,
    KIND_RETRANSMIT,
    KIND_SENT,
    KIND_SYNACK,
)

KIND_NAMES = {KIND_RETRANSMIT: "retransmit", KIND_SYNACK: "synack", KIND_SENT: "sent"}
CAUSE_NAMES = {
    CAUSE_FAST: "fast",
    CAUSE_SLOW_START: "slow_start",
    CAUSE_TIMEOUT: "timeout",
    CAUSE_TAIL_LOSS_PROBE: "tail_loss_probe",
    CAUSE_SYN: "syn",
}
# Each cause's TcpExt counter (/proc/net/netstat), which it equals per namespace.
CAUSE_COUNTERS = {"fast": "TCPFastRetrans", "slow_start": "TCPSlowStartRetrans", "syn": "TCPSynRetrans"}
# Where segments go whose cause cannot be known (a run the kernel skipped, found later).
UNKNOWN_CAUSE = "timeout"


def cause_name(cause: int) -> str:
    return CAUSE_NAMES.get(cause, f"cause_{cause}") if cause else ""


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow as labels see it. Address and port fields are None when the
    kernel folded the flow into a coarse key because its table was full."""

    netns: int
    cgroup: int
    ip_version: int
    src_ip: str | None
    dst_ip: str | None
    src_port: int | None
    dst_port: int | None
    state: str
    kind: str
    passive: bool
    cause: str = ""  # empty for segments sent


@dataclass(slots=True)
class Counts:
    events: int = 0
    segments: int = 0

    def add(self, events: int, segments: int) -> None:
        self.events += events
        self.segments += segments


def decode_flow(raw_key: bytes) -> Flow:
    (cgroup, netns, family, state, kind, lport, rport, flags, cause, _pad, laddr, raddr) = FLOW_KEY.unpack(
        raw_key
    )
    version, src = decode_address(family, laddr)
    _, dst = decode_address(family, raddr)
    coarse = bool(flags & FLOW_COARSE)
    return Flow(
        netns=netns,
        cgroup=cgroup,
        ip_version=version,
        src_ip=None if coarse else src,
        dst_ip=None if coarse else dst,
        src_port=None if coarse else lport,
        dst_port=None if coarse else rport,
        state=state_name(state) if kind != KIND_SENT else "",
        kind=KIND_NAMES.get(kind, f"kind_{kind}"),
        passive=bool(flags & FLOW_PASSIVE),
        cause=cause_name(cause) if kind != KIND_SENT else "",
    )


def decode_counts(raw_value: bytes) -> tuple[int, int]:
    events, segments = FLOW_COUNTS.unpack(raw_value)
    return int(events), int(segments)
