"""Listening TCP ports per network namespace, for the ``service_port`` label.

The BPF program keeps a map of listening (netns, port) pairs from the moment
it is attached; listeners that existed before are found once at start-up in
``/proc/<pid>/net/tcp{,6}``, one process per network namespace.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

TCP_LISTEN_HEX = "0A"


def parse_proc_net_tcp(text: str) -> set[int]:
    """Local ports in LISTEN state from the text of /proc/net/tcp or tcp6."""
    ports: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_LISTEN_HEX:
            continue
        _addr, _, port_hex = fields[1].rpartition(":")
        ports.add(int(port_hex, 16))
    return ports


def scan_proc(proc: str = "/proc") -> dict[int, set[int]]:
    """Listening ports per netns inode, reading one process per namespace."""
    found: dict[int, set[int]] = {}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    denied = 0
    for pid in pids:
        try:
            ino = os.stat(f"{proc}/{pid}/ns/net").st_ino
        except PermissionError:
            denied += 1  # not ours to look at: another user's, or holding more capabilities
            continue
        except OSError:
            continue  # gone
        if ino in found:
            continue
        ports: set[int] = set()
        for name in ("tcp", "tcp6"):
            try:
                with open(f"{proc}/{pid}/net/{name}") as f:
                    ports |= parse_proc_net_tcp(f.read())
            except OSError:
                continue
        found[ino] = ports
    if denied:
        log.warning(
            "could not see the network namespace of %d of %d processes (permission denied; "
            "CAP_SYS_PTRACE would allow it): listening ports opened before the agent started in "
            "namespaces only they use are unknown, and service_port may read the remote port there",
            denied,
            len(pids),
        )
    return found


class ListeningPorts:
    def __init__(self) -> None:
        self._seeded: dict[int, set[int]] = {}
        self._live: set[tuple[int, int]] = set()
        self._lock = threading.Lock()

    def seed(self, found: dict[int, set[int]]) -> None:
        with self._lock:
            self._seeded = found

    def update(self, live: set[tuple[int, int]]) -> None:
        """Replace the set learned from the BPF map: (netns inode, port) pairs."""
        with self._lock:
            self._live = live

    def __call__(self, netns: int, port: int) -> bool:
        with self._lock:
            return (netns, port) in self._live or port in self._seeded.get(netns, ())
