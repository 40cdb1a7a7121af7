"""The wheel `make dist` builds, installed into a fresh virtual environment outside the checkout.

`retransmon check`, `serve` (exact counts against RetransSegs) and `chaos` run from it with no
clang, bpftool or make on PATH, no PYTHONPATH, and a working directory outside the source tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from retransmon.chaos.netns import read_while_settled
from retransmon.chaos.testbed import TestBed
from tests.support import free_port, parse_metrics, total
from tests.support.agent import Sample, http_get

REPO = Path(__file__).resolve().parents[2]
# Build tools the installed package must not need.
BUILD_TOOLS = ("clang", "llc", "llvm-strip", "bpftool", "make", "gcc", "cc", "retransmon")
SYSTEM_BIN = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class Installed:
    venv: Path
    env: dict[str, str]
    cwd: Path

    @property
    def retransmon(self) -> str:
        return str(self.venv / "bin" / "retransmon")

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.retransmon, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen([self.retransmon, *args], env=self.env, cwd=self.cwd, text=True, **kw)  # type: ignore[call-overload,no-any-return]


def system_path_without_build_tools(bindir: Path) -> str:
    """A PATH of links to the system's commands, minus the build tools."""
    bindir.mkdir()
    for d in SYSTEM_BIN:
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        for name in os.listdir(d):
            if name.startswith(BUILD_TOOLS) or (bindir / name).exists():
                continue
            os.symlink(os.path.join(d, name), bindir / name)
    return str(bindir)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    started = time.monotonic()
    subprocess.run(["make", "-s", "dist"], cwd=REPO, check=True, capture_output=True, text=True)
    wheels = sorted((REPO / "dist").glob("retransmon-*-py3-none-any.whl"))
    assert len(wheels) == 1, wheels
    assert len(list((REPO / "dist").glob("retransmon-*.tar.gz"))) == 1
    built = time.monotonic()
    top = tmp_path_factory.mktemp("wheel")
    venv = top / "venv"
    # The system's Python, not the checkout's .venv; the index is the one pip is configured with.
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheels[0])],
        check=True,
        capture_output=True,
        text=True,
        cwd=top,
    )
    path = f"{venv / 'bin'}:{system_path_without_build_tools(top / 'bin')}"
    env = {"PATH": path, "HOME": str(top), "LANG": "C.UTF-8"}
    print(f"make dist {built - started:.1f} s, fresh venv + pip install {time.monotonic() - built:.1f} s")
    yield Installed(venv, env, top)


def test_installed_package_lives_in_the_venv_with_its_bpf_object(installed: Installed) -> None:
    for tool in ("clang", "bpftool", "make"):
        assert subprocess.run(["which", tool], env=installed.env, capture_output=True).returncode != 0, tool
    code = (
        "import importlib.resources, json, retransmon; "
        "obj = importlib.resources.files('retransmon.kernel') / 'retransmon.bpf.o'; "
        "print(json.dumps([retransmon.__file__, obj.is_file(), retransmon.__version__]))"
    )
    out = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", code],
        env=installed.env,
        cwd=installed.cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    where, has_object, version = json.loads(out)
    assert where.startswith(str(installed.venv)), where
    assert has_object
    assert installed.run("--version").stdout.strip() == f"retransmon {version}"


def test_check_passes_from_the_wheel(installed: Installed) -> None:
    result = installed.run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "counting exact" in result.stdout


class Serve:
    """The installed `retransmon serve` on a loopback port."""

    def __init__(self, installed: Installed, *args: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        listen = self.url.removeprefix("http://")
        self.proc = installed.popen("serve", "--listen", listen, *args, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            try:
                http_get(self.url + "/", timeout=1)
                return
            except OSError:
                assert time.monotonic() < deadline, "serve did not answer"
                time.sleep(0.1)

    def scrape(self) -> list[Sample]:
        status, _ctype, body = http_get(self.url + "/metrics")
        assert status == 200
        return parse_metrics(body)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def test_serve_from_the_wheel_counts_exactly(installed: Installed) -> None:
    serve = Serve(installed, "--labels", "netns,kind")
    try:
        with TestBed(loss_percent=10) as tb:
            netns = str(tb.client.inode)
            kernel_before, samples = read_while_settled(tb.client, serve.scrape)
            ours_before = total(samples, "tcp_retransmitted_segments_total", netns=netns)
            tb.send(flows=2, duration=2)
            kernel_after, samples = read_while_settled(tb.client, serve.scrape)
            ours = total(samples, "tcp_retransmitted_segments_total", netns=netns) - ours_before
            kernel = kernel_after - kernel_before
            print(f"wheel serve: RetransSegs {kernel}, exported {ours:.0f}")
            assert kernel > 0
            assert ours == kernel
    finally:
        assert serve.stop() == 0


def test_chaos_from_the_wheel_matches_the_kernel(installed: Installed) -> None:
    result = installed.run("chaos", "--json", "--flows", "2", "--duration", "2")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    namespaces = report["namespaces"]
    assert namespaces and all(ns["exact"] for ns in namespaces), namespaces
    assert sum(ns["kernel_retrans_segs"] for ns in namespaces) > 0


def up(port: int) -> list[float]:
    """`up` of the retransmon job in the Prometheus on *port*, once it has scraped (20 s at most)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": 'up{job="retransmon"}'})
    deadline = time.monotonic() + 20
    while True:
        status, _ctype, body = http_get(url)
        assert status == 200, body
        values = [float(s["value"][1]) for s in json.loads(body)["data"]["result"]]
        if values or time.monotonic() > deadline:
            return values
        time.sleep(0.5)


def test_chaos_prometheus_from_the_wheel(installed: Installed, tmp_path: Path) -> None:
    """chaos --prometheus needs its Prometheus files, which must come from the package."""
    serve = Serve(installed)
    port = free_port()
    err = tmp_path / "err"
    try:
        with err.open("w") as e:
            proc = installed.popen(
                "chaos", "--prometheus", "--prometheus-port", str(port), "--scrape",
                serve.url.removeprefix("http://"), "--flows", "1", "--duration", "1",
                stdout=subprocess.DEVNULL, stderr=e,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while "Ctrl-C stops Prometheus" not in err.read_text():
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.3)
            assert up(port) == [1.0]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        assert serve.stop() == 0
