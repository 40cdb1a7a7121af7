"""container_id and pod_uid from real-looking cgroup v2 paths."""

from __future__ import annotations

import pytest

from retransmon.attribution.containers import ContainerRef, parse_cgroup_path

ID = "3f4e1b2c9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
ID2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
UID = "8d0c5f3e-2b1a-4c9d-8e7f-6a5b4c3d2e1f"
UID_ = UID.replace("-", "_")
STATIC_UID = "6d1a5f4c7b8e9f0a1b2c3d4e5f6a7b8c"  # a static pod: md5 of its manifest

CASES = [
    # docker, cgroupfs and systemd drivers (also rootless, under a user's manager)
    (f"/docker/{ID}", ID, ""),
    (f"/system.slice/docker-{ID}.scope", ID, ""),
    (f"/user.slice/user-1000.slice/user@1000.service/docker-{ID}.scope", ID, ""),
    # containerd, CRI-O, podman outside Kubernetes
    (f"/system.slice/cri-containerd-{ID}.scope", ID, ""),
    (f"/machine.slice/crio-{ID}.scope", ID, ""),
    (f"/machine.slice/libpod-{ID}.scope", ID, ""),
    (f"/libpod_parent/libpod-{ID}", ID, ""),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope", ID, ""),
    # kubepods, cgroupfs driver: burstable, besteffort, guaranteed (no QoS level)
    (f"/kubepods/burstable/pod{UID}/{ID}", ID, UID),
    (f"/kubepods/besteffort/pod{UID}/{ID}", ID, UID),
    (f"/kubepods/pod{UID}/{ID}", ID, UID),
    # kubepods, systemd driver, with containerd and CRI-O
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope",
        ID,
        UID,
    ),
    (
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope",
        ID,
        UID,
    ),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope", ID, UID),
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/crio-{ID}.scope",
        ID,
        STATIC_UID,
    ),
    # a kind node (itself a docker container) with its kubelet's slices: the inner container wins
    (
        f"/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/"
        f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope",
        ID,
        UID,
    ),
    # a process in a sub-group of a container (systemd inside the container)
    (f"/system.slice/docker-{ID}.scope/system.slice/nginx.service", ID, ""),
    # a pod's cgroup itself (no container level)
    (f"/kubepods/burstable/pod{UID}", "", UID),
    # not containers
    ("/", "", ""),
    ("unknown", "", ""),
    ("/system.slice/nginx.service", "", ""),
    ("/user.slice/user-1000.slice/session-3.scope", "", ""),
    (f"/machine.slice/crio-conmon-{ID}.scope", "", ""),
    (f"/machine.slice/libpod-conmon-{ID}.scope", "", ""),
    (f"/system.slice/docker-{ID[:12]}.scope", "", ""),  # short ids are not cgroup names
    (f"/system.slice/docker-{ID.upper()}.scope", "", ""),
    (f"/kubepods/burstable/podnot-a-uid/{ID}", ID, ""),
]


@pytest.mark.parametrize(("path", "container_id", "pod_uid"), CASES)
def test_parse_cgroup_path(path: str, container_id: str, pod_uid: str) -> None:
    assert parse_cgroup_path(path) == ContainerRef(container_id, pod_uid)
