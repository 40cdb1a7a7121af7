"""The exporter habits: --web.listen-address (several), --web.telemetry-path, rate_limit, header values."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from retransmon.cli import main
from retransmon.errors import EnvironmentProblem, UsageError
from retransmon.export.agent import ServeOptions, open_servers
from retransmon.export.exposition import RegistryExposition
from retransmon.export.ratelimit import TokenBucket
from retransmon.export.server import MetricsServer, parse_telemetry_path
from retransmon.export.webconfig import load
from tests.support.agent import free_port


@pytest.fixture
def servers() -> Iterator[list[MetricsServer]]:
    """Servers to close at the end; those serving are in *serving* and shut down first."""
    opened: list[MetricsServer] = []
    yield opened
    for srv in opened:
        if getattr(srv, "serving", False):
            srv.shutdown()
        srv.server_close()


def _serve(srv: MetricsServer) -> None:
    srv.serving = True  # type: ignore[attr-defined]
    srv.serve_in_thread()


def _get(srv: MetricsServer, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_several_listen_addresses_serve_the_same(
    registry: CollectorRegistry, tmp_path: Path, servers: list[MetricsServer]
) -> None:
    web = tmp_path / "web.yml"
    web.write_text("http_server_config:\n  headers:\n    X-XSS-Protection: 1\n")
    options = ServeOptions(
        listen=[f"127.0.0.1:{free_port()}", f"[::1]:{free_port()}"],
        telemetry_path="/probe/metrics",
        web_config_file=str(web),
    )
    opened = open_servers(options)
    servers.extend(opened)
    assert len(opened) == 2 and opened[0].port != opened[1].port
    for srv in opened:
        srv.exposition = RegistryExposition(registry)
        _serve(srv)
    status, headers, body = _get(opened[0], "/probe/metrics")
    assert status == 200 and b"test_requests_total 7.0" in body
    assert headers["X-XSS-Protection"] == "1"  # YAML's number 1, taken as the string "1"
    assert _get(opened[0], "/metrics")[0] == 404
    landing = _get(opened[0], "/")[2]
    assert b'<a href="/probe/metrics">Metrics</a>' in landing


def test_a_busy_second_address_closes_the_first(tmp_path: Path, servers: list[MetricsServer]) -> None:
    first = MetricsServer("127.0.0.1", 0, CollectorRegistry())
    servers.append(first)
    with pytest.raises(EnvironmentProblem, match="in use"):
        open_servers(ServeOptions(listen=[f"127.0.0.1:{free_port()}", f"127.0.0.1:{first.port}"]))


@pytest.mark.parametrize("text", ["metrics", "/a?b", "/a#b", "/a b", ""])
def test_bad_telemetry_path(text: str) -> None:
    with pytest.raises(UsageError, match=r"--web\.telemetry-path"):
        parse_telemetry_path(text)


def test_bad_telemetry_path_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--web.listen-address", "127.0.0.1:1", "--web.telemetry-path", "metrics"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_rate_limit_answers_429(
    registry: CollectorRegistry, tmp_path: Path, servers: list[MetricsServer]
) -> None:
    path = tmp_path / "web.yml"
    path.write_text("rate_limit:\n  interval: 1h\n  burst: 2\n")
    srv = MetricsServer("127.0.0.1", 0, registry, web=load(str(path)))
    servers.append(srv)
    _serve(srv)
    assert [_get(srv, "/metrics")[0] for _ in range(4)] == [200, 200, 429, 429]


def test_token_bucket() -> None:
    now = [100.0]
    bucket = TokenBucket(interval=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]
    now[0] += 1.0  # half a token
    assert not bucket.allow()
    now[0] += 1.0
    assert bucket.allow() and not bucket.allow()
    now[0] += 100.0  # refills up to burst, no more
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]


def test_rate_limit_keys(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    for text, expected in (
        ("rate_limit:\n  interval: 1m30s\n  burst: 5\n", (90.0, 5)),
        ("rate_limit:\n  interval: 250ms\n  burst: 1\n", (0.25, 1)),
        ("rate_limit:\n  interval: 0\n  burst: 0\n", None),  # 0 turns it off
        ("rate_limit:\n  interval: -1s\n  burst: 0\n", None),  # as rate.Every: unlimited
    ):
        path.write_text(text)
        limit = load(str(path)).rate_limit
        assert (limit.interval, limit.burst) == expected if limit else expected is None, text
