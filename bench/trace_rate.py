"""How many retransmit events a second `retransmon trace --json > file` keeps up with, losing none.

    flock /tmp/retransmon-integration.lock .venv/bin/python -m bench.trace_rate [--seconds 8] [--json FILE]

Root. For each load: a private veth test bed with TSO/GSO/GRO off (one event per
segment), nftables loss on the receiver's side, N bulk flows for S seconds, and
`retransmon trace --json` (default ring buffer) writing into a file. Reported:
events/s in the sender's namespace, records lost, the trace's segments against
the kernel's RetransSegs, the trace process's CPU time per event, and the BPF
programs' own run time per run (kernel.bpf_stats_enabled, on while measuring).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench.machine import describe
from bench.procstat import cpu_seconds
from retransmon.chaos.netns import settled_retranssegs
from retransmon.chaos.testbed import TestBed
from retransmon.kernel import libbpf
from tests.support.tracer import TraceProcess

LOADS = ((4, 10.0), (8, 10.0), (8, 20.0), (8, 30.0), (16, 10.0), (16, 20.0))  # (flows, loss %)


@dataclass
class Result:
    flows: int
    loss_percent: float
    seconds: float
    events: int  # records for the sender's namespace
    events_per_second: float
    segments: int
    kernel_retranssegs: int
    lost: int
    trace_cpu_seconds: float
    trace_cpu_us_per_event: float
    bpf_ns_per_run: float  # tp_btf/tcp_retransmit_skb, as the kernel measures it
    bpf_runs: int
    recursion_misses: int
    nice: int = 0  # the trace process's nice value


def prog_ids(pid: int) -> list[int]:
    """BPF programs the process holds, from /proc/PID/fdinfo."""
    ids = []
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                m = re.search(r"^prog_id:\s+(\d+)", f.read(), re.M)
        except OSError:
            continue
        if m:
            ids.append(int(m.group(1)))
    return sorted(set(ids))


def retransmit_prog_stats(pid: int) -> tuple[int, int, int]:
    """(run_time_ns, run_cnt, recursion_misses) of the process's tcp_retransmit_skb program."""
    for pid_prog in prog_ids(pid):
        out = subprocess.run(
            ["bpftool", "-j", "prog", "show", "id", str(pid_prog)], capture_output=True, text=True, check=True
        ).stdout
        info = json.loads(out)
        if str(info.get("name", "")).startswith("tp_btf_tcp_retr") and "synack" not in str(info.get("name")):
            return (
                int(info.get("run_time_ns", 0)),
                int(info.get("run_cnt", 0)),
                int(info.get("recursion_misses", 0)),
            )
    return 0, 0, 0


def run_load(flows: int, loss: float, seconds: float, nice: int = 0) -> Result:
    prefix = ("nice", "-n", str(nice)) if nice else ()
    with (
        TestBed(loss_percent=loss, offloads=False, prefix="rmbench") as tb,
        TraceProcess("--json", prefix=prefix) as trace,
    ):
        before = settled_retranssegs(tb.client)
        cpu0 = cpu_seconds(trace.pid)
        bpf0 = retransmit_prog_stats(trace.pid)
        started = time.monotonic()
        tb.send(flows=flows, duration=seconds)
        elapsed = time.monotonic() - started
        kernel = settled_retranssegs(tb.client) - before
        time.sleep(0.5)
        cpu = cpu_seconds(trace.pid) - cpu0
        bpf1 = retransmit_prog_stats(trace.pid)
        if trace.stop() != 0:
            raise RuntimeError(f"trace exited with {trace.returncode}: {trace.stderr}")
        events = segments = 0
        with open(trace.stdout_path) as f:
            for line in f:
                record = json.loads(line)
                if record["netns"] == tb.client.inode:
                    events += 1
                    segments += int(record["segments"])
        m = re.search(r"seen, (\d+) lost", trace.stderr)
        if m is None:
            raise RuntimeError(f"no summary on trace's stderr: {trace.stderr}")
        runs = bpf1[1] - bpf0[1]
        return Result(
            flows=flows,
            loss_percent=loss,
            seconds=round(elapsed, 2),
            events=events,
            events_per_second=round(events / elapsed),
            segments=segments,
            kernel_retranssegs=kernel,
            lost=int(m.group(1)),
            trace_cpu_seconds=round(cpu, 2),
            trace_cpu_us_per_event=round(cpu / max(events, 1) * 1e6, 2),
            bpf_ns_per_run=round((bpf1[0] - bpf0[0]) / runs) if runs else 0.0,
            bpf_runs=runs,
            recursion_misses=bpf1[2] - bpf0[2],
            nice=nice,
        )


def user_space_cost(records: int = 200_000) -> float:
    """Microseconds per record of trace's own work (decode, format, batched write): no kernel, no ctypes."""
    import io
    import ipaddress
    import threading

    from retransmon.live.clock import BootClock
    from retransmon.live.decode import encode_event
    from retransmon.live.trace import TraceOptions, Tracer

    laddr = ipaddress.ip_address("198.18.0.1").packed + bytes(12)
    raddr = ipaddress.ip_address("198.18.0.2").packed + bytes(12)
    raws = [
        encode_event(
            boot_ns=i * 1000,
            netns=1,
            pid=1,
            segments=1,
            lport=40000 + i % 8,
            rport=5001,
            comm=b"python3",
            laddr=laddr,
            raddr=raddr,
        )
        for i in range(records)
    ]
    tracer = Tracer(TraceOptions(json=True), io.StringIO(), BootClock(), threading.Event())
    started = time.process_time()
    for raw in raws:
        tracer.on_record(raw)
    tracer.flush()
    return (time.process_time() - started) / records * 1e6


def table(results: list[Result]) -> str:
    lines = [
        "| flows | loss | nice | events/s | events | lost | trace segments / RetransSegs | trace CPU "
        "| CPU per event | BPF ns/run | skipped runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.flows} | {r.loss_percent:g}% | {r.nice} | {r.events_per_second:,} "
            f"| {r.events:,} | {r.lost} "
            f"| {r.segments:,} / {r.kernel_retranssegs:,} | {r.trace_cpu_seconds} s in {r.seconds} s "
            f"| {r.trace_cpu_us_per_event} us | {r.bpf_ns_per_run:.0f} | {r.recursion_misses} |"
        )
    return "\n".join(lines)


def run(loads: list[tuple[int, float]] | None = None, seconds: float = 8.0, nice: int = 0) -> dict[str, Any]:
    """Every load in turn (root); the raw numbers, for report() and bench/results/trace.json."""
    decode_us = user_space_cost()
    stats_fd = libbpf.enable_run_time_stats()
    results = []
    try:
        for flows, loss in loads or LOADS:
            result = run_load(flows, loss, seconds, nice)
            print(json.dumps(asdict(result)), flush=True)
            results.append(result)
    finally:
        os.close(stats_fd)
    return {
        "libbpf": libbpf.version(),
        "decode_format_us": decode_us,
        "results": [asdict(r) for r in results],
    }


def report(result: dict[str, Any]) -> str:
    results = [Result(**r) for r in result["results"]]
    clean = [r for r in results if r.lost == 0]
    best = max(clean, key=lambda r: r.events_per_second) if clean else None
    lines = [table(results), ""]
    if best is not None:
        lines.append(
            f"Highest rate with nothing lost: {best.events_per_second:,} events/s "
            f"({best.flows} flows, {best.loss_percent:g}% loss), "
            f"{best.trace_cpu_us_per_event} us of trace CPU per event."
        )
    lines.append(
        "Decoding and formatting one record in Python, without the kernel: "
        f"{result['decode_format_us']:.2f} us."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trace_rate", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="traffic per load (default 8)")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--load", action="append", metavar="FLOWS:LOSS", help="e.g. 8:10 (default: a fixed series)"
    )
    parser.add_argument("--nice", type=int, default=0, help="run trace under `nice -n N` (default 0)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.trace_rate needs root (BPF, network namespaces)", file=sys.stderr)
        return 1
    loads = [(int(x.split(":")[0]), float(x.split(":")[1])) for x in args.load] if args.load else list(LOADS)
    info = {**describe(), "libbpf": libbpf.version()}
    print(", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    result = run(loads, args.seconds, args.nice)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, **result}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
