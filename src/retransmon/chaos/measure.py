"""The agent's series and the kernel's counters of a chaos run, turned into a report. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from retransmon.attribution.flows import CAUSE_COUNTERS, CAUSE_NAMES
from retransmon.export.series import Sample

# Labels of the in-process agent: one series per connection, kind, cause and namespace.
AGENT_LABELS: tuple[str, ...] = (
    "ip_version",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "kind",
    "cause",
    "netns",
)
CAUSES: tuple[str, ...] = tuple(CAUSE_NAMES.values())
# TcpExt counters (/proc/net/netstat) the report shows beside the causes: each of
# CAUSE_COUNTERS equals its cause; TCPTimeouts (RTO firings) and TCPLossProbes (probes sent)
# bound timeout and tail_loss_probe, which together are the rest of RetransSegs.
CAUSE_CONTEXT = ("TCPTimeouts", "TCPLossProbes")
KERNEL_CAUSE_COUNTERS: tuple[str, ...] = (*CAUSE_COUNTERS.values(), *CAUSE_CONTEXT)
REST = ("timeout", "tail_loss_probe")  # the causes with no counter of their own


@dataclass(frozen=True, order=True)
class FlowKey:
    role: str  # which namespace sent the retransmits: "client" or "server"
    src: str  # local end, ip:port
    dst: str  # remote end, ip:port


@dataclass
class Counts:
    segments: int = 0  # retransmitted segments
    events: int = 0  # retransmit events
    synack: int = 0  # of the segments, SYN-ACK retransmits
    sent: int = 0  # segments sent, retransmissions included
    causes: dict[str, int] = field(default_factory=dict)  # of the segments, per cause label

    def minus(self, other: Counts) -> Counts:
        names = sorted(self.causes.keys() | other.causes.keys())
        causes = {c: self.causes.get(c, 0) - other.causes.get(c, 0) for c in names}
        return Counts(
            self.segments - other.segments,
            self.events - other.events,
            self.synack - other.synack,
            self.sent - other.sent,
            {c: n for c, n in causes.items() if n},
        )


def endpoint(ip: str, port: str) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def tally(
    retransmits: Iterable[Sample],
    sent: Iterable[Sample],
    labels: tuple[str, ...],
    sent_labels: tuple[str, ...],
    roles: Mapping[int, str],
) -> dict[FlowKey, Counts]:
    """Counts per flow of the namespaces in *roles* (netns inode -> role); others are ignored."""
    out: dict[FlowKey, Counts] = {}

    def key(sample: Sample, names: tuple[str, ...]) -> FlowKey | None:
        values = dict(zip(names, sample.labels, strict=True))
        role = roles.get(int(values["netns"])) if values["netns"].isdigit() else None
        if role is None:
            return None
        return FlowKey(
            role,
            endpoint(values["src_ip"], values["src_port"]),
            endpoint(values["dst_ip"], values["dst_port"]),
        )

    for s in retransmits:
        k = key(s, labels)
        if k is not None:
            c = out.setdefault(k, Counts())
            c.segments += s.segments
            c.events += s.events
            values = dict(zip(labels, s.labels, strict=True))
            if values.get("kind") == "synack":
                c.synack += s.segments
            cause = values.get("cause")
            if cause:
                c.causes[cause] = c.causes.get(cause, 0) + s.segments
    for s in sent:
        k = key(s, sent_labels)
        if k is not None:
            out.setdefault(k, Counts()).sent += s.segments
    return out


def growth(after: Mapping[FlowKey, Counts], before: Mapping[FlowKey, Counts]) -> dict[FlowKey, Counts]:
    """What each flow added since *before* (namespace inodes can be reused within one agent's life)."""
    out = {}
    for k, c in after.items():
        d = c.minus(before.get(k, Counts()))
        if d != Counts():
            out[k] = d
    return out


def rate(segments: int, sent: int) -> float | None:
    return segments / sent if sent > 0 else None


@dataclass
class NamespaceRow:
    role: str
    name: str
    inode: int
    kernel_retrans_segs: int  # the kernel's own RetransSegs, for this namespace
    kernel_out_segs: int  # the kernel's OutSegs: segments sent, retransmissions *not* included
    segments: int  # what the agent saw, summed over this namespace's flows
    events: int
    sent: int
    causes: dict[str, int] = field(default_factory=dict)  # the agent's segments per cause
    kernel_causes: dict[str, int] = field(default_factory=dict)  # KERNEL_CAUSE_COUNTERS, grown

    @property
    def equal(self) -> bool:
        """The agent's sum equals RetransSegs (exact only if the plan counts exactly, see ChaosReport)."""
        return self.segments == self.kernel_retrans_segs

    def cause_checks(self) -> list[CauseCheck]:
        """Each cause beside the kernel counter it must equal; timeout and tail_loss_probe
        together beside what is left of RetransSegs."""
        checks = [
            CauseCheck(cause, self.causes.get(cause, 0), counter, self.kernel_causes.get(counter, 0))
            for cause, counter in CAUSE_COUNTERS.items()
        ]
        rest = self.kernel_retrans_segs - sum(c.kernel for c in checks)
        checks.append(CauseCheck(REST_CAUSE, sum(self.causes.get(c, 0) for c in REST), REST_COUNTER, rest))
        return checks

    @property
    def rate(self) -> float | None:
        return rate(self.segments, self.sent)

    @property
    def kernel_sent(self) -> int:
        """Segments sent, retransmissions included, by the kernel's counters: our `sent` unit."""
        return self.kernel_out_segs + self.kernel_retrans_segs

    @property
    def kernel_rate(self) -> float | None:
        return rate(self.kernel_retrans_segs, self.kernel_sent)


REST_CAUSE = " + ".join(REST)
REST_COUNTER = "RetransSegs - " + " - ".join(CAUSE_COUNTERS.values())


@dataclass(frozen=True)
class CauseCheck:
    """Segments of a cause (or of REST_CAUSE) against the kernel counter they must equal."""

    cause: str
    segments: int
    counter: str
    kernel: int

    def match(self, unclassified: int) -> str:
        """ "exact"; "within_unclassified" if off only as far as segments of unknown cause allow
        (they are labelled timeout, so other causes can only be short, the rest only over); "off"."""
        off = self.segments - self.kernel
        if off == 0:
            return "exact"
        allowed = 0 <= off <= unclassified if self.cause == REST_CAUSE else -unclassified <= off <= 0
        return "within_unclassified" if allowed else "off"


@dataclass
class FlowRow:
    key: FlowKey
    counts: Counts

    @property
    def rate(self) -> float | None:
        return rate(self.counts.segments, self.counts.sent)


@dataclass
class ChaosReport:
    loss_percent: float
    method: str  # netem, nftables or none
    seconds: float
    interrupted: bool
    namespaces: list[NamespaceRow]
    flows: list[FlowRow]
    dropped_packets: int | None = None
    traffic: dict[str, object] | None = None
    hooks: str = ""
    counting: str = ""
    notes: list[str] = field(default_factory=list)
    unclassified_segments: int = 0  # grown during the run, all namespaces: labelled timeout
    blackhole: tuple[float, float] | None = None  # (start, end) seconds into the traffic
    drop_handshakes: int = 0

    @property
    def counts_exactly(self) -> bool:
        """The loaded plan counts exactly; per event, an equal sum is luck, not exactness."""
        return self.counting == "exact"

    def namespace_exact(self, ns: NamespaceRow) -> bool:
        return self.counts_exactly and ns.equal

    @property
    def exact(self) -> bool:
        return all(self.namespace_exact(ns) for ns in self.namespaces)

    @property
    def causes_exact(self) -> bool:
        return self.counts_exactly and all(
            c.match(0) == "exact" for ns in self.namespaces for c in ns.cause_checks()
        )

    def to_json(self) -> dict[str, object]:
        return {
            "loss_percent": self.loss_percent,
            "method": self.method,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "exact": self.exact,
            "causes_exact": self.causes_exact,
            "unclassified_segments": self.unclassified_segments,
            "blackhole": None if self.blackhole is None else list(self.blackhole),
            "drop_handshakes": self.drop_handshakes,
            "hooks": self.hooks,
            "counting": self.counting,
            "dropped_packets": self.dropped_packets,
            "traffic": self.traffic,
            "notes": self.notes,
            "namespaces": [
                {
                    **asdict(ns),
                    "exact": self.namespace_exact(ns),
                    "equal": ns.equal,
                    "kernel_sent": ns.kernel_sent,
                    "rate": ns.rate,
                    "kernel_rate": ns.kernel_rate,
                    "cause_checks": [
                        {**asdict(c), "match": c.match(self.unclassified_segments)} for c in ns.cause_checks()
                    ],
                }
                for ns in self.namespaces
            ],
            "flows": [
                {"role": f.key.role, "src": f.key.src, "dst": f.key.dst, **asdict(f.counts), "rate": f.rate}
                for f in self.flows
            ],
        }


def namespace_rows(
    flows: Mapping[FlowKey, Counts],
    namespaces: Mapping[str, tuple[str, int]],
    kernel: Mapping[str, Mapping[str, int]],
) -> list[NamespaceRow]:
    """One row per role: the agent's sums beside the kernel's counters (role -> (name, inode))."""
    rows = []
    for role, (name, inode) in namespaces.items():
        mine = [c for k, c in flows.items() if k.role == role]
        counters = kernel.get(role, {})
        causes = {cause: sum(c.causes.get(cause, 0) for c in mine) for cause in CAUSES}
        rows.append(
            NamespaceRow(
                role=role,
                name=name,
                inode=inode,
                kernel_retrans_segs=int(counters.get("RetransSegs", 0)),
                kernel_out_segs=int(counters.get("OutSegs", 0)),
                segments=sum(c.segments for c in mine),
                events=sum(c.events for c in mine),
                sent=sum(c.sent for c in mine),
                causes=causes,
                kernel_causes={name: int(counters.get(name, 0)) for name in KERNEL_CAUSE_COUNTERS},
            )
        )
    return rows


def cause_notes(hooks: str) -> list[str]:
    """What the report should say about the causes the hooks in use can tell apart."""
    if hooks == "tracepoint":
        return [
            "classic tracepoints cannot tell causes apart: SYN and SYN-ACK retransmits read syn, "
            "all others fast (see docs/counting.md)"
        ]
    return []


def flow_rows(flows: Mapping[FlowKey, Counts]) -> list[FlowRow]:
    """Flows that retransmitted, worst first; then the ones that only sent."""
    rows = [FlowRow(k, c) for k, c in flows.items()]
    rows.sort(key=lambda r: (-r.counts.segments, -r.counts.sent, r.key))
    return rows
