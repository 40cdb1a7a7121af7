"""/metrics as `serve` writes it (SeriesWriter + prometheus_client) against the reference Collector.

Both bodies are parsed the way Prometheus would, text format and OpenMetrics, and
must hold exactly the same samples, whatever the label values contain.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from retransmon.attribution.labels import DEFAULT_LABELS, parse_labels, sent_labels
from retransmon.export.collector import RetransmonCollector
from retransmon.export.exposition import AgentExposition, RegistryExposition
from retransmon.export.harvester import Snapshot
from retransmon.export.series import Sample
from retransmon.kernel.tables import Losses

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"
SampleSet = set[tuple[str, tuple[tuple[str, str], ...], float]]


def _snapshot(retransmits: list[Sample], sent: list[Sample]) -> Snapshot:
    return Snapshot(
        retransmits=retransmits,
        sent=sent,
        losses=Losses(events_lost=1, unaccounted_events=0, unaccounted_segments=2, untracked_sockets=3),
        series_folded=4,
        flow_entries=5,
        flow_capacity=16384,
        recursion_misses={"tcp_retransmit_skb": 7},
        attached={"tcp_retransmit_skb": True, "inet_sock_set_state": False},
        hooks="tp_btf",
        exact=True,
        harvests=8,
        harvest_seconds=0.5,
    )


def _samples(families: Iterable[object]) -> SampleSet:
    out: SampleSet = set()
    for family in families:
        for s in family.samples:  # type: ignore[attr-defined]
            out.add((s.name, tuple(sorted(s.labels.items())), float(s.value)))
    return out


def _reference(snap: Snapshot, labels: tuple[str, ...], openmetrics: bool) -> SampleSet:
    registry = CollectorRegistry()
    registry.register(RetransmonCollector(lambda: snap, labels))
    if openmetrics:
        text = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
        return _samples(parse_openmetrics(text))  # type: ignore[no-untyped-call]
    return _samples(text_string_to_metric_families(generate_latest(registry).decode()))


def _ours(snap: Snapshot, labels: tuple[str, ...], openmetrics: bool) -> tuple[SampleSet, str, str]:
    accept = OPENMETRICS_ACCEPT if openmetrics else ""
    body, content_type = AgentExposition(lambda: snap, labels).render(accept)
    text = body.decode()
    parse = parse_openmetrics if openmetrics else text_string_to_metric_families
    return _samples(parse(text)), text, content_type


TRICKY = ("4", 'quo"te', "back\\slash", "new\nline", "établi", "", "tail_loss_probe")
PLAIN = ("6", "2001:db8::1", "2001:db8::2", "443", "established", "retransmit", "fast")


def test_text_format_has_the_reference_samples() -> None:
    snap = _snapshot(
        [Sample(TRICKY, 3, 17), Sample(PLAIN, 1, 2)], [Sample(TRICKY[:4], 0, 1000), Sample(PLAIN[:4], 0, 5)]
    )
    ours, text, content_type = _ours(snap, DEFAULT_LABELS, openmetrics=False)
    assert content_type.startswith("text/plain")
    assert ours == _reference(snap, DEFAULT_LABELS, openmetrics=False)
    assert (
        "tcp_retransmitted_segments_total",
        tuple(sorted(zip(DEFAULT_LABELS, TRICKY, strict=True))),
        17.0,
    ) in ours
    assert "# TYPE tcp_segments_sent_total counter" in text


def test_openmetrics_has_the_reference_samples_and_one_eof() -> None:
    snap = _snapshot([Sample(TRICKY, 3, 17)], [Sample(TRICKY[:4], 0, 1000)])
    ours, text, content_type = _ours(snap, DEFAULT_LABELS, openmetrics=True)
    assert content_type.startswith("application/openmetrics-text")
    assert ours == _reference(snap, DEFAULT_LABELS, openmetrics=True)
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    assert "# TYPE tcp_retransmissions counter" in text


def test_no_series_still_has_the_families_and_health() -> None:
    snap = _snapshot([], [])
    ours, text, _ = _ours(snap, DEFAULT_LABELS, openmetrics=False)
    assert ours == _reference(snap, DEFAULT_LABELS, openmetrics=False)
    assert "# HELP tcp_retransmitted_segments_total" in text
    assert ("retransmon_untracked_sockets_total", (), 3.0) in ours


def test_flow_labels() -> None:
    labels = parse_labels("flow,netns,cgroup")
    values = ("4", "10.0.0.1", "43210", "10.0.0.2", "443", "4026531840", "/system.slice/x.service")
    snap = _snapshot([Sample(values, 2, 9)], [Sample(values, 0, 40)])
    assert sent_labels(labels) == labels  # flow labels carry no state or kind
    for openmetrics in (False, True):
        assert _ours(snap, labels, openmetrics)[0] == _reference(snap, labels, openmetrics)


def test_series_that_disappear_are_forgotten() -> None:
    """--series-ttl drops series: their cached label strings go with them."""
    first = _snapshot([Sample(PLAIN, 1, 1)], [])
    later = _snapshot([Sample(TRICKY, 1, 1)], [])
    current = [first]
    exposition = AgentExposition(lambda: current[0], DEFAULT_LABELS)
    exposition.render("")
    current[0] = later
    text = exposition.render("")[0].decode()
    assert "2001:db8::1" not in text
    assert len(exposition._writer._caches[False]._rendered) == 1  # the cache itself


def test_registry_exposition_negotiates_like_prometheus_client() -> None:
    registry = CollectorRegistry()
    body, content_type = RegistryExposition(registry).render(OPENMETRICS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    assert RegistryExposition(registry).render("")[1].startswith("text/plain")


label_value = st.text(st.characters(codec="utf-8"), max_size=12)  # any text a label may hold


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.tuples(*[label_value] * len(DEFAULT_LABELS)), st.integers(0, 2**53)),
        max_size=6,
        unique_by=lambda r: r[0],
    ),
    openmetrics=st.booleans(),
)
def test_any_label_values_give_the_reference_samples(
    rows: list[tuple[tuple[str, ...], int]], openmetrics: bool
) -> None:
    retransmits = [Sample(values, n // 3, n) for values, n in rows]
    sent = {values[:4]: Sample(values[:4], 0, n) for values, n in rows}
    snap = _snapshot(retransmits, list(sent.values()))
    assert _ours(snap, DEFAULT_LABELS, openmetrics)[0] == _reference(snap, DEFAULT_LABELS, openmetrics)
