"""`retransmon trace` against the kernel's own RetransSegs, in private network namespaces."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import pytest

from retransmon.chaos.netns import NetNamespace, settled_retranssegs, tcp_counters
from retransmon.chaos.testbed import TestBed
from tests.support.agent import retransmon_command
from tests.support.tracer import JSON_KEYS, TraceProcess

FlowKey = tuple[int, str, int, str, int, str]  # netns, src_ip, src_port, dst_ip, dst_port, kind


def records(trace: TraceProcess) -> list[dict[str, Any]]:
    """Every stdout line as JSON: a line that does not parse fails the test."""
    out = []
    for number, line in enumerate(trace.stdout.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert list(record) == JSON_KEYS, f"line {number} keys {list(record)}"
        out.append(record)
    return out


STATS = re.compile(r"^retransmon: (\d+) events \((\d+) segments\) seen, (\d+) lost")


def final_stats(trace: TraceProcess) -> tuple[int, int, int]:
    """(events, segments, lost) from the last line on stderr."""
    last = trace.stderr.strip().splitlines()[-1]
    m = STATS.match(last)
    assert m, last
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def segments_in(recs: list[dict[str, Any]], ns: NetNamespace) -> int:
    return sum(int(r["segments"]) for r in recs if r["netns"] == ns.inode)


def per_flow(recs: list[dict[str, Any]]) -> Counter[FlowKey]:
    sums: Counter[FlowKey] = Counter()
    for r in recs:
        sums[(r["netns"], r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["kind"])] += r["segments"]
    return sums


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_trace_json_and_count_match_retranssegs(ipv6: bool) -> None:
    with (
        TestBed(loss_percent=10, offloads=True, ipv6=ipv6) as tb,
        TraceProcess("--json") as trace,
        TraceProcess("--count", "--json", "--netns", str(tb.client.inode)) as count,
    ):
        before = settled_retranssegs(tb.client)
        tb.send(flows=4, duration=3)
        kernel = settled_retranssegs(tb.client) - before
        time.sleep(0.5)  # closes are traced as they happen; give the readers a poll or two
        assert trace.stop() == 0 and count.stop() == 0
        recs = records(trace)
        mine = [r for r in recs if r["netns"] == tb.client.inode]
        segments = segments_in(recs, tb.client)
        print(f"IPv{6 if ipv6 else 4}: RetransSegs {kernel}, trace segments {segments}, lines {len(mine)}")
        assert kernel > 100, "the lossy link should have made the client retransmit"
        assert segments == kernel
        assert 0 < len(mine) < segments  # TSO: one record carries several segments
        events, _segs, lost = final_stats(trace)
        assert lost == 0 and events == len(recs)

        # The records say who and what.
        assert {r["ip_version"] for r in mine} == {6 if ipv6 else 4}
        assert {(r["src_ip"], r["dst_ip"], r["dst_port"]) for r in mine} == {
            (tb.client_ip, tb.server_ip, tb.port)
        }
        assert {r["kind"] for r in mine} == {"retransmit"}
        assert "established" in {r["state"] for r in mine}
        # Connected after the trace started: the owner was remembered at connect().
        owners = {(r["pid"], r["comm"]) for r in mine}
        assert len(owners) == 1 and None not in next(iter(owners)), owners
        assert str(next(iter(owners))[1]).startswith("python")
        assert all(r["time"].endswith("Z") and r["time"][10] == "T" for r in mine)

        # --count: per-flow totals add up to the same.
        flows = records_of_count(count)
        assert sum(f["segments"] for f in flows) == kernel
        assert {f["netns"] for f in flows} == {tb.client.inode}
        assert sum(f["events"] for f in flows) <= len(mine) + 2 * len(flows)
        assert final_stats(count)[2] == 0


def records_of_count(trace: TraceProcess) -> list[dict[str, Any]]:
    flows = [json.loads(line) for line in trace.stdout.splitlines()]
    for f in flows:
        assert set(f) == {
            "ip_version",
            "src_ip",
            "src_port",
            "dst_ip",
            "dst_port",
            "netns",
            "events",
            "segments",
        }
    return flows


def test_trace_text_count_table() -> None:
    with TestBed(loss_percent=10) as tb, TraceProcess("--count", "--netns", str(tb.client.inode)) as count:
        before = settled_retranssegs(tb.client)
        tb.send(flows=2, duration=2)
        kernel = settled_retranssegs(tb.client) - before
        time.sleep(0.5)
        assert count.stop() == 0
        lines = count.stdout.splitlines()
        assert lines[0].split() == ["NETNS", "IP", "LADDR:LPORT", "RADDR:RPORT", "EVENTS", "SEGS"]
        rows = [line.split() for line in lines[1:]]
        assert rows and all(
            r[0] == str(tb.client.inode) and r[3] == f"{tb.server_ip}:{tb.port}" for r in rows
        )
        assert sum(int(r[5]) for r in rows) == kernel > 0


def test_filters_select_exactly_what_they_say() -> None:
    with (
        TestBed(loss_percent=10, offloads=True, prefix="rmta") as a,
        TestBed(loss_percent=10, offloads=True, ipv6=True, prefix="rmtb") as b,
        TraceProcess("--json") as everything,
        TraceProcess(
            "--json",
            "--netns",
            str(a.client.inode),
            "--port",
            str(a.port),
            "--host",
            a.server_ip,
            "--kind",
            "retransmit",
        ) as only_a,  # fmt: skip
        TraceProcess("--json", "--host", b.server_ip) as only_b,
        TraceProcess("--json", "--kind", "synack", "--netns", str(a.client.inode)) as synacks,
    ):
        before = settled_retranssegs(a.client)
        senders = [threading.Thread(target=bed.send, kwargs={"flows": 2, "duration": 2}) for bed in (a, b)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        kernel_a = settled_retranssegs(a.client) - before
        settled_retranssegs(b.client)
        time.sleep(0.5)
        for trace in (everything, only_a, only_b, synacks):
            assert trace.stop() == 0
        ours = {a.client.inode, a.server.inode, b.client.inode, b.server.inode}
        every = [r for r in records(everything) if r["netns"] in ours]
        got_a, got_b = records(only_a), records(only_b)

        def is_a(r: dict[str, Any]) -> bool:
            return (
                r["netns"] == a.client.inode
                and a.port in (r["src_port"], r["dst_port"])
                and a.server_ip in (r["src_ip"], r["dst_ip"])
                and r["kind"] == "retransmit"
            )

        def is_b(r: dict[str, Any]) -> bool:
            return b.server_ip in (r["src_ip"], r["dst_ip"])

        assert got_a and all(is_a(r) for r in got_a)
        assert per_flow(got_a) == per_flow([r for r in every if is_a(r)])
        assert segments_in(got_a, a.client) == kernel_a > 0
        assert got_b and all(is_b(r) for r in got_b)
        assert per_flow([r for r in got_b if r["netns"] in ours]) == per_flow([r for r in every if is_b(r)])
        assert {r["netns"] for r in got_b} >= {b.client.inode}
        assert records(synacks) == []  # bulk transfers on established connections: no SYN-ACK retransmits
        assert final_stats(synacks)[:2] == (0, 0)


def test_duration_ends_the_trace_with_status_0() -> None:
    started = time.monotonic()
    with TraceProcess("--duration", "2") as trace:
        assert trace.wait(timeout=30) == 0
        elapsed = time.monotonic() - trace.started
        assert 1.9 <= elapsed < 10, elapsed
        assert "Traceback" not in trace.stderr
        final_stats(trace)
    assert time.monotonic() - started < 40


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """`retransmon trace | head -n 3`: trace ends on its own, status 0, nothing on stderr but its banner."""
    with TestBed(loss_percent=10) as tb:
        proc = subprocess.Popen(
            ["sh", "-c", f"{' '.join(retransmon_command())} trace --netns {tb.client.inode} | head -n 3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            banner = proc.stderr.readline()  # written once the programs are attached
            assert banner.startswith("Tracing TCP retransmits"), banner
            tb.send(flows=2, duration=2)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    assert len(out.splitlines()) == 3 and out.startswith("TIME")
    assert "Traceback" not in err and "Exception" not in err and "Broken" not in err, err


def test_lost_records_are_reported() -> None:
    """A one-page ring buffer, and the reader stopped for a second in a storm: losses are said, not hidden."""
    with (
        TestBed(loss_percent=10, offloads=False) as tb,
        TraceProcess("--json", "--ring-buffer-kib", "4", "--netns", str(tb.client.inode)) as trace,
    ):
        before = settled_retranssegs(tb.client)
        sender = threading.Thread(target=tb.send, kwargs={"flows": 8, "duration": 3})
        sender.start()
        time.sleep(1)
        os.kill(trace.pid, signal.SIGSTOP)  # the reader falls behind; the kernel cannot wait for it
        time.sleep(1)
        os.kill(trace.pid, signal.SIGCONT)
        sender.join()
        kernel = settled_retranssegs(tb.client) - before
        time.sleep(1.5)  # a lost-count check runs every second
        assert trace.stop() == 0
        events, segments, lost = final_stats(trace)
        print(f"tiny ring buffer: RetransSegs {kernel}, traced {segments} in {events} records, lost {lost}")
        assert lost > 0
        assert re.search(r"^retransmon: \d+ records lost \(ring buffer full\)", trace.stderr, re.M)
        assert segments_in(records(trace), tb.client) == segments < kernel


def test_event_stream_records_every_segment_and_leaves_the_flow_tables_empty() -> None:
    """trace/top read records only: their programs count no flows, which nobody would drain."""
    from retransmon.live.decode import decode_event
    from retransmon.live.stream import EventStream

    records: list[bytes] = []
    with EventStream(records.append) as stream, TestBed(loss_percent=10, offloads=True) as tb:
        before = tcp_counters(tb.client)["RetransSegs"]
        tb.send(flows=2, duration=1)
        kernel = settled_retranssegs(tb.client) - before
        for _ in range(20):
            stream.poll(100)
        events = [decode_event(r) for r in records]
        ours = sum(e.segments for e in events if e.flow.netns == tb.client.inode)
        assert stream.bpf.tables is not None
        flows = stream.bpf.tables.peek()
    print(f"event stream: RetransSegs {kernel}, records {ours}, flow table entries {len(flows)}")
    assert kernel > 0 and ours == kernel
    assert flows == []
