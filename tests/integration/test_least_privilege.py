"""`serve` and `check` holding only CAP_BPF and CAP_PERFMON, and serve giving those up once attached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from retransmon.chaos.netns import NetNamespace, read_while_settled, tcp_counters
from retransmon.chaos.testbed import TestBed
from retransmon.kernel import capabilities
from retransmon.kernel.capabilities import CAP_BPF, CAP_PERFMON, parse_status
from tests.support import AgentProcess, total
from tests.support.agent import free_port, retransmon_command
from tests.support.tracer import TraceProcess
from tests.support.unprivileged import staged_command

from .conftest import bpf_link_ids

SEGMENTS = "tcp_retransmitted_segments_total"
LABELS = "ip_version,src_ip,dst_ip,service_port,state,kind,netns"
ONLY_BPF_PERFMON = [
    "setpriv",
    "--inh-caps=-all,+bpf,+perfmon",
    "--ambient-caps=-all,+bpf,+perfmon",
    "--bounding-set=-all,+bpf,+perfmon",
]
# What the systemd unit does: an unprivileged user with the two capabilities as ambient ones.
NOBODY_WITH_BPF_PERFMON = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    *ONLY_BPF_PERFMON[1:],
]
ONLY_BPF = ["setpriv", "--inh-caps=-all,+bpf", "--ambient-caps=-all,+bpf", "--bounding-set=-all,+bpf"]


def command_for(prefix: list[str]) -> tuple[str, ...]:
    """Another user gets a copy it can read: the checkout may be where it cannot go (/root)."""
    return staged_command() if prefix is NOBODY_WITH_BPF_PERFMON else ()


def settled(agent: AgentProcess, ns: NetNamespace) -> tuple[int, int]:
    """(kernel RetransSegs, exported segments) of ns, read while RetransSegs did not move."""
    return read_while_settled(ns, lambda: int(total(agent.scrape(), SEGMENTS, netns=str(ns.inode))))


def thread_caps(pid: int) -> dict[int, capabilities.CapSets]:
    out = {}
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            out[tid] = parse_status(f.read())
    return out


def no_new_privs(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("NoNewPrivs:"))


@pytest.mark.parametrize("prefix", [ONLY_BPF_PERFMON, NOBODY_WITH_BPF_PERFMON], ids=["uid0", "uid65534"])
def test_only_bpf_and_perfmon_counts_exactly_then_holds_nothing(prefix: list[str]) -> None:
    links_before = bpf_link_ids()
    with (
        AgentProcess("--labels", LABELS, prefix=prefix, command=command_for(prefix)) as agent,
        TestBed(loss_percent=10) as tb,
    ):
        assert len(bpf_link_ids() - links_before) >= 3, "the hooks attached with only CAP_BPF+CAP_PERFMON"
        client0, server0 = settled(agent, tb.client), settled(agent, tb.server)
        tb.send(flows=4, duration=3)
        client1, server1 = settled(agent, tb.client), settled(agent, tb.server)
        kernel, ours = client1[0] - client0[0], client1[1] - client0[1]
        print(f"{' '.join(prefix[1:])}: RetransSegs {kernel}, exported {ours}")
        assert kernel > 100
        assert ours == kernel
        assert server1[1] - server0[1] == server1[0] - server0[0]

        # Once attached, every thread (HTTP, harvester, main) holds no capability at all.
        caps = thread_caps(agent.pid)
        assert len(caps) >= 3
        for tid, c in caps.items():
            assert (c.effective, c.permitted, c.inheritable, c.ambient) == (0, 0, 0, 0), (tid, c)
        assert no_new_privs(agent.pid) == "1"
        code = agent.stop()
    assert code == 0, agent.stderr
    assert "Traceback" not in agent.stderr
    assert "dropped capabilities: CAP_BPF, CAP_PERFMON; kept: none" in agent.stderr
    assert not bpf_link_ids() - links_before


def test_no_drop_capabilities_keeps_exactly_the_two() -> None:
    with AgentProcess("--no-drop-capabilities", prefix=ONLY_BPF_PERFMON) as agent:
        wanted = (1 << CAP_BPF) | (1 << CAP_PERFMON)
        caps = thread_caps(agent.pid)
        assert {c.effective for c in caps.values()} == {wanted}
        assert agent.get("/metrics")[0] == 200


def test_without_perfmon_serve_exits_1_naming_the_fix() -> None:
    links_before = bpf_link_ids()
    proc = subprocess.run(
        [*ONLY_BPF, *retransmon_command(), "serve", "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("retransmon: ")]
    assert len(errors) == 1, proc.stderr
    assert "not allowed to load BPF programs" in errors[0] and "CAP_PERFMON" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not bpf_link_ids() - links_before


def test_check_reports_capabilities_and_costs() -> None:
    proc = subprocess.run(
        [*ONLY_BPF_PERFMON, *retransmon_command(), "check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    privileges = next(line for line in lines if " privileges " in line)
    assert privileges.startswith("ok") and "CAP_BPF, CAP_PERFMON" in privileges
    ptrace = next(line for line in lines if "without CAP_SYS_PTRACE" in line)
    assert ptrace.startswith("warn") and "service_port" in ptrace
    assert any(line.startswith("ok") and "load and attach" in line for line in lines)

    only_bpf = subprocess.run(
        [*ONLY_BPF, *retransmon_command(), "check"], capture_output=True, text=True, timeout=60
    )
    assert only_bpf.returncode == 1
    assert any(
        line.startswith("FAIL") and "without CAP_PERFMON" in line for line in only_bpf.stdout.splitlines()
    )


DROP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from retransmon.kernel import capabilities
    works = sys.argv[1] == "works"
    result = capabilities.drop_after_attach(lambda: works)
    with open("/proc/thread-self/status") as f:
        text = f.read()
    nnp = [l.split()[1] for l in text.splitlines() if l.startswith("NoNewPrivs:")][0]
    after = capabilities.parse_status(text)
    print(json.dumps({"before": result.before.permitted, "kept": sorted(result.kept),
                      "eff": after.effective, "prm": after.permitted, "inh": after.inheritable,
                      "amb": after.ambient, "bnd": after.bounding, "nnp": nnp}))
    """
)


def _drop_in_child(mode: str) -> dict[str, int | str | list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", DROP_SCRIPT, mode], capture_output=True, text=True, timeout=30, check=True
    )
    result: dict[str, int | str | list[str]] = json.loads(proc.stdout)
    return result


def test_drop_gives_up_everything_when_maps_still_work() -> None:
    r = _drop_in_child("works")
    assert r["before"] != 0
    assert r["eff"] == r["prm"] == r["inh"] == r["amb"] == 0
    assert r["bnd"] == 0  # root holds CAP_SETPCAP, so the bounding set is emptied too
    assert r["kept"] == []
    assert r["nnp"] == "1"


def test_drop_keeps_cap_bpf_when_the_kernel_needs_it_for_maps() -> None:
    r = _drop_in_child("refused")
    bpf = 1 << CAP_BPF
    assert r["kept"] == ["CAP_BPF"]
    assert r["eff"] == r["prm"] == bpf
    assert r["inh"] == r["amb"] == 0


@pytest.mark.parametrize("prefix", [ONLY_BPF_PERFMON, NOBODY_WITH_BPF_PERFMON], ids=["uid0", "uid65534"])
def test_trace_with_only_bpf_and_perfmon_counts_exactly(prefix: list[str]) -> None:
    with (
        TestBed(loss_percent=10) as tb,
        TraceProcess(
            "--json", "--netns", str(tb.client.inode), prefix=tuple(prefix), command=command_for(prefix)
        ) as trace,
    ):
        before = tcp_counters(tb.client)["RetransSegs"]
        tb.send(flows=2, duration=2)
        time.sleep(1)
        kernel = tcp_counters(tb.client)["RetransSegs"] - before
        # Attached and reading, trace holds no capability any more.
        held = {c.effective | c.permitted for c in thread_caps(trace.pid).values()}
        assert trace.stop() == 0, trace.stderr
        assert held == {0}, held
        segments = sum(int(json.loads(line)["segments"]) for line in trace.stdout.splitlines())
        assert "Traceback" not in trace.stderr
    print(f"trace under {' '.join(prefix[1:])}: RetransSegs {kernel}, traced {segments}")
    assert kernel > 100
    assert segments == kernel


def test_top_with_only_bpf_and_perfmon_shows_the_flow() -> None:
    with TestBed(loss_percent=10) as tb:
        top = subprocess.Popen(
            [*ONLY_BPF_PERFMON, *retransmon_command(), "top", "--interval", "1", "--duration", "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            tb.send(flows=2, duration=2)
            held = {c.effective | c.permitted for c in thread_caps(top.pid).values()}
            out, err = top.communicate(timeout=60)
        finally:
            if top.poll() is None:
                top.kill()
                top.wait()
    assert top.returncode == 0, err
    assert held == {0}, "top gave up its capabilities once attached"
    assert f"{tb.server_ip}:{tb.port}" in out, out
    assert "Traceback" not in err
