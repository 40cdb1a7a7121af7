"""The shipped Prometheus config, alert rules and Grafana dashboard, checked with the real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from retransmon.attribution.labels import DEFAULT_LABELS
from retransmon.chaos.prometheus import render_config
from retransmon.export.collector import RetransmonCollector
from tests.deploy_files import (
    GRAFANA_VARIABLES,
    PROMETHEUS_DIR,
    dashboard_exprs,
    load_dashboard,
    metric_names,
    panels,
    to_promql,
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: make setup installs the Debian package prometheus"
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=PROMETHEUS_DIR)


def exported_names() -> set[str]:
    """Every sample name the collector exports (its families, described without a snapshot)."""
    collector = RetransmonCollector(lambda: pytest.fail("no snapshot expected"), DEFAULT_LABELS)
    return {m.name + "_total" if m.type == "counter" else m.name for m in collector.describe()}


def test_promtool_check_rules_is_clean() -> None:
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_promtool_test_rules_passes() -> None:
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config_is_clean() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_config_scrapes_the_given_target_and_stays_valid(tmp_path: Path) -> None:
    text = render_config((PROMETHEUS_DIR / "prometheus.yml").read_text(), "127.0.0.1:40001", "1s")
    assert '["127.0.0.1:40001"]' in text
    assert "scrape_interval: 1s" in text
    assert "evaluation_interval: 1s" in text
    assert "localhost:2112" not in text
    out = tmp_path / "prometheus.yml"
    out.write_text(text)
    shutil.copy(PROMETHEUS_DIR / "rules.yml", tmp_path / "rules.yml")
    result = promtool("check", "config", str(out))
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_config_refuses_a_template_it_does_not_recognise() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        render_config("global: {}\n", "127.0.0.1:1", "1s")


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    known = exported_names() | {"up"}
    rules = (PROMETHEUS_DIR / "rules.yml").read_text()
    used = metric_names(rules)
    assert {"tcp_retransmitted_segments_total", "tcp_segments_sent_total"} <= used
    assert used <= known, used - known
    for title, expr in dashboard_exprs(load_dashboard()):
        assert metric_names(expr) <= known, (title, metric_names(expr) - known)


def test_dashboard_is_importable_with_the_datasource_as_a_variable() -> None:
    dash = load_dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    for p in panels(dash):
        assert set(p["gridPos"]) == {"x", "y", "w", "h"}
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
    titles = " ".join(p["title"] for p in panels(dash)).lower()
    for topic in ("rate", "peer", "service", "state", "kind", "container", "agent"):
        assert topic in titles, topic


def test_every_dashboard_expression_becomes_plain_promql() -> None:
    exprs = dashboard_exprs(load_dashboard())
    assert len(exprs) >= 15
    for title, expr in exprs:
        promql = to_promql(expr)
        assert "$" not in promql, (title, promql)
    uses = {name for _, expr in exprs for name in GRAFANA_VARIABLES if name in expr}
    assert {"$__rate_interval", "$job", "$instance"} <= uses
