"""Which labels a series carries (``--labels``) and how a flow maps onto them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from retransmon.attribution.containers import parse_cgroup_path
from retransmon.attribution.flows import KIND_NAMES, Flow
from retransmon.attribution.names import NAME_LABELS, ContainerNames, NameResolver
from retransmon.errors import UsageError
from retransmon.kernel.structs import KIND_SENT

OTHER = "other"

# Every label a retransmit series can carry, in the order they are documented.
LABEL_NAMES: tuple[str, ...] = (
    "ip_version",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "service_port",
    "state",
    "kind",
    "cause",
    "netns",
    "cgroup",
    "container_id",
    "pod_uid",
    "container",
    "pod",
    "namespace",
)

DEFAULT_LABELS: tuple[str, ...] = ("ip_version", "src_ip", "dst_ip", "service_port", "state", "kind", "cause")
# The original blog's label set, for dashboards built on it.
FLOW_LABELS: tuple[str, ...] = ("ip_version", "src_ip", "src_port", "dst_ip", "dst_port")
PRESETS = {"default": DEFAULT_LABELS, "flow": FLOW_LABELS}

# Labels that name one endpoint; when series are folded these read "other".
ENDPOINT_LABELS = frozenset({"src_ip", "src_port", "dst_ip", "dst_port", "service_port"})
# Labels that do not apply to segments sent (tcp_segments_sent_total).
RETRANSMIT_ONLY_LABELS = frozenset({"state", "kind", "cause"})


def parse_labels(text: str) -> tuple[str, ...]:
    """Parse ``--labels``: a preset name or a comma list of label names (presets may be mixed in)."""
    names: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise UsageError(f"--labels: empty label name in {text!r}")
        expanded = PRESETS.get(item, (item,))
        for name in expanded:
            if name not in LABEL_NAMES:
                raise UsageError(
                    f"--labels: unknown label {name!r}; choose from {', '.join(LABEL_NAMES)} "
                    f"or a preset ({', '.join(PRESETS)})"
                )
            if name not in names:
                names.append(name)
    return tuple(names)


def sent_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in labels if n not in RETRANSMIT_ONLY_LABELS)


IsListening = Callable[[int, int], bool]  # (netns inode, port) -> listening?
CgroupPath = Callable[[int], str]  # cgroup id -> path
Names = Callable[[int], ContainerNames]  # cgroup id -> container, pod and namespace names


SENT = KIND_NAMES[KIND_SENT]


@dataclass(frozen=True)
class Projector:
    """Maps a flow onto the values of the chosen labels (fewer for segments sent: sent_labels).

    *names* defaults to a NameResolver over *cgroup_path* reading the runtimes' files on this host.
    """

    labels: tuple[str, ...]
    is_listening: IsListening
    cgroup_path: CgroupPath
    names: Names | None = None
    sent: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sent", sent_labels(self.labels))
        if self.names is None:
            object.__setattr__(self, "names", NameResolver(self.cgroup_path))

    def service_port(self, flow: Flow) -> str:
        """The server side's port: local if this host listens on it (or accepted the flow), else remote."""
        if flow.src_port is None or flow.dst_port is None:
            return OTHER
        if flow.passive or self.is_listening(flow.netns, flow.src_port):
            return str(flow.src_port)
        return str(flow.dst_port)

    def value(self, name: str, flow: Flow) -> str:
        if name == "ip_version":
            return str(flow.ip_version)
        if name == "src_ip":
            return flow.src_ip if flow.src_ip is not None else OTHER
        if name == "dst_ip":
            return flow.dst_ip if flow.dst_ip is not None else OTHER
        if name == "src_port":
            return str(flow.src_port) if flow.src_port is not None else OTHER
        if name == "dst_port":
            return str(flow.dst_port) if flow.dst_port is not None else OTHER
        if name == "service_port":
            return self.service_port(flow)
        if name == "state":
            return flow.state
        if name == "kind":
            return flow.kind
        if name == "cause":
            return flow.cause
        if name == "netns":
            return str(flow.netns)
        if name == "cgroup":
            return self.cgroup_path(flow.cgroup)
        if name == "container_id":
            return parse_cgroup_path(self.cgroup_path(flow.cgroup)).container_id
        if name == "pod_uid":
            return parse_cgroup_path(self.cgroup_path(flow.cgroup)).pod_uid
        if name in NAME_LABELS and self.names is not None:
            return self.names(flow.cgroup).get(name)
        raise KeyError(name)

    def project(self, flow: Flow) -> tuple[str, ...]:
        """Label values in the order of `labels`, or of `sent` for a flow of segments sent."""
        names = self.sent if flow.kind == SENT else self.labels
        return tuple(self.value(name, flow) for name in names)


def fold(labels: tuple[str, ...], values: tuple[str, ...]) -> tuple[str, ...]:
    """The series a refused series folds into: endpoint labels read ``other``."""
    return tuple(OTHER if name in ENDPOINT_LABELS else v for name, v in zip(labels, values, strict=True))
