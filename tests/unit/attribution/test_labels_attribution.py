"""Label projection: service_port, the labels of sent series, container attribution labels."""

from __future__ import annotations

import pytest

from retransmon.attribution.flows import Flow
from retransmon.attribution.labels import DEFAULT_LABELS, OTHER, Projector, fold, parse_labels
from retransmon.errors import UsageError

CONTAINER = "3f4e1b2c9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
POD = "8d0c5f3e-2b1a-4c9d-8e7f-6a5b4c3d2e1f"
CGROUPS = {
    7: f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice/"
    f"cri-containerd-{CONTAINER}.scope",
    8: "/system.slice/nginx.service",
}
NETNS = 4026531840
LISTENING = {(NETNS, 8080)}


def flow(
    src_port: int | None = 41000, dst_port: int | None = 443, passive: bool = False, kind: str = "retransmit"
) -> Flow:
    return Flow(
        netns=NETNS,
        cgroup=7,
        ip_version=4,
        src_ip="10.0.0.1" if src_port is not None else None,
        dst_ip="10.0.0.2" if dst_port is not None else None,
        src_port=src_port,
        dst_port=dst_port,
        state="" if kind == "sent" else "established",
        kind=kind,
        passive=passive,
        cause="" if kind == "sent" else "fast",
    )


def projector(labels: str) -> Projector:
    return Projector(parse_labels(labels), lambda ns, port: (ns, port) in LISTENING, lambda i: CGROUPS[i])


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (flow(41000, 443), "443"),  # we connected: the remote port is the service
        (flow(443, 41000, passive=True), "443"),  # we accepted it: the local port
        (flow(8080, 52000), "8080"),  # local port listening here (accepted before we started)
        (flow(None, None), OTHER),  # folded by the kernel
    ],
)
def test_service_port(f: Flow, expected: str) -> None:
    assert projector("service_port").project(f) == (expected,)


def test_sent_flows_get_only_the_sent_labels() -> None:
    p = projector("default")
    assert p.project(flow(kind="sent")) == ("4", "10.0.0.1", "10.0.0.2", "443")
    assert p.project(flow()) == ("4", "10.0.0.1", "10.0.0.2", "443", "established", "retransmit", "fast")
    assert p.sent == ("ip_version", "src_ip", "dst_ip", "service_port")


def test_container_labels_come_from_the_cgroup_path() -> None:
    p = projector("cgroup,container_id,pod_uid")
    assert p.project(flow()) == (CGROUPS[7], CONTAINER, POD)
    assert p.project(flow(kind="sent")) == (CGROUPS[7], CONTAINER, POD)
    plain = Projector(p.labels, p.is_listening, lambda i: CGROUPS[8])
    assert plain.project(flow()) == (CGROUPS[8], "", "")


def test_folding_keeps_attribution_labels() -> None:
    labels = parse_labels("default,netns,cgroup,container_id,pod_uid")
    values = projector("default,netns,cgroup,container_id,pod_uid").project(flow())
    folded = dict(zip(labels, fold(labels, values), strict=True))
    assert folded["src_ip"] == folded["dst_ip"] == folded["service_port"] == OTHER
    assert folded["container_id"] == CONTAINER and folded["pod_uid"] == POD
    assert folded["cgroup"] == CGROUPS[7] and folded["netns"] == str(NETNS)


def test_parse_labels_accepts_the_container_labels_and_rejects_others() -> None:
    assert parse_labels("default,container_id,pod_uid") == (*DEFAULT_LABELS, "container_id", "pod_uid")
    assert parse_labels("container,pod,namespace") == ("container", "pod", "namespace")
    with pytest.raises(UsageError, match="container_name"):
        parse_labels("container_name")
