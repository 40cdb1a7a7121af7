"""HTTP server for /metrics and a landing page.

One thread per connection (scrapes never wait for each other), a bound on
concurrent connections, and a socket timeout so a client that never finishes
its request only holds its own thread, and only for ``request_timeout``.
"""

from __future__ import annotations

import contextlib
import gzip
import html
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry

from retransmon import __version__
from retransmon.errors import EnvironmentProblem, UsageError
from retransmon.exposition import Exposition, RegistryExposition

log = logging.getLogger(__name__)

DEFAULT_PORT = 2112
MAX_CONNECTIONS = 128


def parse_listen(text: str) -> tuple[str, int]:
    """``[HOST]:PORT`` -> (host, port); an empty host means every address."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise UsageError(f"--listen: expected [HOST]:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"--listen: write IPv6 addresses in brackets, e.g. [::1]:{port_text}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"--listen: port must be a number from 1 to 65535, got {port_text!r}")
    return host, int(port_text)


LANDING_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>retransmon</title></head>
<body>
<h1>retransmon {version}</h1>
<p>TCP retransmission monitor. Metrics: <a href="/metrics">/metrics</a></p>
</body></html>
"""


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (`gzip;q=0` refuses it)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"
    server_version = f"retransmon/{__version__}"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # A client that stalls mid-request holds only its own thread, and not for long.
        self.connection.settimeout(self.server.request_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/":
            body = LANDING_PAGE.format(version=html.escape(__version__)).encode()
            self._send(HTTPStatus.OK, body, "text/html; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET

    def _not_allowed(self) -> None:
        # The request body (if any) is not read, so the connection cannot carry another request.
        self.close_connection = True
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"method not allowed\n",
            "text/plain; charset=utf-8",
            {"Allow": "GET, HEAD", "Connection": "close"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _metrics(self) -> None:
        try:
            body, content_type = self.server.exposition.render(self.headers.get("Accept", ""))
        except Exception:
            log.exception("collecting metrics failed")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"collecting metrics failed\n", "text/plain")
            return
        extra = {}
        if accepts_gzip(self.headers.get("Accept-Encoding", "")):
            body = gzip.compress(body, compresslevel=1)
            extra["Content-Encoding"] = "gzip"
        self._send(HTTPStatus.OK, body, content_type, extra)


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Exposition | CollectorRegistry,
        request_timeout: float = 10.0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.exposition: Exposition = (
            RegistryExposition(metrics) if isinstance(metrics, CollectorRegistry) else metrics
        )
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self.address_family = _family_for(host)
        bind_host = host or ("::" if self.address_family == socket.AF_INET6 else "0.0.0.0")
        try:
            super().__init__((bind_host, port), MetricsHandler, bind_and_activate=False)
            if self.address_family == socket.AF_INET6 and not host:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.server_bind()
            self.server_activate()
        except OSError as exc:
            self.server_close()
            where = f"{host or '*'}:{port}"
            if exc.errno == 98:  # EADDRINUSE
                raise EnvironmentProblem(
                    f"cannot listen on {where}: the port is in use",
                    fix=f"stop the process using it (ss -ltnp 'sport = :{port}') or pick another --listen",
                ) from None
            if exc.errno == 13:  # EACCES
                raise EnvironmentProblem(
                    f"cannot listen on {where}: permission denied",
                    fix="use a port above 1023 or grant CAP_NET_BIND_SERVICE",
                ) from None
            raise EnvironmentProblem(
                f"cannot listen on {where}: {exc.strerror}", fix="check --listen"
            ) from None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        # Refuse rather than queue without bound when too many connections are open.
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread


def _family_for(host: str) -> socket.AddressFamily:
    if not host:
        return socket.AF_INET6 if socket.has_ipv6 and _ipv6_works() else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--listen: cannot resolve {host!r}: {exc.strerror}") from None
    return infos[0][0]


def _ipv6_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::", 0))
        return True
    except OSError:
        return False
