"""The classic-tracepoint fallback (`--hooks tracepoint`), run for real against RetransSegs.

It is what kernels that refuse tp_btf get (e.g. 5.10). It needs tracefs: mounted here
when missing, and unmounted again only if these tests mounted it. Without socket storage
each event counts what it carried: failed attempts (the tracepoint's `err`, where the
kernel has it) are left out, skipped runs are lost. The agent says it is not exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from retransmon.chaos.netns import NetNamespace, read_while_settled, tcp_counters
from retransmon.chaos.testbed import TestBed
from tests.support import AgentProcess, total
from tests.support.tracer import TraceProcess

SEGMENTS = "tcp_retransmitted_segments_total"
MISSES = "retransmon_bpf_recursion_misses_total"
TRACING = "/sys/kernel/tracing"
# Per-event counting against RetransSegs (docs/compatibility.md has the measurements).
TOLERANCE = 0.02


def tracefs_mounted() -> bool:
    return os.path.isdir(os.path.join(TRACING, "events", "tcp"))


@pytest.fixture(scope="module", autouse=True)
def tracefs() -> Iterator[None]:
    mounted_here = False
    if not tracefs_mounted():
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACING], check=True)
        mounted_here = True
    try:
        yield
    finally:
        if mounted_here:
            subprocess.run(["umount", TRACING], check=False)


def exported(agent: AgentProcess, ns: NetNamespace) -> int:
    return int(total(agent.scrape(), SEGMENTS, netns=str(ns.inode)))


def build_info(agent: AgentProcess) -> dict[str, str]:
    return next(s.labels for s in agent.scrape() if s.name == "retransmon_build_info")


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_serve_with_tracepoints_matches_retranssegs_and_says_per_event(ipv6: bool) -> None:
    with (
        AgentProcess("--hooks", "tracepoint", "--labels", "netns") as agent,
        TestBed(loss_percent=10, offloads=True, ipv6=ipv6) as tb,
    ):
        info = build_info(agent)
        assert info["hooks"] == "tracepoint"
        assert info["counting"] != "exact"
        k0, o0 = read_while_settled(tb.client, lambda: exported(agent, tb.client))
        tb.send(flows=4, duration=3)
        k1, o1 = read_while_settled(tb.client, lambda: exported(agent, tb.client))
        kernel, ours = k1 - k0, o1 - o0
        print(f"tracepoint IPv{'6' if ipv6 else '4'}: RetransSegs {kernel}, exported {ours}")
        assert kernel > 100
        assert abs(ours - kernel) <= TOLERANCE * kernel
    # serve said so at start, one line with the cost.
    said = [
        line for line in agent.stderr.splitlines() if "exact counting: unavailable (hooks tracepoint)" in line
    ]
    assert len(said) == 1 and "RetransSegs" in said[0]


def test_storm_with_tracepoints_measures_the_error() -> None:
    """Tens of thousands of events a second, per segment (no offloads): the fallback's worst case."""
    with (
        AgentProcess("--hooks", "tracepoint", "--labels", "netns") as agent,
        TestBed(loss_percent=10, offloads=False) as tb,
    ):
        k0, o0 = read_while_settled(tb.client, lambda: exported(agent, tb.client))
        misses0 = total(agent.scrape(), MISSES)
        tb.send(flows=16, duration=8)
        k1, o1 = read_while_settled(tb.client, lambda: exported(agent, tb.client))
        misses = total(agent.scrape(), MISSES) - misses0
        kernel, ours = k1 - k0, o1 - o0
        error = (ours - kernel) / kernel
        print(
            f"tracepoint storm: RetransSegs {kernel}, exported {ours}, error {error:+.3%}, "
            f"skipped runs {misses:.0f}"
        )
        assert kernel > 10000
        assert ours <= kernel
        assert abs(error) <= TOLERANCE


def test_trace_with_tracepoints_matches_retranssegs() -> None:
    with (
        TestBed(loss_percent=10) as tb,
        TraceProcess("--json", "--hooks", "tracepoint", "--netns", str(tb.client.inode)) as trace,
    ):
        before = tcp_counters(tb.client)["RetransSegs"]
        tb.send(flows=2, duration=2)
        time.sleep(1)
        kernel = tcp_counters(tb.client)["RetransSegs"] - before
        assert trace.stop() == 0, trace.stderr
        segments = sum(int(json.loads(line)["segments"]) for line in trace.stdout.splitlines())
    print(f"trace --hooks tracepoint: RetransSegs {kernel}, traced {segments}")
    assert kernel > 100
    assert abs(segments - kernel) <= TOLERANCE * kernel
