"""Ring buffer records (struct retrans_event) decode to what the kernel wrote, and its clock to wall time.

The byte cases are written out field by field here, independently of the Layout in events.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from retransmon.kernel.structs import RETRANS_EVENT
from retransmon.live.events import (
    BootClock,
    DecodeError,
    EventDecoder,
    EventFlow,
    Rfc3339,
    decode_flow_part,
    encode_event,
)


def u(n: int, size: int) -> bytes:
    return n.to_bytes(size, "little")


def record(  # noqa: PLR0917 (one argument per field, in struct order)
    ts: int,
    cgroup: int,
    netns: int,
    pid: int,
    segments: int,
    family: int,
    state: int,
    kind: int,
    lport: int,
    rport: int,
    flags: int,
    comm: bytes,
    laddr: bytes,
    raddr: bytes,
    timing: tuple[int, int, int, int] = (1, 2, 3000, 200),  # cause, backoff, srtt_us, rto_ms
) -> bytes:
    """A record as the kernel lays it out (bpf/retransmon.h), little-endian."""
    cause, backoff, srtt_us, rto_ms = timing
    raw = (
        u(ts, 8) + u(cgroup, 8) + u(netns, 4) + u(pid, 4) + u(segments, 4) + u(family, 2)
        + u(state, 1) + u(kind, 1) + u(lport, 2) + u(rport, 2) + u(flags, 1)
        + u(cause, 1) + u(backoff, 1) + bytes(1) + u(srtt_us, 4) + u(rto_ms, 4)
        + comm.ljust(16, b"\0") + laddr.ljust(16, b"\0") + raddr.ljust(16, b"\0")
    )  # fmt: skip
    assert len(raw) == 96
    return raw


V4_LOCAL = ipaddress.IPv4Address("198.18.0.1").packed
V4_REMOTE = ipaddress.IPv4Address("198.18.0.2").packed
V6_LOCAL = ipaddress.IPv6Address("2001:db8::1").packed
V6_REMOTE = ipaddress.IPv6Address("2001:db8::2").packed
MAPPED_REMOTE = ipaddress.IPv6Address("::ffff:198.18.0.2").packed
MAPPED_LOCAL = ipaddress.IPv6Address("::ffff:198.18.0.1").packed


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    boot_ns: int
    segments: int
    reconciled: bool
    flow: EventFlow


CASES = [
    Case(
        "ipv4 established retransmit with owner",
        record(10**12, 77, 4026531833, 4242, 3, 2, 1, 0, 40000, 5001, 0, b"curl", V4_LOCAL, V4_REMOTE),
        10**12,
        3,
        False,
        EventFlow(
            4026531833,
            77,
            4242,
            "curl",
            4,
            "198.18.0.1",
            40000,
            "198.18.0.2",
            5001,
            "established",
            "retransmit",
        ),
    ),
    Case(
        "ipv6 fin_wait1, segments found at close",
        record(5, 0, 1, 0, 45, 10, 4, 0, 443, 51000, 1, b"", V6_LOCAL, V6_REMOTE),
        5,
        45,
        True,
        EventFlow(1, 0, None, None, 6, "2001:db8::1", 443, "2001:db8::2", 51000, "fin_wait1", "retransmit"),
    ),
    Case(
        "synack of a request socket",
        record(7, 9, 2, 100, 1, 2, 3, 1, 5001, 33000, 0, b"nginx", V4_REMOTE, V4_LOCAL),
        7,
        1,
        False,
        EventFlow(2, 9, 100, "nginx", 4, "198.18.0.2", 5001, "198.18.0.1", 33000, "syn_recv", "synack"),
    ),
    Case(
        "ipv4-mapped ipv6 reads as ipv4",
        record(1, 0, 3, 0, 2, 10, 1, 0, 1, 2, 0, b"", MAPPED_LOCAL, MAPPED_REMOTE),
        1,
        2,
        False,
        EventFlow(3, 0, None, None, 4, "198.18.0.1", 1, "198.18.0.2", 2, "established", "retransmit"),
    ),
    Case(
        "full 16-byte comm, unknown state and kind, high ports",
        record(
            2**64 - 1,
            2**64 - 1,
            2**32 - 1,
            2**32 - 1,
            2**32 - 1,
            2,
            99,
            7,
            65535,
            65535,
            0x81,
            b"0123456789abcdef",
            V4_LOCAL,
            V4_REMOTE,
        ),
        2**64 - 1,
        2**32 - 1,
        True,
        EventFlow(
            2**32 - 1,
            2**64 - 1,
            2**32 - 1,
            "0123456789abcdef",
            4,
            "198.18.0.1",
            65535,
            "198.18.0.2",
            65535,
            "state_99",
            "kind_7",
        ),
    ),
    Case(
        "comm that is not utf-8",
        record(3, 0, 4, 12, 1, 2, 8, 0, 22, 60000, 0, b"caf\xe9\0junk", V4_LOCAL, V4_REMOTE),
        3,
        1,
        False,
        EventFlow(
            4, 0, 12, "caf\ufffd", 4, "198.18.0.1", 22, "198.18.0.2", 60000, "close_wait", "retransmit"
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decode(case: Case) -> None:
    event = EventDecoder().decode(case.raw)
    assert event.boot_ns == case.boot_ns
    assert event.segments == case.segments
    assert event.reconciled == case.reconciled
    assert event.flow == case.flow
    assert decode_flow_part(case.raw) == case.flow


def test_record_size_is_the_layouts() -> None:
    assert RETRANS_EVENT.size == 96


@pytest.mark.parametrize("size", [0, 40, 95])
def test_short_record_is_a_decode_error(size: int) -> None:
    with pytest.raises(DecodeError, match=f"record of {size} bytes, expected 96"):
        EventDecoder().decode(CASES[0].raw[:size])


def test_unknown_family_is_a_decode_error() -> None:
    raw = record(1, 0, 1, 0, 1, 17, 1, 0, 1, 2, 0, b"", V4_LOCAL, V4_REMOTE)
    with pytest.raises(DecodeError, match="unknown address family 17"):
        EventDecoder().decode(raw)


def test_encode_event_is_the_inverse() -> None:
    raw = encode_event(
        boot_ns=10**12, cgroup=77, netns=4026531833, pid=4242, segments=3, family=2, state=1, kind=0,
        lport=40000, rport=5001, comm=b"curl", laddr=V4_LOCAL + bytes(12), raddr=V4_REMOTE + bytes(12),
        cause=1, backoff=2, srtt_us=3000, rto_ms=200,
    )  # fmt: skip
    assert raw == CASES[0].raw


def test_cause_and_timing_are_per_record() -> None:
    decoder = EventDecoder()
    fast = decoder.decode(record(1, 5, 6, 7, 2, 2, 1, 0, 10, 20, 0, b"x", V4_LOCAL, V4_REMOTE))
    rto = decoder.decode(
        record(2, 5, 6, 7, 1, 2, 1, 0, 10, 20, 0, b"x", V4_LOCAL, V4_REMOTE, (3, 4, 90, 3200))
    )
    assert (fast.cause, fast.backoff, fast.srtt_us, fast.rto_ms) == ("fast", 2, 3000, 200)
    assert (rto.cause, rto.backoff, rto.srtt_us, rto.rto_ms) == ("timeout", 4, 90, 3200)
    assert rto.flow is fast.flow


def test_records_of_one_flow_share_its_decoded_part() -> None:
    decoder = EventDecoder()
    a = decoder.decode(record(1, 5, 6, 7, 2, 2, 1, 0, 10, 20, 0, b"x", V4_LOCAL, V4_REMOTE))
    b = decoder.decode(record(99, 5, 6, 7, 30, 2, 1, 0, 10, 20, 1, b"x", V4_LOCAL, V4_REMOTE))
    c = decoder.decode(record(99, 5, 6, 7, 30, 2, 4, 0, 10, 20, 1, b"x", V4_LOCAL, V4_REMOTE))
    assert a.flow is b.flow and a.key == b.key
    assert (b.boot_ns, b.segments, b.reconciled) == (99, 30, True)
    assert c.flow is not a.flow and c.flow.state == "fin_wait1"


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
