"""`retransmon top`: per-interval rates, sort orders, and views that fit 80 columns. No BPF here."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from retransmon.live.decode import EventFlow
from retransmon.live.top import columns_for, fit, render_plain, render_view, table_lines
from retransmon.live.topmodel import IDLE_ROLLS, SORT_KEYS, TopModel


def flow(dst: str, dport: int = 5001, *, version: int = 4, sport: int = 40000, netns: int = 1) -> EventFlow:
    src = "198.18.0.1" if version == 4 else "2001:db8::1"
    return EventFlow(netns, 0, 77, "python3", version, src, sport, dst, dport, "established", "retransmit")


A = flow("198.18.0.2")
B = flow("10.0.0.9", 443)
C = flow("2001:db8:1234:5678:9abc:def0:1234:5678", 8443, version=6)


def model_with_traffic() -> TopModel:
    m = TopModel()
    for f, segments, events in ((A, 10, 10), (B, 300, 2), (C, 40, 8)):
        for _ in range(events):
            m.add(f, segments // events, False, "fast")
    m.add(A, 6, reconciled=True, cause="timeout")  # segments found at close: not an event
    return m


def test_roll_turns_counts_into_rates() -> None:
    m = model_with_traffic()
    m.roll(2.0)
    rows = {r.dst_ip: r for r in m.flows.values()}
    assert (rows["198.18.0.2"].rate, rows["198.18.0.2"].event_rate) == (8.0, 5.0)
    assert (rows["10.0.0.9"].rate, rows["10.0.0.9"].event_rate) == (150.0, 1.0)
    assert (m.totals.rate, m.totals.event_rate, m.totals.segments, m.totals.events) == (178.0, 10.0, 356, 20)
    m.roll(2.0)  # a quiet interval: rates drop to 0, totals stay
    assert all(r.rate == 0 and r.event_rate == 0 for r in m.flows.values())
    assert m.totals.rate == 0 and m.totals.segments == 356
    assert rows["10.0.0.9"].total_segments == 300


def test_idle_flows_leave_after_some_intervals() -> None:
    m = model_with_traffic()
    m.roll(1.0)
    for _ in range(IDLE_ROLLS - 1):
        m.add(B, 1, False)
        m.roll(1.0)
    assert len(m.flows) == 3  # idle, but not for long enough yet
    m.add(B, 1, False)
    m.roll(1.0)
    assert {r.dst_ip for r in m.flows.values()} == {"10.0.0.9"}


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("rate", ["10.0.0.9", "2001:db8:1234:5678:9abc:def0:1234:5678", "198.18.0.2"]),
        ("events", ["198.18.0.2", "2001:db8:1234:5678:9abc:def0:1234:5678", "10.0.0.9"]),
        ("total", ["10.0.0.9", "2001:db8:1234:5678:9abc:def0:1234:5678", "198.18.0.2"]),
        ("peer", ["10.0.0.9", "198.18.0.2", "2001:db8:1234:5678:9abc:def0:1234:5678"]),
    ],
)
def test_sort_orders(sort: str, order: list[str]) -> None:
    m = model_with_traffic()
    m.roll(1.0)
    assert [r.dst_ip for r in m.ranked(sort)] == order


def test_sort_keys_are_all_known() -> None:
    m = model_with_traffic()
    for key in SORT_KEYS:
        assert len(m.ranked(key)) == 3
    with pytest.raises(ValueError, match="unknown sort key"):
        m.ranked("bogus")


@pytest.mark.parametrize(
    ("text", "width", "out"),
    [("198.18.0.2:5001", 21, "198.18.0.2:5001"), ("[2001:db8::abcd]:5001", 12, "\u2026:abcd]:5001")],
)
def test_fit_keeps_the_end(text: str, width: int, out: str) -> None:
    assert fit(text, width) == out
    assert len(fit(text, width)) <= width


@pytest.mark.parametrize("width", [80, 100, 110, 200])
def test_columns_fill_the_width(width: int) -> None:
    cols = columns_for(width)
    assert sum(c.width for c in cols) + len(cols) - 1 <= width - 1
    assert cols[0].title == "PEER"
    assert cols[1].title == ("LOCAL" if width >= 110 else "LPORT")


@pytest.mark.parametrize("width", [80, 132])
def test_view_fits_the_terminal_and_shows_peers(width: int) -> None:
    m = model_with_traffic()
    m.roll(1.0)
    m.totals.lost = 12
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(render_view(m, "rate", 10, 2.0, 0.0, width=width))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(x) for x in lines) <= width
    assert "198.18.0.2:5001" in text and "10.0.0.9:443" in text
    assert "1234:5678]:8443" in text  # a long IPv6 peer keeps its port
    assert "lost 12" in text and "q quit" in text
    assert "\U0001f522" not in text  # ':1234:' is an address, not an emoji code
    header = next(x for x in lines if x.startswith("PEER"))
    assert header.split()[-3:] == ["SEGS/s", "EVT/s", "TOTAL"]
    first = lines[lines.index(header) + 1]
    assert first.startswith("10.0.0.9:443") and first.split()[-3:] == ["300", "2.0", "300"]


def test_table_lines_limit_rows() -> None:
    m = model_with_traffic()
    m.roll(1.0)
    header, rows = table_lines(m, "peer", 2, 80)
    assert len(rows) == 2 and all(len(r) == len(header) for r in rows)


def test_plain_block() -> None:
    m = model_with_traffic()
    m.roll(2.0)
    block = render_plain(m, "rate", 2, 2.0, 0.0)
    lines = block.splitlines()
    assert "retransmits 178 segs/s, 10 events/s over 2 s" in lines[0]
    assert "total 356 segments, 20 events; lost 0; flows 3" in lines[0]
    assert lines[1].split() == ["PEER", "LOCAL", "OWNER", "STATE", "CAUSE", "SEGS/s", "EVT/s", "TOTAL"]
    assert lines[2].split() == [
        "10.0.0.9:443",
        "198.18.0.1:40000",
        "77/python3",
        "established",
        "fast",
        "150",
        "1.0",
        "300",
    ]
    assert len(lines) == 5 and lines[4] == "" and block.endswith("\n\n")  # two rows, a blank line


def test_collector_filters_skips_undecodable_and_yields() -> None:
    import ipaddress

    from retransmon.live.decode import encode_event
    from retransmon.live.filter import EventFilter
    from retransmon.live.top import YIELD_EVERY, _Collector, _Yield

    def raw(rport: int, family: int = 2) -> bytes:
        a = ipaddress.ip_address("198.18.0.1").packed + bytes(12)
        b = ipaddress.ip_address("198.18.0.2").packed + bytes(12)
        return encode_event(family=family, lport=40000, rport=rport, segments=2, laddr=a, raddr=b)

    m = TopModel()
    c = _Collector(m, EventFilter.from_args(ports=[5001]))
    c.on_record(raw(5001))
    c.on_record(raw(22))  # filtered out
    c.on_record(raw(5001, family=99))  # undecodable
    assert (m.totals.segments, m.totals.events, c.undecodable) == (2, 1, 1)
    with pytest.raises(_Yield):
        for _ in range(YIELD_EVERY):
            c.on_record(raw(5001))
    c.draining = True  # reading what is left at exit: never interrupted
    for _ in range(2 * YIELD_EVERY):
        c.on_record(raw(5001))
    # The yield came after YIELD_EVERY decoded records (two before the loop); each record was kept.
    assert m.totals.events == 1 + (YIELD_EVERY - 2) + 2 * YIELD_EVERY


def test_rows_show_their_main_cause_and_sort_by_timeouts() -> None:
    m = TopModel()
    for _ in range(3):
        m.add(A, 1, False, "timeout")  # three RTOs, one segment each
    m.add(A, 2, False, "slow_start")
    m.add(B, 50, False, "fast")
    m.add(B, 1, False, "timeout")
    m.roll(1.0)
    rows = {r.dst_ip: r for r in m.flows.values()}
    assert (rows["198.18.0.2"].cause, rows["198.18.0.2"].timeouts) == ("timeout", 3)
    assert (rows["10.0.0.9"].cause, rows["10.0.0.9"].timeouts) == ("fast", 1)
    assert [r.dst_ip for r in m.ranked("timeouts")] == ["198.18.0.2", "10.0.0.9"]
    assert [r.dst_ip for r in m.ranked("rate")] == ["10.0.0.9", "198.18.0.2"]
    assert any(line.split()[4] == "rto" for line in table_lines(m, "timeouts", 5, 80)[1])
