"""Container, pod and namespace names (the ``container``, ``pod`` and ``namespace`` labels).

Read from what the container runtime already writes on the node, with no API server:

* the OCI bundle's ``config.json`` annotations. containerd (CRI) writes
  ``io.kubernetes.cri.container-name``, ``io.kubernetes.cri.sandbox-name`` and
  ``io.kubernetes.cri.sandbox-namespace``; CRI-O writes ``io.kubernetes.container.name``,
  ``io.kubernetes.pod.name`` and ``io.kubernetes.pod.namespace``;
* podman and CRI-O (containers/storage): the container's name in ``containers.json``;
* docker: ``Name`` (and cri-dockerd's Kubernetes labels) in ``config.v2.json``.

Where each runtime keeps them, relative to the node's root (RuntimeLayout reads them there):

* containerd: ``/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json``
* CRI-O: ``/run/containers/storage/overlay-containers/<id>/userdata/config.json``
* podman (root): ``/var/lib/containers/storage/overlay-containers/<id>/userdata/config.json``
  and ``.../overlay-containers/containers.json`` (in both ``/var/lib`` and ``/run``)
* docker: ``/var/lib/docker/containers/<id>/config.v2.json``

Anything missing, unreadable or malformed gives empty names, never an error.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from retransmon.attribution.containers import parse_cgroup_path

log = logging.getLogger(__name__)

NAME_LABELS = ("container", "pod", "namespace")

# (container, pod, namespace) annotation keys, most specific runtime first.
ANNOTATION_KEYS = (
    (
        "io.kubernetes.cri.container-name",
        "io.kubernetes.cri.sandbox-name",
        "io.kubernetes.cri.sandbox-namespace",
    ),
    ("io.kubernetes.container.name", "io.kubernetes.pod.name", "io.kubernetes.pod.namespace"),
)

CONTAINERD_TASKS = "run/containerd/io.containerd.runtime.v2.task"
STORAGE_DIRS = ("run/containers/storage/overlay-containers", "var/lib/containers/storage/overlay-containers")
DOCKER_CONTAINERS = "var/lib/docker/containers"
# Larger files are not runtime metadata we understand; never read them whole.
MAX_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class ContainerNames:
    container: str = ""
    pod: str = ""
    namespace: str = ""

    def get(self, label: str) -> str:
        """The value of one of NAME_LABELS."""
        return str(getattr(self, label))

    def merged(self, other: ContainerNames) -> ContainerNames:
        """These names, with gaps filled from *other*."""
        return ContainerNames(
            self.container or other.container, self.pod or other.pod, self.namespace or other.namespace
        )


EMPTY = ContainerNames()


def names_from_annotations(annotations: Mapping[str, object]) -> ContainerNames:
    """Names from OCI annotations (or docker labels) written by containerd's CRI or CRI-O."""
    found = EMPTY
    for keys in ANNOTATION_KEYS:
        values = [annotations.get(k) for k in keys]
        found = found.merged(ContainerNames(*(v if isinstance(v, str) else "" for v in values)))
    return found


def _read_json(path: str) -> object:
    """The parsed file, or None when it is missing, too large or not JSON."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES:
        log.warning("%s is larger than %d bytes: not read", path, MAX_FILE_BYTES)
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _annotations(config: object) -> Mapping[str, object]:
    if isinstance(config, dict):
        found = config.get("annotations")
        if isinstance(found, dict):
            return found
    return {}


class _StorageNames:
    """containers/storage's ``containers.json`` (id -> names), read again only when it changes."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}

    def name(self, path: str, container_id: str) -> str:
        try:
            st = os.stat(path)
        except OSError:
            return ""
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._seen.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, self._parse(_read_json(path)))
            self._seen[path] = cached
        return cached[1].get(container_id, "")

    @staticmethod
    def _parse(data: object) -> dict[str, str]:
        names: dict[str, str] = {}
        for entry in data if isinstance(data, list) else []:
            if not isinstance(entry, dict):
                continue
            cid, given = entry.get("id"), entry.get("names")
            if isinstance(cid, str) and isinstance(given, list) and given and isinstance(given[0], str):
                names[cid] = given[0]
        return names


class RuntimeLayout:
    """Finds a container's names in the runtimes' state below *root* (``/`` on the node)."""

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self._storage = _StorageNames()

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def _bundle_configs(self, container_id: str) -> list[str]:
        tasks = self._path(CONTAINERD_TASKS)
        try:
            namespaces = sorted(os.listdir(tasks))  # k8s.io, moby, default, ...
        except OSError:
            namespaces = []
        paths = [os.path.join(tasks, ns, container_id, "config.json") for ns in namespaces]
        paths += [self._path(d, container_id, "userdata", "config.json") for d in STORAGE_DIRS]
        return paths

    def lookup(self, container_id: str) -> ContainerNames:
        """Names of one container (64-hex id); empty strings for what no runtime records."""
        found = EMPTY
        for path in self._bundle_configs(container_id):
            config = _read_json(path)
            if config is not None:
                found = found.merged(names_from_annotations(_annotations(config)))
        if not found.container:
            for d in STORAGE_DIRS:
                name = self._storage.name(self._path(d, "containers.json"), container_id)
                if name:
                    found = found.merged(ContainerNames(container=name))
                    break
        if not found.container:
            found = found.merged(self._docker(container_id))
        return found

    def _docker(self, container_id: str) -> ContainerNames:
        config = _read_json(self._path(DOCKER_CONTAINERS, container_id, "config.v2.json"))
        if not isinstance(config, dict):
            return EMPTY
        inner = config.get("Config")
        labels = inner.get("Labels") if isinstance(inner, dict) else None
        found = names_from_annotations(labels if isinstance(labels, dict) else {})
        name = config.get("Name")
        return found.merged(ContainerNames(container=name.lstrip("/") if isinstance(name, str) else ""))


@dataclass
class _Entry:
    names: ContainerNames
    at: float  # when it was looked up


class NameResolver:
    """cgroup id -> ContainerNames, cached by cgroup.

    A cgroup seen for the first time is looked up at once (local files only, a few
    small reads), so a scrape never waits on anything but the disk. An answer with
    no names is looked up again on a later miss, at most once per *retry_after*
    seconds (the runtime may not have written its files yet). At most *max_entries*
    cgroups are kept; the least recently used is forgotten first.
    """

    def __init__(
        self,
        cgroup_path: Callable[[int], str],
        layout: RuntimeLayout | None = None,
        max_entries: int = 4096,
        retry_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cgroup_path = cgroup_path
        self.layout = layout if layout is not None else RuntimeLayout()
        self.max_entries = max_entries
        self.retry_after = retry_after
        self.clock = clock
        self.lookups = 0  # how many times the runtimes' files were read
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, cgroup_id: int) -> ContainerNames:
        now = self.clock()
        with self._lock:
            entry = self._cache.get(cgroup_id)
            if entry is not None and (entry.names != EMPTY or now - entry.at < self.retry_after):
                self._cache.move_to_end(cgroup_id)
                return entry.names
            container_id = parse_cgroup_path(self.cgroup_path(cgroup_id)).container_id
            names = EMPTY
            if container_id:
                self.lookups += 1
                names = self.layout.lookup(container_id)
            self._cache[cgroup_id] = _Entry(names, now)
            self._cache.move_to_end(cgroup_id)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
            return names

    def __len__(self) -> int:
        return len(self._cache)
