"""The denominator, container attribution and bounded cardinality, against the kernel's counters.

Everything runs in private network namespaces; per-namespace sums are compared
with that namespace's /proc/net/snmp: `tcp_segments_sent_total` with
OutSegs + RetransSegs (within 2%), `tcp_retransmitted_segments_total` with
RetransSegs (exactly).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence

from retransmon.chaos.netns import NetNamespace, tcp_counters
from retransmon.chaos.testbed import TestBed
from retransmon.chaos.traffic import module_env, sender_argv
from tests.support import AgentProcess, TestCgroup, total
from tests.support.agent import Sample
from tests.support.known_bugs import PASSIVE_UNDERCOUNT

SENT = "tcp_segments_sent_total"
RETRANS = "tcp_retransmitted_segments_total"
TOLERANCE = 0.02


def kernel_counts(ns: NetNamespace) -> tuple[int, int]:
    """(OutSegs + RetransSegs, RetransSegs) in ns: segments sent, and those retransmitted."""
    tcp = tcp_counters(ns)
    return tcp["OutSegs"] + tcp["RetransSegs"], tcp["RetransSegs"]


def open_connections(ns: NetNamespace) -> int:
    """TCP sockets in ns that may still send: not listening, not in TIME_WAIT (whose socket has closed).

    A socket its process has closed but that is still finishing (e.g. LAST_ACK waiting for a lost
    ACK) is held by no file, so its last segments are counted when it closes.
    """
    text = ns.run(["cat", "/proc/net/tcp", "/proc/net/tcp6"]).stdout
    states = [
        line.split()[3] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("sl")
    ]
    return sum(1 for st in states if st not in ("0A", "06"))


def settle(
    agents: Sequence[AgentProcess], spaces: Sequence[NetNamespace], closed: bool = True
) -> tuple[list[tuple[int, int]], list[list[Sample]]]:
    """Kernel counts of each namespace, and a scrape of each agent, taken while no count moved
    (and, if `closed`, no connection was left open)."""
    for _ in range(120):
        if closed and any(open_connections(ns) for ns in spaces):
            time.sleep(0.25)
            continue
        before = [kernel_counts(ns) for ns in spaces]
        scrapes = [a.scrape() for a in agents]
        if [kernel_counts(ns) for ns in spaces] == before:
            return before, scrapes
        time.sleep(0.25)
    raise AssertionError("the kernel's TCP counters never stopped moving, or connections stayed open")


def ours(samples: list[Sample], metric: str, ns: NetNamespace, **labels: str) -> int:
    return int(total(samples, metric, netns=str(ns.inode), **labels))


def series(samples: list[Sample], metric: str, ns: NetNamespace) -> list[Sample]:
    return [s for s in samples if s.name == metric and s.labels.get("netns") == str(ns.inode)]


def within(value: int, reference: int, tolerance: float = TOLERANCE) -> bool:
    return abs(value - reference) <= tolerance * reference


def churn_sent_plausible(value: int, kernel: int) -> bool:
    """Short connections: a TIME_WAIT socket's ACKs (answering a FIN retransmitted because our last
    ACK was lost) are in OutSegs but no socket's segs_out: about 1-1.5% of the segments at 10% loss
    with this traffic. Never more than the kernel, never much less."""
    return 0.95 * kernel <= value <= kernel


def run_json_in(
    group: TestCgroup, ns: NetNamespace, argv: list[str], timeout: float = 120
) -> dict[str, object]:
    """Run a traffic command in ns and in group; returns its JSON summary."""
    # Into the group first: `ip netns exec` mounts its own /sys, without the cgroup2 mount.
    wrapped = group.wrap(["ip", "netns", "exec", ns.name, *argv])
    proc = subprocess.run(wrapped, capture_output=True, text=True, timeout=timeout, env=module_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_sent_segments_match_outsegs_plus_retranssegs_live_and_closed() -> None:
    """Bulk flows at 3% loss: counted while the sockets live (iterator) and after they closed."""
    with (
        AgentProcess("--labels", "netns,service_port", "--harvest-interval", "3600") as agent,
        TestBed(loss_percent=3, offloads=True) as tb,
    ):
        (c0, s0), (first,) = settle([agent], [tb.client, tb.server])
        base_client, base_server = ours(first, SENT, tb.client), ours(first, SENT, tb.server)
        sender = tb.client.popen(
            sender_argv(tb.server_ip, tb.port, 4, 3),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=module_env(),
        )
        # Mid-transfer no socket has closed: only the harvest-time iterator can see these segments.
        time.sleep(1.5)
        before = kernel_counts(tb.client)[0] - c0[0]
        live = ours(agent.scrape(), SENT, tb.client) - base_client
        after = kernel_counts(tb.client)[0] - c0[0]
        print(f"live: kernel {before}..{after}, exported {live}")
        assert sender.poll() is None, "the transfer should still be running"
        assert before > 10000
        assert (1 - TOLERANCE) * before <= live <= (1 + TOLERANCE) * after

        out, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["errors"] == 0
        (c1, s1), (samples,) = settle([agent], [tb.client, tb.server])
        client_kernel, client_retrans = c1[0] - c0[0], c1[1] - c0[1]
        server_kernel = s1[0] - s0[0]
        client_ours = ours(samples, SENT, tb.client) - base_client
        server_ours = ours(samples, SENT, tb.server) - base_server
        print(
            f"client: OutSegs+RetransSegs {client_kernel} (RetransSegs {client_retrans}), "
            f"exported {client_ours}; server: OutSegs+RetransSegs {server_kernel}, exported {server_ours}"
        )
        assert client_retrans > 100, "3% loss should have made the client retransmit"
        assert within(client_ours, client_kernel)
        assert within(server_ours, server_kernel)
        # One peer and one service on each side: the server's accepted sockets report its port.
        for ns in (tb.client, tb.server):
            assert {s.labels["service_port"] for s in series(samples, SENT, ns)} == {str(tb.port)}


def test_existing_sockets_in_other_namespaces_are_counted_from_agent_start() -> None:
    """A connection opened before the agent started, in a private namespace, idle while it starts."""
    script = (
        "import socket, sys\n"
        "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)\n"
        "print('connected', flush=True)\n"
        "sys.stdin.readline()\n"
        "for _ in range(64):\n"
        "    s.sendall(bytes(256 * 1024))\n"
        "s.shutdown(socket.SHUT_WR)\n"
        "while s.recv(65536):\n"
        "    pass\n"
        "print('done', flush=True)\n"
    )
    with TestBed(loss_percent=3, offloads=True) as tb:
        proc = tb.client.popen(
            [sys.executable, "-c", script, tb.server_ip, str(tb.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "connected"
        with AgentProcess("--labels", "netns", "--harvest-interval", "3600") as agent:
            (c0, s0), (first,) = settle([agent], [tb.client, tb.server], closed=False)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"
            proc.wait(timeout=30)
            (c1, s1), (samples,) = settle([agent], [tb.client, tb.server])
            client_kernel, server_kernel = c1[0] - c0[0], s1[0] - s0[0]
            client_ours = ours(samples, SENT, tb.client) - ours(first, SENT, tb.client)
            server_ours = ours(samples, SENT, tb.server) - ours(first, SENT, tb.server)
            retrans_kernel = c1[1] - c0[1]
            retrans_ours = ours(samples, RETRANS, tb.client) - ours(first, RETRANS, tb.client)
            print(
                f"pre-existing: client sent {client_kernel} vs {client_ours}, server {server_kernel} vs "
                f"{server_ours}, client RetransSegs {retrans_kernel} vs {retrans_ours}"
            )
            assert client_kernel > 1000
            assert within(client_ours, client_kernel)
            assert within(server_ours, server_kernel)
            assert retrans_ours == retrans_kernel


def test_two_cgroups_are_attributed_to_their_own_paths() -> None:
    """Two senders in two cgroups (a kubepods/containerd and a docker layout) share one namespace."""
    pod = str(uuid.uuid4())
    cri_id, docker_id = secrets.token_hex(32), secrets.token_hex(32)
    base = f"/rmtest-{os.getpid()}.slice"
    cri_path = f"{base}/kubepods-besteffort-pod{pod.replace('-', '_')}.slice/cri-containerd-{cri_id}.scope"
    docker_path = f"{base}/docker-{docker_id}.scope"
    with (
        AgentProcess("--labels", "netns,cgroup,container_id,pod_uid") as agent,
        TestBed(loss_percent=5, offloads=True) as tb,
        TestCgroup(cri_path) as cri,
        TestCgroup(docker_path) as docker,
    ):
        (c0,), (first,) = settle([agent], [tb.client])
        results: list[dict[str, object]] = []

        def send(group: TestCgroup) -> None:
            results.append(run_json_in(group, tb.client, sender_argv(tb.server_ip, tb.port, 2, 2)))

        threads = [threading.Thread(target=send, args=(g,)) for g in (cri, docker)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 2 and all(r["errors"] == 0 for r in results), results
        (c1,), (samples,) = settle([agent], [tb.client])
        kernel_retrans, kernel_sent = c1[1] - c0[1], c1[0] - c0[0]

        def delta(metric: str, **labels: str) -> int:
            return ours(samples, metric, tb.client, **labels) - ours(first, metric, tb.client, **labels)

        cri_retrans, docker_retrans = delta(RETRANS, cgroup=cri_path), delta(RETRANS, cgroup=docker_path)
        cri_sent, docker_sent = delta(SENT, cgroup=cri_path), delta(SENT, cgroup=docker_path)
        print(
            f"cgroups: RetransSegs {kernel_retrans} = {cri_retrans} (cri) + {docker_retrans} (docker); "
            f"sent {kernel_sent} ~ {cri_sent} + {docker_sent}"
        )
        assert cri_retrans > 0 and docker_retrans > 0
        assert cri_retrans + docker_retrans == kernel_retrans
        assert delta(RETRANS) == kernel_retrans, "nothing may land in any other cgroup"
        assert cri_sent > 0 and docker_sent > 0
        assert within(cri_sent + docker_sent, kernel_sent)

        for metric in (RETRANS, SENT):
            by_path = {s.labels["cgroup"]: s.labels for s in series(samples, metric, tb.client)}
            assert by_path[cri_path]["container_id"] == cri_id
            assert by_path[cri_path]["pod_uid"] == pod
            assert by_path[docker_path]["container_id"] == docker_id
            assert by_path[docker_path]["pod_uid"] == ""


@PASSIVE_UNDERCOUNT
def test_churn_default_labels_stay_few_and_flow_labels_tell_connections_apart() -> None:
    """300 short connections from fresh ephemeral ports to one lossy service."""
    with (
        AgentProcess("--labels", "default,netns") as default,
        AgentProcess("--labels", "flow,netns") as flow,
        TestBed(loss_percent=10, offloads=False) as tb,
    ):
        (c0, s0), (d0, f0) = settle([default, flow], [tb.client, tb.server])
        result = tb.send(flows=30, duration=0, connections=300)
        assert result["connections"] == 300 and result["errors"] == 0, result
        (c1, s1), (d1, f1) = settle([default, flow], [tb.client, tb.server])
        client_retrans, server_retrans = c1[1] - c0[1], s1[1] - s0[1]
        for samples, before in ((d1, d0), (f1, f0)):
            assert ours(samples, RETRANS, tb.client) - ours(before, RETRANS, tb.client) == client_retrans
            assert ours(samples, RETRANS, tb.server) - ours(before, RETRANS, tb.server) == server_retrans
            sent_segments = ours(samples, SENT, tb.client) - ours(before, SENT, tb.client)
            print(f"churn: client sent {sent_segments}, OutSegs+RetransSegs {c1[0] - c0[0]}")
            assert churn_sent_plausible(sent_segments, c1[0] - c0[0])

        # Default labels: one series per peer, service, state and kind; the server keeps its port.
        retrans_series = series(d1, RETRANS, tb.client)
        print(f"churn: client RetransSegs {client_retrans}; default labels: {len(retrans_series)} series")
        assert 1 <= len(retrans_series) <= 10
        assert {s.labels["service_port"] for s in retrans_series} == {str(tb.port)}
        for ns in (tb.client, tb.server):
            sent = series(d1, SENT, ns)
            assert len(sent) == 1 and sent[0].labels["service_port"] == str(tb.port)

        # --labels=flow: every connection is its own series.
        client_ports = {s.labels["src_port"] for s in series(f1, SENT, tb.client)}
        server_ports = {s.labels["dst_port"] for s in series(f1, SENT, tb.server)}
        retrans_ports = {s.labels["src_port"] for s in series(f1, RETRANS, tb.client)}
        print(
            f"flow labels: {len(client_ports)} client ports sending, {len(server_ports)} seen by the "
            f"server, {len(retrans_ports)} retransmitting"
        )
        # A passive socket's sent segments start at its clone and again at ESTABLISHED: a run the
        # kernel skips (nested on a CPU) at one of them no longer loses the connection (see sock_cloned).
        skipped = {
            s.labels["program"]: int(s.value) for s in f1 if s.name == "retransmon_bpf_recursion_misses_total"
        }
        print(f"flow agent: BPF runs the kernel skipped: {skipped}")
        assert len(client_ports) == 300 and client_ports == server_ports
        assert "0" not in client_ports
        assert len(retrans_ports) > 50 and retrans_ports <= client_ports


@PASSIVE_UNDERCOUNT
def test_max_series_caps_series_and_keeps_per_namespace_sums() -> None:
    """--max-series 5: the rest is folded into `other` series; the sums are those of an uncapped agent."""
    cap = 5
    with (
        AgentProcess("--labels", "flow,netns", "--max-series", str(cap)) as capped,
        AgentProcess("--labels", "flow,netns") as reference,
        TestBed(loss_percent=10, offloads=False) as tb,
    ):
        (c0, s0), (capped0, ref0) = settle([capped, reference], [tb.client, tb.server])
        tb.send(flows=10, duration=0, connections=60)
        (c1, s1), (capped1, ref1) = settle([capped, reference], [tb.client, tb.server])
        for metric in (RETRANS, SENT):
            everywhere = [s for s in capped1 if s.name == metric]
            admitted = [s for s in everywhere if s.labels["src_port"] != "other"]
            assert len(admitted) <= cap, f"{metric}: {len(admitted)} series admitted past the cap"
            folded = [s for s in series(capped1, metric, tb.client) if s.labels["src_port"] == "other"]
            assert folded and all(s.labels["dst_ip"] == "other" for s in folded)
        assert total(capped1, "retransmon_series_overflow_total") > 0

        client_retrans = ours(capped1, RETRANS, tb.client) - ours(capped0, RETRANS, tb.client)
        print(f"capped: client RetransSegs {c1[1] - c0[1]}, exported {client_retrans}")
        assert client_retrans == c1[1] - c0[1] > 0
        assert ours(capped1, RETRANS, tb.server) - ours(capped0, RETRANS, tb.server) == s1[1] - s0[1]
        for ns, (k0, k1) in ((tb.client, (c0, c1)), (tb.server, (s0, s1))):
            capped_sent = ours(capped1, SENT, ns) - ours(capped0, SENT, ns)
            reference_sent = ours(ref1, SENT, ns) - ours(ref0, SENT, ns)
            print(f"capped: sent {capped_sent}, uncapped {reference_sent}, kernel {k1[0] - k0[0]}")
            assert capped_sent == reference_sent
            assert churn_sent_plausible(capped_sent, k1[0] - k0[0])


def test_series_ttl_drops_idle_series() -> None:
    ttl = 4.0
    with (
        AgentProcess("--labels", "netns", "--series-ttl", f"{ttl:g}s", "--harvest-interval", "0.5") as agent,
        TestBed(loss_percent=10, offloads=True) as tb,
    ):
        tb.send(flows=2, duration=1)
        samples = agent.scrape()  # moments after the transfer: the series have just grown
        assert ours(samples, RETRANS, tb.client) > 0 and ours(samples, SENT, tb.client) > 0
        settle([agent], [tb.client, tb.server])  # every socket closed, nothing grows any more
        time.sleep(ttl + 1.5)
        later = agent.scrape()
        left = series(later, RETRANS, tb.client) + series(later, SENT, tb.client)
        print(f"ttl: {len(left)} series of the idle namespace left {ttl + 1.5:g} s after it went quiet")
        assert left == []


def test_full_socket_table_is_counted_and_retransmits_stay_exact() -> None:
    """--socket-capacity 4: most sockets find no room to track their segments sent. That is exported
    (retransmon_untracked_sockets_total), sent segments read low, never high, and retransmitted
    segments, which do not need that table, are still exact."""
    with (
        AgentProcess("--labels", "netns", "--socket-capacity", "4") as agent,
        TestBed(loss_percent=10, offloads=False) as tb,
    ):
        (c0, s0), (before,) = settle([agent], [tb.client, tb.server])
        result = tb.send(flows=10, duration=0, connections=40)
        assert result["connections"] == 40 and result["errors"] == 0, result
        (c1, s1), (after,) = settle([agent], [tb.client, tb.server])
        untracked = total(after, "retransmon_untracked_sockets_total")
        sent = ours(after, SENT, tb.client) - ours(before, SENT, tb.client)
        retrans = ours(after, RETRANS, tb.client) - ours(before, RETRANS, tb.client)
        print(f"socket table of 4: {untracked:g} sockets untracked, sent {sent} of {c1[0] - c0[0]}")
        assert untracked >= 40
        assert sent < c1[0] - c0[0]
        assert retrans == c1[1] - c0[1] > 0
        assert ours(after, RETRANS, tb.server) - ours(before, RETRANS, tb.server) == s1[1] - s0[1]
