"""Impairments that make particular causes happen, on top of a chaos run's configured loss.

* Dropped handshakes (`syn`): the first N SYNs arriving at the server and the first N
  SYN-ACKs it sends are dropped, so both ends retransmit their part of the handshake.
* A black hole (`timeout`, then `slow_start`): for a while in the middle of the traffic
  every packet to the server's port is dropped, so the client's RTO fires, backing off;
  then the hole closes and the configured loss is all that is left.

Both are nftables tables in the server's namespace, beside (not instead of) the one that
makes the configured loss: a packet any table drops is lost.
"""

from __future__ import annotations

import math
from types import TracebackType

from retransmon.chaos.loss import Impairment
from retransmon.chaos.options import ChaosOptions
from retransmon.chaos.testbed import TestBed


def hole_open(elapsed: float, window: tuple[float, float] | None) -> bool:
    """Whether the black hole is open *elapsed* seconds into the traffic."""
    return window is not None and window[0] <= elapsed < window[1]


def next_change(elapsed: float, window: tuple[float, float] | None) -> float:
    """Seconds from *elapsed* until the black hole next opens or closes (inf: never)."""
    if window is None:
        return math.inf
    ahead = [edge - elapsed for edge in window if edge > elapsed]
    return min(ahead, default=math.inf)


class Provocations:
    """The run's handshake drops (from construction) and its black hole (driven by tick)."""

    def __init__(self, net: TestBed, options: ChaosOptions) -> None:
        self._net = net
        self.window = options.blackhole_window
        self.handshakes = options.drop_handshakes
        self._hole: Impairment | None = None
        self._finished: list[int] = []  # packets dropped by impairments already removed
        self._live: list[Impairment] = []
        try:
            if self.handshakes:
                self._live.append(self._drop("ingress", "syn", self.handshakes))
                self._live.append(self._drop("egress", "syn-ack", self.handshakes))
        except BaseException:
            self.close()
            raise

    def _drop(self, direction: str, tcp_flags: str | None, first: int | None) -> Impairment:
        net = self._net
        return Impairment(
            net.server,
            net.veth.right_ifname,
            100,
            direction=direction,
            ports=[net.port],
            tcp_flags=tcp_flags,
            method="nftables",
            first=first,
        )

    def tick(self, elapsed: float) -> float:
        """Open or close the black hole for *elapsed* seconds of traffic; seconds until the next change."""
        if hole_open(elapsed, self.window) and self._hole is None:
            self._hole = self._drop("ingress", None, None)
        elif not hole_open(elapsed, self.window) and self._hole is not None:
            self._remove(self._hole)
            self._hole = None
        return next_change(elapsed, self.window)

    def end(self) -> None:
        """Close the black hole now (the traffic is over or was stopped)."""
        if self._hole is not None:
            self._remove(self._hole)
            self._hole = None

    def _remove(self, impairment: Impairment) -> None:
        self._finished.append(impairment.dropped_packets())
        impairment.close()

    def dropped(self) -> int:
        """Packets dropped so far by the handshake drops and the black hole."""
        live = [*self._live, *([self._hole] if self._hole is not None else [])]
        return sum(self._finished) + sum(i.dropped_packets() for i in live)

    def close(self) -> None:
        """Remove every table (they also go with the namespace). Idempotent."""
        for impairment in [*self._live, *([self._hole] if self._hole is not None else [])]:
            impairment.close()
        self._live.clear()
        self._hole = None

    def __enter__(self) -> Provocations:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
