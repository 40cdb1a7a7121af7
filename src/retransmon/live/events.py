"""Python mirrors of ``struct retrans_event`` (one ring buffer record) and ``struct runtime_settings``.

Records are decoded by :mod:`retransmon.live.decode`; their time by :mod:`retransmon.live.clock`.
"""

from __future__ import annotations

from retransmon.kernel.layout import Field, Layout

EVENT_RECONCILED = 0x1  # segments whose own event was skipped, found at the next event or close

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
        Field("pad", "3s"),
        Field("comm", "16s"),
        Field("laddr", "16s"),
        Field("raddr", "16s"),
    ],
)

# The one-entry `settings` array: events_wanted is set while a reader is attached.
RUNTIME_SETTINGS = Layout("runtime_settings", [Field("events_wanted", "I"), Field("pad", "I")])


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
    comm: bytes = b"",
    laddr: bytes = bytes(16),
    raddr: bytes = bytes(16),
) -> bytes:
    fields = (boot_ns, cgroup, netns, pid, segments, family, state, kind, lport, rport, flags)
    return RETRANS_EVENT.pack(*fields, b"", comm, laddr, raddr)
