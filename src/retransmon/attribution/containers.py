"""Container and pod identity from a cgroup v2 path (the ``container_id`` and ``pod_uid`` labels).

Runtimes name a container's cgroup after its 64-hex id, and the kubelet names a
pod's after its UID. The layouts recognised (paths relative to the cgroup2 mount):

* docker, cgroupfs driver: ``/docker/<id>``; systemd driver: ``/system.slice/docker-<id>.scope``
* containerd (CRI): ``.../cri-containerd-<id>.scope``; CRI-O: ``.../crio-<id>.scope``
* podman: ``.../libpod-<id>.scope`` (systemd), ``/libpod_parent/libpod-<id>`` (cgroupfs)
* kubepods, cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>``
* kubepods, systemd driver:
  ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope``

The innermost match wins (a container inside a container, e.g. a kind node, is
attributed to the inner one). Runtime monitor processes (``crio-conmon-<id>``,
``libpod-conmon-<id>``) are not containers. Anything else gives empty values.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_HEX64 = r"[0-9a-f]{64}"
# One path component naming a container: bare id (cgroupfs drivers) or <runtime>-<id>[.scope].
_CONTAINER = re.compile(rf"^(?:(?:docker|cri-containerd|crio|libpod)-)?(?P<id>{_HEX64})(?:\.scope)?$")
# Pod UIDs are UUIDs; static (mirror) pods use a 32-hex hash of their manifest instead.
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
# cgroupfs: pod<uid>; systemd: kubepods[-<qos>]-pod<uid with _ for ->.slice, where a kubelet with a
# cgroup root of its own (kind) prefixes its slices further: kubelet-kubepods-burstable-pod<uid>.slice
_POD = re.compile(rf"^(?:[a-z0-9]+-)*pod(?P<uid>{_UID})(?:\.slice)?$")


@dataclass(frozen=True)
class ContainerRef:
    container_id: str = ""
    pod_uid: str = ""


@functools.lru_cache(maxsize=16384)
def parse_cgroup_path(path: str) -> ContainerRef:
    """The container and pod a cgroup v2 path belongs to; empty strings where there is none."""
    parts = [p for p in path.split("/") if p]
    container_id = ""
    above = parts  # where the pod's cgroup can be: above the container's, if there is one
    for i in range(len(parts) - 1, -1, -1):
        m = _CONTAINER.match(parts[i])
        if m:
            container_id, above = m.group("id"), parts[:i]
            break
    pod_uid = ""
    for part in reversed(above):
        pod = _POD.match(part)
        if pod:
            pod_uid = pod.group("uid").replace("_", "-")
            break
    return ContainerRef(container_id, pod_uid)
