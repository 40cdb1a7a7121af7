"""A loaded-looking RetransmonBPF with no kernel behind it, for tests of what sits on top.

:class:`FakeFlowTables` hands out prepared drains, losses and listening ports;
:class:`FakeBPF` is a RetransmonBPF whose tables are those (no hooks attached,
so its status reads "none"). Nothing here calls libbpf.
"""

from __future__ import annotations

from retransmon.kernel.skeleton import ProgramOptions, RetransmonBPF
from retransmon.kernel.tables import FlowTables, Losses, TableFds

NO_FDS = TableFds(outer=-1, tables=(-1, -1), listeners=-1, losses=-1)


class FakeFlowTables(FlowTables):
    """Each drain returns the next prepared batch of (flow_key, flow_counts) bytes, then nothing."""

    def __init__(
        self,
        batches: list[list[tuple[bytes, bytes]]] | None = None,
        losses: Losses | None = None,
        listeners: set[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(NO_FDS, max_entries=64, collect_sent=lambda: False)
        self.batches = list(batches or [])
        self.fixed_losses = losses or Losses()
        self.fixed_listeners = set(listeners or ())
        self.drains = 0

    def reset(self) -> None:
        pass

    def drain(self) -> list[tuple[bytes, bytes]]:
        self.drains += 1
        return self.batches.pop(0) if self.batches else []

    def peek(self) -> list[bytes]:
        return [key for batch in self.batches for key, _ in batch]

    def losses(self) -> Losses:
        return self.fixed_losses

    def listeners(self) -> set[tuple[int, int]]:
        return set(self.fixed_listeners)

    def readable(self) -> bool:
        return True


class FakeBPF(RetransmonBPF):
    """A RetransmonBPF that was never loaded but has (fake) flow tables."""

    def __init__(self, tables: FakeFlowTables, flow_capacity: int = 64) -> None:
        super().__init__(ProgramOptions(flow_capacity=flow_capacity))
        self.tables = tables
