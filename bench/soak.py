"""Soak: `retransmon serve` under continuous lossy traffic and a scrape every second.

    nice -n 10 .venv/bin/python -m bench.soak --duration 3600 --out bench/results/soak.csv

Root only. Builds the test bed (two namespaces, a veth, nftables loss at the server),
shapes the client's side to a modest rate with tbf so the soak leaves the machine's
cores to others, runs the agent with only CAP_BPF and CAP_PERFMON (setpriv), and
every second scrapes /metrics; every --sample seconds it records the agent's RSS,
open file descriptors and threads. Short connections churn every 30 s so sockets
come and go. At the end the traffic stops and the exported total is compared with
the kernel's RetransSegs of the client namespace. Prints a summary; the CSV has
every sample.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.procstat import cpu_seconds
from retransmon.chaos.netns import NetNamespace, tcp_counters
from retransmon.chaos.testbed import TestBed
from retransmon.chaos.traffic import run_sender
from tests.support import AgentProcess, total
from tests.support.tls import bcrypt_hash, make_certificates, web_config_yaml

SETPRIV = [
    "setpriv",
    "--inh-caps=-all,+bpf,+perfmon",
    "--ambient-caps=-all,+bpf,+perfmon",
    "--bounding-set=-all,+bpf,+perfmon",
]
LABELS = "ip_version,src_ip,dst_ip,service_port,state,kind,netns"
SEGMENTS = "tcp_retransmitted_segments_total"


@dataclass
class ProcessStats:
    rss_kib: int
    fds: int
    threads: int


def process_stats(pid: int) -> ProcessStats:
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return ProcessStats(rss, len(os.listdir(f"/proc/{pid}/fd")), threads)


def exported(agent: AgentProcess, ns: NetNamespace) -> int:
    return int(total(agent.scrape(), SEGMENTS, netns=str(ns.inode)))


class Traffic:
    """A long bulk flow (rate-limited by tbf) plus a burst of short connections every 30 s."""

    def __init__(self, tb: TestBed, duration: float, flows: int) -> None:
        self.tb = tb
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.bulk = threading.Thread(target=self._bulk, args=(duration, flows), daemon=True)
        self.churn = threading.Thread(target=self._churn, daemon=True)

    def start(self) -> None:
        self.bulk.start()
        self.churn.start()

    def _bulk(self, duration: float, flows: int) -> None:
        try:
            run_sender(self.tb.client, self.tb.server_ip, self.tb.port, flows=flows, duration=duration)
        except Exception as exc:
            self.errors.append(f"bulk: {exc}")

    def _churn(self) -> None:
        while not self.stop.wait(30):
            try:
                run_sender(
                    self.tb.client, self.tb.server_ip, self.tb.port, flows=2, duration=0, connections=20
                )
            except Exception as exc:
                self.errors.append(f"churn: {exc}")

    def join(self) -> None:
        self.stop.set()
        self.bulk.join(timeout=120)
        self.churn.join(timeout=120)


def shape(tb: TestBed, rate: str) -> None:
    """tbf on the client's veth: the bulk flow sends at most *rate*."""
    tbf = ["tbf", "rate", rate, "burst", "64kb", "latency", "100ms"]
    tb.client.run(["tc", "qdisc", "replace", "dev", tb.veth.left_ifname, "root", *tbf])


def settled(agent: AgentProcess, ns: NetNamespace) -> tuple[int, int]:
    for _ in range(60):
        before = tcp_counters(ns)["RetransSegs"]
        ours = exported(agent, ns)
        if tcp_counters(ns)["RetransSegs"] == before:
            return before, ours
        time.sleep(0.5)
    raise RuntimeError("RetransSegs never settled")


def agent_for(stack: contextlib.ExitStack, tls: bool) -> AgentProcess:
    """The agent under setpriv; with *tls*, behind TLS and basic auth (bcrypt cost 10)."""
    if not tls:
        return stack.enter_context(AgentProcess("--labels", LABELS, prefix=SETPRIV))
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="rmsoak-tls-"))
    certs = make_certificates(directory)
    config = os.path.join(directory, "web.yml")
    with open(config, "w") as f:
        f.write(web_config_yaml(certs, users={"prometheus": bcrypt_hash("soak", cost=10)}))
    agent = AgentProcess(
        "--labels",
        LABELS,
        "--web.config.file",
        config,
        prefix=SETPRIV,
        tls=certs.client_context(),
        auth=("prometheus", "soak"),
    )
    return stack.enter_context(agent)


def run(
    duration: float, sample: float, out: str, *, rate: str, loss: float, flows: int, tls: bool, prefix: str
) -> int:
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    rows: list[dict[str, float]] = []
    scrapes = failures = 0
    slowest = 0.0
    with contextlib.ExitStack() as stack:
        tb = stack.enter_context(TestBed(loss_percent=loss, prefix=prefix))
        agent = agent_for(stack, tls)
        shape(tb, rate)
        kernel0, ours0 = settled(agent, tb.client)
        traffic = Traffic(tb, duration, flows)
        started = time.monotonic()
        traffic.start()
        next_sample = started
        while (now := time.monotonic()) < started + duration:
            t0 = time.monotonic()
            try:
                status, _, _ = agent.get("/metrics", timeout=10)
                failures += status != 200
            except OSError:
                failures += 1
            scrapes += 1
            slowest = max(slowest, time.monotonic() - t0)
            if now >= next_sample:
                st = process_stats(agent.pid)
                kernel = tcp_counters(tb.client)["RetransSegs"] - kernel0
                row = {
                    "elapsed_s": round(now - started, 1),
                    "cpu_s": round(cpu_seconds(agent.pid), 2),
                    "rss_kib": st.rss_kib,
                    "fds": st.fds,
                    "threads": st.threads,
                    "kernel_retrans_segs": kernel,
                    "scrapes": scrapes,
                    "scrape_failures": failures,
                }
                rows.append(row)
                print(",".join(f"{k}={v}" for k, v in row.items()), flush=True)
                next_sample = now + sample
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        traffic.join()
        kernel1, ours1 = settled(agent, tb.client)
        code = agent.stop()
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    kernel, ours = kernel1 - kernel0, ours1 - ours0
    first, last = rows[: max(1, len(rows) // 10)], rows[-max(1, len(rows) // 10) :]

    def avg(part: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in part) / len(part)

    print(f"duration {rows[-1]['elapsed_s']:.0f} s, {scrapes} scrapes, {failures} failed")
    print(f"slowest scrape {slowest:.3f} s")
    for key in ("rss_kib", "fds", "threads"):
        values = [r[key] for r in rows]
        print(
            f"{key}: first tenth {avg(first, key):.0f}, last tenth {avg(last, key):.0f}, "
            f"min {min(values):.0f}, max {max(values):.0f}"
        )
    print(f"RetransSegs (client ns) {kernel}, exported {ours}, exact={kernel == ours}")
    print(f"agent exit code {code}; traffic errors: {traffic.errors or 'none'}")
    return 0 if failures == 0 and kernel == ours and code == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3600, help="seconds of traffic (default 3600)")
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples (default 10)")
    parser.add_argument("--rate", default="8mbit", help="tbf rate of the bulk flows (default 8mbit)")
    parser.add_argument("--loss", type=float, default=3, help="percent of data dropped (default 3)")
    parser.add_argument("--flows", type=int, default=2, help="parallel bulk flows (default 2)")
    parser.add_argument("--tls", action="store_true", help="serve TLS with basic auth (a handshake a second)")
    parser.add_argument("--prefix", default="rmsoak", help="name prefix of the test namespaces")
    parser.add_argument("--out", default="bench/results/soak.csv")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("soak needs root (BPF, network namespaces)", file=sys.stderr)
        return 2
    try:
        return run(
            args.duration,
            args.sample,
            args.out,
            rate=args.rate,
            loss=args.loss,
            flows=args.flows,
            tls=args.tls,
            prefix=args.prefix,
        )
    except subprocess.CalledProcessError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
