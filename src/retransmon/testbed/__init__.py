"""A private TCP test network: namespaces, veth, packet loss, and traffic to drive through it.

Root only. Traffic stays inside namespaces created here, on 198.18.0.0/15 and
2001:db8::/32; everything created is removed when its context ends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retransmon.testbed.agent import AgentProcess, free_port, parse_metrics, total
    from retransmon.testbed.cgroup import TestCgroup
    from retransmon.testbed.errors import CommandError, ImpairmentUnavailable, TestbedError
    from retransmon.testbed.loss import TCP_FLAG_FILTERS, Impairment, build_ruleset, netem_available
    from retransmon.testbed.netns import (
        NetNamespace,
        list_netns,
        parse_snmp,
        read_while_settled,
        settled_retranssegs,
        tcp_counters,
        tcp_ext_counters,
    )
    from retransmon.testbed.testbed import TestBed
    from retransmon.testbed.traffic import run_holder, run_sender, start_sink
    from retransmon.testbed.veth import Link, VethPair

# Imported on first use, so that `python -m retransmon.testbed.traffic` does not find its
# own module already imported by this package (runpy warns about that).
_EXPORTS = {
    "AgentProcess": "agent",
    "free_port": "agent",
    "parse_metrics": "agent",
    "total": "agent",
    "TestCgroup": "cgroup",
    "CommandError": "errors",
    "ImpairmentUnavailable": "errors",
    "TestbedError": "errors",
    "TCP_FLAG_FILTERS": "loss",
    "Impairment": "loss",
    "build_ruleset": "loss",
    "netem_available": "loss",
    "NetNamespace": "netns",
    "list_netns": "netns",
    "parse_snmp": "netns",
    "read_while_settled": "netns",
    "settled_retranssegs": "netns",
    "tcp_counters": "netns",
    "tcp_ext_counters": "netns",
    "TestBed": "testbed",
    "run_holder": "traffic",
    "run_sender": "traffic",
    "start_sink": "traffic",
    "Link": "veth",
    "VethPair": "veth",
}

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


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
