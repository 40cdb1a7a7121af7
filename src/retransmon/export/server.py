"""HTTP(S) server for /metrics and a landing page.

One thread per connection (scrapes never wait for each other) and a bound on
concurrent connections. A client gets ``request_timeout`` seconds to finish
its TLS handshake and each request's head (an idle keep-alive connection the
same): a watchdog shuts down connections past their deadline, so a client
that trickles one byte at a time holds its thread no longer than one that
sends nothing. Request heads are limited to ``MAX_HEAD_BYTES`` (431/414).
TLS, basic auth, response headers and the rate limit come from a :class:`WebConfig`.
"""

from __future__ import annotations

import _socket
import contextlib
import gzip
import html
import http.client
import io
import logging
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry

from retransmon import __version__, defaults
from retransmon.errors import EnvironmentProblem, UsageError
from retransmon.export.auth import BasicAuth
from retransmon.export.exposition import Exposition, RegistryExposition
from retransmon.export.ratelimit import TokenBucket
from retransmon.export.tlscontext import allowed_san
from retransmon.export.webconfig import WebConfig

log = logging.getLogger(__name__)

DEFAULT_PORT = 2112
MAX_CONNECTIONS = 128
MAX_HEAD_BYTES = 16384  # request line and headers; a Prometheus scrape sends well under 1 KiB
TLS_RECORD_HANDSHAKE = 0x16  # the first byte a TLS client sends
PLAIN_HTTP_ON_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
    b"Client sent an HTTP request to an HTTPS server.\n"
)


class HeadTooLarge(http.client.HTTPException):
    """The request line and headers exceed MAX_HEAD_BYTES."""


class HeadBudget(io.BufferedIOBase):
    """The handler's rfile: at most *limit* bytes of request head (reset for every request)."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        super().__init__()
        self._raw = raw
        self.limit = limit
        self.remaining = limit

    def reset(self) -> None:
        self.remaining = self.limit

    def readline(self, size: int | None = -1) -> bytes:
        want = self.remaining + 1 if size is None or size < 0 else min(size, self.remaining + 1)
        line = self._raw.readline(want)
        self.remaining -= len(line)
        if self.remaining < 0:
            raise HeadTooLarge(f"request head larger than {self.limit} bytes")
        return line

    def read(self, size: int | None = -1) -> bytes:
        return self._raw.read(size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()
        super().close()


class Watchdog:
    """Shuts down connections whose deadline has passed, which ends any read blocked on them."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._deadlines: dict[int, tuple[socket.socket, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self._lock:
            self._deadlines[id(sock)] = (sock, time.monotonic() + seconds)

    def disarm(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(id(sock), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._deadlines)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="http-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                overdue = [sock for sock, deadline in self._deadlines.values() if deadline <= now]
                for sock in overdue:
                    self._deadlines.pop(id(sock), None)
            for sock in overdue:
                # The plain socket's shutdown, also under an SSLSocket: wakes the blocked reader.
                with contextlib.suppress(OSError, ValueError):
                    _socket.socket.shutdown(sock, socket.SHUT_RDWR)


LISTEN_FLAG = "--web.listen-address"


def parse_listen(text: str) -> tuple[str, int]:
    """``[HOST]:PORT`` -> (host, port); an empty host means every address."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise UsageError(f"{LISTEN_FLAG}: expected [HOST]:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"{LISTEN_FLAG}: write IPv6 addresses in brackets, e.g. [::1]:{port_text}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"{LISTEN_FLAG}: port must be a number from 1 to 65535, got {port_text!r}")
    return host, int(port_text)


def parse_telemetry_path(text: str) -> str:
    """``--web.telemetry-path``: an absolute URL path without query or fragment."""
    if not text.startswith("/") or any(c in text for c in "?#") or any(ord(c) <= 32 for c in text):
        raise UsageError(f"--web.telemetry-path: expected a path like /metrics, got {text!r}")
    return text


# exporter-toolkit's landing page: the name, a description, the version, a link to the metrics.
LANDING_PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <meta name="viewport" content="width=device-width, initial-scale=1.0">
    <title>retransmon</title>
  </head>
  <body>
    <header>
      <h1>retransmon</h1>
    </header>
    <main>
      <h2>TCP retransmission monitor for Linux (eBPF)</h2>
      <div>Version: {version}</div>
      <div>
        <ul>
          <li><a href="{path}">Metrics</a></li>
        </ul>
      </div>
    </main>
  </body>
</html>
"""


def landing_page(telemetry_path: str) -> bytes:
    return LANDING_PAGE.format(
        version=html.escape(__version__), path=html.escape(telemetry_path, quote=True)
    ).encode()


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
    # Errors in a request line too broken to carry a version still get a status line (not HTTP/0.9).
    default_request_version = "HTTP/1.0"
    server_version = f"retransmon/{__version__}"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        # A stalled write (a client that stops reading) ends after this; reads have the watchdog too.
        self.connection.settimeout(self.server.request_timeout)
        self.rfile = HeadBudget(self.rfile, MAX_HEAD_BYTES)

    def handle_one_request(self) -> None:
        # The next request's head (or an idle keep-alive connection) gets request_timeout.
        self.server.watchdog.arm(self.connection, self.server.request_timeout)
        assert isinstance(self.rfile, HeadBudget)
        self.rfile.reset()
        try:
            super().handle_one_request()
        except HeadTooLarge:
            # Too long a request line (no headers parsed yet): 414. Headers themselves: 431 via parse_request.
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            self.close_connection = True
        finally:
            self.server.watchdog.disarm(self.connection)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if getattr(self, "request_version", "") not in ("HTTP/1.0", "HTTP/1.1"):
            # An HTTP/0.9 (or unparsable) request still gets a status line a client can read.
            self.request_version = "HTTP/1.0"
        super().send_error(code, message, explain)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok and self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
            # HTTP/0.9 has no status line or headers: refuse it.
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
            return False
        if ok:
            self.server.watchdog.disarm(self.connection)  # the head is in; the response has its own timeout
        return ok

    def end_headers(self) -> None:
        for name, value in self.server.web.headers.items():
            self.send_header(name, value)
        super().end_headers()

    def _authorized(self) -> bool:
        auth = self.server.auth
        if auth is None or auth.check_header(self.headers.get("Authorization")):
            return True
        self._send(
            HTTPStatus.UNAUTHORIZED,
            b"unauthorized\n",
            "text/plain; charset=utf-8",
            {"WWW-Authenticate": 'Basic realm="retransmon", charset="UTF-8"'},
        )
        return False

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

    def _rate_limited(self) -> bool:
        limiter = self.server.limiter
        if limiter is None or limiter.allow():
            return False
        self._send(HTTPStatus.TOO_MANY_REQUESTS, b"Too Many Requests\n", "text/plain; charset=utf-8")
        return True

    def do_GET(self) -> None:
        if self._rate_limited() or not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        if path == self.server.telemetry_path:
            self._metrics()
        elif path == "/":
            self._send(HTTPStatus.OK, landing_page(self.server.telemetry_path), "text/html; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET

    def _not_allowed(self) -> None:
        if self._rate_limited() or not self._authorized():
            self.close_connection = True
            return
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
        *,
        request_timeout: float = 10.0,
        max_connections: int = MAX_CONNECTIONS,
        web: WebConfig | None = None,
        telemetry_path: str = defaults.TELEMETRY_PATH,
    ) -> None:
        self.exposition: Exposition = (
            RegistryExposition(metrics) if isinstance(metrics, CollectorRegistry) else metrics
        )
        self.request_timeout = request_timeout
        self.web = web or WebConfig()
        self.auth = BasicAuth(self.web.users) if self.web.users else None
        rate = self.web.rate_limit
        self.limiter = TokenBucket(rate.interval, rate.burst) if rate else None
        self.telemetry_path = telemetry_path
        self.watchdog = Watchdog()
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
                    fix=f"stop what uses it (ss -ltnp 'sport = :{port}') or use another {LISTEN_FLAG}",
                ) from None
            if exc.errno == 13:  # EACCES
                raise EnvironmentProblem(
                    f"cannot listen on {where}: permission denied",
                    fix="use a port above 1023 or grant CAP_NET_BIND_SERVICE",
                ) from None
            raise EnvironmentProblem(
                f"cannot listen on {where}: {exc.strerror}", fix="check --web.listen-address"
            ) from None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self.web.context is not None else "http"

    def process_request(self, request: Any, client_address: Any) -> None:
        # Refuse rather than queue without bound when too many connections are open.
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # the thread never started
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's own thread: the TLS handshake (if any), then the requests."""
        conn: socket.socket = request
        context = self.web.context
        if context is not None:
            tls = self._tls_accept(request, context)
            if tls is None:
                return
            conn = tls
        try:
            MetricsHandler(conn, client_address, self)
        finally:
            self.watchdog.disarm(conn)
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def _tls_accept(self, request: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket | None:
        request.settimeout(self.request_timeout)
        self.watchdog.arm(request, self.request_timeout)
        try:
            first = request.recv(1, socket.MSG_PEEK)
            if not first:
                return None
            if first[0] != TLS_RECORD_HANDSHAKE:
                # Plain HTTP on the TLS port: say so, as Go's servers do, instead of a bare reset.
                with contextlib.suppress(OSError):
                    request.sendall(PLAIN_HTTP_ON_TLS)
                return None
            self.watchdog.disarm(request)  # the SSLSocket takes over the file descriptor
            tls = context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            log.debug("TLS handshake with %s failed: %s", request, exc)
            return None
        finally:
            self.watchdog.disarm(request)
        self.watchdog.arm(tls, self.request_timeout)
        try:
            tls.do_handshake()
        except (OSError, ValueError) as exc:
            log.debug("TLS handshake with %s failed: %s", tls, exc)
            self.watchdog.disarm(tls)
            with contextlib.suppress(OSError):
                tls.close()
            return None
        sans = self.web.tls.client_allowed_sans if self.web.tls else None
        if sans is not None and not allowed_san(tls.getpeercert() or {}, sans):
            # As exporter-toolkit: the connection ends before any request is read.
            log.debug("client certificate of %s has none of client_allowed_sans", tls)
            self.watchdog.disarm(tls)
            with contextlib.suppress(OSError):
                tls.close()
            return None
        return tls

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Resets, timeouts, clients vanishing: a debug line, never a traceback on stderr.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def serve_in_thread(self) -> threading.Thread:
        self.watchdog.start()
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread

    def server_close(self) -> None:
        self.watchdog.stop()
        super().server_close()


def _family_for(host: str) -> socket.AddressFamily:
    if not host:
        return socket.AF_INET6 if socket.has_ipv6 and _ipv6_works() else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"{LISTEN_FLAG}: cannot resolve {host!r}: {exc.strerror}") from None
    return infos[0][0]


def _ipv6_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::", 0))
        return True
    except OSError:
        return False
