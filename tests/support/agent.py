"""Run the real `retransmon serve` as a child process and read its /metrics."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

from retransmon.chaos.errors import TestbedError
from retransmon.chaos.process import signal_and_wait

# Waits scale with RETRANSMON_TEST_TIME_SCALE: the kernel matrix's VMs emulate their CPU (TCG).
TIME_SCALE = float(os.environ.get("RETRANSMON_TEST_TIME_SCALE", "1"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def retransmon_command() -> list[str]:
    """The installed console script beside this Python, else `python -m retransmon`."""
    script = os.path.join(os.path.dirname(sys.executable), "retransmon")
    if os.access(script, os.X_OK):
        return [script]
    found = shutil.which("retransmon")
    return [found] if found else [sys.executable, "-m", "retransmon"]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append(Sample(s.name, dict(s.labels), float(s.value)))
    return out


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of every sample called *name* whose labels include *labels*."""
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def http_get(
    url: str,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 30,
    tls: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; error statuses are returned, not raised."""
    all_headers = dict(headers or {})
    if auth and "Authorization" not in all_headers:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        all_headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(url, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


class AgentProcess:
    """`retransmon serve` on a loopback port; stop() sends SIGTERM and waits.

    *prefix* runs the agent under another command (e.g. setpriv with fewer capabilities);
    *command* replaces the retransmon command (e.g. unprivileged.staged_command() for another user);
    *tls* (a client SSL context) and *auth* ((user, password)) are used for every request
    when the agent serves HTTPS or asks for basic auth.
    """

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        ready_timeout: float = 20.0 * TIME_SCALE,
        prefix: Sequence[str] = (),
        command: Sequence[str] = (),
        tls: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.auth = auth
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        argv = [
            *prefix,
            *(command or retransmon_command()),
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            *args,
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout = ""
        self.stderr = ""
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._collect()
                raise TestbedError(
                    f"retransmon serve exited with {self.proc.returncode}: {self.stderr.strip()}"
                )
            with contextlib.suppress(OSError):
                self.get("/", timeout=1)  # any HTTP answer (401 too) means it is serving
                return
            time.sleep(0.1)
        self.stop()
        raise TestbedError(f"retransmon serve did not answer on {self.url} within {ready_timeout} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(
        self, path: str = "/metrics", headers: dict[str, str] | None = None, timeout: float = 30
    ) -> tuple[int, str, str]:
        """(status, content type, body) of a GET."""
        return http_get(self.url + path, headers, timeout=timeout, tls=self.tls, auth=self.auth)

    def metrics_text(self) -> str:
        status, _ctype, body = self.get("/metrics")
        if status != 200:
            raise TestbedError(f"/metrics answered {status}: {body[:200]}")
        return body

    def scrape(self) -> list[Sample]:
        return parse_metrics(self.metrics_text())

    def _collect(self) -> None:
        out, err = self.proc.communicate(timeout=10)
        self.stdout += out or ""
        self.stderr += err or ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the agent and wait; returns its exit code (killed after *timeout*)."""
        signal_and_wait(self.proc, sig, timeout)
        self._collect()
        return self.proc.returncode

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
