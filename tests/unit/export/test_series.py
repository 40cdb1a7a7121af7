"""SeriesTable: a cap on series, folding into `other`, conservation of totals, monotonic series."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retransmon.attribution.labels import OTHER, fold
from retransmon.export.series import Sample, SeriesTable

NAMES = ("ip_version", "dst_ip", "service_port", "kind")


def _values(ip: str, port: str = "443", kind: str = "retransmit", version: str = "4") -> tuple[str, ...]:
    return (version, ip, port, kind)


def _by_labels(table: SeriesTable) -> dict[tuple[str, ...], tuple[int, int]]:
    samples = table.samples()
    out = {s.labels: (s.events, s.segments) for s in samples}
    assert len(out) == len(samples), "samples() must not repeat a label set"
    return out


@pytest.mark.parametrize("bad", [0, -1])
def test_max_series_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="max_series"):
        SeriesTable(NAMES, bad)


def test_empty_table() -> None:
    t = SeriesTable(NAMES, 3)
    assert t.samples() == []
    assert len(t) == 0
    assert (t.totals().events, t.totals().segments) == (0, 0)
    assert t.folded_records == 0


def test_same_series_accumulates() -> None:
    t = SeriesTable(NAMES, 10)
    t.add(_values("10.0.0.1"), 1, 3)
    t.add(_values("10.0.0.1"), 2, 5)
    assert t.samples() == [Sample(_values("10.0.0.1"), 3, 8)]
    assert len(t) == 1


def test_cap_folds_extra_series_into_other() -> None:
    t = SeriesTable(NAMES, 2)
    t.add(_values("10.0.0.1"), 1, 1)
    t.add(_values("10.0.0.2"), 1, 2)
    t.add(_values("10.0.0.3", port="80"), 1, 4)  # refused: folded
    t.add(_values("10.0.0.4", port="22"), 2, 8)  # refused: same `other` series
    t.add(_values("10.0.0.5", kind="synack"), 1, 16)  # refused: a different `other` series (kind kept)
    got = _by_labels(t)
    assert got == {
        _values("10.0.0.1"): (1, 1),
        _values("10.0.0.2"): (1, 2),
        ("4", OTHER, OTHER, "retransmit"): (3, 12),
        ("4", OTHER, OTHER, "synack"): (1, 16),
    }
    assert t.folded_records == 3
    assert len(t) == 4


def test_admitted_series_keeps_counting_after_cap() -> None:
    t = SeriesTable(NAMES, 1)
    t.add(_values("10.0.0.1"), 1, 1)
    t.add(_values("10.0.0.2"), 1, 1)  # folded
    t.add(_values("10.0.0.1"), 5, 5)  # admitted already: not folded
    assert _by_labels(t)[_values("10.0.0.1")] == (6, 6)
    assert t.folded_records == 1


def test_refused_series_stays_refused() -> None:
    t = SeriesTable(NAMES, 1)
    t.add(_values("10.0.0.1"), 1, 1)
    for _ in range(3):
        t.add(_values("10.0.0.2"), 1, 1)
    got = _by_labels(t)
    assert _values("10.0.0.2") not in got
    assert got[("4", OTHER, OTHER, "retransmit")] == (3, 3)
    assert t.folded_records == 3


def test_other_identical_to_admitted_series_is_merged() -> None:
    t = SeriesTable(NAMES, 1)
    # A coarse flow projected to `other` endpoint labels is admitted as an ordinary series...
    t.add(("4", OTHER, OTHER, "retransmit"), 1, 10)
    # ...and a refused series folds into that same label set.
    t.add(_values("10.0.0.9"), 2, 20)
    assert t.samples() == [Sample(("4", OTHER, OTHER, "retransmit"), 3, 30)]
    assert len(t) == 1


def test_samples_are_copies() -> None:
    t = SeriesTable(NAMES, 1)
    t.add(_values("10.0.0.1"), 1, 1)
    t.add(_values("10.0.0.2"), 1, 1)
    first = _by_labels(t)
    t.samples()  # reading does not double-count the merged `other`
    assert _by_labels(t) == first
    t.add(_values("10.0.0.3"), 1, 1)
    assert first[("4", OTHER, OTHER, "retransmit")] == (1, 1)


def test_zero_additions_still_admit() -> None:
    t = SeriesTable(NAMES, 1)
    t.add(_values("10.0.0.1"), 0, 0)
    t.add(_values("10.0.0.2"), 1, 1)
    assert _by_labels(t) == {_values("10.0.0.1"): (0, 0), ("4", OTHER, OTHER, "retransmit"): (1, 1)}


label_values = st.tuples(
    st.sampled_from(["4", "6"]),
    st.sampled_from([f"10.0.0.{i}" for i in range(12)] + [OTHER]),
    st.sampled_from(["22", "80", "443", OTHER]),
    st.sampled_from(["retransmit", "synack"]),
)
additions = st.lists(
    st.tuples(label_values, st.integers(0, 1000), st.integers(0, 100_000)), min_size=0, max_size=60
)


@settings(max_examples=200, deadline=None)
@given(additions, st.integers(1, 20))
def test_conservation_cap_and_monotonicity(adds: list[tuple[tuple[str, ...], int, int]], cap: int) -> None:
    t = SeriesTable(NAMES, cap)
    previous: dict[tuple[str, ...], tuple[int, int]] = {}
    admitted: list[tuple[str, ...]] = []
    folded = 0
    for values, events, segments in adds:
        t.add(values, events, segments)
        # A model of admission: first `cap` distinct label sets are admitted, for good.
        if values not in admitted:
            if len(admitted) < cap:
                admitted.append(values)
            else:
                folded += 1
        now = _by_labels(t)
        # Every series present before is still present, and no counter went down.
        for labels, (ev, seg) in previous.items():
            assert labels in now
            assert now[labels][0] >= ev
            assert now[labels][1] >= seg
        previous = now
    samples = t.samples()
    assert sum(s.events for s in samples) == sum(e for _, e, _ in adds)
    assert sum(s.segments for s in samples) == sum(s for _, _, s in adds)
    totals = t.totals()
    assert (totals.events, totals.segments) == (sum(e for _, e, _ in adds), sum(s for _, _, s in adds))
    assert t.folded_records == folded
    assert len(t) == len(samples)
    labels_out = {s.labels for s in samples}
    # Admitted series all appear; anything else is a folded `other` series.
    assert set(admitted) <= labels_out
    for labels in labels_out - set(admitted):
        assert labels == fold(NAMES, labels)
    # The cap on admitted series: at most `cap` series carry non-`other` endpoint labels.
    assert len([lab for lab in labels_out if lab != fold(NAMES, lab)]) <= cap


@settings(max_examples=100, deadline=None)
@given(additions, st.integers(1, 5))
def test_admitted_series_values_equal_their_own_additions(
    adds: list[tuple[tuple[str, ...], int, int]], cap: int
) -> None:
    t = SeriesTable(NAMES, cap)
    admitted: list[tuple[str, ...]] = []
    for values, events, segments in adds:
        t.add(values, events, segments)
        if values not in admitted and len(admitted) < cap:
            admitted.append(values)
    got = _by_labels(t)
    for labels in admitted:
        if labels == fold(NAMES, labels):
            continue  # may have folded series merged in
        own = [(e, s) for v, e, s in adds if v == labels]
        assert got[labels] == (sum(e for e, _ in own), sum(s for _, s in own))
