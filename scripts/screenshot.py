"""Screenshot of the Prometheus graph the README shows: `make screenshot` (root).

Runs `retransmon serve`, a real Prometheus on loopback scraping it every second,
and short-connection traffic through two private lossy networks (a peer behind
5% loss and one behind 1%) for a minute or two, then has headless Chromium take
a picture of Prometheus's graph of the README's rate query. Chromium (Debian's
package) is installed here if missing, not by `make setup`: nothing else needs it.

    .venv/bin/python scripts/screenshot.py [--out docs/prometheus-graph.png] [--seconds 90]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from retransmon.chaos.prometheus import PrometheusServer
from retransmon.chaos.testbed import TestBed
from tests.support import AgentProcess

ROOT = Path(__file__).resolve().parents[1]
PEERS = ((66, 5.0), (68, 1.0))  # (veth index: 198.18.<index>.2 is the peer, loss %)
# The README's rate query, limited to the two test clients: on a shared machine other
# traffic would show up too.
CLIENTS = 'src_ip=~"198[.]18[.](66|68)[.]1"'
QUERY = (
    f"sum by (dst_ip) (rate(tcp_retransmitted_segments_total{{{CLIENTS}}}[5m]))\n"
    f"  / sum by (dst_ip) (rate(tcp_segments_sent_total{{{CLIENTS}}}[5m]))"
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], check=True, env=env
    )
    found = shutil.which("chromium")
    if not found:
        sys.exit("chromium is still missing after apt-get install chromium")
    return found


def screenshot(browser: str, url: str, out: Path, size: str) -> None:
    with tempfile.TemporaryDirectory(prefix="retransmon-chromium-") as profile:
        argv = [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={size}",
            "--virtual-time-budget=20000",  # let the page's scripts fetch and draw the graph
            url,
        ]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def drive(networks: list[TestBed], seconds: float) -> None:
    """Rounds of short connections through every network until *seconds* have passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        procs = [net.start_sender(flows=2, duration=0, connections=200) for net in networks]
        for proc in procs:
            proc.wait(timeout=300)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "prometheus-graph.png")
    parser.add_argument("--seconds", type=float, default=90.0, help="seconds of traffic before the picture")
    parser.add_argument("--size", default="1400,1000", help="window size W,H")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: BPF programs and network namespaces")
    browser = chromium()
    with contextlib.ExitStack() as stack:
        agent = stack.enter_context(AgentProcess("--harvest-interval", "1"))
        server = stack.enter_context(PrometheusServer(f"127.0.0.1:{agent.port}", interval="1s"))
        networks = [
            stack.enter_context(TestBed(loss_percent=loss, veth_index=index)) for index, loss in PEERS
        ]
        print(
            f"Prometheus on {server.url}; {args.seconds:g} s of traffic to {[n.server_ip for n in networks]}"
        )
        drive(networks, args.seconds)
        time.sleep(3)
        for sample in server.query(QUERY):
            print(f"  {sample['metric']}: {sample['value']}")
        url = server.graph_url(QUERY, range_input=f"{round(args.seconds) + 20}s")
        screenshot(browser, url, args.out, args.size)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
