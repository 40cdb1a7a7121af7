"""Container, pod and namespace names from fake runtime state directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from retransmon.attribution.flows import Flow
from retransmon.attribution.labels import Projector, parse_labels
from retransmon.attribution.names import (
    EMPTY,
    ContainerNames,
    NameResolver,
    RuntimeLayout,
    names_from_annotations,
)

CID = "a" * 64
OTHER = "b" * 64


def write(root: Path, rel: str, data: object) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def containerd_bundle(root: Path, cid: str, annotations: dict[str, str], ns: str = "k8s.io") -> Path:
    rel = f"run/containerd/io.containerd.runtime.v2.task/{ns}/{cid}/config.json"
    return write(root, rel, {"ociVersion": "1.1.0", "annotations": annotations})


CRI_CONTAINERD = {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.container-name": "nginx",
    "io.kubernetes.cri.sandbox-name": "web-7d9c-xk2p",
    "io.kubernetes.cri.sandbox-namespace": "shop",
}
CRIO = {
    "io.kubernetes.container.name": "api",
    "io.kubernetes.pod.name": "api-0",
    "io.kubernetes.pod.namespace": "billing",
}


def test_containerd_cri_annotations(tmp_path: Path) -> None:
    containerd_bundle(tmp_path, CID, CRI_CONTAINERD)
    assert RuntimeLayout(str(tmp_path)).lookup(CID) == ContainerNames("nginx", "web-7d9c-xk2p", "shop")


def test_containerd_sandbox_has_pod_but_no_container_name(tmp_path: Path) -> None:
    sandbox = {k: v for k, v in CRI_CONTAINERD.items() if k != "io.kubernetes.cri.container-name"}
    containerd_bundle(tmp_path, CID, {**sandbox, "io.kubernetes.cri.container-type": "sandbox"})
    assert RuntimeLayout(str(tmp_path)).lookup(CID) == ContainerNames("", "web-7d9c-xk2p", "shop")


def test_crio_bundle_in_run_storage(tmp_path: Path) -> None:
    write(
        tmp_path,
        f"run/containers/storage/overlay-containers/{CID}/userdata/config.json",
        {"annotations": CRIO},
    )
    assert RuntimeLayout(str(tmp_path)).lookup(CID) == ContainerNames("api", "api-0", "billing")


def test_podman_name_from_containers_json_and_pod_from_annotations(tmp_path: Path) -> None:
    storage = "var/lib/containers/storage/overlay-containers"
    write(
        tmp_path,
        f"{storage}/{CID}/userdata/config.json",
        {
            "annotations": {
                "io.container.manager": "libpod",
                "io.kubernetes.pod.name": "p",
                "io.kubernetes.pod.namespace": "n",
            }
        },
    )
    write(
        tmp_path,
        f"{storage}/containers.json",
        [{"id": OTHER, "names": ["db"]}, {"id": CID, "names": ["web"]}],
    )
    assert RuntimeLayout(str(tmp_path)).lookup(CID) == ContainerNames("web", "p", "n")


def test_containers_json_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "var/lib/containers/storage/overlay-containers/containers.json",
        [{"id": CID, "names": ["web"]}],
    )
    layout = RuntimeLayout(str(tmp_path))
    assert layout.lookup(CID).container == "web"
    stamp = path.stat()
    path.write_text(json.dumps([{"id": CID, "names": ["new"]}]))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # same size and mtime: the cached copy
    assert layout.lookup(CID).container == "web"
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
    assert layout.lookup(CID).container == "new"


def test_docker_name_and_cri_dockerd_labels(tmp_path: Path) -> None:
    write(
        tmp_path,
        f"var/lib/docker/containers/{CID}/config.v2.json",
        {"Name": "/redis", "Config": {"Labels": {}}},
    )
    labels = {
        "io.kubernetes.container.name": "cache",
        "io.kubernetes.pod.name": "c-1",
        "io.kubernetes.pod.namespace": "x",
    }
    write(
        tmp_path,
        f"var/lib/docker/containers/{OTHER}/config.v2.json",
        {"Name": "/k8s_cache_c-1", "Config": {"Labels": labels}},
    )
    layout = RuntimeLayout(str(tmp_path))
    assert layout.lookup(CID) == ContainerNames("redis", "", "")
    assert layout.lookup(OTHER) == ContainerNames("cache", "c-1", "x")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[]",
        '{"annotations": ["a"]}',
        '{"annotations": {"io.kubernetes.pod.name": 7}}',
        "null",
    ],
)
def test_malformed_files_give_empty_names(tmp_path: Path, content: str) -> None:
    containerd_bundle(tmp_path, CID, {})
    write(tmp_path, f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/config.json", content)
    write(tmp_path, "var/lib/containers/storage/overlay-containers/containers.json", content)
    write(tmp_path, f"var/lib/docker/containers/{CID}/config.v2.json", content)
    assert RuntimeLayout(str(tmp_path)).lookup(CID) == EMPTY


def test_nothing_on_the_node_gives_empty_names(tmp_path: Path) -> None:
    assert RuntimeLayout(str(tmp_path / "missing")).lookup(CID) == EMPTY


def test_annotation_schemes_fill_each_others_gaps() -> None:
    mixed = {
        "io.kubernetes.cri.sandbox-name": "p",
        "io.kubernetes.container.name": "c",
        "io.kubernetes.pod.namespace": "n",
    }
    assert names_from_annotations(mixed) == ContainerNames("c", "p", "n")
    assert names_from_annotations({}) == EMPTY


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


PATHS = {
    1: f"/kubepods/burstable/pod0f0e0d0c-1111-2222-3333-444455556666/{CID}",
    2: "/system.slice/sshd.service",
}


def test_resolver_caches_by_cgroup_and_retries_unknown_after_a_while(tmp_path: Path) -> None:
    clock = Clock()
    resolver = NameResolver(PATHS.__getitem__, RuntimeLayout(str(tmp_path)), retry_after=10, clock=clock)
    assert resolver(1) == EMPTY  # the runtime has not written its bundle yet
    assert resolver.lookups == 1
    containerd_bundle(tmp_path, CID, CRI_CONTAINERD)
    clock.now += 5
    assert resolver(1) == EMPTY and resolver.lookups == 1  # too soon: the cached answer
    clock.now += 6
    assert resolver(1) == ContainerNames("nginx", "web-7d9c-xk2p", "shop")
    assert resolver.lookups == 2
    clock.now += 1000
    assert resolver(1).container == "nginx" and resolver.lookups == 2  # found names stay cached
    assert resolver(2) == EMPTY and resolver.lookups == 2  # not a container: no file is read


def test_resolver_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    containerd_bundle(tmp_path, CID, CRI_CONTAINERD)
    resolver = NameResolver(lambda _cg: f"/docker/{CID}", RuntimeLayout(str(tmp_path)), max_entries=3)
    for cgroup in (1, 2, 3):
        resolver(cgroup)
    resolver(1)  # 1 is now the most recently used, 2 the least
    resolver(4)
    assert len(resolver) == 3
    lookups = resolver.lookups
    resolver(1)
    resolver(3)
    assert resolver.lookups == lookups  # still cached
    resolver(2)
    assert resolver.lookups == lookups + 1  # forgotten, looked up again


def _flow(cgroup: int) -> Flow:
    return Flow(1, cgroup, 4, "10.0.0.1", "10.0.0.2", 40000, 80, "established", "retransmit", False)


def test_projector_fills_name_labels(tmp_path: Path) -> None:
    containerd_bundle(tmp_path, CID, CRI_CONTAINERD)
    resolver = NameResolver(PATHS.__getitem__, RuntimeLayout(str(tmp_path)))
    labels = parse_labels("container,pod,namespace,container_id")
    p = Projector(labels, lambda _n, _p: False, PATHS.__getitem__, resolver)
    assert p.project(_flow(1)) == ("nginx", "web-7d9c-xk2p", "shop", CID)
    assert p.project(_flow(2)) == ("", "", "", "")
    sent = Flow(1, 1, 4, "10.0.0.1", "10.0.0.2", 40000, 80, "", "sent", False)
    assert p.project(sent) == ("nginx", "web-7d9c-xk2p", "shop", CID)


def test_projector_default_reads_this_host(tmp_path: Path) -> None:
    """Without a resolver given, one over the host's runtime dirs: unknown ids read empty."""
    p = Projector(("container", "pod"), lambda _n, _p: False, lambda _cg: f"/docker/{'f' * 64}")
    assert p.project(_flow(9)) == ("", "")
