"""The HTTP server under TLS, basic auth, configured headers and hostile clients (127.0.0.1 only)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from retransmon.export.server import MAX_HEAD_BYTES, MetricsServer
from retransmon.export.webconfig import WebConfig, load
from tests.support.tls import Certificates, bcrypt_hash, web_config_yaml

PASSWORD = "correct horse"
HEADERS = {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000"}


def _config(tmp_path: Path, text: str) -> WebConfig:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return load(str(path))


def _start(registry: CollectorRegistry, web: WebConfig | None, request_timeout: float = 1.0) -> MetricsServer:
    srv = MetricsServer("127.0.0.1", 0, registry, request_timeout=request_timeout, web=web)
    srv.serve_in_thread()
    return srv


def _stop(srv: MetricsServer) -> None:
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def tls_server(
    registry: CollectorRegistry, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetricsServer]:
    text = web_config_yaml(certs, users={"prom": bcrypt_hash(PASSWORD)}, headers=HEADERS)
    srv = _start(registry, _config(tmp_path_factory.mktemp("web"), text))
    yield srv
    _stop(srv)


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _https(
    srv: MetricsServer,
    certs: Certificates,
    path: str = "/metrics",
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    ctx = context or certs.client_context()
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=5, context=ctx)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_right_credentials_get_metrics(tls_server: MetricsServer, certs: Certificates) -> None:
    status, headers, body = _https(tls_server, certs, headers=_auth("prom", PASSWORD))
    assert status == 200
    assert b"test_requests_total 7.0" in body
    assert headers["x-frame-options"] == "deny"
    assert headers["strict-transport-security"] == "max-age=31536000"


@pytest.mark.parametrize(
    "headers",
    [{}, _auth("prom", "wrong"), _auth("nobody", PASSWORD), {"Authorization": "Basic !!!"}],
    ids=["none", "wrong-password", "unknown-user", "malformed"],
)
def test_wrong_credentials_get_401(
    tls_server: MetricsServer, certs: Certificates, headers: dict[str, str]
) -> None:
    for path in ("/metrics", "/", "/nope"):
        status, got, body = _https(tls_server, certs, path=path, headers=headers)
        assert status == 401
        assert got["www-authenticate"].startswith("Basic realm=")
        assert b"test_requests" not in body
        assert got["x-frame-options"] == "deny"  # configured headers on every answer


def test_unknown_path_and_method_after_auth(tls_server: MetricsServer, certs: Certificates) -> None:
    assert _https(tls_server, certs, path="/nope", headers=_auth("prom", PASSWORD))[0] == 404
    status, headers, _ = _https(tls_server, certs, method="DELETE", headers=_auth("prom", PASSWORD))
    assert status == 405 and headers["x-frame-options"] == "deny"


def test_plain_http_on_the_tls_port_is_refused(tls_server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", tls_server.port, timeout=5)
    try:
        conn.request("GET", "/metrics", headers=_auth("prom", PASSWORD))
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 400
    assert b"HTTPS server" in body and b"test_requests" not in body


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLS1.0", "TLS1.1"])
def test_tls_below_1_2_is_refused(
    tls_server: MetricsServer, certs: Certificates, version: ssl.TLSVersion
) -> None:
    ctx = certs.client_context()
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer the old version
    try:
        ctx.minimum_version = version
        ctx.maximum_version = version
    except (ValueError, ssl.SSLError):
        pytest.fail(f"this OpenSSL cannot even offer {version.name}")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _https(tls_server, certs, context=ctx)


def test_failed_handshakes_leave_nothing_behind(tls_server: MetricsServer, certs: Certificates) -> None:
    started = time.monotonic()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x00\x05garbage")  # a TLS record header, then nonsense
            with contextlib.suppress(OSError):
                while s.recv(1024):
                    pass
    # Closed at once, not held until the 1 s request deadline.
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 2
    while len(tls_server.watchdog) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(tls_server.watchdog) == 0, "a failed handshake left its socket with the watchdog"
    assert _https(tls_server, certs, headers=_auth("prom", PASSWORD))[0] == 200


def test_untrusted_server_certificate_is_detected(tls_server: MetricsServer, certs: Certificates) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _https(tls_server, certs, context=ssl.create_default_context())


def test_client_certificate_required(
    registry: CollectorRegistry, certs: Certificates, tmp_path: Path
) -> None:
    srv = _start(
        registry, _config(tmp_path, web_config_yaml(certs, client_auth="RequireAndVerifyClientCert"))
    )
    try:
        status, _, body = _https(srv, certs, context=certs.client_context(with_client_cert=True))
        assert status == 200 and b"test_requests_total" in body
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https(srv, certs, context=certs.client_context(with_client_cert=False))
    finally:
        _stop(srv)


def test_stalled_tls_handshake_does_not_block_others(tls_server: MetricsServer, certs: Certificates) -> None:
    with socket.create_connection(("127.0.0.1", tls_server.port)) as stalled:
        stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        started = time.monotonic()
        assert _https(tls_server, certs, headers=_auth("prom", PASSWORD))[0] == 200
        assert time.monotonic() - started < 0.9
        stalled.settimeout(5)
        t0 = time.monotonic()
        while stalled.recv(1024):
            pass
        assert time.monotonic() - t0 < 3  # dropped after request_timeout (1 s)


# -- plain HTTP: hostile clients ---------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(registry: CollectorRegistry) -> Iterator[MetricsServer]:
    srv = _start(registry, None)
    yield srv
    _stop(srv)


def _raw(srv: MetricsServer, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        with contextlib.suppress(OSError):  # the server may close before it has read everything
            s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_oversized_headers_get_431(plain: MetricsServer) -> None:
    header = b"X-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
    answer = _raw(plain, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
    assert _status(answer) == 431


def test_many_small_headers_add_up_to_431(plain: MetricsServer) -> None:
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"b" * 90) for i in range(90))  # 90 < http.client's 100
    assert len(headers) > MAX_HEAD_BYTES // 2
    answer = _raw(plain, b"GET /metrics HTTP/1.1\r\n" + headers * 2 + b"\r\n")
    assert _status(answer) == 431


def test_overlong_request_line_gets_414(plain: MetricsServer) -> None:
    answer = _raw(plain, b"GET /" + b"a" * (MAX_HEAD_BYTES + 10) + b" HTTP/1.1\r\n\r\n")
    assert _status(answer) == 414


def test_headers_just_under_the_limit_are_fine(plain: MetricsServer) -> None:
    filler = b"X-Fill: " + b"c" * (MAX_HEAD_BYTES - 200) + b"\r\n"
    answer = _raw(plain, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n" + filler + b"\r\n")
    assert _status(answer) == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"BREW /metrics HTTP/1.1\r\n\r\n", 501),
        (b"GET /metrics HTTP/9.9\r\n\r\n", 505),
        (b"GET /metrics HTTP/1.1 extra\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nBad header line\r\n\r\n", 200),
        (b"\x00\x01\x02\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_4xx_5xx(plain: MetricsServer, request_bytes: bytes, status: int) -> None:
    answer = _raw(plain, request_bytes)
    assert _status(answer) == status


def test_trickling_client_is_dropped_at_the_deadline(plain: MetricsServer) -> None:
    """One byte every 0.3 s keeps a per-read timeout happy forever; the request deadline (1 s) does not."""
    with socket.create_connection(("127.0.0.1", plain.port), timeout=5) as s:
        started = time.monotonic()
        closed_after = None
        for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"z" * 40:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            time.sleep(0.3)
            s.setblocking(False)
            try:
                if s.recv(1024) == b"":
                    closed_after = time.monotonic() - started
                    break
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
    assert closed_after is not None, "the server kept a trickling client for 20 s"
    assert closed_after < 3


def test_idle_keep_alive_connection_is_closed(plain: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", plain.port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        sock = conn.sock
        assert sock is not None
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server closes the idle connection
        assert time.monotonic() - started < 3
    finally:
        conn.close()


def test_no_thread_growth_after_many_connections(plain: MetricsServer) -> None:
    for _ in range(3):  # warm up
        _raw(plain, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    time.sleep(0.2)
    before = threading.active_count()
    for i in range(200):
        if i % 2:
            _raw(plain, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        else:
            _raw(plain, b"GARBAGE\r\n\r\n")
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
    assert len(plain.watchdog) == 0


def test_50_concurrent_scrapes_with_50_stalled_clients(plain: MetricsServer) -> None:
    stalled = [socket.create_connection(("127.0.0.1", plain.port)) for _ in range(50)]
    try:
        for i, s in enumerate(stalled):
            s.sendall(b"GET /metrics HTTP/1.1\r\n" if i % 2 else b"G")
        results: list[int] = []
        lock = threading.Lock()

        def scrape() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", plain.port, timeout=10)
            try:
                conn.request("GET", "/metrics")
                resp = conn.getresponse()
                ok = resp.status == 200 and b"test_requests_total" in resp.read()
            except OSError:
                ok = False
            finally:
                conn.close()
            with lock:
                results.append(200 if ok else 0)

        threads = [threading.Thread(target=scrape) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert results == [200] * 50
    finally:
        for s in stalled:
            s.close()
