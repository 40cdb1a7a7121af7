"""The real agent behind TLS and basic auth, under hostile clients, and killed with SIGKILL."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from retransmon.chaos.testbed import TestBed
from tests.support import AgentProcess, total
from tests.support.agent import free_port, http_get, retransmon_command
from tests.support.tls import Certificates, bcrypt_hash, make_certificates, web_config_yaml

from .conftest import bpf_link_ids, bpf_prog_ids

ONLY_BPF_PERFMON = [
    "setpriv",
    "--inh-caps=-all,+bpf,+perfmon",
    "--ambient-caps=-all,+bpf,+perfmon",
    "--bounding-set=-all,+bpf,+perfmon",
]
PASSWORD = "s3cret scrape"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def web_config(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("web") / "web.yml"
    path.write_text(
        web_config_yaml(
            certs, users={"prometheus": bcrypt_hash(PASSWORD, cost=10)}, headers={"X-Frame-Options": "deny"}
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def tls_agent(certs: Certificates, web_config: str) -> Iterator[AgentProcess]:
    with AgentProcess(
        "--web.config.file",
        web_config,
        prefix=ONLY_BPF_PERFMON,
        tls=certs.client_context(),
        auth=("prometheus", PASSWORD),
    ) as agent:
        yield agent


def test_tls_and_basic_auth(tls_agent: AgentProcess, certs: Certificates) -> None:
    with TestBed(loss_percent=10) as tb:
        tb.send(flows=2, duration=1)
        samples = tls_agent.scrape()
        assert total(samples, "tcp_retransmitted_segments_total", dst_ip=tb.server_ip) > 0
    assert any(s.name == "retransmon_build_info" for s in samples)

    ctx = certs.client_context()
    url = tls_agent.url + "/metrics"
    for creds in (("prometheus", "wrong"), ("nobody", PASSWORD), None):
        status, _, body = http_get(url, tls=ctx, auth=creds)
        assert status == 401 and "tcp_" not in body, creds


def test_plain_http_refused_on_the_tls_port(tls_agent: AgentProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", tls_agent.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 400
    assert b"HTTPS" in body and b"tcp_" not in body


def test_invalid_web_config_exits_2_before_loading(tmp_path: Path) -> None:
    bad = tmp_path / "web.yml"
    bad.write_text("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n")
    links_before, progs_before = bpf_link_ids(), bpf_prog_ids("tp_btf_")
    proc = subprocess.run(
        [
            *retransmon_command(),
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--web.config.file",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "/nonexistent.crt" in lines[0], proc.stderr
    assert bpf_link_ids() == links_before and bpf_prog_ids("tp_btf_") <= progs_before


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("Threads:")))


def _scrape_all(agent: AgentProcess, n: int) -> list[int]:
    results: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            status, _, body = agent.get("/metrics", timeout=20)
            ok = status == 200 and "retransmon_build_info" in body
        except OSError:
            ok = False
        with lock:
            results.append(200 if ok else 0)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_50_concurrent_scrapes_with_stalled_clients() -> None:
    with AgentProcess(prefix=ONLY_BPF_PERFMON) as agent:
        idle_threads = _threads(agent.pid)
        stalled = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(50)]
        try:
            for i, s in enumerate(stalled):
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GE")
            started = time.monotonic()
            results = _scrape_all(agent, 50)
            elapsed = time.monotonic() - started
            print(f"50 scrapes beside 50 stalled clients: {elapsed:.2f} s")
            assert results == [200] * 50
            assert elapsed < 10  # not waiting for the stalled clients' 10 s deadline
        finally:
            for s in stalled:
                s.close()
        deadline = time.monotonic() + 15
        while _threads(agent.pid) > idle_threads and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _threads(agent.pid) <= idle_threads, "connection threads outlived their connections"
        assert agent.stop() == 0


def test_sigkill_with_clients_connected_leaves_nothing_in_the_kernel() -> None:
    links_before, progs_before = bpf_link_ids(), bpf_prog_ids("tp_btf_")
    agent = AgentProcess(prefix=ONLY_BPF_PERFMON)
    try:
        assert bpf_link_ids() - links_before
        assert bpf_prog_ids("tp_btf_") - progs_before
        stalled = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(10)]
        scrapers = threading.Thread(target=_scrape_all, args=(agent, 10))
        scrapers.start()
        agent.stop(signal.SIGKILL)
        scrapers.join(timeout=60)
        for s in stalled:
            s.close()
    finally:
        agent.stop()
    assert agent.proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while (
        bpf_link_ids() - links_before or bpf_prog_ids("tp_btf_") - progs_before
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not bpf_link_ids() - links_before, "a link outlived the killed agent"
    assert not bpf_prog_ids("tp_btf_") - progs_before, "a program outlived the killed agent"
