"""5. Start-up: from launch to attached and serving, and memory at idle."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from typing import Any

from bench.procstat import memory_kib
from bench.stats import median, spread
from tests.support.agent import free_port, retransmon_command

TARGET_SECONDS = 1.0
TARGET_RSS_MIB = 50.0


def _one(idle_seconds: float) -> tuple[float, float]:
    port = free_port()
    start = time.monotonic()
    proc = subprocess.Popen(
        [*retransmon_command(), "serve", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The listener exists before the programs load, but / answers only once serving.
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"retransmon serve exited with {proc.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).close()
                break
            except OSError:
                time.sleep(0.005)
        ready = time.monotonic() - start
        time.sleep(idle_seconds)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).close()
        rss = memory_kib(proc.pid)["VmRSS"] / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return ready, rss


def run(rounds: int = 7, idle_seconds: float = 3.0) -> dict[str, Any]:
    runs = [_one(idle_seconds) for _ in range(rounds)]
    return {
        "rounds": rounds,
        "median_ready_seconds": median([r[0] for r in runs]),
        "spread_ready_seconds": spread([r[0] for r in runs]),
        "median_idle_rss_mib": median([r[1] for r in runs]),
        "target_seconds": TARGET_SECONDS,
        "target_rss_mib": TARGET_RSS_MIB,
    }


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| measure | median | min..max | target |",
            "| --- | ---: | ---: | --- |",
            f"| launch to serving /metrics | {result['median_ready_seconds']:.3f} s | "
            f"{result['spread_ready_seconds']} s | < {result['target_seconds']:g} s |",
            f"| RSS at idle (after one scrape) | {result['median_idle_rss_mib']:.1f} MiB | | "
            f"< {result['target_rss_mib']:g} MiB |",
        ]
    )
