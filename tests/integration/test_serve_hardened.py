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
from tests.support.tls import (
    Certificates,
    bcrypt_hash,
    make_certificates,
    make_client_certificate,
    web_config_yaml,
)

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


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
            "/nonexistent.crt",
        ),
        # Asked for TLS, gave no certificate: exporter-toolkit would serve plain HTTP; never here.
        ("tls_server_config:\n  cert_file: ''\n  key_file: ''\n  client_auth_type: Bogus\n", "Bogus"),
        ("tls_server_config:\n  cert_file: ''\n  key_file: ''\n", "no certificate"),
        ("tls_server_config:\n  min_version: TLS13\n", "no certificate"),
    ],
)
def test_invalid_web_config_exits_2_before_loading(tmp_path: Path, text: str, needle: str) -> None:
    bad = tmp_path / "web.yml"
    bad.write_text(text)
    links_before, progs_before = bpf_link_ids(), bpf_prog_ids("tp_btf_")
    port = free_port()
    proc = subprocess.Popen(
        [*retransmon_command(), "serve", "--listen", f"127.0.0.1:{port}", "--web.config.file", str(bad)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], stderr
    with pytest.raises(ConnectionRefusedError):  # nothing ever listened, in plain HTTP or otherwise
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert bpf_link_ids() == links_before and bpf_prog_ids("tp_btf_") <= progs_before


def _pem_block(path: str) -> str:
    return "|\n" + "".join(f"    {line}\n" for line in Path(path).read_text().strip().splitlines())


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_node_exporter_style_config_and_flags_over_real_tls(certs: Certificates, tmp_path: Path) -> None:
    """Inline PEM, mTLS with allowed SANs, Go cipher and curve names, two addresses, another path."""
    good = make_client_certificate(certs, "prom-san", "DNS:prometheus.example")
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert: {_pem_block(certs.server_cert)}  key: {_pem_block(certs.server_key)}"
        f"  client_ca: {_pem_block(certs.ca)}"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_allowed_sans: [prometheus.example]\n"
        "  cipher_suites:\n    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n"
        "    - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256\n"
        "  curve_preferences: [X25519]\n"
        "  prefer_server_cipher_suites: true\n"
        "http_server_config:\n  http2: true\n  headers:\n    X-XSS-Protection: 1\n"
        "    X-Content-Type-Options: nosniff\n"
    )
    port6 = free_port()
    ctx = certs.client_context()
    ctx.load_cert_chain(*good)
    with AgentProcess(
        "--web.config.file", str(web), "--web.listen-address", f"[::1]:{port6}",
        "--web.telemetry-path", "/probe", prefix=ONLY_BPF_PERFMON, tls=ctx,
    ) as agent:  # fmt: skip
        curl = ["curl", "-sS", "--cacert", certs.ca, "-D", "-", "--max-time", "10"]
        client = ["--cert", good[0], "--key", good[1]]
        for url in (f"https://127.0.0.1:{agent.port}/probe", f"https://[::1]:{port6}/probe"):
            done = _run(*curl, *client, url)
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("HTTP/1.1 200"), done.stdout[:200]  # HTTP/1.1, said once
            assert "\nx-xss-protection: 1\n" in done.stdout.lower()
            assert "retransmon_build_info" in done.stdout
        assert _run(*curl, *client, f"https://127.0.0.1:{agent.port}/metrics").stdout.startswith(
            "HTTP/1.1 404"
        )
        landing = _run(*curl, *client, f"https://127.0.0.1:{agent.port}/").stdout
        assert '<a href="/probe">Metrics</a>' in landing
        # Without a client certificate, or with one whose SANs are not allowed: no answer at all.
        for refused in ([], ["--cert", certs.client_cert, "--key", certs.client_key]):
            done = _run(*curl, *refused, f"https://127.0.0.1:{agent.port}/probe")
            assert done.returncode != 0 and "retransmon_build_info" not in done.stdout, refused

        s_client = ["openssl", "s_client", "-connect", f"127.0.0.1:{agent.port}", "-CAfile", certs.ca,
                    "-cert", good[0], "-key", good[1]]  # fmt: skip
        x25519 = _run(*s_client, "-tls1_3", "-groups", "X25519")
        assert "Server Temp Key: X25519" in x25519.stdout, x25519.stdout[-800:]
        assert "Server Temp Key" not in _run(*s_client, "-tls1_3", "-groups", "P-256").stdout
        tls12 = _run(*s_client, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        assert "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" in tls12.stdout, tls12.stdout[-800:]
        assert (
            "Cipher is ECDHE"
            not in _run(*s_client, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384").stdout
        )
        assert agent.stop() == 0
        assert agent.stderr.count("speaks HTTP/1.1") == 1


def test_cost_18_bcrypt_hash_does_not_delay_start_up(tmp_path: Path) -> None:
    # What one cost-18 check would take here, from a cost-12 one (each step doubles the work).
    started = time.monotonic()
    bcrypt_hash("x", cost=12)
    cost_18_seconds = (time.monotonic() - started) * 64
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{bcrypt_hash('x', cost=4).replace('$04$', '$18$')}'\n")
    started = time.monotonic()
    with AgentProcess("--web.config.file", str(web), prefix=ONLY_BPF_PERFMON) as agent:
        serving = time.monotonic() - started
        status, _, _ = agent.get("/metrics", timeout=10)  # no credentials: 401, no bcrypt
    print(f"start-up with a cost-18 hash: {serving:.2f} s; one cost-18 check: ~{cost_18_seconds:.1f} s")
    assert status == 401
    assert serving < cost_18_seconds / 2


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
