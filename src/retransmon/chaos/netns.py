"""Network namespaces that always clean up, and the kernel's TCP counters inside them."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from retransmon.chaos.errors import TestbedError
from retransmon.chaos.process import run_command, signal_and_wait

TEST_PREFIX = "rmtest"  # tests' namespaces: rmtest-...-<pid>-<n>

_counter = itertools.count()
_counter_lock = threading.Lock()


def _next_id() -> int:
    with _counter_lock:
        return next(_counter)


class NetNamespace:
    """A named network namespace (`ip netns add`) with `lo` up; removed by close().

    Named <prefix>-<pid>-<n>: the PID of the process that made it comes second to last, so
    `chaos --cleanup` can tell a dead run's namespaces from a live one's.
    """

    def __init__(self, prefix: str = TEST_PREFIX) -> None:
        self._name = f"{prefix}-{os.getpid()}-{_next_id()}"
        self._procs: list[subprocess.Popen[str]] = []
        self._closed = False
        try:
            run_command(["ip", "netns", "add", self._name])
            run_command(["ip", "-n", self._name, "link", "set", "lo", "up"])
            self._inode = os.stat(f"/run/netns/{self._name}").st_ino
        except BaseException:
            self.close()
            raise

    @property
    def name(self) -> str:
        return self._name

    @property
    def inode(self) -> int:
        """The namespace's inode number: the `ns.inum` the kernel reports for its sockets."""
        return self._inode

    @property
    def closed(self) -> bool:
        return self._closed

    def _wrap(self, argv: list[str]) -> list[str]:
        if self._closed:
            raise TestbedError(f"network namespace {self._name} is already closed")
        return ["ip", "netns", "exec", self._name, *argv]

    def run(
        self, argv: list[str], check: bool = True, timeout: float = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the namespace, wait, and return its captured (text) output."""
        return run_command(self._wrap(argv), check=check, timeout=timeout, **kw)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        """Start argv inside the namespace; close() ends it (by PID) if it is still running."""
        # `ip netns exec` execs the command in place, so the PID is the command's own.
        proc: subprocess.Popen[str] = subprocess.Popen(self._wrap(argv), text=True, **kw)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        """End the processes started with popen(), then delete the namespace. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for proc in self._procs:
                _stop(proc)
        finally:
            self._procs.clear()
            delete_netns(self._name)

    def __enter__(self) -> NetNamespace:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetNamespace({self._name!r})"


def _stop(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reap."""
    signal_and_wait(proc, signal.SIGTERM, grace)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def parse_snmp(text: str) -> dict[str, dict[str, int]]:
    """Parse /proc/net/snmp or /proc/net/netstat: {"Tcp": {"RetransSegs": 12, ...}, "TcpExt": {...}}.

    Both files are pairs of lines, `Proto: Name1 Name2 ...` then `Proto: value1 value2 ...`.
    """
    result: dict[str, dict[str, int]] = {}
    header: tuple[str, list[str]] | None = None
    for line in text.splitlines():
        proto, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if header is None or header[0] != proto:
            header = (proto, fields)
            continue
        names = header[1]
        if len(names) != len(fields):
            raise ValueError(f"malformed counters for {proto}: {len(names)} names, {len(fields)} values")
        result.setdefault(proto, {}).update(zip(names, (int(v) for v in fields), strict=True))
        header = None
    return result


def _read_proc(ns: NetNamespace | None, path: str) -> str:
    if ns is None:
        with open(path, encoding="ascii") as f:
            return f.read()
    # /proc/net follows the reading process's namespace, so read it from a process inside ns.
    return ns.run(["cat", path]).stdout


def tcp_counters(ns: NetNamespace | None) -> dict[str, int]:
    """The `Tcp:` counters of /proc/net/snmp in ns (None: this process's namespace)."""
    return parse_snmp(_read_proc(ns, "/proc/net/snmp")).get("Tcp", {})


T = TypeVar("T")


def read_while_settled(
    ns: NetNamespace, read: Callable[[], T], tries: int = 40, pause: float = 0.25
) -> tuple[int, T]:
    """ns's RetransSegs, and what read() returned while it did not move (the same before and after)."""
    for _ in range(tries):
        before = tcp_counters(ns)["RetransSegs"]
        value = read()
        if tcp_counters(ns)["RetransSegs"] == before:
            return before, value
        time.sleep(pause)
    raise TestbedError(f"RetransSegs in {ns.name} never stopped moving")


def settled_retranssegs(ns: NetNamespace, pause: float = 0.25) -> int:
    """ns's RetransSegs once it stayed the same for `pause` seconds."""
    return read_while_settled(ns, lambda: time.sleep(pause), pause=0)[0]


def tcp_ext_counters(ns: NetNamespace | None) -> dict[str, int]:
    """The `TcpExt:` counters of /proc/net/netstat in ns (None: this process's namespace)."""
    return parse_snmp(_read_proc(ns, "/proc/net/netstat")).get("TcpExt", {})


def list_netns() -> list[str]:
    """Names of the named network namespaces (`ip netns list`)."""
    out = run_command(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(name: str) -> list[int]:
    """PIDs of the processes inside named namespace *name* (`ip netns pids`); [] if it is gone."""
    out = run_command(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def delete_netns(name: str) -> None:
    """Delete named namespace *name* (`ip netns del`); nothing happens if it is already gone."""
    run_command(["ip", "netns", "del", name], check=False)
