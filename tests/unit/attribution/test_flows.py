"""Decoding flow keys and counts as the kernel writes them, and the address helpers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retransmon.attribution.addresses import AF_INET, AF_INET6, decode_address, encode_address
from retransmon.attribution.flows import decode_counts, decode_flow
from retransmon.attribution.tcpstates import TCP_STATES, state_name
from retransmon.kernel.structs import (
    FLOW_COARSE,
    FLOW_COUNTS,
    FLOW_KEY,
    FLOW_META,
    FLOW_PASSIVE,
    KIND_RETRANSMIT,
    KIND_SENT,
    KIND_SYNACK,
    META_KEY,
    ZERO_COUNTS,
    is_meta,
)


def _key(
    *,
    src: str = "10.1.2.3",
    dst: str = "192.0.2.7",
    lport: int = 43210,
    rport: int = 443,
    state: int = 1,
    kind: int = KIND_RETRANSMIT,
    flags: int = 0,
    cause: int = 1,
    netns: int = 4026531840,
    cgroup: int = 0x1234_5678_9ABC,
    family: int | None = None,
) -> bytes:
    fam, laddr = encode_address(src)
    _, raddr = encode_address(dst)
    return FLOW_KEY.pack(
        cgroup,
        netns,
        fam if family is None else family,
        state,
        kind,
        lport,
        rport,
        flags,
        cause,
        b"",
        laddr,
        raddr,
    )


def test_key_and_counts_sizes() -> None:
    assert FLOW_KEY.size == 56
    assert FLOW_COUNTS.size == 16
    assert len(_key()) == 56


def test_decode_ipv4() -> None:
    f = decode_flow(_key())
    assert f.ip_version == 4
    assert (f.src_ip, f.dst_ip) == ("10.1.2.3", "192.0.2.7")
    assert (f.src_port, f.dst_port) == (43210, 443)
    assert f.netns == 4026531840
    assert f.cgroup == 0x1234_5678_9ABC
    assert f.state == "established"
    assert f.kind == "retransmit"
    assert f.passive is False


def test_decode_ipv6_canonical_text() -> None:
    f = decode_flow(_key(src="2001:0db8:0000:0000:0000:0000:0000:0001", dst="fe80::abcd"))
    assert f.ip_version == 6
    assert (f.src_ip, f.dst_ip) == ("2001:db8::1", "fe80::abcd")


def test_decode_ipv4_mapped_ipv6_reports_ipv4() -> None:
    raw = _key(src="::ffff:10.0.0.1", dst="::ffff:198.51.100.20")
    assert FLOW_KEY.unpack(raw)[2] == AF_INET6
    f = decode_flow(raw)
    assert f.ip_version == 4
    assert (f.src_ip, f.dst_ip) == ("10.0.0.1", "198.51.100.20")


def test_decode_ipv4_ignores_bytes_after_the_first_four() -> None:
    laddr = bytes([10, 0, 0, 1]) + b"\xff" * 12
    raddr = bytes([10, 0, 0, 2]) + b"\xee" * 12
    raw = FLOW_KEY.pack(0, 1, AF_INET, 1, KIND_RETRANSMIT, 1, 2, 0, 1, b"", laddr, raddr)
    f = decode_flow(raw)
    assert (f.src_ip, f.dst_ip) == ("10.0.0.1", "10.0.0.2")


def test_ports_are_host_byte_order() -> None:
    f = decode_flow(_key(lport=0x1F90, rport=0x0050))
    assert (f.src_port, f.dst_port) == (8080, 80)
    f = decode_flow(_key(lport=65535, rport=1))
    assert (f.src_port, f.dst_port) == (65535, 1)


@pytest.mark.parametrize("src", ["10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1"])
def test_coarse_flag_drops_addresses_and_ports(src: str) -> None:
    f = decode_flow(_key(src=src, dst=src, lport=0, rport=0, flags=FLOW_COARSE))
    assert (f.src_ip, f.dst_ip, f.src_port, f.dst_port) == (None, None, None, None)
    assert f.state == "established"
    assert f.kind == "retransmit"
    assert f.netns == 4026531840


def test_coarse_ipv4_keeps_ip_version() -> None:
    # The kernel zeroes addresses of coarse keys, family stays.
    raw = FLOW_KEY.pack(5, 6, AF_INET, 1, KIND_RETRANSMIT, 0, 0, FLOW_COARSE, 1, b"", bytes(16), bytes(16))
    assert decode_flow(raw).ip_version == 4
    raw6 = FLOW_KEY.pack(5, 6, AF_INET6, 1, KIND_RETRANSMIT, 0, 0, FLOW_COARSE, 1, b"", bytes(16), bytes(16))
    assert decode_flow(raw6).ip_version == 6


@pytest.mark.parametrize(
    ("flags", "passive", "coarse"),
    [
        (0, False, False),
        (FLOW_PASSIVE, True, False),
        (FLOW_COARSE, False, True),
        (FLOW_COARSE | FLOW_PASSIVE, True, True),
    ],
)
def test_flags(flags: int, passive: bool, coarse: bool) -> None:
    f = decode_flow(_key(flags=flags))
    assert f.passive is passive
    assert (f.src_ip is None) is coarse
    assert (f.src_port is None) is coarse


@pytest.mark.parametrize(
    ("state", "name"),
    [
        (1, "established"),
        (2, "syn_sent"),
        (3, "syn_recv"),
        (4, "fin_wait1"),
        (5, "fin_wait2"),
        (6, "time_wait"),
        (7, "close"),
        (8, "close_wait"),
        (9, "last_ack"),
        (10, "listen"),
        (11, "closing"),
        (12, "new_syn_recv"),
        (13, "bound_inactive"),
        (0, "state_0"),
        (14, "state_14"),
        (255, "state_255"),
    ],
)
def test_state_names(state: int, name: str) -> None:
    assert state_name(state) == name
    assert decode_flow(_key(state=state)).state == name


def test_state_names_are_lower_case_identifiers() -> None:
    for name in TCP_STATES.values():
        assert name == name.lower()
        assert name.isidentifier()


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        (KIND_RETRANSMIT, "retransmit"),
        (KIND_SYNACK, "synack"),
        (KIND_SENT, "sent"),
        (3, "kind_3"),
        (255, "kind_255"),
    ],
)
def test_kind_names(kind: int, name: str) -> None:
    assert decode_flow(_key(kind=kind)).kind == name


def test_sent_flows_have_no_state() -> None:
    assert decode_flow(_key(kind=KIND_SENT, state=1)).state == ""


def test_synack_keeps_state() -> None:
    assert decode_flow(_key(kind=KIND_SYNACK, state=12)).state == "new_syn_recv"


def test_unknown_family_raises() -> None:
    with pytest.raises(ValueError, match="family"):
        decode_flow(_key(family=0))


def test_meta_key() -> None:
    assert len(META_KEY) == FLOW_KEY.size
    assert is_meta(META_KEY)
    assert META_KEY[FLOW_KEY.offsets["flags"]] == FLOW_META
    assert not is_meta(_key())
    assert not is_meta(_key(flags=FLOW_COARSE | FLOW_PASSIVE))
    assert is_meta(_key(flags=FLOW_META | FLOW_COARSE))


@pytest.mark.parametrize(
    ("events", "segments"), [(0, 0), (1, 1), (3, 45), (2**64 - 1, 2**63), (7, 2**32 + 5)]
)
def test_decode_counts(events: int, segments: int) -> None:
    assert decode_counts(FLOW_COUNTS.pack(events, segments)) == (events, segments)


def test_decode_counts_is_little_endian_u64_pairs() -> None:
    raw = (3).to_bytes(8, "little") + (45).to_bytes(8, "little")
    assert decode_counts(raw) == (3, 45)
    assert decode_counts(ZERO_COUNTS) == (0, 0)


# ---------------------------------------------------------------------------
# addresses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "family", "raw"),
    [
        ("10.0.0.1", AF_INET, bytes([10, 0, 0, 1]) + bytes(12)),
        ("::1", AF_INET6, bytes(15) + b"\x01"),
        ("::ffff:1.2.3.4", AF_INET6, bytes(10) + b"\xff\xff" + bytes([1, 2, 3, 4])),
    ],
)
def test_encode_address(text: str, family: int, raw: bytes) -> None:
    assert encode_address(text) == (family, raw)


def test_decode_address_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown address family 7"):
        decode_address(7, bytes(16))


def test_encode_address_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        encode_address("not an address")


@given(st.ip_addresses(v=4))
def test_ipv4_round_trip(addr: ipaddress.IPv4Address) -> None:
    family, raw = encode_address(str(addr))
    assert family == AF_INET
    assert len(raw) == 16
    assert decode_address(family, raw) == (4, str(addr))


@given(st.ip_addresses(v=6))
def test_ipv6_round_trip(addr: ipaddress.IPv6Address) -> None:
    family, raw = encode_address(str(addr))
    assert family == AF_INET6
    assert len(raw) == 16
    mapped = addr.ipv4_mapped
    if mapped is not None:
        assert decode_address(family, raw) == (4, str(mapped))
    else:
        assert decode_address(family, raw) == (6, addr.compressed)


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_decodes_like_ipv4(addr: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + addr.packed)
    assert decode_address(*encode_address(str(mapped))) == decode_address(*encode_address(str(addr)))


@given(
    st.ip_addresses(),
    st.ip_addresses(),
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
    st.booleans(),
)
def test_decode_flow_property(
    src: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ports: tuple[int, int],
    ids: tuple[int, int],
    passive: bool,
) -> None:
    lport, rport = ports
    netns, cgroup = ids
    # One key has one family: express both ends in the source's family.
    if src.version == 4 and dst.version == 6:
        dst = ipaddress.IPv4Address(dst.packed[-4:])
    elif src.version == 6 and dst.version == 4:
        dst = ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + dst.packed)
    raw = _key(
        src=str(src),
        dst=str(dst),
        lport=lport,
        rport=rport,
        netns=netns,
        cgroup=cgroup,
        flags=FLOW_PASSIVE if passive else 0,
    )
    f = decode_flow(raw)
    assert (f.src_port, f.dst_port, f.netns, f.cgroup, f.passive) == (lport, rport, netns, cgroup, passive)
    assert (f.ip_version, f.src_ip) == decode_address(*encode_address(str(src)))
    assert f.dst_ip == decode_address(*encode_address(str(dst)))[1]
