"""The time of a ring buffer record, as wall-clock time and as RFC 3339 text.

A record's time is ``bpf_ktime_get_boot_ns()``: nanoseconds since boot on
``CLOCK_BOOTTIME``, which keeps counting through suspend. :class:`BootClock`
turns it into wall-clock time with the offset between ``CLOCK_REALTIME`` and
``CLOCK_BOOTTIME``, read once at start (and again with :meth:`BootClock.resync`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

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
