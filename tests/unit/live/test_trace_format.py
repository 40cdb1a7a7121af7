"""`retransmon trace` output: columns, JSON lines, --count summary, filters. No BPF here."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retransmon.live.clock import BootClock
from retransmon.live.decode import Event, EventFlow, decode_event, encode_event
from retransmon.live.filter import EventFilter, parse_host, parse_netns, parse_port
from retransmon.live.trace import (
    TEXT_HEADER,
    Counter,
    JsonFormatter,
    TextFormatter,
    TraceOptions,
    Tracer,
    TraceStats,
    endpoint,
    render_stats,
)
from tests.support.tracer import JSON_KEYS

WALL = 1_796_183_451  # 2026-12-02T03:50:51Z


class FixedClock(BootClock):
    """Boot time 0 is WALL seconds of wall-clock time."""

    def __init__(self) -> None:
        super().__init__(lambda: WALL * 10**9, lambda: 0)


def v4(text: str) -> bytes:
    return ipaddress.ip_address(text).packed + bytes(12)


def v6(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def record(
    boot_ns: int = 1_500_000,
    segments: int = 3,
    *,
    family: int = 2,
    laddr: bytes = v4("198.18.0.1"),
    raddr: bytes = v4("198.18.0.2"),
    lport: int = 40000,
    rport: int = 5001,
    kind: int = 0,
    state: int = 1,
    flags: int = 0,
    pid: int = 4242,
    comm: bytes = b"curl",
    netns: int = 4026532000,
    cgroup: int = 0,
    cause: int = 2,
) -> bytes:
    return encode_event(
        boot_ns=boot_ns, cgroup=cgroup, netns=netns, pid=pid, segments=segments, family=family,
        state=state, kind=kind, lport=lport, rport=rport, flags=flags, comm=comm, laddr=laddr, raddr=raddr,
        cause=cause, backoff=1, srtt_us=2500, rto_ms=412,
    )  # fmt: skip


def event(**fields: Any) -> Event:
    return decode_event(record(**fields))


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        (event(), "R> 198.18.0.2:5001       established retransmit    3"),
        (event(kind=1, state=3, segments=1), "S> 198.18.0.2:5001       syn_recv    synack        1"),
        (event(flags=1, state=4, segments=45), "C> 198.18.0.2:5001       fin_wait1   retransmit   45"),
    ],
)
def test_text_marks(ev: Event, expected: str) -> None:
    line = TextFormatter(FixedClock()).line(ev)
    assert expected in line


def test_text_line_columns() -> None:
    line = TextFormatter(FixedClock()).line(event())
    local = time.strftime("%H:%M:%S", time.localtime(WALL))
    assert line == (
        f"{local} 4242    curl         4  198.18.0.1:40000      R> 198.18.0.2:5001       "
        "established retransmit    3 slow_start          2500     412  1\n"
    )
    # Every field starts under its header (left-aligned) or ends under it (numbers).
    for title in ("PID", "COMM", "IP", "LADDR:LPORT", "T>", "RADDR:RPORT", "STATE", "KIND", "CAUSE"):
        col = TEXT_HEADER.index(title)
        assert line[col] != " " and line[col - 1] == " ", title
    for title in ("SEGS", "SRTT_US", "RTO_MS", "BO"):
        end = TEXT_HEADER.index(title) + len(title) - 1
        assert line[end] != " " and line[end + 1] in " \n", title
    assert len(line.rstrip("\n")) == len(TEXT_HEADER)


def test_text_unknown_owner_and_ipv6() -> None:
    ev = event(family=10, laddr=v6("2001:db8::1"), raddr=v6("2001:db8::2"), pid=0, comm=b"", rport=443)
    fields = TextFormatter(FixedClock()).line(ev).split()
    assert fields[1:6] == ["-", "-", "6", "[2001:db8::1]:40000", "R>"]
    assert fields[6] == "[2001:db8::2]:443"


def test_json_line_has_exactly_the_documented_keys() -> None:
    line = JsonFormatter(FixedClock(), lambda _id: "/system.slice/x.service").line(event(cgroup=5))
    assert line.endswith("}\n") and "\n" not in line[:-1]
    record = json.loads(line)
    assert list(record) == JSON_KEYS
    assert record == {
        "time": "2026-12-02T03:50:51.001500Z",
        "ip_version": 4,
        "src_ip": "198.18.0.1",
        "src_port": 40000,
        "dst_ip": "198.18.0.2",
        "dst_port": 5001,
        "state": "established",
        "kind": "retransmit",
        "cause": "slow_start",
        "segments": 3,
        "srtt_us": 2500,
        "rto_ms": 412,
        "backoff": 1,
        "netns": 4026532000,
        "cgroup": "/system.slice/x.service",
        "pid": 4242,
        "comm": "curl",
    }


def test_json_unknowns_are_null_and_strings_are_escaped() -> None:
    fmt = JsonFormatter(FixedClock(), lambda _id: "unknown")
    record = json.loads(fmt.line(event(pid=0, comm=b"", cgroup=7)))
    assert (record["pid"], record["comm"], record["cgroup"]) == (None, None, None)
    record = json.loads(fmt.line(event(comm=b'a"b\\c\x01')))
    assert record["comm"] == 'a"b\\c\x01'
    record = json.loads(fmt.line(event(cgroup=0)))
    assert record["cgroup"] is None


def test_json_cached_flow_part_does_not_freeze_time_or_segments() -> None:
    fmt = JsonFormatter(FixedClock(), lambda _id: "/")
    a = json.loads(fmt.line(event(boot_ns=0, segments=1)))
    b = json.loads(fmt.line(event(boot_ns=2_000_000_000, segments=9)))
    assert (a["time"], a["segments"]) == ("2026-12-02T03:50:51.000000Z", 1)
    assert (b["time"], b["segments"]) == ("2026-12-02T03:50:53.000000Z", 9)


def test_cgroup_resolved_once_per_flow(tmp_path: Path) -> None:
    calls: list[int] = []

    def path(cgroup_id: int) -> str:
        calls.append(cgroup_id)
        return "/a"

    with open(tmp_path / "out", "w") as out:
        tracer = Tracer(TraceOptions(json=True), out, FixedClock(), threading.Event())
        tracer.formatter = JsonFormatter(FixedClock(), path)
        for i in range(5):
            tracer.on_record(record(boot_ns=i, cgroup=11, segments=i + 1))
        tracer.on_record(record(cgroup=12))
        tracer.flush()
    assert calls == [11, 12]
    lines = [json.loads(x) for x in (tmp_path / "out").read_text().splitlines()]
    assert [x["segments"] for x in lines] == [1, 2, 3, 4, 5, 3]  # the cache keeps no per-record field
    assert {x["cgroup"] for x in lines} == {"/a"}


@pytest.mark.parametrize(
    ("version", "addr", "port", "text"),
    [
        (4, "10.0.0.1", 80, "10.0.0.1:80"),
        (6, "2001:db8::1", 443, "[2001:db8::1]:443"),
        (6, "::", 1, "[::]:1"),
    ],
)
def test_endpoint(version: int, addr: str, port: int, text: str) -> None:
    assert endpoint(version, addr, port) == text


def test_counter_sums_per_flow_and_ranks() -> None:
    counter = Counter()
    for ev in (
        event(segments=3),
        event(segments=4, boot_ns=9),
        event(segments=10, flags=1),  # found at close: segments, not an event
        event(segments=2, lport=40001),
        event(segments=50, netns=7),  # same addresses, another namespace: another flow
    ):
        counter.add(ev)
    ranked = counter.ranked()
    assert [(k[0], k[3], t.events, t.segments) for k, t in ranked] == [
        (7, 40000, 1, 50),
        (4026532000, 40000, 2, 17),
        (4026532000, 40001, 1, 2),
    ]
    lines = counter.render_json().splitlines()
    records = [json.loads(x) for x in lines]
    assert sum(r["segments"] for r in records) == 69
    assert records[1] == {
        "ip_version": 4,
        "src_ip": "198.18.0.1",
        "src_port": 40000,
        "dst_ip": "198.18.0.2",
        "dst_port": 5001,
        "netns": 4026532000,
        "events": 2,
        "segments": 17,
    }
    text = counter.render_text().splitlines()
    assert text[0].split() == ["NETNS", "IP", "LADDR:LPORT", "RADDR:RPORT", "EVENTS", "SEGS"]
    assert text[2].split() == ["4026532000", "4", "198.18.0.1:40000", "198.18.0.2:5001", "2", "17"]


def test_tracer_filters_counts_and_batches(tmp_path: Path) -> None:
    out_path = tmp_path / "out"
    with open(out_path, "w") as out:
        options = TraceOptions(json=True, event_filter=EventFilter.from_args(ports=[5001]))
        tracer = Tracer(options, out, FixedClock(), threading.Event())
        tracer.on_record(record(segments=2))
        tracer.on_record(record(segments=5, rport=22))
        tracer.on_record(record(segments=1, flags=1))
        assert out_path.read_text() == ""  # written in batches
        tracer.flush()
        lines = out_path.read_text().splitlines()
    assert [json.loads(x)["segments"] for x in lines] == [2, 1]
    assert (tracer.stats.events, tracer.stats.segments, tracer.stats.filtered) == (2, 3, 1)


def test_tracer_counts_undecodable_records(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w") as out:
        tracer = Tracer(TraceOptions(json=True), out, FixedClock(), threading.Event())
        tracer.on_record(record(family=99))
        tracer.on_record(record()[:40])
        tracer.on_record(record(segments=2))
        tracer.flush()
    assert (tracer.stats.undecodable, tracer.stats.events, tracer.stats.segments) == (2, 1, 2)
    assert len((tmp_path / "out").read_text().splitlines()) == 1
    assert render_stats(tracer.stats).endswith("2 undecodable (is the BPF object from this version?)")


def test_tracer_count_mode_prints_no_lines(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w") as out:
        tracer = Tracer(TraceOptions(count=True), out, FixedClock(), threading.Event())
        tracer.on_record(record(segments=2))
        tracer.flush()
    assert (tmp_path / "out").read_text() == ""
    assert "198.18.0.1:40000" in tracer.summary()


def test_render_stats() -> None:
    assert render_stats(TraceStats(5, 40, 0, 0)) == "retransmon: 5 events (40 segments) seen, 0 lost"
    assert render_stats(TraceStats(5, 40, 3, 2)) == (
        "retransmon: 5 events (40 segments) seen, 2 lost, 3 filtered out"
    )


# -- filters -------------------------------------------------------------------------------------

FLOW = EventFlow(100, 0, 1, "x", 4, "198.18.0.1", 40000, "198.18.0.2", 5001, "established", "retransmit")
FLOW6 = EventFlow(200, 0, None, None, 6, "2001:db8::1", 443, "2001:db8:1::9", 50000, "syn_recv", "synack")


@pytest.mark.parametrize(
    ("flt", "matches4", "matches6"),
    [
        (EventFilter(), True, True),
        (EventFilter.from_args(netns=[100]), True, False),
        (EventFilter.from_args(netns=[100, 200]), True, True),
        (EventFilter.from_args(netns=[300]), False, False),
        (EventFilter.from_args(ports=[5001]), True, False),
        (EventFilter.from_args(ports=[40000]), True, False),  # either end
        (EventFilter.from_args(ports=[443, 5001]), True, True),
        (EventFilter.from_args(ports=[22]), False, False),
        (EventFilter.from_args(hosts=[parse_host("198.18.0.2")]), True, False),
        (EventFilter.from_args(hosts=[parse_host("198.18.0.1")]), True, False),  # either end
        (EventFilter.from_args(hosts=[parse_host("198.18.0.0/15")]), True, False),
        (EventFilter.from_args(hosts=[parse_host("198.20.0.0/16")]), False, False),
        (EventFilter.from_args(hosts=[parse_host("2001:db8:1::/48")]), False, True),
        (EventFilter.from_args(hosts=[parse_host("2001:db8::/32"), parse_host("10.0.0.0/8")]), False, True),
        (EventFilter.from_args(kinds=["synack"]), False, True),
        (EventFilter.from_args(kinds=["retransmit"]), True, False),
        (EventFilter.from_args(netns=[100], kinds=["synack"]), False, False),  # every option must match
        (EventFilter.from_args(netns=[200], ports=[443], kinds=["synack"]), False, True),
    ],
)
def test_filter(flt: EventFilter, matches4: bool, matches6: bool) -> None:
    assert flt.matches(FLOW) is matches4
    assert flt.matches(FLOW6) is matches6


def test_parse_netns_forms(tmp_path: Path) -> None:
    assert parse_netns("4026531833") == 4026531833
    assert parse_netns("net:[4026531840]") == 4026531840
    own = os.stat("/proc/self/ns/net").st_ino
    assert parse_netns("/proc/self/ns/net") == own
    f = tmp_path / "ns"
    f.write_text("")
    assert parse_netns(str(f)) == f.stat().st_ino


@pytest.mark.parametrize(
    ("parse", "text", "needle"),
    [
        (parse_netns, "no-such-namespace-here", "a name in /run/netns"),
        (parse_netns, "/no/such/path", "No such file"),
        (parse_port, "0", "1..65535"),
        (parse_port, "65536", "1..65535"),
        (parse_port, "http", "expected a TCP port number"),
        (parse_host, "example.com", "expected an IP address or network"),
        (parse_host, "10.0.0.0/33", "expected an IP address or network"),
    ],
)
def test_bad_filter_values(parse: Callable[[str], object], text: str, needle: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=needle):
        parse(text)
