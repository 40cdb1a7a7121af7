"""A real Prometheus server on loopback, scraping a retransmon agent with the shipped config.

Used by `retransmon chaos --prometheus`, the integration tests and the screenshot
script. The config is the shipped prometheus.yml (package data in chaos/assets/, which
deploy/prometheus/ links to) with three values replaced (scrape target, scrape and
evaluation interval); rules.yml is loaded too. Storage lives in a temporary directory
removed by close().
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path
from types import TracebackType

from retransmon.errors import EnvironmentProblem, UsageError

DEFAULT_TARGET = "localhost:2112"
DEFAULT_INTERVAL = "15s"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 30.0


ASSETS = "assets"  # in this package: prometheus.yml and rules.yml, also deploy/prometheus/'s


def shipped_file(name: str) -> str:
    """The text of prometheus.yml or rules.yml as installed with this package."""
    try:
        return (resources.files("retransmon.chaos") / ASSETS / name).read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvironmentProblem(
            f"{name} is missing from the installed retransmon package ({exc.strerror})",
            fix="reinstall retransmon (pip install --force-reinstall retransmon)",
        ) from None


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise ValueError(f"expected {old!r} exactly once in prometheus.yml, found it {text.count(old)} times")
    return text.replace(old, new)


def render_config(template: str, target: str, interval: str) -> str:
    """The shipped prometheus.yml scraping *target* every *interval* (also the rule evaluation)."""
    text = _replace_once(template, f'["{DEFAULT_TARGET}"]', json.dumps([target]))
    text = _replace_once(text, f"scrape_interval: {DEFAULT_INTERVAL}", f"scrape_interval: {interval}")
    return _replace_once(text, f"evaluation_interval: {DEFAULT_INTERVAL}", f"evaluation_interval: {interval}")


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class PrometheusError(EnvironmentProblem):
    """Prometheus could not be started, or answered a query with an error."""


class PrometheusServer:
    """`prometheus` on 127.0.0.1:*port* scraping *target*; close() stops it (by PID) and cleans up."""

    def __init__(self, target: str, port: int | None = None, interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise EnvironmentProblem(
                "the prometheus server is not installed", fix="apt-get install prometheus (or make setup)"
            )
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"--prometheus-port must be a TCP port, got {port}")
        self.port = port or free_loopback_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.target = target
        self._tmp = Path(tempfile.mkdtemp(prefix="retransmon-prometheus-"))
        self._log = open(self._tmp / "prometheus.log", "w+", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            config = self._tmp / "prometheus.yml"
            config.write_text(render_config(shipped_file("prometheus.yml"), target, interval))
            (self._tmp / "rules.yml").write_text(shipped_file("rules.yml"))
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self._tmp / 'data'}",
                    f"--web.listen-address={LOOPBACK}:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
            )
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise PrometheusError(
            f"prometheus did not become ready within {READY_TIMEOUT:g} s: {self.log_tail()}"
        )

    def log_tail(self, lines: int = 5) -> str:
        self._log.flush()
        self._log.seek(0)
        return " | ".join(self._log.read().strip().splitlines()[-lines:])

    def api(self, path: str, **params: str) -> object:
        """GET /api/v1/<path>; the `data` of a successful answer, else PrometheusError."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, object]]:
        """An instant query's result vector (scalars come back as one sample without labels)."""
        data = self.api("query", query=expr)
        assert isinstance(data, dict)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        assert isinstance(result, list)
        return result

    def graph_url(self, expr: str, range_input: str = "5m") -> str:
        params = {"g0.expr": expr, "g0.tab": "0", "g0.range_input": range_input}
        return f"{self.url}/graph?" + urllib.parse.urlencode(params)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
