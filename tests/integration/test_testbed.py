"""The test bed against the real kernel: namespaces, veth, nftables loss, traffic (root)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from retransmon.chaos.errors import CommandError, ImpairmentUnavailable
from retransmon.chaos.loss import TCP_FLAG_FILTERS, Impairment, build_ruleset, netem_available
from retransmon.chaos.netns import NetNamespace, list_netns, tcp_counters, tcp_ext_counters
from retransmon.chaos.testbed import TestBed
from retransmon.chaos.traffic import run_holder, start_sink
from retransmon.chaos.veth import VethPair

pytestmark = pytest.mark.root

PREFIX = "rmtest-it"


def _ours() -> list[str]:
    return [name for name in list_netns() if name.startswith(f"{PREFIX}-") and f"-{os.getpid()}-" in name]


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    assert _ours() == []


def test_namespace_basics() -> None:
    with NetNamespace(PREFIX) as ns:
        assert ns.name in list_netns()
        link = ns.run(["readlink", "/proc/self/ns/net"]).stdout.strip()
        assert link == f"net:[{ns.inode}]"
        assert os.stat("/proc/self/ns/net").st_ino != ns.inode
        assert "LOOPBACK,UP" in ns.run(["ip", "link", "show", "lo"]).stdout
        # A fresh namespace has its own, zeroed, TCP counters.
        assert tcp_counters(ns)["ActiveOpens"] == 0
        assert tcp_counters(ns)["RtoMin"] == 200
        assert "TCPSynRetrans" in tcp_ext_counters(ns)
        with pytest.raises(CommandError, match="false"):
            ns.run(["false"])
        proc = ns.popen(["sleep", "300"])
    assert proc.returncode is not None  # ended by close()
    ns.close()  # idempotent
    assert ns.name not in list_netns()


def test_veth_addresses_and_offloads() -> None:
    with NetNamespace(PREFIX) as a, NetNamespace(PREFIX) as b, VethPair(a, b, index=3) as veth:
        assert (veth.left_ip4, veth.right_ip6) == ("198.18.3.1", "2001:db8:3::2")
        assert "198.18.3.1/24" in a.run(["ip", "addr", "show", "dev", veth.left_ifname]).stdout
        right = b.run(["ip", "addr", "show", "dev", veth.right_ifname]).stdout
        assert "198.18.3.2/24" in right and "2001:db8:3::2/64" in right
        veth.set_offloads(False)
        features = b.run(["ethtool", "-k", veth.right_ifname]).stdout
        assert "tcp-segmentation-offload: off" in features
        assert "generic-segmentation-offload: off" in features
        assert "generic-receive-offload: off" in features
        veth.close()
        assert a.run(["ip", "link", "show", "dev", veth.left_ifname], check=False).returncode != 0


@pytest.mark.parametrize("tcp_flags", [None, *TCP_FLAG_FILTERS])
def test_every_ruleset_loads_and_is_removed(tcp_flags: str | None) -> None:
    with NetNamespace(PREFIX) as ns:
        ns.run(["nft", "-c", "-f", "-"], input=build_ruleset("check", "input", 12.34, [5001], tcp_flags))
        with Impairment(ns, "lo", 5, ports=[5001], tcp_flags=tcp_flags) as imp:
            assert imp.method_used == "nftables"
            assert f"table inet {imp.table}" in ns.run(["nft", "list", "tables"]).stdout
            assert imp.dropped_packets() == 0
        assert ns.run(["nft", "list", "tables"]).stdout.strip() == ""


def test_netem_probe_and_delay_fallback() -> None:
    available = netem_available()
    assert _ours() == [] and not [n for n in list_netns() if n.startswith("rmprobe-")]
    if available:
        pytest.skip("netem present: the nftables fallback is not exercised here")
    with NetNamespace(PREFIX) as ns:
        with pytest.raises(ImpairmentUnavailable, match="netem"):
            Impairment(ns, "lo", 1, delay_ms=20, direction="egress")
        assert ns.run(["nft", "list", "tables"]).stdout.strip() == ""


def test_loss_makes_the_client_retransmit() -> None:  # (a)
    with TestBed(loss_percent=10, offloads=False, prefix=PREFIX) as tb:
        names = (tb.client.name, tb.server.name)
        assert tb.impairment is not None
        before = tcp_counters(tb.client)
        result = tb.send(flows=4, duration=3)
        after = tcp_counters(tb.client)
        retrans = after["RetransSegs"] - before["RetransSegs"]
        sent = after["OutSegs"] - before["OutSegs"]
        assert result["connections"] == 4 and result["errors"] == 0
        assert isinstance(result["bytes_sent"], int) and result["bytes_sent"] > 0
        assert retrans > 0
        # Per-segment loss (offloads off): the retransmit rate is near the loss rate.
        assert 0.03 < retrans / sent < 0.3
        assert tb.impairment.dropped_packets() > 0
    assert not set(names) & set(list_netns())


@pytest.mark.parametrize("ipv6", [False, True])
def test_transfer_without_loss(ipv6: bool) -> None:  # (b)
    with TestBed(ipv6=ipv6, prefix=PREFIX) as tb:
        assert tb.impairment is None
        assert (":" in tb.server_ip) == ipv6
        result = tb.send(flows=2, duration=1)
        assert result["errors"] == 0 and result["connections"] == 2
        assert isinstance(result["bytes_sent"], int) and result["bytes_sent"] > 0
        fixed = tb.send(flows=2, duration=30, nbytes=1_000_000)
        assert fixed["bytes_sent"] == 2_000_000
        churn = tb.send(flows=4, duration=0, connections=200)
        assert (churn["connections"], churn["errors"], churn["bytes_sent"]) == (200, 0, 200 * 8192)


def test_cleanup_on_exception() -> None:  # (c)
    names: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), TestBed(loss_percent=5, prefix=PREFIX) as tb:
        names = [tb.client.name, tb.server.name]
        assert set(names) <= set(list_netns())
        raise RuntimeError("boom")
    assert names and not set(names) & set(list_netns())
    assert tb.sink.returncode is not None


def test_handshake_ack_drop_makes_server_retransmit_synack() -> None:  # (d)
    with TestBed(prefix=PREFIX) as tb:
        before, before_ext = tcp_counters(tb.server), tcp_ext_counters(tb.server)
        with Impairment(
            tb.server, tb.veth.right_ifname, 100, ports=[tb.port], tcp_flags="handshake-ack"
        ) as imp:
            # The client completes its side at once; the server never sees the ACK and
            # retransmits its SYN-ACK after 1 s.
            result = run_holder(tb.client, tb.server_ip, tb.port, count=3, hold=1.5)
            assert imp.dropped_packets() >= 3
        after, after_ext = tcp_counters(tb.server), tcp_ext_counters(tb.server)
        assert result["connections"] == 3
        assert after_ext["TCPSynRetrans"] - before_ext["TCPSynRetrans"] > 0
        assert after["RetransSegs"] - before["RetransSegs"] > 0


def test_sink_that_cannot_start_fails_fast() -> None:
    with NetNamespace(PREFIX) as ns:
        start = time.monotonic()
        with pytest.raises(CommandError, match="sink"):
            start_sink(ns, "198.18.99.1", 5001)  # no such address in ns
        assert time.monotonic() - start < 10
