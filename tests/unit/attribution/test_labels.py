"""--labels parsing, projecting a flow onto label values, and folding into `other`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retransmon.attribution.flows import Flow
from retransmon.attribution.labels import (
    DEFAULT_LABELS,
    ENDPOINT_LABELS,
    FLOW_LABELS,
    LABEL_NAMES,
    OTHER,
    Projector,
    fold,
    parse_labels,
    sent_labels,
)
from retransmon.errors import UsageError

# ---------------------------------------------------------------------------
# parse_labels
# ---------------------------------------------------------------------------


def test_flow_preset_is_the_blog_label_set_exactly() -> None:
    assert parse_labels("flow") == ("ip_version", "src_ip", "src_port", "dst_ip", "dst_port")


def test_default_preset() -> None:
    expected = ("ip_version", "src_ip", "dst_ip", "service_port", "state", "kind", "cause")
    assert parse_labels("default") == expected
    assert parse_labels("default") == DEFAULT_LABELS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ip_version", ("ip_version",)),
        ("cgroup", ("cgroup",)),
        ("dst_ip,src_ip", ("dst_ip", "src_ip")),  # order kept as written
        (" src_ip , dst_port ", ("src_ip", "dst_port")),  # whitespace around names ignored
        ("src_ip,src_ip,dst_ip,src_ip", ("src_ip", "dst_ip")),  # duplicates removed, first wins
        ("flow,netns", (*FLOW_LABELS, "netns")),
        ("netns,flow", ("netns", *FLOW_LABELS)),
        ("flow,src_ip,cgroup", (*FLOW_LABELS, "cgroup")),  # src_ip already in the preset
        ("flow,default", (*FLOW_LABELS, "service_port", "state", "kind", "cause")),
        ("default,flow", (*DEFAULT_LABELS, "src_port", "dst_port")),
        ("default,default", DEFAULT_LABELS),
        (",".join(LABEL_NAMES), LABEL_NAMES),
        (",".join(reversed(LABEL_NAMES)), tuple(reversed(LABEL_NAMES))),
    ],
)
def test_parse_labels(text: str, expected: tuple[str, ...]) -> None:
    assert parse_labels(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus", "'bogus'"),
        ("src_ip,bogus", "'bogus'"),
        ("flow,Src_IP", "'Src_IP'"),  # names are case-sensitive
        ("flows", "'flows'"),
        ("src ip", "'src ip'"),
        ("", "empty"),
        ("src_ip,", "empty"),
        (",src_ip", "empty"),
        ("src_ip,,dst_ip", "empty"),
        ("  ", "empty"),
    ],
)
def test_parse_labels_rejects(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_labels(text)
    message = info.value.render()
    assert "\n" not in message
    assert message.startswith("--labels: ")
    assert needle in message
    assert info.value.exit_code == 2


def test_unknown_label_message_lists_the_choices() -> None:
    with pytest.raises(UsageError) as info:
        parse_labels("bogus")
    for name in (*LABEL_NAMES, "default", "flow"):
        assert name in info.value.message


@given(st.lists(st.sampled_from([*LABEL_NAMES, "flow", "default"]), min_size=1, max_size=15))
def test_parse_labels_property(items: list[str]) -> None:
    got = parse_labels(",".join(items))
    assert len(got) == len(set(got))  # no duplicates
    assert set(got) <= set(LABEL_NAMES)
    expanded: list[str] = []
    for item in items:
        expanded.extend({"flow": FLOW_LABELS, "default": DEFAULT_LABELS}.get(item, (item,)))
    assert set(got) == set(expanded)
    # first occurrence order
    assert list(got) == list(dict.fromkeys(expanded))


def test_sent_labels_drop_state_kind_and_cause_only() -> None:
    assert sent_labels(DEFAULT_LABELS) == ("ip_version", "src_ip", "dst_ip", "service_port")
    assert sent_labels(LABEL_NAMES) == tuple(n for n in LABEL_NAMES if n not in ("state", "kind", "cause"))
    assert sent_labels(("kind", "state", "cause")) == ()


# ---------------------------------------------------------------------------
# Projector
# ---------------------------------------------------------------------------


BASE_FLOW = Flow(
    netns=4026531840,
    cgroup=77,
    ip_version=4,
    src_ip="10.0.0.1",
    dst_ip="10.0.0.2",
    src_port=43210,
    dst_port=443,
    state="established",
    kind="retransmit",
    passive=False,
)


def _flow(**kw: Any) -> Flow:
    return replace(BASE_FLOW, **kw)


def _never(_netns: int, _port: int) -> bool:
    return False


def _cgroup(cid: int) -> str:
    return {77: "/system.slice/nginx.service"}.get(cid, "unknown")


def _projector(
    labels: tuple[str, ...] = LABEL_NAMES, listening: set[tuple[int, int]] | None = None
) -> Projector:
    live = listening or set()
    return Projector(labels, lambda netns, port: (netns, port) in live, _cgroup)


@pytest.mark.parametrize(
    ("label", "flow", "expected"),
    [
        ("ip_version", _flow(), "4"),
        ("ip_version", _flow(ip_version=6, src_ip="2001:db8::1", dst_ip="2001:db8::2"), "6"),
        ("src_ip", _flow(), "10.0.0.1"),
        ("dst_ip", _flow(), "10.0.0.2"),
        ("src_port", _flow(), "43210"),
        ("dst_port", _flow(), "443"),
        ("state", _flow(state="syn_sent"), "syn_sent"),
        ("kind", _flow(kind="synack"), "synack"),
        ("cause", _flow(cause="slow_start"), "slow_start"),
        ("netns", _flow(netns=4026532000), "4026532000"),
        ("cgroup", _flow(), "/system.slice/nginx.service"),
        ("cgroup", _flow(cgroup=0), "unknown"),
        ("service_port", _flow(), "443"),  # client side: the remote port
        ("service_port", _flow(passive=True), "43210"),  # accepted here: the local port
        # coarse flows (the kernel's table was full): no addresses, no ports
        ("src_ip", _flow(src_ip=None), OTHER),
        ("dst_ip", _flow(dst_ip=None), OTHER),
        ("src_port", _flow(src_port=None), OTHER),
        ("dst_port", _flow(dst_port=None), OTHER),
        ("service_port", _flow(src_port=None, dst_port=None), OTHER),
        ("service_port", _flow(src_port=None, dst_port=None, passive=True), OTHER),
    ],
)
def test_projector_value(label: str, flow: Flow, expected: str) -> None:
    assert _projector().value(label, flow) == expected
    assert _projector((label,)).project(flow) == (expected,)


def test_project_follows_label_order() -> None:
    flow = _flow()
    assert _projector(("dst_port", "src_ip", "kind")).project(flow) == ("443", "10.0.0.1", "retransmit")
    assert _projector(()).project(flow) == ()


def test_unknown_label_raises_key_error() -> None:
    with pytest.raises(KeyError):
        _projector().value("bogus", _flow())


def test_service_port_local_port_listening_in_same_netns() -> None:
    flow = _flow(src_port=8080, dst_port=51000)
    p = _projector(("service_port",), listening={(flow.netns, 8080)})
    assert p.project(flow) == ("8080",)


def test_service_port_listening_in_other_netns_does_not_count() -> None:
    flow = _flow(src_port=8080, dst_port=51000)
    p = _projector(("service_port",), listening={(flow.netns + 1, 8080)})
    assert p.project(flow) == ("51000",)


def test_service_port_remote_port_listening_does_not_count() -> None:
    # Only the local port is looked up: a listener on the remote port number is irrelevant.
    flow = _flow(src_port=51000, dst_port=8080)
    p = _projector(("service_port",), listening={(flow.netns, 8080)})
    assert p.project(flow) == ("8080",)
    p2 = _projector(("service_port",), listening={(flow.netns, 51000)})
    assert p2.project(flow) == ("51000",)


def test_service_port_passive_wins_without_lookup() -> None:
    calls: list[tuple[int, int]] = []

    def listening(netns: int, port: int) -> bool:
        calls.append((netns, port))
        return False

    p = Projector(("service_port",), listening, _cgroup)
    assert p.project(_flow(passive=True, src_port=22, dst_port=60000)) == ("22",)
    assert p.project(_flow(passive=False, src_port=60000, dst_port=22)) == ("22",)
    assert calls == [(4026531840, 60000)]


def test_service_port_coarse_does_not_consult_listening() -> None:
    def boom(_netns: int, _port: int) -> bool:
        raise AssertionError("must not be called for coarse flows")

    p = Projector(("service_port",), boom, _cgroup)
    assert p.project(_flow(src_port=None, dst_port=None)) == (OTHER,)


# ---------------------------------------------------------------------------
# fold
# ---------------------------------------------------------------------------


def test_fold_replaces_exactly_the_endpoint_labels() -> None:
    values = (
        "4",
        "10.0.0.1",
        "43210",
        "10.0.0.2",
        "443",
        "443",
        "established",
        "retransmit",
        "timeout",
        "123",
        "/a",
        "c0ffee",
        "pod-uid",
        "web",
        "web-0",
        "shop",
    )
    assert LABEL_NAMES[-5:] == ("container_id", "pod_uid", "container", "pod", "namespace")
    assert fold(LABEL_NAMES, values) == (
        "4",
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        OTHER,
        "established",
        "retransmit",
        "timeout",
        "123",
        "/a",
        "c0ffee",
        "pod-uid",
        "web",
        "web-0",
        "shop",
    )


def test_endpoint_labels_set() -> None:
    assert frozenset({"src_ip", "src_port", "dst_ip", "dst_port", "service_port"}) == ENDPOINT_LABELS


@pytest.mark.parametrize("label", LABEL_NAMES)
def test_fold_single_label(label: str) -> None:
    expected = OTHER if label in ENDPOINT_LABELS else "v"
    assert fold((label,), ("v",)) == (expected,)


def test_fold_length_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        fold(("src_ip", "kind"), ("a",))


@given(
    st.permutations(LABEL_NAMES).flatmap(
        lambda names: st.tuples(
            st.just(tuple(names)), st.lists(st.text(max_size=5), min_size=len(names), max_size=len(names))
        )
    )
)
def test_fold_property(case: tuple[tuple[str, ...], list[str]]) -> None:
    names, values = case
    folded = fold(names, tuple(values))
    assert len(folded) == len(names)
    for name, before, after in zip(names, values, folded, strict=True):
        assert after == (OTHER if name in ENDPOINT_LABELS else before)
    assert fold(names, folded) == folded  # idempotent
