"""`retransmon chaos` end to end: exact counts, and nothing left behind however it ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from retransmon.chaos.loss import netem_available
from retransmon.chaos.netns import list_netns, netns_pids
from retransmon.chaos.options import PREFIX
from retransmon.chaos.traffic import MODULE as TRAFFIC
from tests.integration.conftest import bpf_link_ids
from tests.support import AgentProcess, free_port
from tests.support.agent import retransmon_command
from tests.support.unprivileged import nobody_command

HostState = dict[str, object]


def _out(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def host_state() -> HostState:
    """What a chaos run must leave exactly as it found it."""
    return {
        "netns": sorted(list_netns()),
        "links": _out(["ip", "-o", "link", "show"]),
        "nft": _out(["nft", "list", "tables"]),
        "bpf_links": bpf_link_ids(),
    }


def assert_restored(before: HostState, timeout: float = 10.0) -> None:
    # BPF links of a killed process are released as its descriptors close: allow a moment.
    deadline = time.monotonic() + timeout
    while host_state() != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert host_state() == before


def chaos(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*retransmon_command(), "chaos", *args], capture_output=True, text=True, timeout=timeout
    )


def start_chaos(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*retransmon_command(), "chaos", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def own_namespaces(pid: int) -> list[str]:
    return [n for n in list_netns() if n.startswith(f"{PREFIX}-") and f"-{pid}-" in n]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def sender_running(namespaces: list[str]) -> bool:
    return any(f"{TRAFFIC} send" in _cmdline(pid) for name in namespaces for pid in netns_pids(name))


def wait_for_traffic(proc: subprocess.Popen[str], timeout: float = 60.0) -> list[str]:
    """Wait until the run's sender runs (the run is then in its traffic phase) and has sent a moment."""
    deadline = time.monotonic() + timeout
    while not sender_running(own_namespaces(proc.pid)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "chaos never started its traffic"
        time.sleep(0.1)
    time.sleep(1.0)
    return own_namespaces(proc.pid)


def summary(stdout: str) -> dict[str, object]:
    data = json.loads(stdout.strip().splitlines()[-1])
    assert isinstance(data, dict)
    return data


def namespaces(data: dict[str, object]) -> dict[str, dict[str, object]]:
    rows = data["namespaces"]
    assert isinstance(rows, list)
    return {str(r["role"]): r for r in rows}


def test_bulk_run_matches_retranssegs_and_leaves_nothing_behind() -> None:
    before = host_state()
    result = chaos("--loss", "5", "--flows", "2", "--duration", "2", "--json")
    assert result.returncode == 0, result.stderr
    data = summary(result.stdout)
    client = namespaces(data)["client"]
    print(f"bulk: {client}")
    assert int(str(client["kernel_retrans_segs"])) > 100
    assert client["segments"] == client["kernel_retrans_segs"]
    assert data["exact"] is True
    assert data["interrupted"] is False
    assert int(str(data["dropped_packets"])) > 0
    flows = data["flows"]
    assert isinstance(flows, list)
    worst = flows[0]
    assert worst["role"] == "client"
    assert str(worst["src"]).startswith("198.18.66.1:")
    assert worst["dst"] == "198.18.66.2:5001"
    assert worst["segments"] > 0
    assert_restored(before)


def test_ipv6_churn_run_matches_retranssegs_and_reports_a_rate() -> None:
    before = host_state()
    result = chaos("--ipv6", "--loss", "10", "--connections", "150", "--flows", "4", "--json")
    assert result.returncode == 0, result.stderr
    data = summary(result.stdout)
    client = namespaces(data)["client"]
    print(f"churn: {client}")
    for row in namespaces(data).values():
        assert row["segments"] == row["kernel_retrans_segs"]
    assert int(str(client["segments"])) > 0
    assert 0 < float(str(client["rate"])) < 0.5
    flows = data["flows"]
    assert isinstance(flows, list)
    assert {f["dst"] for f in flows if f["role"] == "client"} == {"[2001:db8:66::2]:5001"}
    traffic = data["traffic"]
    assert isinstance(traffic, dict)
    assert traffic["connections"] == 150
    assert_restored(before)


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_blackhole_and_dropped_handshakes_make_each_cause_equal_its_kernel_counter(ipv6: bool) -> None:
    """timeout from the black hole, syn from the handshakes, each cause = its TcpExt counter.

    Segments of unknown cause (retransmon_unclassified_segments_total, labelled timeout) may
    make the others short and timeout + tail_loss_probe over, by at most their number.
    """
    before = host_state()
    args = ["--loss", "1", "--flows", "2", "--duration", "7", "--blackhole", "2", "--drop-handshakes", "2"]
    result = chaos(*args, *(["--ipv6"] if ipv6 else []), "--json")
    assert result.returncode == 0, result.stderr
    data = summary(result.stdout)
    rows = namespaces(data)
    unknown = int(str(data["unclassified_segments"]))
    print(f"causes: unclassified {unknown}; " + "; ".join(f"{r}: {rows[r]['cause_checks']}" for r in rows))
    client, server = rows["client"]["causes"], rows["server"]["causes"]
    assert isinstance(client, dict) and isinstance(server, dict)
    assert client["timeout"] > 0
    assert client["slow_start"] > 0
    assert client["syn"] >= 2  # the dropped SYNs, and the SYNs whose SYN-ACK was dropped
    assert server["syn"] >= 2  # the dropped SYN-ACKs
    assert data["blackhole"] == [2.5, 4.5]
    assert int(str(data["dropped_packets"])) >= 4
    for role, row in rows.items():
        assert row["segments"] == row["kernel_retrans_segs"], role
        checks = row["cause_checks"]
        assert isinstance(checks, list)
        assert [c["cause"] for c in checks] == ["fast", "slow_start", "syn", "timeout + tail_loss_probe"]
        for check in checks:
            off = check["segments"] - check["kernel"]
            allowed = (0, unknown) if check["cause"] == "timeout + tail_loss_probe" else (-unknown, 0)
            assert allowed[0] <= off <= allowed[1], (role, check, unknown)
    assert_restored(before)


def test_table_output_names_the_kernel_counter() -> None:
    result = chaos("--loss", "5", "--flows", "1", "--duration", "1")
    assert result.returncode == 0, result.stderr
    assert "RetransSegs" in result.stdout
    assert "exact" in result.stdout
    assert "198.18.66.2:5001" in result.stdout
    assert "Traceback" not in result.stderr


def test_sigint_mid_run_stops_early_reports_and_cleans_up() -> None:
    before = host_state()
    proc = start_chaos("--loss", "5", "--flows", "2", "--duration", "60", "--json")
    try:
        assert len(wait_for_traffic(proc)) == 2
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 30
    data = summary(out)
    assert data["interrupted"] is True
    client = namespaces(data)["client"]
    assert client["segments"] == client["kernel_retrans_segs"]
    assert "Traceback" not in err
    assert_restored(before)


def test_a_second_signal_aborts_without_a_report_and_still_cleans_up() -> None:
    before = host_state()
    proc = start_chaos("--loss", "5", "--flows", "2", "--duration", "60", "--json")
    try:
        wait_for_traffic(proc)
        # Both signals arrive together, so the second is certain to come before the run ends
        # by itself: held stopped, the run receives them only on SIGCONT, and handles them in
        # one go. (Two SIGINTs would merge into one while pending, hence SIGINT then SIGTERM.)
        os.kill(proc.pid, signal.SIGSTOP)
        proc.send_signal(signal.SIGINT)  # while traffic runs: stop early
        proc.send_signal(signal.SIGTERM)  # a second one: abort
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err  # KeyboardInterrupt: aborted, not stopped early (0)
    assert out == ""  # no report
    assert "Traceback" not in err
    assert_restored(before)


def test_cleanup_removes_what_a_killed_run_left() -> None:
    before = host_state()
    proc = start_chaos("--loss", "5", "--flows", "2", "--duration", "60", "--json")
    try:
        leftovers = wait_for_traffic(proc)
    finally:
        proc.kill()  # SIGKILL: no chance to clean up
        proc.communicate()
    assert set(leftovers) <= set(list_netns())
    result = chaos("--cleanup")
    assert result.returncode == 0, result.stderr
    assert "removed 2 namespaces" in result.stdout
    assert_restored(before)


def test_options_that_need_netem() -> None:
    before = host_state()
    result = chaos("--loss", "1", "--delay", "20", "--flows", "1", "--duration", "1", "--json")
    if netem_available():
        assert result.returncode == 0, result.stderr
        assert summary(result.stdout)["method"] == "netem"
    else:
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "--delay needs the netem qdisc" in lines[0]
        assert "fix:" in lines[0]
    assert_restored(before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "150"], "--loss"),
        (["--flows", "0"], "--flows"),
        (["--jitter", "5"], "--jitter and --reorder need --delay"),
        (["--duration", "soon"], "--duration"),
        (["--blackhole", "10"], "--blackhole must be shorter than --duration"),
        (["--drop-handshakes", "-1"], "--drop-handshakes"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    before = host_state()
    result = chaos(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert_restored(before)


def test_prometheus_option_scrapes_a_running_serve_until_ctrl_c(tmp_path: Path) -> None:
    before = host_state()
    port = free_port()
    with AgentProcess() as agent:
        before["bpf_links"] = bpf_link_ids()  # the agent's own links stay until it stops
        out, err = tmp_path / "out", tmp_path / "err"
        with out.open("w") as o, err.open("w") as e:
            proc = subprocess.Popen(
                [*retransmon_command(), "chaos", "--prometheus", "--prometheus-port", str(port),
                 "--scrape", f"127.0.0.1:{agent.port}", "--flows", "1", "--duration", "2"],
                stdout=o, stderr=e, text=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while "Ctrl-C stops Prometheus" not in err.read_text():
                assert proc.poll() is None, err.read_text()
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.3)
            assert f"http://127.0.0.1:{port}/graph?" in err.read_text()
            up = query(port, 'up{job="retransmon"}')
            assert [float(s["value"][1]) for s in up] == [1.0]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "RetransSegs" in out.read_text()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2)
        assert_restored(before)


def test_prometheus_option_without_a_serve_says_how_to_fix_it() -> None:
    before = host_state()
    result = chaos("--prometheus", "--scrape", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "no retransmon agent answers" in result.stderr
    assert "fix: start `retransmon serve` first" in result.stderr
    assert_restored(before)


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        result: list[dict[str, Any]] = body["data"]["result"]
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


@pytest.mark.parametrize("args", [["--duration", "1"], ["--cleanup"]])
def test_without_root_says_so_in_one_line(args: list[str]) -> None:
    before = host_state()
    result = subprocess.run(
        [*nobody_command(), "chaos", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "needs root" in lines[0]
    assert "fix: run it as root" in lines[0]
    assert_restored(before)


def test_cleanup_removes_a_left_netem_probe_namespace_and_keeps_live_ones() -> None:
    before = host_state()
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = f"rmprobe-{gone.pid}-0"
    live = f"rmprobe-{os.getpid()}-999"  # this test is alive: its namespace is kept
    try:
        for name in (leftover, live):
            subprocess.run(["ip", "netns", "add", name], check=True)
        result = chaos("--cleanup")
        assert result.returncode == 0, result.stderr
        names = list_netns()
        assert leftover not in names
        assert live in names
    finally:
        for name in (leftover, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert_restored(before)
