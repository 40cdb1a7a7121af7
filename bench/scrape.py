"""4. Scrape cost at scale: /metrics latency and size with 1,000 / 10,000 / 100,000 series.

A synthetic source (test-only) fills the real series tables with N distinct
flows under the default labels; every scrape then goes the real way: series
table -> snapshot -> AgentExposition (SeriesWriter for the per-flow counters,
RetransmonCollector and prometheus_client for the rest) -> MetricsServer over
loopback HTTP. N flows give N series in each of
tcp_retransmitted_segments_total and tcp_retransmissions_total, and N in
tcp_segments_sent_total: 3N samples in all.
"""

from __future__ import annotations

import gzip
import http.client
import ipaddress
import time
from typing import Any

from bench.stats import median, spread
from retransmon.attribution.labels import parse_labels, sent_labels
from retransmon.export.exposition import AgentExposition
from retransmon.export.harvester import Snapshot
from retransmon.export.series import SeriesTable
from retransmon.export.server import MetricsServer
from retransmon.kernel.tables import Losses

SIZES = (1000, 10000, 100000)
TARGETS_MS = {10000: 100.0, 100000: 1000.0}


def _tables(flows: int) -> tuple[tuple[str, ...], SeriesTable, SeriesTable]:
    labels = parse_labels("default")
    retrans = SeriesTable(labels, flows + 1)
    sent = SeriesTable(sent_labels(labels), flows + 1)
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    for i in range(flows):
        peer = str(ipaddress.IPv4Address(base + i // 4))
        port = str(443 + i % 4)
        retrans.add(("4", "198.19.0.1", peer, port, "established", "retransmit", "fast"), 3, 17)
        sent.add(("4", "198.19.0.1", peer, port), 0, 1000 + i)
    return labels, retrans, sent


def _source(retrans: SeriesTable, sent: SeriesTable) -> Snapshot:
    return Snapshot(
        retransmits=retrans.samples(),
        sent=sent.samples(),
        losses=Losses(events_lost=0, unaccounted_events=0, unaccounted_segments=0, untracked_sockets=0),
        series_folded=0,
        flow_entries=len(retrans),
        flow_capacity=16384,
        recursion_misses={"tcp_retransmit_skb": 0},
        attached={"tcp_retransmit_skb": True},
        hooks="synthetic",
        exact=True,
        harvests=1,
        harvest_seconds=0.0,
    )


def _get(port: int, gzip_ok: bool) -> tuple[float, int, int]:
    """(seconds, bytes on the wire, bytes of text) of one GET /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    start = time.perf_counter()
    conn.request("GET", "/metrics", headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - start
    conn.close()
    assert resp.status == 200, resp.status
    text = gzip.decompress(body) if resp.getheader("Content-Encoding") == "gzip" else body
    return elapsed, len(body), len(text)


def measure(flows: int, repeats: int) -> dict[str, Any]:
    labels, retrans, sent = _tables(flows)
    exposition = AgentExposition(lambda: _source(retrans, sent), labels)
    server = MetricsServer("127.0.0.1", 0, exposition)
    thread = server.serve_in_thread()
    try:
        _get(server.port, False)  # warm-up
        plain = [_get(server.port, False) for _ in range(repeats)]
        zipped = [_get(server.port, True) for _ in range(repeats)]
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
    return {
        "flows": flows,
        "series": 3 * flows,
        "median_ms": 1000 * median([p[0] for p in plain]),
        "spread_ms": spread([1000 * p[0] for p in plain]),
        "median_ms_gzip": 1000 * median([z[0] for z in zipped]),
        "bytes": plain[0][2],
        "bytes_gzip": zipped[0][1],
        "target_ms": TARGETS_MS.get(flows),
    }


def run(sizes: tuple[int, ...] = SIZES, repeats: int = 7) -> dict[str, Any]:
    return {"sizes": [measure(n, repeats if n < 100000 else max(3, repeats // 2)) for n in sizes]}


def report(result: dict[str, Any]) -> str:
    lines = [
        "| flows (series in each retransmit metric) | samples | median ms | min..max ms | gzip ms | "
        "text size | gzip size | target |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result["sizes"]:
        target = f"< {r['target_ms']:g} ms" if r["target_ms"] else ""
        lines.append(
            f"| {r['flows']:,} | {r['series']:,} | {r['median_ms']:.1f} | {r['spread_ms']} | "
            f"{r['median_ms_gzip']:.1f} | {r['bytes'] / 1e6:.2f} MB | {r['bytes_gzip'] / 1e6:.2f} MB | "
            f"{target} |"
        )
    return "\n".join(lines)
