"""3. Throughput overhead: bulk TCP over veth with and without the agent (and with `trace` reading).

iperf3 between two namespaces, no loss, offloads on (a bulk transfer as hosts do
it). Conditions are interleaved round by round so that machine noise hits all of
them alike; the report gives each condition's median and the median of its
per-round ratios to the run without the agent in the same round (neighbouring
runs share the machine's state, so paired ratios are steadier).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from bench.stats import median, spread
from bench.userspace_cost import trace_available
from retransmon.chaos.testbed import TestBed
from tests.support import AgentProcess
from tests.support.agent import retransmon_command

IPERF_PORT = 5201
TARGET_OVERHEAD_PERCENT = 1.0


@contextlib.contextmanager
def _condition(name: str) -> Iterator[None]:
    if name == "none":
        yield
        return
    with AgentProcess():
        if name == "serve":
            yield
            return
        proc = subprocess.Popen(
            [*retransmon_command(), "trace", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(2.0)
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def _iperf(bed: TestBed, seconds: float) -> float:
    """Bits per second the receiver saw."""
    out = bed.client.run(
        ["iperf3", "-c", bed.server_ip, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J"],
        timeout=seconds + 60,
    ).stdout
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def run(seconds: float = 4.0, rounds: int = 11) -> dict[str, Any]:
    conditions = ["none", "serve"] + (["serve+trace"] if trace_available() else [])
    samples: dict[str, list[float]] = {c: [] for c in conditions}
    with TestBed(prefix="rmbench") as bed:
        server = bed.server.popen(
            ["iperf3", "-s", "-B", bed.server_ip, "-p", str(IPERF_PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            _iperf(bed, 1.0)  # warm-up
            for i in range(rounds):
                # Rotate the order too, so no condition always follows the same one.
                for name in conditions[i % len(conditions) :] + conditions[: i % len(conditions)]:
                    with _condition(name):
                        samples[name].append(_iperf(bed, seconds))
        finally:
            server.terminate()
            server.wait(timeout=10)

    def paired(name: str) -> list[float]:
        return [v / n for v, n in zip(samples[name], samples["none"], strict=True)]

    return {
        "seconds": seconds,
        "rounds": rounds,
        "conditions": {
            name: {
                "median_gbps": median(values) / 1e9,
                "spread_gbps": spread([v / 1e9 for v in values]),
                "ratio_to_none": median(paired(name)),
                "ratio_spread": spread(paired(name)),
            }
            for name, values in samples.items()
        },
        "target_overhead_percent": TARGET_OVERHEAD_PERCENT,
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"iperf3, {result['rounds']} interleaved rounds of {result['seconds']:g} s per condition.",
        "",
        "| condition | median Gbit/s | min..max | median ratio to no agent, same round | its min..max | "
        "overhead |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, c in result["conditions"].items():
        lines.append(
            f"| {name} | {c['median_gbps']:.2f} | {c['spread_gbps']} | {c['ratio_to_none']:.4f} | "
            f"{c['ratio_spread']} | "
            f"{100 * (1 - c['ratio_to_none']):+.2f}% |"
        )
    return "\n".join(lines)
