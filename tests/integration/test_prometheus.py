"""A real Prometheus server scraping a real `retransmon serve` while lossy traffic runs.

Checks the README's rate query for the lossy peer, every expression of the Grafana
dashboard, and that the alert rules load and evaluate without error. The server
listens on 127.0.0.1 only and keeps its data in a temporary directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from retransmon.chaos.prometheus import PrometheusServer
from retransmon.chaos.testbed import TestBed
from tests.deploy_files import dashboard_exprs, load_dashboard, to_promql
from tests.support import AgentProcess

README = Path(__file__).resolve().parents[2] / "README.md"
README_RATE_QUERY = (
    "sum by (dst_ip) (rate(tcp_retransmitted_segments_total[5m]))\n"
    "  / sum by (dst_ip) (rate(tcp_segments_sent_total[5m]))"
)
LOSS = 10.0
VETH_INDEX = 67  # 198.18.67.0/24: peers no other test uses, so the query sees only this traffic


def value(result: list[dict[str, object]], **labels: str) -> float:
    for sample in result:
        metric = sample["metric"]
        assert isinstance(metric, dict)
        if all(metric.get(k) == v for k, v in labels.items()):
            raw = sample["value"]
            assert isinstance(raw, list)
            return float(raw[1])
    raise AssertionError(f"no sample with {labels} in {result}")


def wait_for(server: PrometheusServer, expr: str, timeout: float = 20.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        result = server.query(expr)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


@pytest.fixture(scope="module")
def lossy_run() -> Iterator[tuple[PrometheusServer, TestBed, dict[str, dict[str, int]]]]:
    """serve + Prometheus (1 s scrapes) + ~10 s of short connections through 10% loss."""
    with (
        AgentProcess("--labels", "default,container_id", "--harvest-interval", "1") as agent,
        PrometheusServer(f"127.0.0.1:{agent.port}", interval="1s") as server,
        TestBed(loss_percent=LOSS, veth_index=VETH_INDEX) as net,
    ):
        assert wait_for(server, 'up{job="retransmon"} == 1'), "Prometheus never scraped the agent"
        before = net.kernel_counters()
        proc = net.start_sender(flows=4, duration=0, connections=800)
        assert proc.wait(timeout=120) == 0
        after = net.kernel_counters()
        kernel = {r: {k: v - before[r].get(k, 0) for k, v in c.items()} for r, c in after.items()}
        time.sleep(3)  # a few more scrapes, so the last counts are in
        yield server, net, kernel


def test_readme_rate_query_reports_the_lossy_peer(
    lossy_run: tuple[PrometheusServer, TestBed, dict[str, dict[str, int]]],
) -> None:
    server, net, kernel = lossy_run
    assert README_RATE_QUERY in README.read_text()
    client = kernel["client"]
    kernel_rate = client["RetransSegs"] / (client["OutSegs"] + client["RetransSegs"])
    rate = value(server.query(README_RATE_QUERY), dst_ip=net.server_ip)
    print(
        f"Prometheus rate for {net.server_ip}: {rate:.4f}; "
        f"kernel's RetransSegs / segments sent: {kernel_rate:.4f}"
    )
    assert client["RetransSegs"] > 50
    # rate() extrapolates over the window's edges; the ratio of two rates stays close to the kernel's.
    assert 0.5 * kernel_rate < rate < 1.5 * kernel_rate
    assert 0.02 < rate < LOSS / 100 * 2
    # The other direction (the sink's ACKs and FINs) crosses no loss on the way out.
    assert value(server.query(README_RATE_QUERY), dst_ip=net.client_ip) < rate


def test_every_dashboard_expression_runs(
    lossy_run: tuple[PrometheusServer, TestBed, dict[str, dict[str, int]]],
) -> None:
    server, _, _ = lossy_run
    empty: list[str] = []
    exprs = dashboard_exprs(load_dashboard())
    for title, expr in exprs:
        result = server.query(to_promql(expr))  # raises on any error Prometheus reports
        if not result:
            empty.append(title)
    print(f"{len(exprs)} dashboard expressions ran; without data here: {empty}")
    # With traffic and a healthy agent, the main panels have data.
    for title in (
        "Retransmission rate by peer",
        "By TCP state",
        "By kind",
        "Agents",
        "BPF programs attached",
    ):
        assert title not in empty


def test_alert_rules_load_and_evaluate(
    lossy_run: tuple[PrometheusServer, TestBed, dict[str, dict[str, int]]],
) -> None:
    server, _, _ = lossy_run
    data = server.api("rules")
    assert isinstance(data, dict)
    rules = [rule for group in data["groups"] for rule in group["rules"]]
    assert len(rules) == 8
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        assert "lastEvaluation" in rule
    # 10% loss: the rate alert is pending (it needs 5 minutes to fire).
    alerts = server.api("alerts")
    assert isinstance(alerts, dict)
    pending = {(a["labels"]["alertname"], a["labels"].get("dst_ip")) for a in alerts["alerts"]}
    assert ("TCPRetransmissionRateHigh", lossy_run[1].server_ip) in pending
