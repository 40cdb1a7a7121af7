"""What a `retransmon chaos` run does, validated before anything is built."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from retransmon.errors import EnvironmentProblem, UsageError

PREFIX = "rmchaos"  # namespaces are rmchaos-<role>-<pid>-<n>; --cleanup looks for this prefix
VETH_INDEX = 66  # addresses 198.18.66.1/.2 and 2001:db8:66::1/::2 (see chaos.veth)
MAX_DROPPED_HANDSHAKES = 100  # each costs a connection a second or more of SYN backoff


@dataclass(frozen=True)
class ChaosOptions:
    loss_percent: float = 5.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_percent: float = 0.0
    flows: int = 4
    duration: float = 10.0
    connections: int | None = None  # churn mode: this many short connections
    ipv6: bool = False
    offloads: bool = True
    show: int = 10  # flow rows in the table
    blackhole: float = 0.0  # seconds in the middle of the traffic when every data packet is dropped
    drop_handshakes: int = 0  # the first N SYNs and the first N SYN-ACKs are dropped

    @property
    def blackhole_window(self) -> tuple[float, float] | None:
        """(start, end) of the black hole, in seconds from the traffic's start: centred in it."""
        if self.blackhole <= 0:
            return None
        start = (self.duration - self.blackhole) / 2
        return start, start + self.blackhole

    @property
    def wants_netem(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.reorder_percent > 0

    @property
    def netem_flags(self) -> list[str]:
        """The command-line options given that only netem can honour."""
        given = [
            ("--delay", self.delay_ms),
            ("--jitter", self.jitter_ms),
            ("--reorder", self.reorder_percent),
        ]
        return [name for name, value in given if value > 0]

    def validate(self) -> None:
        """Raise UsageError (exit 2) for values no run can use."""
        for name, value in (("--loss", self.loss_percent), ("--reorder", self.reorder_percent)):
            if not (math.isfinite(value) and 0 <= value <= 100):
                raise UsageError(f"{name} must be a percentage between 0 and 100, got {value:g}")
        for name, value in (("--delay", self.delay_ms), ("--jitter", self.jitter_ms)):
            if not (math.isfinite(value) and 0 <= value <= 10000):
                raise UsageError(f"{name} must be between 0 and 10000 ms, got {value:g}")
        if (self.jitter_ms > 0 or self.reorder_percent > 0) and self.delay_ms <= 0:
            raise UsageError("--jitter and --reorder need --delay (netem varies and reorders around a delay)")
        if not 1 <= self.flows <= 256:
            raise UsageError(f"--flows must be between 1 and 256, got {self.flows}")
        if not (math.isfinite(self.duration) and 0 < self.duration <= 3600):
            raise UsageError(
                f"--duration must be more than 0 and at most 3600 seconds, got {self.duration:g}"
            )
        if self.connections is not None and not 1 <= self.connections <= 100000:
            raise UsageError(f"--connections must be between 1 and 100000, got {self.connections}")
        if not (math.isfinite(self.blackhole) and self.blackhole >= 0):
            raise UsageError(f"--blackhole must be a number of seconds, got {self.blackhole:g}")
        if self.blackhole > 0 and self.connections is not None:
            raise UsageError("--blackhole needs bulk traffic: leave out --connections")
        if self.blackhole > 0 and self.blackhole >= self.duration:
            raise UsageError(
                f"--blackhole must be shorter than --duration ({self.duration:g} s), got {self.blackhole:g}"
            )
        if not 0 <= self.drop_handshakes <= MAX_DROPPED_HANDSHAKES:
            limit, given = MAX_DROPPED_HANDSHAKES, self.drop_handshakes
            raise UsageError(f"--drop-handshakes must be between 0 and {limit}, got {given}")
        if self.show < 0:
            raise UsageError(f"--show must not be negative, got {self.show}")


def require_root() -> None:
    """chaos makes network namespaces, veth pairs and nftables tables: root only (exit 1)."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "retransmon chaos builds network namespaces, a veth pair and nftables tables, which needs root",
            fix="run it as root (sudo retransmon chaos ...)",
        )
