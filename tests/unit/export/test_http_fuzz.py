"""Fuzzing the HTTP request handling: whatever arrives, the answer is a valid status or a close.

Requests are built from pieces that matter to a parser (methods, paths, versions,
header lines, separators, NUL, huge and non-ASCII runs) and from raw bytes. After
every one the server must still answer a normal scrape, hold no extra thread and
no watchdog entry.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter

from retransmon.export.server import MAX_HEAD_BYTES, MetricsServer

ALLOWED = {100, 200, 400, 401, 404, 405, 408, 414, 431, 501, 503, 505}

methods = st.sampled_from(
    [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"BREW", b"get", b""]
)
paths = st.one_of(
    st.sampled_from([b"/", b"/metrics", b"/metrics?x=1", b"*", b"//", b"/%00", b"/../etc/passwd", b""]),
    st.binary(max_size=40),
    st.just(b"/" + b"a" * (MAX_HEAD_BYTES + 1)),
)
versions = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1.1", b"HTTX/1.1", b""]
)
header_lines = st.one_of(
    st.sampled_from(
        [
            b"Host: x",
            b"Accept-Encoding: gzip",
            b"Accept: application/openmetrics-text; version=1.0.0",
            b"Content-Length: 5",
            b"Content-Length: -1",
            b"Transfer-Encoding: chunked",
            b"Connection: keep-alive",
            b"Expect: 100-continue",
            b"Authorization: Basic !!!",
            b" folded continuation",
            b"NoColon",
            b":empty-name",
        ]
    ),
    st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.integers(min_value=1, max_value=3 * MAX_HEAD_BYTES).map(lambda n: b"X-Big: " + b"y" * n),
)
separators = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    sep = draw(separators)
    line = b" ".join(x for x in (draw(methods), draw(paths), draw(versions)) if x)
    head = [line, *draw(st.lists(header_lines, max_size=8))]
    body = draw(st.binary(max_size=32))
    return sep.join(head) + sep + sep + body


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsServer]:
    reg = CollectorRegistry()
    Counter("fuzz_ok", "Canary.", registry=reg).inc()
    srv = MetricsServer("127.0.0.1", 0, reg, request_timeout=0.5)
    srv.serve_in_thread()
    yield srv
    srv.shutdown()
    srv.server_close()


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # no more: an incomplete request must not wait for the deadline
        except OSError:
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def _statuses(answer: bytes) -> list[int]:
    """Status codes of every response in *answer* (keep-alive may answer several)."""
    found = []
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1."):
            found.append(int(line.split(b" ", 2)[1]))
    return found


def _healthy(server: MetricsServer) -> None:
    answer = _exchange(server.port, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert _statuses(answer)[:1] == [200] and b"fuzz_ok_total 1.0" in answer


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests())
def test_structured_garbage(server: MetricsServer, data: bytes) -> None:
    answer = _exchange(server.port, data)
    statuses = _statuses(answer)
    assert set(statuses) <= ALLOWED, (data[:200], answer[:300])
    if answer:
        assert statuses, f"an answer without a status line: {answer[:200]!r}"
    assert b"Traceback" not in answer


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=512))
def test_raw_bytes(server: MetricsServer, data: bytes) -> None:
    answer = _exchange(server.port, data)
    assert set(_statuses(answer)) <= ALLOWED
    assert b"Traceback" not in answer


def test_still_healthy_and_nothing_left_behind(server: MetricsServer) -> None:
    # Runs after the fuzzing above (file order): every connection has ended.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        len(server.watchdog) or any(t.name.startswith("Thread-") for t in threading.enumerate())
    ):
        time.sleep(0.05)
    _healthy(server)
    assert len(server.watchdog) == 0
