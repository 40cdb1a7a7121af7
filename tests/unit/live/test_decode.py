"""Ring buffer records (struct retrans_event) decode to what the kernel wrote; the decoder's one cache.

The byte cases are written out field by field here, independently of the Layout in events.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from retransmon.kernel.structs import RETRANS_EVENT
from retransmon.live.decode import (
    DecodeError,
    Decoder,
    EventFlow,
    decode_event,
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
    event = decode_event(case.raw)
    assert (event.boot_ns, event.segments, event.reconciled, event.flow) == (
        case.boot_ns,
        case.segments,
        case.reconciled,
        case.flow,
    )
    assert decode_flow_part(case.raw) == case.flow
    assert Decoder(lambda flow: flow).decode(case.raw) == (
        case.flow,
        case.boot_ns,
        case.segments,
        case.reconciled,
        (1, 2, 3000, 200),
    )


def test_record_size_is_the_layouts() -> None:
    assert RETRANS_EVENT.size == 96


@pytest.mark.parametrize("size", [0, 40, 95])
def test_short_record_is_a_decode_error_and_not_cached(size: int) -> None:
    decoder = Decoder(lambda flow: flow)
    for _ in range(2):
        with pytest.raises(DecodeError, match=f"record of {size} bytes, expected 96"):
            decoder.decode(CASES[0].raw[:size])
    assert len(decoder) == 0
    with pytest.raises(DecodeError, match=f"record of {size} bytes, expected 96"):
        decode_event(CASES[0].raw[:size])


def test_unknown_family_is_a_decode_error() -> None:
    raw = record(1, 0, 1, 0, 1, 17, 1, 0, 1, 2, 0, b"", V4_LOCAL, V4_REMOTE)
    with pytest.raises(DecodeError, match="unknown address family 17"):
        Decoder(lambda flow: flow).decode(raw)


def test_encode_event_is_the_inverse() -> None:
    raw = encode_event(
        boot_ns=10**12, cgroup=77, netns=4026531833, pid=4242, segments=3, family=2, state=1, kind=0,
        lport=40000, rport=5001, comm=b"curl", laddr=V4_LOCAL + bytes(12), raddr=V4_REMOTE + bytes(12),
        cause=1, backoff=2, srtt_us=3000, rto_ms=200,
    )  # fmt: skip
    assert raw == CASES[0].raw


def test_cause_and_timing_are_per_record() -> None:
    decoder = Decoder(lambda flow: flow)
    fast = decoder.decode(record(1, 5, 6, 7, 2, 2, 1, 0, 10, 20, 0, b"x", V4_LOCAL, V4_REMOTE))
    rto = decoder.decode(
        record(2, 5, 6, 7, 1, 2, 1, 0, 10, 20, 0, b"x", V4_LOCAL, V4_REMOTE, (3, 4, 90, 3200))
    )
    assert fast is not None and rto is not None
    assert fast[4] == (1, 2, 3000, 200) and rto[4] == (3, 4, 90, 3200)
    assert rto[0] is fast[0]  # one flow, decoded once
    event = decode_event(
        record(2, 5, 6, 7, 1, 2, 1, 0, 10, 20, 0, b"x", V4_LOCAL, V4_REMOTE, (3, 4, 90, 3200))
    )
    assert (event.cause, event.backoff, event.srtt_us, event.rto_ms) == ("timeout", 4, 90, 3200)


class Calls:
    """A view and a filter that record which flows they were asked about."""

    def __init__(self, keep_port: int | None = None) -> None:
        self.viewed: list[int] = []
        self.kept: list[int] = []
        self.keep_port = keep_port

    def view(self, flow: EventFlow) -> tuple[str, int]:
        self.viewed.append(flow.src_port)
        return flow.state, flow.src_port

    def keep(self, flow: EventFlow) -> bool:
        self.kept.append(flow.src_port)
        return self.keep_port is None or flow.src_port == self.keep_port


def flow_record(lport: int, ts: int = 1, segments: int = 2, flags: int = 0, state: int = 1) -> bytes:
    return record(ts, 5, 6, 7, segments, 2, state, 0, lport, 20, flags, b"x", V4_LOCAL, V4_REMOTE)


def test_each_flow_is_decoded_filtered_and_viewed_once() -> None:
    calls = Calls()
    decoder = Decoder(calls.view, calls.keep)
    a = decoder.decode(flow_record(10, ts=1, segments=2))
    b = decoder.decode(flow_record(10, ts=99, segments=30, flags=1))
    c = decoder.decode(flow_record(10, ts=5, state=4))  # another state: another cache entry
    assert a == (("established", 10), 1, 2, False, (1, 2, 3000, 200))
    assert b == (("established", 10), 99, 30, True, (1, 2, 3000, 200))  # per-record fields from each record
    assert c is not None and c[0] == ("fin_wait1", 10)
    assert a is not None and b is not None and a[0] is b[0]
    assert calls.viewed == calls.kept == [10, 10]
    assert len(decoder) == 2


def test_a_filtered_flow_is_cached_as_left_out_and_never_viewed() -> None:
    calls = Calls(keep_port=10)
    decoder = Decoder(calls.view, calls.keep)
    results = [decoder.decode(flow_record(port)) for port in (10, 11, 11, 10, 11)]
    assert [r is None for r in results] == [False, True, True, False, True]
    assert calls.kept == [10, 11]
    assert calls.viewed == [10]


def test_the_cache_is_bounded() -> None:
    calls = Calls()
    decoder = Decoder(calls.view, calls.keep, limit=2)
    for port in (1, 2, 3, 1):
        decoder.decode(flow_record(port))
        assert len(decoder) <= 2
    # The third flow found the cache full and started it over: flow 1 was decoded again.
    assert calls.viewed == [1, 2, 3, 1]
