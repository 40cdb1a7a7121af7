"""The kernel's flow tables and the counters beside them, read one harvest at a time.

The programs add to the flow table that ``flow_tables[0]`` points at (the live
one). :meth:`FlowTables.drain` points them at the spare table instead (the
kernel returns only after an RCU grace period, so no program still writes to
the old one), then reads and deletes everything in the old table. Callers get
plain bytes (``struct flow_key`` / ``struct flow_counts``, see
:mod:`retransmon.kernel.structs`); decoding them is attribution's job.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass

from retransmon.kernel import libbpf
from retransmon.kernel.structs import (
    FLOW_COUNTS,
    FLOW_KEY,
    LISTEN_KEY,
    LOSS_COUNTS,
    META_KEY,
    ZERO_COUNTS,
    ZERO_U32,
    Losses,
    is_meta,
)

__all__ = ["FlowTables", "Losses", "TableFds"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableFds:
    """File descriptors of the maps a FlowTables reads and writes."""

    outer: int  # flow_tables: the one-slot array of maps the programs write through
    tables: tuple[int, int]  # flows_a, flows_b
    listeners: int
    losses: int


class FlowTables:
    """The double-buffered flow tables: swap and drain, losses, listening ports."""

    def __init__(self, fds: TableFds, max_entries: int, collect_sent: Callable[[], bool]) -> None:
        self._fds = fds
        self.max_entries = max_entries
        self._collect_sent = collect_sent
        self._live = 0  # index into fds.tables of the table in flow_tables[0]
        self._batch_ok = True

    def reset(self) -> None:
        """Give both tables their bookkeeping entry (the flow count the kernel folds by)."""
        for fd in self._fds.tables:
            libbpf.map_update(fd, META_KEY, ZERO_COUNTS)

    def drain(self) -> list[tuple[bytes, bytes]]:
        """Every flow counted since the last drain, as (flow_key, flow_counts) bytes, exactly once.

        First the sent-segments iterator adds live sockets' counts to the live table,
        so they are in this drain; then the tables swap and the old one is emptied.
        Not thread-safe: one caller at a time.
        """
        self._collect_sent()
        old = self._live
        spare = 1 - old
        # Swapping an array-of-maps entry waits for an RCU grace period.
        libbpf.map_update(self._fds.outer, ZERO_U32, self._fds.tables[spare].to_bytes(4, "little"))
        self._live = spare
        old_fd = self._fds.tables[old]
        entries = self._take_all(old_fd)
        libbpf.map_update(old_fd, META_KEY, ZERO_COUNTS)
        return [(key, value) for key, value in entries if not is_meta(key)]

    def _take_all(self, fd: int) -> list[tuple[bytes, bytes]]:
        if self._batch_ok:
            try:
                return libbpf.map_lookup_and_delete_batch(
                    fd, FLOW_KEY.size, FLOW_COUNTS.size, self.max_entries
                )
            except libbpf.LibbpfError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                log.info("batch lookup-and-delete unsupported (%s); draining key by key", exc.strerror)
                self._batch_ok = False
        # No program writes to this table any more, so key-by-key is consistent too.
        out = []
        for key in libbpf.map_keys(fd, FLOW_KEY.size):
            value = libbpf.map_lookup(fd, key, FLOW_COUNTS.size)
            if value is not None:
                out.append((key, value))
            libbpf.map_delete(fd, key)
        return out

    def peek(self) -> list[bytes]:
        """The flow keys both tables hold now, without taking them (for tests and diagnosis)."""
        return [k for fd in self._fds.tables for k in libbpf.map_keys(fd, FLOW_KEY.size) if not is_meta(k)]

    def losses(self) -> Losses:
        per_cpu = libbpf.map_lookup_percpu(self._fds.losses, ZERO_U32, LOSS_COUNTS.size)
        rows = [LOSS_COUNTS.unpack(raw) for raw in per_cpu or []]
        # LOSS_COUNTS is made from Losses' fields: the names match by construction.
        return Losses(**{f.name: sum(int(row[i]) for row in rows) for i, f in enumerate(LOSS_COUNTS.fields)})

    def listeners(self) -> set[tuple[int, int]]:
        """(netns, port) of every listening TCP socket the kernel has seen."""
        live = set()
        for key in libbpf.map_keys(self._fds.listeners, LISTEN_KEY.size):
            netns, port, _pad = LISTEN_KEY.unpack(key)
            live.add((int(netns), int(port)))
        return live

    def readable(self) -> bool:
        """Whether this process can still read the tables (a probe after dropping capabilities)."""
        try:
            return libbpf.map_lookup(self._fds.tables[0], META_KEY, FLOW_COUNTS.size) is not None
        except libbpf.LibbpfError:
            return False
