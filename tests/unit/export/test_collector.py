"""The Collector: a hand-built Snapshot in, metric families out (read back as Prometheus would).

The last part feeds a Harvester from a fake flow table (no BPF) to check the pipeline
from kernel keys to exported series.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from retransmon import __version__
from retransmon.attribution.addresses import encode_address
from retransmon.attribution.labels import DEFAULT_LABELS, Projector, parse_labels, sent_labels
from retransmon.attribution.listening import ListeningPorts
from retransmon.export.collector import RetransmonCollector
from retransmon.export.families import HEALTH, SERIES
from retransmon.export.harvester import Harvester, Snapshot
from retransmon.export.series import Sample, SeriesTable
from retransmon.kernel.structs import FLOW_COUNTS, FLOW_KEY, KIND_RETRANSMIT, KIND_SENT, KIND_SYNACK
from retransmon.kernel.tables import Losses
from tests.support.fakekernel import FakeBPF, FakeFlowTables

LABELS = DEFAULT_LABELS  # ip_version, src_ip, dst_ip, service_port, state, kind, cause
SENT_LABELS = sent_labels(LABELS)

R1 = ("4", "10.0.0.1", "10.0.0.2", "443", "established", "retransmit", "fast")
R2 = ("6", "2001:db8::1", "2001:db8::2", "22", "syn_recv", "synack", "syn")
R3 = ("4", "other", "other", "other", "established", "retransmit", "timeout")
S1 = ("4", "10.0.0.1", "10.0.0.2", "443")


def _snapshot(**changes: Any) -> Snapshot:
    snap = Snapshot(
        retransmits=[Sample(R1, 3, 45), Sample(R2, 2, 2), Sample(R3, 1, 7)],
        sent=[Sample(S1, 0, 1000)],
        losses=Losses(
            events_lost=5,
            unaccounted_events=2,
            unaccounted_segments=9,
            untracked_sockets=6,
            unclassified_segments=8,
        ),
        series_folded=11,
        flow_entries=42,
        flow_capacity=16384,
        recursion_misses={"tcp_retransmit_skb": 4, "tcp_retransmit_synack": 0},
        attached={"tcp_retransmit_skb": True, "tcp_retransmit_synack": True, "inet_sock_set_state": False},
        hooks="tp_btf",
        exact=True,
        harvests=17,
        harvest_seconds=0.25,
    )
    return replace(snap, **changes)


def _registry(snap: Snapshot, labels: tuple[str, ...] = LABELS) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RetransmonCollector(lambda: snap, labels))
    return registry


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    return dict(zip(names, values, strict=True))


@pytest.mark.parametrize(
    ("values", "segments", "events"),
    [(R1, 45, 3), (R2, 2, 2), (R3, 7, 1)],
)
def test_retransmit_series(values: tuple[str, ...], segments: int, events: int) -> None:
    reg = _registry(_snapshot())
    labels = _labels(LABELS, values)
    assert reg.get_sample_value("tcp_retransmitted_segments_total", labels) == segments
    assert reg.get_sample_value("tcp_retransmissions_total", labels) == events


def test_absent_series_has_no_value() -> None:
    reg = _registry(_snapshot())
    labels = _labels(LABELS, ("4", "10.0.0.9", "10.0.0.2", "443", "established", "retransmit", "fast"))
    assert reg.get_sample_value("tcp_retransmitted_segments_total", labels) is None


def test_segments_sent_has_no_kind_state_or_cause() -> None:
    reg = _registry(_snapshot())
    assert reg.get_sample_value("tcp_segments_sent_total", _labels(SENT_LABELS, S1)) == 1000
    # With kind/state/cause labels the series does not exist.
    assert reg.get_sample_value("tcp_segments_sent_total", _labels(LABELS, (*S1, "", "sent", ""))) is None
    fams = {m.name: m for m in reg.collect()}
    for s in fams["tcp_segments_sent"].samples:
        assert set(s.labels) == set(SENT_LABELS)


def test_sums_over_series() -> None:
    reg = _registry(_snapshot())
    fams = {m.name: m for m in reg.collect()}
    seg = [s for s in fams["tcp_retransmitted_segments"].samples if s.name.endswith("_total")]
    ev = [s for s in fams["tcp_retransmissions"].samples if s.name.endswith("_total")]
    assert sum(s.value for s in seg) == 45 + 2 + 7
    assert sum(s.value for s in ev) == 3 + 2 + 1
    assert len(seg) == len(ev) == 3


def test_build_info() -> None:
    reg = _registry(_snapshot())
    labels = {
        "version": __version__,
        "hooks": "tp_btf",
        "counting": "exact",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    assert reg.get_sample_value("retransmon_build_info", labels) == 1


@pytest.mark.parametrize(
    ("hooks", "exact", "counting"), [("tracepoint", False, "per_event"), ("none", False, "per_event")]
)
def test_build_info_per_event(hooks: str, exact: bool, counting: str) -> None:
    reg = _registry(_snapshot(hooks=hooks, exact=exact))
    fams = {m.name: m for m in reg.collect()}
    (sample,) = fams["retransmon_build_info"].samples
    assert sample.value == 1
    assert sample.labels["hooks"] == hooks
    assert sample.labels["counting"] == counting


@pytest.mark.parametrize(
    ("program", "value"),
    [("tcp_retransmit_skb", 1), ("tcp_retransmit_synack", 1), ("inet_sock_set_state", 0)],
)
def test_program_attached(program: str, value: int) -> None:
    reg = _registry(_snapshot())
    assert reg.get_sample_value("retransmon_bpf_program_attached", {"program": program}) == value


@pytest.mark.parametrize(("program", "value"), [("tcp_retransmit_skb", 4), ("tcp_retransmit_synack", 0)])
def test_recursion_misses(program: str, value: int) -> None:
    reg = _registry(_snapshot())
    assert reg.get_sample_value("retransmon_bpf_recursion_misses_total", {"program": program}) == value


def test_no_recursion_misses_series_when_detached() -> None:
    reg = _registry(_snapshot(recursion_misses={}))
    assert (
        reg.get_sample_value("retransmon_bpf_recursion_misses_total", {"program": "tcp_retransmit_skb"})
        is None
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("retransmon_events_lost_total", 5),
        ("retransmon_unaccounted_events_total", 2),
        ("retransmon_unaccounted_segments_total", 9),
        ("retransmon_untracked_sockets_total", 6),
        ("retransmon_unclassified_segments_total", 8),
        ("retransmon_flow_map_entries", 42),
        ("retransmon_flow_map_capacity", 16384),
        ("retransmon_series_overflow_total", 11),
        ("retransmon_harvests_total", 17),
        ("retransmon_harvest_seconds_total", 0.25),
    ],
)
def test_health_values(name: str, value: float) -> None:
    assert _registry(_snapshot()).get_sample_value(name) == value


@pytest.mark.parametrize(
    ("family", "kind"),
    [
        ("tcp_retransmitted_segments", "counter"),
        ("tcp_retransmissions", "counter"),
        ("tcp_segments_sent", "counter"),
        ("retransmon_build_info", "gauge"),
        ("retransmon_bpf_program_attached", "gauge"),
        ("retransmon_bpf_recursion_misses", "counter"),
        ("retransmon_events_lost", "counter"),
        ("retransmon_unaccounted_events", "counter"),
        ("retransmon_unaccounted_segments", "counter"),
        ("retransmon_untracked_sockets", "counter"),
        ("retransmon_unclassified_segments", "counter"),
        ("retransmon_flow_map_entries", "gauge"),
        ("retransmon_flow_map_capacity", "gauge"),
        ("retransmon_series_overflow", "counter"),
    ],
)
def test_metric_types_and_help(family: str, kind: str) -> None:
    fams = {m.name: m for m in _registry(_snapshot()).collect()}
    assert fams[family].type == kind
    assert fams[family].documentation.strip()


def test_empty_snapshot_still_exports_health() -> None:
    reg = _registry(_snapshot(retransmits=[], sent=[]))
    assert reg.get_sample_value("retransmon_events_lost_total") == 5
    text = generate_latest(reg).decode()
    assert "# TYPE tcp_retransmitted_segments_total counter" in text
    assert "# HELP tcp_retransmissions_total" in text


def test_flow_labels() -> None:
    labels = parse_labels("flow")
    values = ("4", "10.0.0.1", "43210", "10.0.0.2", "443")
    snap = _snapshot(retransmits=[Sample(values, 1, 2)], sent=[Sample(values, 0, 10)])
    reg = _registry(snap, labels)
    assert reg.get_sample_value("tcp_retransmitted_segments_total", _labels(labels, values)) == 2
    assert reg.get_sample_value("tcp_segments_sent_total", _labels(labels, values)) == 10


def test_text_exposition_round_trip() -> None:
    tricky = ("4", "10.0.0.1", "10.0.0.2", "443", "established", "retransmit", "fast")
    reg = _registry(_snapshot())
    text = generate_latest(reg).decode()
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "tcp_retransmitted_segments",
        "tcp_retransmissions",
        "tcp_segments_sent",
        "retransmon_build_info",
        "retransmon_bpf_program_attached",
        "retransmon_bpf_recursion_misses",
        "retransmon_events_lost",
        "retransmon_flow_map_entries",
        "retransmon_flow_map_capacity",
        "retransmon_series_overflow",
        "retransmon_unaccounted_events",
        "retransmon_unaccounted_segments",
    ):
        assert name in parsed, name
    segs = {
        tuple(s.labels[n] for n in LABELS): s.value
        for s in parsed["tcp_retransmitted_segments"].samples
        if s.name == "tcp_retransmitted_segments_total"
    }
    assert segs == {R1: 45, R2: 2, R3: 7}
    assert segs[tricky] == 45


def test_label_values_are_escaped() -> None:
    labels = ("cgroup", "kind")
    weird = ('/a "quoted"\\path\nnewline', "retransmit")
    reg = _registry(_snapshot(retransmits=[Sample(weird, 1, 1)], sent=[]), labels)
    text = generate_latest(reg).decode()
    (fam,) = [f for f in text_string_to_metric_families(text) if f.name == "tcp_retransmitted_segments"]
    (sample,) = [s for s in fam.samples if s.name.endswith("_total")]
    assert sample.labels == {"cgroup": weird[0], "kind": "retransmit"}


def test_openmetrics_exposition_parses() -> None:
    encoder, content_type = choose_encoder("application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text")
    text = encoder(_registry(_snapshot())).decode()
    assert text.endswith("# EOF\n")
    names = {f.name for f in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    assert {"tcp_retransmitted_segments", "retransmon_build_info", "retransmon_flow_map_entries"} <= names


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics() -> None:
    text = generate_latest(_registry(_snapshot()))
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_registering_does_not_call_the_source() -> None:
    calls = 0

    def source() -> Snapshot:
        nonlocal calls
        calls += 1
        return _snapshot()

    registry = CollectorRegistry()
    collector = RetransmonCollector(source, LABELS)
    registry.register(collector)
    assert calls == 0
    described = {m.name for m in collector.describe()}
    assert calls == 0
    assert "tcp_retransmitted_segments" in described
    assert all(not m.samples for m in collector.describe())
    registry.get_sample_value("retransmon_events_lost_total")
    assert calls == 1


def test_two_collectors_conflict_on_names() -> None:
    registry = CollectorRegistry()
    registry.register(RetransmonCollector(_snapshot, LABELS))
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(RetransmonCollector(_snapshot, LABELS))


def test_each_scrape_reads_a_fresh_snapshot() -> None:
    snaps = [_snapshot(losses=Losses(events_lost=1)), _snapshot(losses=Losses(events_lost=2))]
    registry = CollectorRegistry()
    registry.register(RetransmonCollector(lambda: snaps.pop(0), LABELS))
    assert registry.get_sample_value("retransmon_events_lost_total") == 1
    assert registry.get_sample_value("retransmon_events_lost_total") == 2


# ---------------------------------------------------------------------------
# Harvester -> Snapshot -> Collector, with a fake flow table instead of BPF
# ---------------------------------------------------------------------------

NETNS = 4026531840


def _flow_key(kind: int, state: int, src: str, dst: str, *, lport: int, rport: int) -> bytes:
    fam, laddr = encode_address(src)
    _, raddr = encode_address(dst)
    return FLOW_KEY.pack(
        0, NETNS, fam, state, kind, lport, rport, 0, 0 if kind == KIND_SENT else 1, b"", laddr, raddr
    )


LOSSES = Losses(events_lost=4, unaccounted_events=3, unaccounted_segments=6, untracked_sockets=5)


def _harvester(
    labels: tuple[str, ...],
    batches: list[list[tuple[bytes, bytes]]],
    max_series: int = 100,
) -> tuple[Harvester, Callable[[], Snapshot]]:
    listening = ListeningPorts()
    projector = Projector(labels, listening, lambda _cid: "/")
    h = Harvester(
        FakeBPF(FakeFlowTables(batches, LOSSES, {(NETNS, 8080)})),
        projector,
        retransmits=SeriesTable(labels, max_series),
        sent=SeriesTable(sent_labels(labels), max_series),
        listening=listening,
    )
    return h, h.snapshot


def test_harvest_feeds_retransmit_series_and_losses() -> None:
    labels = parse_labels("dst_ip,kind,state")
    batch = [
        (
            _flow_key(KIND_RETRANSMIT, 1, "10.0.0.1", "10.0.0.2", lport=40000, rport=80),
            FLOW_COUNTS.pack(2, 9),
        ),
        (_flow_key(KIND_SYNACK, 12, "10.0.0.1", "10.0.0.3", lport=80, rport=50000), FLOW_COUNTS.pack(1, 1)),
    ]
    _, snapshot = _harvester(labels, [batch])
    snap = snapshot()  # harvests once; every get_sample_value below collects again
    registry = CollectorRegistry()
    registry.register(RetransmonCollector(lambda: snap, labels))
    get = registry.get_sample_value
    seg = "tcp_retransmitted_segments_total"
    assert get(seg, {"dst_ip": "10.0.0.2", "kind": "retransmit", "state": "established"}) == 9
    assert get(seg, {"dst_ip": "10.0.0.3", "kind": "synack", "state": "new_syn_recv"}) == 1
    assert get("retransmon_flow_map_entries") == 2
    assert get("retransmon_events_lost_total") == 4
    assert get("retransmon_unaccounted_events_total") == 3
    assert get("retransmon_unaccounted_segments_total") == 6
    assert get("retransmon_untracked_sockets_total") == 5
    assert get("retransmon_harvests_total") == 1
    assert (
        get(
            "retransmon_build_info",
            {
                "version": __version__,
                "hooks": "none",
                "counting": "per_event",
                "kernel": platform.release(),
                "python": platform.python_version(),
            },
        )
        == 1
    )
    # A second harvest of an empty table: series stay, entries reflect the last harvest.
    snap = snapshot()
    assert get(seg, {"dst_ip": "10.0.0.2", "kind": "retransmit", "state": "established"}) == 9
    assert get("retransmon_flow_map_entries") == 0
    assert get("retransmon_harvests_total") == 2


def test_harvest_sent_series_use_sent_labels() -> None:
    # Segments-sent keys (kind 2) must be projected onto the sent labels (no state, no kind).
    labels = parse_labels("state,dst_ip,kind")
    batch = [
        (_flow_key(KIND_SENT, 0, "10.0.0.1", "10.0.0.2", lport=40000, rport=80), FLOW_COUNTS.pack(1, 10))
    ]
    h, _ = _harvester(labels, [batch])
    h.harvest()
    assert [s.labels for s in h.sent.samples()] == [("10.0.0.2",)]


def test_harvest_sent_series_fold_past_the_cap() -> None:
    labels = parse_labels("default")
    batches = [
        [
            (
                _flow_key(KIND_SENT, 0, "10.0.0.1", f"10.0.1.{i}", lport=40000 + i, rport=80),
                FLOW_COUNTS.pack(1, 10),
            )
        ]
        for i in range(3)
    ]
    h, _ = _harvester(labels, batches, max_series=1)
    for _ in range(3):
        h.harvest()  # must not raise once the sent table is full
    samples = h.sent.samples()
    assert sum(s.segments for s in samples) == 30
    assert all(len(s.labels) == len(sent_labels(labels)) for s in samples)


def test_harvest_learns_listening_ports_and_stops_once_detached() -> None:
    labels = parse_labels("dst_ip,service_port")
    listening = ListeningPorts()
    tables = FakeFlowTables([], LOSSES, {(NETNS, 8080)})
    bpf = FakeBPF(tables)
    h = Harvester(
        bpf,
        Projector(labels, listening, lambda _cid: "/"),
        retransmits=SeriesTable(labels, 10),
        sent=SeriesTable(sent_labels(labels), 10),
        listening=listening,
    )
    assert not listening(NETNS, 8080)
    h.harvest()
    assert listening(NETNS, 8080) and not listening(NETNS, 8081)
    bpf.tables = None  # what close() does
    h.harvest()
    assert tables.drains == 1
    assert h.snapshot().harvests == 1


def test_every_family_of_the_table_is_collected_as_declared() -> None:
    fams = {m.name: m for m in _registry(_snapshot()).collect()}
    for series in SERIES:
        assert (fams[series.name].type, fams[series.name].documentation) == ("counter", series.help)
    for health in HEALTH:
        metric = fams[health.name]
        assert (metric.type, metric.documentation) == (health.kind, health.help)
        assert metric.samples, health.name
        assert all(set(s.labels) == set(health.labels) for s in metric.samples), health.name
