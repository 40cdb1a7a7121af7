"""Property tests: any bytes the kernel could hand over decode, and project onto every label set."""

from __future__ import annotations

import ipaddress
from socket import AF_INET, AF_INET6

from hypothesis import given
from hypothesis import strategies as st

from retransmon.attribution.flows import decode_counts, decode_flow
from retransmon.attribution.labels import LABEL_NAMES, OTHER, Projector
from retransmon.kernel.structs import FLOW_COARSE, FLOW_COUNTS, FLOW_KEY

raw_keys = st.binary(min_size=FLOW_KEY.size, max_size=FLOW_KEY.size)


def _projector(labels: tuple[str, ...], listening: bool) -> Projector:
    return Projector(labels, lambda _netns, _port: listening, lambda cgroup: f"/cg/{cgroup}")


def _with_family(raw: bytes, family: int) -> bytes:
    offset = FLOW_KEY.offsets["family"]
    return raw[:offset] + family.to_bytes(2, "little") + raw[offset + 2 :]


@given(raw_keys, st.sampled_from([AF_INET, AF_INET6]), st.booleans())
def test_any_key_decodes_and_projects(raw_any: bytes, family: int, listening: bool) -> None:
    raw = _with_family(raw_any, family)
    flow = decode_flow(raw)
    assert flow.ip_version in (4, 6)
    flags = raw[FLOW_KEY.offsets["flags"]]
    if flags & FLOW_COARSE:
        assert flow.src_ip is None and flow.dst_ip is None
        assert flow.src_port is None and flow.dst_port is None
    else:
        assert flow.src_ip is not None and flow.dst_ip is not None
        assert ipaddress.ip_address(flow.src_ip).version == flow.ip_version
        assert ipaddress.ip_address(flow.dst_ip).version == flow.ip_version
    projector = _projector(LABEL_NAMES, listening)
    values = projector.project(flow)
    names = projector.sent if flow.kind == "sent" else projector.labels
    assert len(values) == len(names)
    assert all(isinstance(v, str) for v in values)
    by_name = dict(zip(names, values, strict=True))
    if flow.src_port is None:
        assert by_name["service_port"] == OTHER
        assert by_name["src_ip"] == by_name["dst_ip"] == OTHER
    else:
        assert by_name["service_port"] in (str(flow.src_port), str(flow.dst_port))
        if listening:
            assert by_name["service_port"] == str(flow.src_port)


@given(raw_keys)
def test_unknown_families_are_refused_with_value_error(raw: bytes) -> None:
    family = int.from_bytes(raw[FLOW_KEY.offsets["family"] :][:2], "little")
    try:
        decode_flow(raw)
    except ValueError as exc:
        assert family not in (AF_INET, AF_INET6) and "family" in str(exc)
    else:
        assert family in (AF_INET, AF_INET6)


@given(
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
    st.sampled_from([AF_INET, AF_INET6]),
    st.tuples(st.integers(0, 255), st.integers(0, 1)),
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
)
def test_real_keys_round_trip(
    ids: tuple[int, int],
    family: int,
    state_kind: tuple[int, int],
    ports: tuple[int, int],
    addrs: tuple[bytes, bytes],
) -> None:
    key = FLOW_KEY.pack(*ids, family, *state_kind, *ports, 0, 1, b"", *addrs)
    flow = decode_flow(key)
    assert (flow.cgroup, flow.netns, flow.src_port, flow.dst_port) == (*ids, *ports)
    assert flow.kind == ("retransmit", "synack")[state_kind[1]]
    mapped = ipaddress.IPv6Address(addrs[0]).ipv4_mapped is not None
    assert flow.ip_version == (4 if family == AF_INET or mapped else 6)


@given(st.binary(min_size=FLOW_COUNTS.size, max_size=FLOW_COUNTS.size))
def test_counts_decode(raw: bytes) -> None:
    events, segments = decode_counts(raw)
    assert 0 <= events < 2**64 and 0 <= segments < 2**64
    assert FLOW_COUNTS.pack(events, segments) == raw


@given(
    st.lists(st.sampled_from(LABEL_NAMES), min_size=1, max_size=6, unique=True),
    raw_keys,
    st.sampled_from([AF_INET, AF_INET6]),
)
def test_projection_follows_the_chosen_labels(labels: list[str], raw: bytes, family: int) -> None:
    projector = _projector(tuple(labels), False)
    flow = decode_flow(_with_family(raw, family))
    names = projector.sent if flow.kind == "sent" else projector.labels
    assert len(projector.project(flow)) == len(names)
    assert set(projector.sent) <= set(labels)
