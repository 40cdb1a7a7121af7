"""--max-series folding (retransmit and sent series) and --series-ttl expiry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retransmon.attribution.labels import DEFAULT_LABELS, OTHER, sent_labels
from retransmon.export.series import Sample, SeriesTable

SENT_LABELS = sent_labels(DEFAULT_LABELS)  # ip_version, src_ip, dst_ip, service_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sent(dst: str, port: str = "443") -> tuple[str, ...]:
    return ("4", "10.0.0.1", dst, port)


def by_labels(samples: list[Sample]) -> dict[tuple[str, ...], int]:
    return {s.labels: s.segments for s in samples}


def test_sent_labels_drop_state_and_kind() -> None:
    assert SENT_LABELS == ("ip_version", "src_ip", "dst_ip", "service_port")


def test_sent_series_beyond_the_cap_fold_into_other_and_keep_the_total() -> None:
    table = SeriesTable(SENT_LABELS, max_series=2)
    table.add(sent("10.0.0.2"), 0, 100)
    table.add(sent("10.0.0.3"), 0, 50)
    table.add(sent("10.0.0.4", "80"), 0, 7)
    table.add(sent("10.0.0.5"), 0, 3)
    table.add(sent("10.0.0.2"), 0, 1)  # admitted series keep growing on their own
    assert by_labels(table.samples()) == {
        sent("10.0.0.2"): 101,
        sent("10.0.0.3"): 50,
        ("4", OTHER, OTHER, OTHER): 10,  # ip_version is kept, endpoints are not
    }
    assert table.folded_records == 2
    assert table.totals().segments == 161


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 1000)), max_size=60), st.integers(1, 5))
def test_folding_conserves_the_sum(additions: list[tuple[str, int]], cap: int) -> None:
    table = SeriesTable(SENT_LABELS, max_series=cap)
    for dst, n in additions:
        table.add(sent(dst), 0, n)
    assert sum(s.segments for s in table.samples()) == sum(n for _, n in additions)
    assert len([s for s in table.samples() if s.labels[2] != OTHER]) <= cap


def test_without_ttl_nothing_expires() -> None:
    clock = Clock()
    table = SeriesTable(SENT_LABELS, max_series=10, clock=clock)
    table.add(sent("10.0.0.2"), 0, 1)
    clock.now += 1e9
    assert table.expire() == 0
    assert len(table) == 1


def test_idle_series_expire_and_growing_ones_stay() -> None:
    clock = Clock()
    table = SeriesTable(SENT_LABELS, max_series=10, ttl=60, clock=clock)
    table.add(sent("10.0.0.2"), 0, 5)
    table.add(sent("10.0.0.3"), 0, 5)
    clock.now += 50
    table.add(sent("10.0.0.3"), 0, 1)
    table.add(sent("10.0.0.2"), 0, 0)  # present in a harvest but not grown: still idle
    clock.now += 20
    assert table.expire() == 1
    assert by_labels(table.samples()) == {sent("10.0.0.3"): 6}
    assert table.expired == 1
    # Back after expiry: starts over from zero (Prometheus sees a counter reset).
    table.add(sent("10.0.0.2"), 0, 2)
    assert by_labels(table.samples())[sent("10.0.0.2")] == 2


def test_expiry_frees_a_slot_under_the_cap() -> None:
    clock = Clock()
    table = SeriesTable(SENT_LABELS, max_series=1, ttl=60, clock=clock)
    table.add(sent("10.0.0.2"), 0, 5)
    table.add(sent("10.0.0.3"), 0, 1)  # no room: folded
    assert sent("10.0.0.3") not in by_labels(table.samples())
    clock.now += 61
    assert table.expire() == 2  # the admitted series and the idle `other` one
    table.add(sent("10.0.0.3"), 0, 4)
    assert by_labels(table.samples()) == {sent("10.0.0.3"): 4}


def test_an_admitted_series_and_its_folded_twin_expire_together() -> None:
    """A coarse kernel flow admitted as `other` and folds into the same labels are one exported series."""
    clock = Clock()
    other = ("4", OTHER, OTHER, OTHER)
    table = SeriesTable(SENT_LABELS, max_series=1, ttl=60, clock=clock)
    table.add(other, 0, 10)  # admitted
    table.add(sent("10.0.0.3"), 0, 1)  # folded into the same labels
    assert by_labels(table.samples()) == {other: 11}
    clock.now += 40
    table.add(sent("10.0.0.4"), 0, 1)  # the folded part grows
    clock.now += 40
    # The admitted part has been idle 80 s, but the exported series grew 40 s ago: it stays, unchanged.
    assert table.expire() == 0
    assert by_labels(table.samples()) == {other: 12}
    clock.now += 30
    assert table.expire() == 1
    assert table.samples() == []


@pytest.mark.parametrize("ttl", [0, -1])
def test_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ValueError):
        SeriesTable(SENT_LABELS, max_series=1, ttl=ttl)
