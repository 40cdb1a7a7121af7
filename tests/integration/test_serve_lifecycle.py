"""`retransmon serve` start-up, shutdown and failure modes as a user meets them."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.support import AgentProcess
from tests.support.agent import retransmon_command

from .conftest import bpf_link_ids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_detaches_and_exits_zero(sig: signal.Signals) -> None:
    before = bpf_link_ids()
    agent = AgentProcess()
    try:
        running = bpf_link_ids()
        assert len(running - before) == 5, (
            "four tracepoints and the sent-segments iterator attached while serving"
        )
        started = time.monotonic()
    finally:
        code = agent.stop(sig)  # stopped even when an assertion above fails
    assert code == 0, agent.stderr
    assert time.monotonic() - started < 5
    assert "Traceback" not in agent.stderr
    assert not (running - before) & bpf_link_ids(), "a BPF link outlived the agent"


def test_sigkill_leaves_nothing_attached() -> None:
    before = bpf_link_ids()
    agent = AgentProcess()
    try:
        assert bpf_link_ids() - before
    finally:
        agent.stop(signal.SIGKILL)
    # Nothing is pinned: the kernel drops the links with the process's file descriptors.
    deadline = time.monotonic() + 5
    while bpf_link_ids() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not bpf_link_ids() - before


def test_busy_port_is_one_clear_line_and_exit_1() -> None:
    with AgentProcess() as first:
        proc = subprocess.run(
            [*retransmon_command(), "serve", "--listen", f"127.0.0.1:{first.port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "in use" in lines[0] and str(first.port) in lines[0]


@pytest.mark.parametrize(
    "args",
    [["--listen", "nope"], ["--labels", "src_ip,bogus"], ["--max-series", "-3"], ["--frobnicate"]],
)
def test_bad_flags_exit_2_with_one_line(args: list[str]) -> None:
    proc = subprocess.run([*retransmon_command(), "serve", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retransmon: "), proc.stderr


def test_landing_page_links_metrics() -> None:
    with AgentProcess() as agent:
        status, ctype, body = agent.get("/")
        assert status == 200 and ctype.startswith("text/html")
        assert 'href="/metrics"' in body
        assert agent.get("/nope")[0] == 404
