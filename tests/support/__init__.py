"""Test-only helpers (not shipped): agent and trace processes, throw-away TLS material, test
cgroups, and the private test network that `retransmon chaos` builds, re-exported for tests,
bench and scripts."""

from __future__ import annotations

from retransmon.chaos.errors import CommandError, ImpairmentUnavailable, TestbedError
from retransmon.chaos.loss import TCP_FLAG_FILTERS, Impairment, build_ruleset, netem_available
from retransmon.chaos.netns import (
    NetNamespace,
    list_netns,
    parse_snmp,
    read_while_settled,
    settled_retranssegs,
    tcp_counters,
    tcp_ext_counters,
)
from retransmon.chaos.traffic import run_holder, run_sender, start_sink
from retransmon.chaos.veth import Link, VethPair
from tests.support.agent import AgentProcess, free_port, parse_metrics, total
from tests.support.cgroup import TestCgroup
from tests.support.testbed import TestBed

__all__ = [
    "TCP_FLAG_FILTERS",
    "AgentProcess",
    "CommandError",
    "Impairment",
    "ImpairmentUnavailable",
    "Link",
    "NetNamespace",
    "TestBed",
    "TestCgroup",
    "TestbedError",
    "VethPair",
    "build_ruleset",
    "free_port",
    "list_netns",
    "netem_available",
    "parse_metrics",
    "parse_snmp",
    "read_while_settled",
    "run_holder",
    "run_sender",
    "settled_retranssegs",
    "start_sink",
    "tcp_counters",
    "tcp_ext_counters",
    "total",
]
