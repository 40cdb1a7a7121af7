"""The retransmit storm the benchmarks share: veth with TSO/GSO off, bulk flows, 10% loss."""

from __future__ import annotations

import time
from dataclasses import dataclass

from retransmon.chaos.netns import tcp_counters
from retransmon.chaos.testbed import TestBed

STORM_FLOWS = 8
STORM_LOSS = 10.0


@dataclass(frozen=True)
class StormResult:
    seconds: float
    retrans_segs: int  # the kernel's RetransSegs delta in the sender's namespace

    @property
    def segments_per_second(self) -> float:
        return self.retrans_segs / self.seconds


def storm_bed() -> TestBed:
    return TestBed(loss_percent=STORM_LOSS, offloads=False, prefix="rmbench")


def run_storm(bed: TestBed, seconds: float, flows: int = STORM_FLOWS) -> StormResult:
    """Bulk flows through the lossy link for `seconds`; every segment is one event (no TSO)."""
    before = tcp_counters(bed.client)["RetransSegs"]
    start = time.monotonic()
    bed.send(flows=flows, duration=seconds)
    elapsed = time.monotonic() - start
    return StormResult(elapsed, tcp_counters(bed.client)["RetransSegs"] - before)
