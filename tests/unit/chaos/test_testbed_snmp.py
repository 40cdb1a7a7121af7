"""Parsing /proc/net/snmp and /proc/net/netstat (no root needed)."""

from __future__ import annotations

import pytest

from retransmon.chaos.netns import parse_snmp

SNMP = """\
Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 2343
IcmpMsg: InType3
IcmpMsg: 1
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens InSegs OutSegs RetransSegs
Tcp: 1 200 120000 -1 17 2 2310 1297 5
Udp: InDatagrams NoPorts
Udp: 10 0
"""

NETSTAT = """\
TcpExt: SyncookiesSent TCPSynRetrans TCPRetransFail
TcpExt: 0 3 0
IpExt: InNoRoutes InOctets
IpExt: 0 123456789012
"""


def test_parse_snmp_tcp() -> None:
    tcp = parse_snmp(SNMP)["Tcp"]
    assert tcp["RetransSegs"] == 5
    assert tcp["OutSegs"] == 1297
    assert tcp["ActiveOpens"] == 17
    assert tcp["MaxConn"] == -1


def test_parse_snmp_all_protocols() -> None:
    parsed = parse_snmp(SNMP)
    assert set(parsed) == {"Ip", "IcmpMsg", "Tcp", "Udp"}
    assert parsed["Udp"] == {"InDatagrams": 10, "NoPorts": 0}


def test_parse_netstat() -> None:
    parsed = parse_snmp(NETSTAT)
    assert parsed["TcpExt"] == {"SyncookiesSent": 0, "TCPSynRetrans": 3, "TCPRetransFail": 0}
    assert parsed["IpExt"]["InOctets"] == 123456789012


def test_parse_empty() -> None:
    assert parse_snmp("") == {}


def test_parse_mismatched_counts() -> None:
    with pytest.raises(ValueError, match="Tcp"):
        parse_snmp("Tcp: A B C\nTcp: 1 2\n")
