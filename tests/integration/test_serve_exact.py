"""`retransmon serve` against the kernel's own counters, in private network namespaces."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from retransmon.chaos.loss import Impairment
from retransmon.chaos.netns import NetNamespace, read_while_settled, tcp_ext_counters
from retransmon.chaos.testbed import TestBed
from retransmon.chaos.traffic import run_holder, run_sender
from tests.support import AgentProcess, total
from tests.support.agent import Sample
from tests.support.known_bugs import PASSIVE_UNDERCOUNT

SEGMENTS = "tcp_retransmitted_segments_total"
EVENTS = "tcp_retransmissions_total"
LABELS = "ip_version,src_ip,dst_ip,service_port,state,kind,netns"


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with AgentProcess("--labels", LABELS) as a:
        yield a


def settled(ns: NetNamespace, agent: AgentProcess) -> tuple[int, list[Sample]]:
    """The kernel's RetransSegs and a scrape taken while it did not move."""
    return read_while_settled(ns, agent.scrape)


def ours(samples: list[Sample], ns: NetNamespace, metric: str = SEGMENTS, **labels: str) -> int:
    return int(total(samples, metric, netns=str(ns.inode), **labels))


def _key(s: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return s.name, tuple(sorted(s.labels.items()))


class Baseline:
    """Kernel and exporter readings for a namespace, to compare deltas against.

    Namespace inode numbers are reused, and the agent's counters live as long as it
    does, so a new namespace may already have series: everything is compared as deltas.
    """

    def __init__(self, ns: NetNamespace, agent: AgentProcess) -> None:
        self.ns = ns
        self.agent = agent
        self.kernel, samples = settled(ns, agent)
        self.segments = ours(samples, ns)
        self.events = ours(samples, ns, EVENTS)
        self.values = {_key(s): s.value for s in samples}

    def grown(self, samples: list[Sample], metric: str = SEGMENTS) -> list[Sample]:
        """This namespace's series of *metric* that grew since the baseline."""
        return [
            s
            for s in samples
            if s.name == metric
            and s.labels.get("netns") == str(self.ns.inode)
            and s.value > self.values.get(_key(s), 0)
        ]

    def deltas(self) -> tuple[int, int, int, list[Sample]]:
        """(kernel RetransSegs, our segments, our events) since the baseline, and the scrape."""
        kernel, samples = settled(self.ns, self.agent)
        return (
            kernel - self.kernel,
            ours(samples, self.ns) - self.segments,
            ours(samples, self.ns, EVENTS) - self.events,
            samples,
        )


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_bulk_transfer_with_loss_matches_retranssegs(agent: AgentProcess, ipv6: bool) -> None:
    with TestBed(loss_percent=10, offloads=True, ipv6=ipv6) as tb:
        client, server = Baseline(tb.client, agent), Baseline(tb.server, agent)
        result = tb.send(flows=4, duration=3)
        assert int(str(result["bytes_sent"])) > 0
        kernel, segments, events, samples = client.deltas()
        print(f"IPv{'6' if ipv6 else '4'}: RetransSegs {kernel}, exported {segments}, events {events}")
        assert kernel > 100, "the lossy link should have made the client retransmit"
        assert segments == kernel
        # TSO: one retransmitted skb carries several segments.
        assert 0 < events < segments
        # The server side (FIN/ACK retransmits, if any) is exact too.
        s_kernel, s_segments, _, _ = server.deltas()
        assert s_segments == s_kernel

        version = "6" if ipv6 else "4"
        mine = client.grown(samples)
        assert {s.labels["ip_version"] for s in mine} == {version}
        assert {s.labels["src_ip"] for s in mine} == {tb.client_ip}
        assert {s.labels["dst_ip"] for s in mine} == {tb.server_ip}
        assert {s.labels["service_port"] for s in mine} == {str(tb.port)}
        assert {s.labels["kind"] for s in mine} == {"retransmit"}
        assert "established" in {s.labels["state"] for s in mine}


def test_storm_without_offloads_is_exact_despite_skipped_runs(agent: AgentProcess) -> None:
    """Tens of thousands of events a second: failed attempts and skipped runs lose nothing."""
    with TestBed(loss_percent=10, offloads=False) as tb:
        client = Baseline(tb.client, agent)
        misses_before = total(agent.scrape(), "retransmon_bpf_recursion_misses_total")
        started = time.monotonic()
        tb.send(flows=16, duration=8)
        elapsed = time.monotonic() - started
        kernel, segments, events, samples = client.deltas()
        misses = total(samples, "retransmon_bpf_recursion_misses_total") - misses_before
        print(
            f"storm: {events / elapsed:.0f} events/s, RetransSegs {kernel}, exported {segments}, "
            f"events {events}, skipped BPF runs {misses:.0f}"
        )
        assert kernel > 10000
        assert segments == kernel
        assert events <= segments


@PASSIVE_UNDERCOUNT
def test_synack_retransmits_are_counted_with_kind_synack(agent: AgentProcess) -> None:
    with TestBed() as tb:
        server = Baseline(tb.server, agent)
        syn_before = tcp_ext_counters(tb.server)["TCPSynRetrans"]
        synack_before = ours(agent.scrape(), tb.server, kind="synack")
        with Impairment(tb.server, tb.veth.right_ifname, 100, ports=[tb.port], tcp_flags="handshake-ack"):
            # The server never sees the handshake's ACK and retransmits its SYN-ACK after 1 s, 3 s.
            run_holder(tb.client, tb.server_ip, tb.port, count=4, hold=3.5)
        kernel, segments, _, samples = server.deltas()
        synacks = ours(samples, tb.server, kind="synack") - synack_before
        syn_retrans = tcp_ext_counters(tb.server)["TCPSynRetrans"] - syn_before
        print(
            f"SYN-ACK: RetransSegs {kernel}, exported {segments}, synack {synacks}, "
            f"TCPSynRetrans {syn_retrans}"
        )
        assert synacks >= 4
        assert synacks == syn_retrans
        assert segments == kernel
        series = [s for s in server.grown(samples) if s.labels["kind"] == "synack"]
        assert {s.labels["state"] for s in series} == {"syn_recv"}
        assert {s.labels["service_port"] for s in series} == {str(tb.port)}


def test_flow_table_overflow_folds_and_keeps_totals() -> None:
    """A kernel flow table sized for 4 flows: the rest land in coarse keys, nothing is lost."""
    with (
        AgentProcess(
            "--labels", "flow,netns,kind", "--flow-capacity", "4", "--harvest-interval", "3600"
        ) as a,
        TestBed(loss_percent=20, offloads=False) as tb,
    ):
        client = Baseline(tb.client, a)
        tb.send(flows=4, duration=1, connections=60)
        kernel, segments, _, samples = client.deltas()
        print(f"overflow: RetransSegs {kernel}, exported {segments}")
        assert kernel > 0
        assert segments == kernel
        folded = [s for s in client.grown(samples) if s.labels["src_port"] == "other"]
        assert folded, "with 60 connections and room for 4 flows some must be folded"
        assert all(s.labels["dst_ip"] == "other" for s in folded)
        assert total(samples, "retransmon_flow_map_capacity") == 4
        assert total(samples, "retransmon_unaccounted_segments_total") == 0
        assert total(samples, "retransmon_unaccounted_events_total") == 0


def test_metrics_pass_promtool(agent: AgentProcess) -> None:
    with TestBed(loss_percent=10) as tb:
        tb.send(flows=2, duration=1)
    text = agent.metrics_text()
    assert SEGMENTS in text and "retransmon_build_info" in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    status, ctype, body = agent.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_health_metrics(agent: AgentProcess) -> None:
    samples = agent.scrape()
    attached = {s.labels["program"]: s.value for s in samples if s.name == "retransmon_bpf_program_attached"}
    assert attached == {
        "tcp_retransmit_skb": 1,
        "tcp_retransmit_synack": 1,
        "inet_sock_set_state": 1,
        "tcp_destroy_sock": 1,
        "sent_segments_iter": 1,
    }
    build = [s for s in samples if s.name == "retransmon_build_info"]
    assert len(build) == 1 and build[0].labels["counting"] == "exact" and build[0].labels["hooks"] == "tp_btf"
    names = {s.name for s in samples}
    for name in (
        "retransmon_events_lost_total",
        "retransmon_flow_map_entries",
        "retransmon_flow_map_capacity",
        "retransmon_series_overflow_total",
        "retransmon_bpf_recursion_misses_total",
    ):
        assert name in names


def test_ipv4_mapped_ipv6_socket_reports_ipv4(agent: AgentProcess) -> None:
    """A dual-stack (AF_INET6) socket talking IPv4 is labelled ip_version 4 with dotted addresses."""
    with TestBed(loss_percent=10) as tb:
        client = Baseline(tb.client, agent)
        run_sender(tb.client, f"::ffff:{tb.server_ip}", tb.port, flows=2, duration=2)
        kernel, segments, _, samples = client.deltas()
        assert kernel > 0 and segments == kernel
        mine = client.grown(samples)
        assert {(s.labels["ip_version"], s.labels["dst_ip"]) for s in mine} == {("4", tb.server_ip)}
