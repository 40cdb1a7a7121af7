"""Python mirrors of ``struct retrans_event`` (one ring buffer record) and ``struct runtime_settings``.

Records are decoded (and encoded, for tests) by :mod:`retransmon.live.decode`; their time by
:mod:`retransmon.live.clock`.
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
