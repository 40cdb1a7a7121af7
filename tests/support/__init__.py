"""Test-only helpers (not shipped): agent and trace processes, throw-away TLS material and test
cgroups. The test network itself (TestBed, namespaces, veth, loss, traffic) is part of the
package, in retransmon.chaos, since `retransmon chaos` builds it too."""

from __future__ import annotations

from tests.support.agent import AgentProcess, free_port, parse_metrics, total
from tests.support.cgroup import TestCgroup

__all__ = ["AgentProcess", "TestCgroup", "free_port", "parse_metrics", "total"]
