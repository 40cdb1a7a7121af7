"""`retransmon chaos --cleanup`: remove what a killed chaos run left behind.

A run names its namespaces rmchaos-<role>-<pid>-<n> (and probes for netem in a
scratch rmprobe-<pid>-<n>); everything else it creates (veth,
nftables table or netem qdisc, sink and sender processes) lives inside them. A
run killed with SIGKILL leaves those namespaces and the traffic processes in
them. Namespaces of a run that is still alive are left alone. BPF links need
nothing: the kernel releases them when the killed process's descriptors close.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass, field

from retransmon.chaos import traffic
from retransmon.chaos.loss import PROBE_PREFIX
from retransmon.chaos.netns import delete_netns, list_netns, netns_pids
from retransmon.chaos.options import PREFIX

# rmchaos-<role>-<pid>-<n>, and the scratch namespace that probes for netem (rmprobe-<pid>-<n>).
_NAME = re.compile(rf"^(?:{PREFIX}-[a-z]+|{PROBE_PREFIX})-(\d+)-\d+$")


@dataclass
class Cleaned:
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # of runs still alive


def owner_pid(name: str) -> int | None:
    """The PID of the chaos run that made namespace *name*, or None if it is not one of ours."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _end(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def cleanup() -> Cleaned:
    """Remove the namespaces of chaos runs that no longer run, after ending their traffic processes."""
    result = Cleaned()
    for name in list_netns():
        pid = owner_pid(name)
        if pid is None:
            continue
        if pid != os.getpid() and _alive(pid) and ("chaos" in _cmdline(pid) or name.startswith(PROBE_PREFIX)):
            result.kept.append(name)
            continue
        # Only the sink and sender a chaos run started there, by PID.
        ours = [pid for pid in netns_pids(name) if traffic.MODULE in _cmdline(pid)]
        _end(ours)
        result.processes += ours
        delete_netns(name)
        result.namespaces.append(name)
    return result
