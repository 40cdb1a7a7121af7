"""Faults the agent must absorb: a full ring buffer, a full flow table, scrapes racing harvests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from retransmon.chaos.netns import NetNamespace, read_while_settled
from retransmon.chaos.testbed import TestBed
from retransmon.export.agent import Agent, ServeOptions, build_agent
from tests.support import AgentProcess, parse_metrics, total
from tests.support.agent import Sample

SEGMENTS = "tcp_retransmitted_segments_total"
LABELS = "ip_version,src_ip,dst_ip,service_port,state,kind,netns"
ONLY_BPF_PERFMON = [
    "setpriv",
    "--inh-caps=-all,+bpf,+perfmon",
    "--ambient-caps=-all,+bpf,+perfmon",
    "--bounding-set=-all,+bpf,+perfmon",
]


def _settled(ns: NetNamespace, scrape: Callable[[], list[Sample]]) -> tuple[int, list[Sample]]:
    return read_while_settled(ns, scrape)


@pytest.fixture
def in_process_agent() -> Iterator[Agent]:
    agent = build_agent(ServeOptions(labels=LABELS))
    try:
        yield agent
    finally:
        agent.close()


def test_full_ring_buffer_counts_losses_and_counting_stays_exact(in_process_agent: Agent) -> None:
    """Events wanted (as by trace/top) but nobody reading: the one-page ring fills, losses are counted."""
    agent = in_process_agent

    def scrape() -> list[Sample]:
        return parse_metrics(agent.exposition.render("")[0].decode())

    agent.bpf.set_events_wanted(True)  # as trace/top do, but nobody consumes them
    with TestBed(loss_percent=10, offloads=False) as tb:
        kernel0, samples0 = _settled(tb.client, scrape)
        ours0 = total(samples0, SEGMENTS, netns=str(tb.client.inode))
        lost0 = total(samples0, "retransmon_events_lost_total")
        tb.send(flows=4, duration=2)
        kernel1, samples1 = _settled(tb.client, scrape)
    kernel = kernel1 - kernel0
    ours = total(samples1, SEGMENTS, netns=str(tb.client.inode)) - ours0
    lost = total(samples1, "retransmon_events_lost_total") - lost0
    print(f"ring buffer full: RetransSegs {kernel}, exported {ours:.0f}, events lost {lost:.0f}")
    assert kernel > 1000
    assert lost > 0, "a one-page ring buffer nobody reads must overflow"
    assert ours == kernel, "a full ring buffer must not cost a counted segment"


def test_tiny_flow_table_overflows_exactly_without_capabilities() -> None:
    """Room for 4 flows, 60 connections, the agent holding no capability: folded, nothing lost."""
    with (
        AgentProcess(
            "--labels",
            "flow,netns,kind",
            "--flow-capacity",
            "4",
            "--harvest-interval",
            "3600",
            prefix=ONLY_BPF_PERFMON,
        ) as agent,
        TestBed(loss_percent=20, offloads=False) as tb,
    ):
        kernel0, samples0 = _settled(tb.client, agent.scrape)
        ours0 = total(samples0, SEGMENTS, netns=str(tb.client.inode))
        tb.send(flows=4, duration=1, connections=60)
        kernel1, samples1 = _settled(tb.client, agent.scrape)
    kernel = kernel1 - kernel0
    ours = total(samples1, SEGMENTS, netns=str(tb.client.inode)) - ours0
    folded = total(samples1, SEGMENTS, netns=str(tb.client.inode), src_port="other")
    print(f"tiny table: RetransSegs {kernel}, exported {ours:.0f}, folded {folded:.0f}")
    assert kernel > 0
    assert ours == kernel
    assert folded > 0
    assert total(samples1, "retransmon_unaccounted_segments_total") == 0
    assert total(samples1, "retransmon_unaccounted_events_total") == 0


def test_scrapes_racing_harvests_are_consistent() -> None:
    """Four scrapers and a harvest every 0.2 s during lossy traffic: no counter ever goes down."""
    with (
        AgentProcess("--labels", LABELS, "--harvest-interval", "0.2") as agent,
        TestBed(loss_percent=10) as tb,
    ):
        kernel0, samples0 = _settled(tb.client, agent.scrape)
        ours0 = total(samples0, SEGMENTS, netns=str(tb.client.inode))
        stop = threading.Event()
        problems: list[str] = []
        counts: list[int] = []

        def scraper() -> None:
            last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            last_total = 0.0
            n = 0
            while not stop.is_set():
                samples = agent.scrape()
                n += 1
                now_total = total(samples, SEGMENTS)
                if now_total < last_total:
                    problems.append(f"total went down: {last_total} -> {now_total}")
                last_total = now_total
                for s in samples:
                    if s.name.startswith("tcp_") and s.name.endswith("_total"):
                        key = (s.name, tuple(sorted(s.labels.items())))
                        if s.value < last.get(key, 0):
                            problems.append(f"{key} went down: {last[key]} -> {s.value}")
                        last[key] = s.value
            counts.append(n)

        threads = [threading.Thread(target=scraper) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            tb.send(flows=4, duration=4)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        kernel1, samples1 = _settled(tb.client, agent.scrape)
    ours = total(samples1, SEGMENTS, netns=str(tb.client.inode)) - ours0
    print(f"racing: {sum(counts)} scrapes, RetransSegs {kernel1 - kernel0}, exported {ours:.0f}")
    assert problems == []
    assert sum(counts) >= 20
    assert ours == kernel1 - kernel0
