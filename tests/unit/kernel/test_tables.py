"""FlowTables' own logic (swap, drain, fallback, losses, listeners) over in-memory maps.

Only this kernel-side test stands in for libbpf's map calls; everything above the
kernel package is tested against tests.support.fakekernel instead.
"""

from __future__ import annotations

import errno
import types

import pytest

from retransmon.kernel import libbpf
from retransmon.kernel import tables as tables_mod
from retransmon.kernel.structs import (
    FLOW_COUNTS,
    FLOW_KEY,
    LISTEN_KEY,
    LOSS_COUNTS,
    META_KEY,
    ZERO_COUNTS,
    ZERO_U32,
)
from retransmon.kernel.tables import FlowTables, Losses, TableFds

FDS = TableFds(outer=10, tables=(11, 12), listeners=13, losses=14)


def _key(n: int) -> bytes:
    return FLOW_KEY.pack(0, 1, 2, 1, 0, n, 80, 0, 1, b"", b"\x0a\0\0\x01", b"\x0a\0\0\x02")


class Maps:
    """Maps by fd, and the calls made, standing in for libbpf's map functions."""

    def __init__(self, batch_errno: int | None = None) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {fd: {} for fd in (10, 11, 12, 13)}
        self.data[10][ZERO_U32] = (11).to_bytes(4, "little")
        self.per_cpu: list[bytes] = []
        self.calls: list[str] = []
        self.batch_errno = batch_errno

    def module(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(
            LibbpfError=libbpf.LibbpfError,
            map_update=self.update,
            map_lookup=lambda fd, key, _size: self.data[fd].get(key),
            map_delete=lambda fd, key: self.data[fd].pop(key, None) is not None,
            map_keys=lambda fd, _size: list(self.data[fd]),
            map_lookup_and_delete_batch=self.batch,
            map_lookup_percpu=lambda fd, _key, _size: self.per_cpu if fd == 14 else None,
        )

    def update(self, fd: int, key: bytes, value: bytes) -> None:
        self.calls.append(f"update {fd}")
        self.data[fd][key] = value

    def batch(self, fd: int, _ks: int, _vs: int, _max: int) -> list[tuple[bytes, bytes]]:
        self.calls.append(f"batch {fd}")
        if self.batch_errno is not None:
            raise libbpf.LibbpfError("map lookup_and_delete_batch", self.batch_errno)
        out = list(self.data[fd].items())
        self.data[fd].clear()
        return out

    def live(self) -> int:
        return int.from_bytes(self.data[10][ZERO_U32], "little")


def _tables(monkeypatch: pytest.MonkeyPatch, maps: Maps) -> FlowTables:
    monkeypatch.setattr(tables_mod, "libbpf", maps.module())

    def collect_sent() -> bool:
        maps.calls.append("collect sent")
        return True

    t = FlowTables(FDS, 64, collect_sent)
    t.reset()
    return t


def test_drain_swaps_then_empties_the_old_table(monkeypatch: pytest.MonkeyPatch) -> None:
    maps = Maps()
    t = _tables(monkeypatch, maps)
    assert maps.data[11] == maps.data[12] == {META_KEY: ZERO_COUNTS}
    maps.data[11][_key(1)] = FLOW_COUNTS.pack(1, 3)
    maps.data[11][META_KEY] = FLOW_COUNTS.pack(1, 0)  # the kernel counted one flow
    maps.calls.clear()
    assert t.drain() == [(_key(1), FLOW_COUNTS.pack(1, 3))]  # the meta entry is not a flow
    # Sent segments go into the live table before it is swapped out; then programs write to 12.
    assert maps.calls == ["collect sent", "update 10", "batch 11", "update 11"]
    assert maps.live() == 12
    assert maps.data[11] == {META_KEY: ZERO_COUNTS}  # ready to be live again, with no flows
    maps.data[12][_key(2)] = FLOW_COUNTS.pack(2, 2)
    assert t.drain() == [(_key(2), FLOW_COUNTS.pack(2, 2))]
    assert maps.live() == 11
    assert t.peek() == []


def test_drain_falls_back_to_key_by_key_once(monkeypatch: pytest.MonkeyPatch) -> None:
    maps = Maps(batch_errno=errno.EINVAL)
    t = _tables(monkeypatch, maps)
    maps.data[11][_key(1)] = FLOW_COUNTS.pack(1, 1)
    assert t.drain() == [(_key(1), FLOW_COUNTS.pack(1, 1))]
    assert maps.data[11] == {META_KEY: ZERO_COUNTS}
    maps.data[12][_key(2)] = FLOW_COUNTS.pack(1, 5)
    maps.calls.clear()
    assert t.drain() == [(_key(2), FLOW_COUNTS.pack(1, 5))]
    assert not [c for c in maps.calls if c.startswith("batch")]  # not tried again


def test_drain_passes_other_errors_on(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _tables(monkeypatch, Maps(batch_errno=errno.EBADF))
    with pytest.raises(libbpf.LibbpfError):
        t.drain()


def test_losses_sum_every_cpu_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    maps = Maps()
    t = _tables(monkeypatch, maps)
    assert t.losses() == Losses()
    maps.per_cpu = [LOSS_COUNTS.pack(1, 2, 3, 4, 5), LOSS_COUNTS.pack(10, 20, 30, 40, 50)]
    assert t.losses() == Losses(
        events_lost=11,
        unaccounted_events=22,
        unaccounted_segments=33,
        untracked_sockets=44,
        unclassified_segments=55,
    )


def test_listeners_and_peek(monkeypatch: pytest.MonkeyPatch) -> None:
    maps = Maps()
    t = _tables(monkeypatch, maps)
    maps.data[13][LISTEN_KEY.pack(4026531840, 443, 0)] = b""
    maps.data[13][LISTEN_KEY.pack(7, 22, 0)] = b""
    assert t.listeners() == {(4026531840, 443), (7, 22)}
    maps.data[12][_key(3)] = FLOW_COUNTS.pack(1, 1)
    assert t.peek() == [_key(3)]
    assert t.readable()
