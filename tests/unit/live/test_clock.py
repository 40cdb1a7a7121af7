"""A record's boot-clock time to wall-clock time and RFC 3339 text."""

from __future__ import annotations

import pytest

from retransmon.live.clock import BootClock, Rfc3339


class FakeClocks:
    """A real-time and a boot clock; each read advances time by `step` ns."""

    def __init__(self, realtime: int, boottime: int, steps: list[int]) -> None:
        self.now = 0
        self.realtime0 = realtime
        self.boottime0 = boottime
        self.steps = list(steps)

    def _tick(self) -> int:
        self.now += self.steps.pop(0) if self.steps else 10
        return self.now

    def realtime(self) -> int:
        return self.realtime0 + self._tick()

    def boottime(self) -> int:
        return self.boottime0 + self._tick()


def test_boot_clock_offset_from_bracketing_reads() -> None:
    # Wall clock is 1,700,000,000 s ahead of the boot clock; reads take 10 ns each.
    clocks = FakeClocks(1_700_000_000 * 10**9, 0, [])
    clock = BootClock(clocks.realtime, clocks.boottime)
    # before = R0+10, boot = B0+20, after = R0+30: midpoint R0+20 pairs with B0+20 exactly.
    assert clock.offset_ns == 1_700_000_000 * 10**9
    assert clock.wall_ns(5 * 10**9) == 1_700_000_005 * 10**9


def test_boot_clock_keeps_the_tightest_bracket() -> None:
    # The first try is interrupted (a 1 ms gap between boot read and the second real-time read).
    steps = [10, 10, 1_000_000] + [10] * 12
    clocks = FakeClocks(10**18, 10**9, steps)
    clock = BootClock(clocks.realtime, clocks.boottime)
    assert clock.offset_ns == 10**18 - 10**9


def test_boot_clock_against_the_real_clocks() -> None:
    import time

    clock = BootClock()
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert abs(clock.wall_ns(boot) - time.time_ns()) < 50_000_000  # 50 ms


@pytest.mark.parametrize(
    ("wall_ns", "text"),
    [
        (0, "1970-01-01T00:00:00.000000Z"),
        (1_796_183_451_123_456_789, "2026-12-02T03:50:51.123456Z"),
        (1_796_183_451_000_000_999, "2026-12-02T03:50:51.000000Z"),
        (1_796_183_451_999_999_999, "2026-12-02T03:50:51.999999Z"),
        (951_782_400 * 10**9, "2000-02-29T00:00:00.000000Z"),
    ],
)
def test_rfc3339(wall_ns: int, text: str) -> None:
    assert Rfc3339().format(wall_ns) == text


def test_rfc3339_cache_follows_the_second() -> None:
    fmt = Rfc3339()
    assert fmt.format(1_796_183_451_500_000_000) == "2026-12-02T03:50:51.500000Z"
    assert fmt.format(1_796_183_452_000_001_000) == "2026-12-02T03:50:52.000001Z"
    assert fmt.format(1_796_183_451_000_000_000) == "2026-12-02T03:50:51.000000Z"
