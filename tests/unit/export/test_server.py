"""--listen parsing and the HTTP server, on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from retransmon import __version__
from retransmon.errors import EnvironmentProblem, UsageError
from retransmon.export.server import DEFAULT_PORT, MetricsServer, parse_listen

# ---------------------------------------------------------------------------
# parse_listen
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":2112", ("", 2112)),
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("[::1]:80", ("::1", 80)),
        ("[::]:2112", ("::", 2112)),
        ("localhost:1", ("localhost", 1)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
        ("[fe80::1%eth0]:8080", ("fe80::1%eth0", 8080)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bad", "expected [HOST]:PORT"),
        ("2112", "expected [HOST]:PORT"),
        ("", "expected [HOST]:PORT"),
        (":70000", "from 1 to 65535"),
        (":65536", "from 1 to 65535"),
        (":0", "from 1 to 65535"),
        (":-1", "from 1 to 65535"),
        (":", "from 1 to 65535"),
        ("host:", "from 1 to 65535"),
        (":http", "from 1 to 65535"),
        (": 80", "from 1 to 65535"),
        ("::1:80", "brackets"),
        ("fe80::1:80", "brackets"),
    ],
)
def test_parse_listen_rejects(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_listen(text)
    assert needle in info.value.message
    assert info.value.message.startswith("--web.listen-address: ")
    assert "\n" not in info.value.render()


def test_default_port() -> None:
    assert DEFAULT_PORT == 2112


# ---------------------------------------------------------------------------
# MetricsServer
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    c = Counter("test_requests", "Requests handled.", ["path"], registry=reg)
    c.labels("/x").inc(3)
    return reg


@pytest.fixture(scope="module")
def server(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    # One server for the module: shutdown() waits for serve_forever's 0.5 s poll.
    srv = MetricsServer("127.0.0.1", 0, registry, request_timeout=1.0)
    thread = srv.serve_in_thread()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _request(
    srv: MetricsServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_port_zero_gets_a_real_port(server: MetricsServer) -> None:
    assert server.port > 0


def test_metrics_text_format(server: MetricsServer) -> None:
    status, headers, body = _request(server, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body)
    text = body.decode()
    assert 'test_requests_total{path="/x"} 3.0' in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["test_requests"].type == "counter"


def test_metrics_query_string_ignored(server: MetricsServer) -> None:
    status, _, body = _request(server, "GET", "/metrics?name[]=x")
    assert status == 200
    assert b"test_requests_total" in body


def test_openmetrics(server: MetricsServer) -> None:
    status, headers, body = _request(
        server, "GET", "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")


def test_gzip(server: MetricsServer) -> None:
    status, headers, body = _request(server, "GET", "/metrics", {"Accept-Encoding": "gzip, deflate"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(body)
    assert b"test_requests_total" in gzip.decompress(body)


def test_no_gzip_unless_asked(server: MetricsServer) -> None:
    _, headers, body = _request(server, "GET", "/metrics", {"Accept-Encoding": "identity"})
    assert "content-encoding" not in headers
    assert b"test_requests_total" in body


def test_landing_page(server: MetricsServer) -> None:
    # exporter-toolkit's shape: the name, the version, a link to the metrics.
    status, headers, body = _request(server, "GET", "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b"<h1>retransmon</h1>" in body
    assert f"<div>Version: {__version__}</div>".encode() in body
    assert b'<a href="/metrics">Metrics</a>' in body


@pytest.mark.parametrize("path", ["/nope", "/metrics/", "/metricsx", "/index.html"])
def test_not_found(server: MetricsServer, path: str) -> None:
    status, _, _ = _request(server, "GET", path)
    assert status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_method_not_allowed(server: MetricsServer, method: str) -> None:
    status, headers, _ = _request(server, method, "/metrics")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_post_with_body_does_not_break_the_next_request(server: MetricsServer) -> None:
    # A keep-alive client: the refused request's body must not be read as the next request.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", "/metrics", body=b"name=value&x=y")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 405
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        assert b"test_requests_total" in resp.read()
    finally:
        conn.close()


def test_head(server: MetricsServer) -> None:
    status, headers, body = _request(server, "HEAD", "/metrics")
    assert status == 200
    assert body == b""
    assert headers["content-type"].startswith("text/plain")


def test_keep_alive_serves_several_requests(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for path in ("/metrics", "/", "/metrics"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
    finally:
        conn.close()


def test_concurrent_scrapes(server: MetricsServer) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def scrape() -> None:
        try:
            status, _, body = _request(server, "GET", "/metrics")
            assert b"test_requests_total" in body
            with lock:
                results.append(status)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert errors == []
    assert results == [200] * 20


def test_silent_client_does_not_block_scrapes(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        silent.sendall(b"GET /metr")  # a partial request line, then nothing
        start = time.monotonic()
        status, _, _ = _request(server, "GET", "/metrics")
        assert status == 200
        assert time.monotonic() - start < 0.9  # did not wait for the silent client's timeout


def test_silent_client_is_dropped_after_request_timeout(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        silent.settimeout(5)
        start = time.monotonic()
        data = silent.recv(1024)  # the server closes the connection (maybe after a 408)
        elapsed = time.monotonic() - start
        while data:
            data = silent.recv(1024)
    assert 0.5 < elapsed < 4


def test_collect_failure_gives_500(registry: CollectorRegistry) -> None:
    class Broken:
        def collect(self) -> list[object]:
            raise RuntimeError("boom")

    reg = CollectorRegistry()
    reg.register(Broken())  # type: ignore[arg-type]
    srv = MetricsServer("127.0.0.1", 0, reg, request_timeout=1.0)
    thread = srv.serve_in_thread()
    try:
        status, _, body = _request(srv, "GET", "/metrics")
        assert status == 500
        assert b"boom" not in body
        assert _request(srv, "GET", "/")[0] == 200  # still serving
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_connection_bound_gives_503(registry: CollectorRegistry) -> None:
    srv = MetricsServer("127.0.0.1", 0, registry, request_timeout=1.0, max_connections=2)
    thread = srv.serve_in_thread()
    idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 2
        status = 0
        while time.monotonic() < deadline:  # until the server has accepted both idle connections
            status = _request(srv, "GET", "/metrics")[0]
            if status == 503:
                break
            time.sleep(0.02)
        assert status == 503
        for s in idle:
            s.close()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.05)
            status = _request(srv, "GET", "/metrics")[0]
        assert status == 200  # slots come back
    finally:
        for s in idle:
            s.close()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_port_in_use(server: MetricsServer, registry: CollectorRegistry) -> None:
    with pytest.raises(EnvironmentProblem) as info:
        MetricsServer("127.0.0.1", server.port, registry)
    assert "the port is in use" in info.value.message
    assert str(server.port) in info.value.message
    assert info.value.fix
    assert info.value.exit_code == 1


def test_unresolvable_host_is_a_usage_error(registry: CollectorRegistry) -> None:
    with pytest.raises(UsageError, match="cannot resolve"):
        MetricsServer("no-such-host.invalid", 0, registry)


def test_ipv6_loopback(registry: CollectorRegistry) -> None:
    try:
        srv = MetricsServer("::1", 0, registry, request_timeout=1.0)
    except EnvironmentProblem:
        pytest.skip("no IPv6 loopback here")
    thread = srv.serve_in_thread()
    try:
        conn = http.client.HTTPConnection("::1", srv.port, timeout=5)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        assert b"test_requests_total" in resp.read()
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
