"""`retransmon chaos --prometheus`: a real Prometheus on loopback scraping a running `serve`."""

from __future__ import annotations

import signal
import threading
import urllib.request

from rich.console import Console

from retransmon.chaos.prometheus import PrometheusServer
from retransmon.errors import EnvironmentProblem

# The README's queries, offered as links once the run is over.
RATE_QUERY = (
    "sum by (dst_ip) (rate(tcp_retransmitted_segments_total[5m]))\n"
    "  / sum by (dst_ip) (rate(tcp_segments_sent_total[5m]))"
)
SEGMENTS_QUERY = "sum by (dst_ip) (rate(tcp_retransmitted_segments_total[1m]))"


def check_agent(target: str) -> None:
    """Fail early (exit 1) when nothing serves metrics at *target*."""
    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=3) as resp:
            if b"tcp_retransmitted_segments" in resp.read():
                return
    except OSError:
        pass
    raise EnvironmentProblem(
        f"no retransmon agent answers on http://{target}/metrics",
        fix="start `retransmon serve` first (make demo does both), or point --scrape at one",
    )


def start(target: str, port: int) -> PrometheusServer:
    check_agent(target)
    return PrometheusServer(target, port=port, interval="5s")


def hold(server: PrometheusServer, console: Console) -> None:
    """Print where to look, then keep Prometheus running until SIGINT/SIGTERM."""
    console.print(f"\nPrometheus: {server.url} scraping {server.target} every 5 s")
    console.print(f"  retransmission rate by peer: {server.graph_url(RATE_QUERY, '15m')}", soft_wrap=True)
    console.print(f"  retransmitted segments/s:    {server.graph_url(SEGMENTS_QUERY, '15m')}", soft_wrap=True)
    console.print("Ctrl-C stops Prometheus (its data is discarded).")
    done = threading.Event()
    saved = {sig: signal.signal(sig, lambda *_: done.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(1.0):
            pass
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
