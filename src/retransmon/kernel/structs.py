"""Every C struct and constant of bpf/retransmon.h that user space reads or writes, mirrored once.

Each :class:`~retransmon.kernel.layout.Layout` here is checked field by field
against the BTF of the compiled object (``tests/unit/kernel/test_layout_btf.py``),
so the two sides cannot drift. Decoding bytes into flows and events is the job
of :mod:`retransmon.attribution.flows` and :mod:`retransmon.live.decode`; this
module only says where the bytes are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from retransmon.kernel.layout import Field, Layout

# flow_key.kind (RM_KIND_*)
KIND_RETRANSMIT = 0  # data, SYN or FIN segment retransmitted
KIND_SYNACK = 1  # SYN-ACK retransmitted for a request socket
KIND_SENT = 2  # segments sent (the rate's denominator)

# flow_key.flags (RM_FLOW_*)
FLOW_COARSE = 0x1  # the table was full: addresses and ports zeroed
FLOW_PASSIVE = 0x2  # this host accepted the connection: lport is the service
FLOW_META = 0x80  # the per-table bookkeeping entry, not a flow

# flow_key.cause, retrans_event.cause (RM_CAUSE_*): why; 0 for segments sent
CAUSE_NONE = 0
CAUSE_FAST = 1  # retransmit queue outside Loss: TcpExt TCPFastRetrans
CAUSE_SLOW_START = 2  # retransmit queue in Loss: TCPSlowStartRetrans
CAUSE_TIMEOUT = 3  # the RTO timer's own; also refused sends and unknown causes
CAUSE_TAIL_LOSS_PROBE = 4
CAUSE_SYN = 5  # SYN and SYN-ACK: TCPSynRetrans

# retrans_event.flags (RM_EVENT_*)
EVENT_RECONCILED = 0x1  # segments whose own event was skipped, found at the next event or close

FLOW_KEY = Layout(
    "flow_key",
    [
        Field("cgroup", "Q"),
        Field("netns", "I"),
        Field("family", "H"),
        Field("state", "B"),
        Field("kind", "B"),
        Field("lport", "H"),
        Field("rport", "H"),
        Field("flags", "B"),
        Field("cause", "B"),
        Field("pad", "2s"),
        Field("laddr", "16s"),
        Field("raddr", "16s"),
    ],
)

FLOW_COUNTS = Layout("flow_counts", [Field("events", "Q"), Field("segments", "Q")])

LISTEN_KEY = Layout("listen_key", [Field("netns", "I"), Field("port", "H"), Field("pad", "H")])

# One ring buffer record (bpf/retransmon.h: struct retrans_event).
RETRANS_EVENT = Layout(
    "retrans_event",
    [
        Field("ts_ns", "Q"),
        Field("cgroup", "Q"),
        Field("netns", "I"),
        Field("pid", "I"),
        Field("segments", "I"),
        Field("family", "H"),
        Field("state", "B"),
        Field("kind", "B"),
        Field("lport", "H"),
        Field("rport", "H"),
        Field("flags", "B"),
        Field("cause", "B"),
        Field("backoff", "B"),
        Field("pad", "B"),
        Field("srtt_us", "I"),
        Field("rto_ms", "I"),
        Field("comm", "16s"),
        Field("laddr", "16s"),
        Field("raddr", "16s"),
    ],
)

# The one-entry `settings` array: events_wanted is set while a reader is attached.
RUNTIME_SETTINGS = Layout("runtime_settings", [Field("events_wanted", "I"), Field("pad", "I")])


@dataclass(frozen=True)
class Losses:
    """struct loss_counts, summed over CPUs: what the kernel saw but could not record, since load."""

    events_lost: int = 0  # ring buffer full (trace and top)
    unaccounted_events: int = 0  # retransmit events with no room in the flow table, not even a coarse key
    unaccounted_segments: int = 0  # their segments, and segments sent with no room
    untracked_sockets: int = 0  # socket table full: their segments sent are not counted
    unclassified_segments: int = 0  # cause unknown (a skipped run's, caught up or at close): `timeout`


# The per-CPU `losses` array's value: every field a __u64, in Losses' order (one edit adds a counter).
LOSS_COUNTS = Layout("loss_counts", [Field(f.name, "Q") for f in fields(Losses)])

# The key of every one-entry array (flow_tables, settings, losses).
ZERO_U32 = (0).to_bytes(4, "little")
# The bookkeeping entry each flow table holds: its `events` count the table's flows.
META_KEY = FLOW_KEY.pack(0, 0, 0, 0, 0, 0, 0, FLOW_META, 0, b"", b"", b"")
ZERO_COUNTS = FLOW_COUNTS.pack(0, 0)


def is_meta(raw_key: bytes) -> bool:
    """Whether a flow table key is the bookkeeping entry rather than a flow."""
    return bool(raw_key[FLOW_KEY.offsets["flags"]] & FLOW_META)
