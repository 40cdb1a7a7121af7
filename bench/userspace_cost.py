"""2. User-space cost: `serve` (aggregated in the kernel) against a per-event reader, in one storm.

`serve` is scraped every `scrape_interval` seconds while the storm runs; the
per-event path is `retransmon trace --json > /dev/null`, one user-space
operation per retransmit, the way the original blog's exporter worked. Rounds
alternate between the two so both meet the same machine.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import Any

from bench.procstat import cpu_seconds, memory_kib
from bench.stats import median
from bench.storm import run_storm, storm_bed
from retransmon.chaos.testbed import TestBed
from tests.support import AgentProcess
from tests.support.agent import retransmon_command

TARGET_CPU_PERCENT = 1.0
TARGET_RSS_MIB = 60.0


def _scrape_until(agent: AgentProcess, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        agent.metrics_text()


def _serve_round(bed: TestBed, seconds: float, scrape_interval: float) -> dict[str, float]:
    with AgentProcess() as agent:
        time.sleep(1.0)  # settle after start-up
        idle0, t0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(seconds / 2)
        idle_cpu = (cpu_seconds(agent.pid) - idle0) / (time.monotonic() - t0)
        stop = threading.Event()
        scraper = threading.Thread(target=_scrape_until, args=(agent, stop, scrape_interval))
        cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
        scraper.start()
        try:
            storm = run_storm(bed, seconds)
        finally:
            stop.set()
            scraper.join()
        agent.metrics_text()  # the last scrape: the storm's tail is harvested inside the window
        wall = time.monotonic() - t0
        busy = (cpu_seconds(agent.pid) - cpu0) / wall
        mem = memory_kib(agent.pid)
    return {
        "events_per_second": storm.segments_per_second,
        "cpu_percent": 100 * busy,
        "idle_cpu_percent": 100 * idle_cpu,
        "peak_rss_mib": mem["VmHWM"] / 1024,
    }


def trace_available() -> bool:
    proc = subprocess.run([*retransmon_command(), "trace", "--help"], capture_output=True, text=True)
    return proc.returncode == 0


def _trace_round(bed: TestBed, seconds: float) -> dict[str, Any]:
    with open("/dev/null", "w") as devnull:
        proc = subprocess.Popen(
            [*retransmon_command(), "trace", "--json"], stdout=devnull, stderr=subprocess.PIPE, text=True
        )
    try:
        time.sleep(2.0)  # attached and reading
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        storm = run_storm(bed, seconds)
        time.sleep(0.5)  # let it drain the ring buffer
        wall = time.monotonic() - t0
        busy = (cpu_seconds(proc.pid) - cpu0) / wall
        mem = memory_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    return {
        "events_per_second": storm.segments_per_second,
        "cpu_percent": 100 * busy,
        "peak_rss_mib": mem["VmHWM"] / 1024,
        "exit_code": proc.returncode,
        "stderr_tail": err.strip().splitlines()[-3:],
    }


def run(seconds: float = 20.0, rounds: int = 2, scrape_interval: float = 5.0) -> dict[str, Any]:
    with_trace = trace_available()
    serve_rounds: list[dict[str, float]] = []
    trace_rounds: list[dict[str, Any]] = []
    with storm_bed() as bed:
        for _ in range(rounds):
            serve_rounds.append(_serve_round(bed, seconds, scrape_interval))
            if with_trace:
                trace_rounds.append(_trace_round(bed, seconds))

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return median([float(r[key]) for r in rows])

    result: dict[str, Any] = {
        "seconds": seconds,
        "rounds": rounds,
        "scrape_interval": scrape_interval,
        "serve": {
            "events_per_second": med(serve_rounds, "events_per_second"),
            "cpu_percent": med(serve_rounds, "cpu_percent"),
            "idle_cpu_percent": med(serve_rounds, "idle_cpu_percent"),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in serve_rounds),
            "rounds": serve_rounds,
        },
        "trace": None,
    }
    if trace_rounds:
        result["trace"] = {
            "events_per_second": med(trace_rounds, "events_per_second"),
            "cpu_percent": med(trace_rounds, "cpu_percent"),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in trace_rounds),
            "rounds": trace_rounds,
        }
    return result


def report(result: dict[str, Any]) -> str:
    serve = result["serve"]
    lines = [
        f"Storm of {result['seconds']:g} s per round, {result['rounds']} rounds alternating; `serve` "
        f"scraped every {result['scrape_interval']:g} s.",
        "",
        "| path | events/s | CPU (% of one core) | peak RSS |",
        "| --- | ---: | ---: | ---: |",
        f"| `serve` (in-kernel aggregation) | {serve['events_per_second']:,.0f} | "
        f"{serve['cpu_percent']:.2f} (idle: {serve['idle_cpu_percent']:.2f}) | "
        f"{serve['peak_rss_mib']:.1f} MiB |",
    ]
    trace = result["trace"]
    if trace:
        lines.append(
            f"| `trace --json > /dev/null` (per event) | {trace['events_per_second']:,.0f} | "
            f"{trace['cpu_percent']:.1f} | {trace['peak_rss_mib']:.1f} MiB |"
        )
    else:
        lines.append("| `trace --json` | not available in this build | | |")
    return "\n".join(lines)
