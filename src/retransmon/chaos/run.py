"""One `retransmon chaos` run: agent in-process, private network, traffic, progress, report."""

from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from retransmon.attribution.labels import sent_labels
from retransmon.chaos.measure import (
    AGENT_LABELS,
    KERNEL_CAUSE_COUNTERS,
    ChaosReport,
    Counts,
    FlowKey,
    cause_notes,
    flow_rows,
    growth,
    namespace_rows,
    tally,
)
from retransmon.chaos.netns import tcp_ext_counters
from retransmon.chaos.network import build_testbed, notes, require_netem
from retransmon.chaos.options import ChaosOptions
from retransmon.chaos.provoke import Provocations
from retransmon.chaos.signals import SignalGate
from retransmon.chaos.testbed import TestBed
from retransmon.export.agent import Agent, ServeOptions, build_agent

REFRESH = 1.0  # seconds between progress updates (each one drains the kernel's flow table)
SETTLE_TIMEOUT = 15.0  # after the traffic: wait this long at most for counters to stop moving
TRAFFIC_GRACE = 90.0  # flows end with a drain that may take a while: stopped this long after expected


class Measurement:
    """The agent's per-flow counts for the run's namespaces, relative to a baseline."""

    def __init__(self, agent: Agent, net: TestBed) -> None:
        self._agent = agent
        self._net = net
        self._roles = {ns.inode: role for role, ns in net.namespaces.items()}
        self._labels = AGENT_LABELS
        self._sent_labels = sent_labels(AGENT_LABELS)
        self.unclassified = 0  # segments of unknown cause (labelled timeout) since the baseline
        self._flows_before, self._unclassified_before = self._flows()
        self._kernel_before = self._kernel()

    def _flows(self) -> tuple[dict[FlowKey, Counts], int]:
        snap = self._agent.harvester.snapshot()
        flows = tally(snap.retransmits, snap.sent, self._labels, self._sent_labels, self._roles)
        return flows, snap.losses.unclassified_segments

    def _kernel(self) -> dict[str, dict[str, int]]:
        """Tcp counters (RetransSegs, OutSegs, ...) and the TcpExt ones causes equal, per role."""
        counters = self._net.kernel_counters()
        for role, ns in self._net.namespaces.items():
            ext = tcp_ext_counters(ns)
            counters[role].update({name: ext.get(name, 0) for name in KERNEL_CAUSE_COUNTERS})
        return counters

    def now(self) -> tuple[dict[FlowKey, Counts], dict[str, dict[str, int]]]:
        """(flow growth, kernel counter growth per role) since the baseline."""
        kernel_now = self._kernel()
        flows_now, self.unclassified = self._flows()
        self.unclassified -= self._unclassified_before
        flows = growth(flows_now, self._flows_before)
        kernel = {
            role: {k: v - self._kernel_before.get(role, {}).get(k, 0) for k, v in counters.items()}
            for role, counters in kernel_now.items()
        }
        return flows, kernel

    def settled(
        self, timeout: float = SETTLE_TIMEOUT
    ) -> tuple[dict[FlowKey, Counts], dict[str, dict[str, int]]]:
        """A reading taken when the kernel's counters stopped moving and the agent caught up."""
        deadline = time.monotonic() + timeout
        previous: dict[str, int] | None = None
        while True:
            flows, kernel = self.now()
            retrans = {role: c.get("RetransSegs", 0) for role, c in kernel.items()}
            ours = {role: sum(c.segments for k, c in flows.items() if k.role == role) for role in retrans}
            if (retrans == previous and ours == retrans) or time.monotonic() > deadline:
                return flows, kernel
            previous = retrans
            time.sleep(0.3)


def _stats(flows: dict[FlowKey, Counts], kernel: dict[str, dict[str, int]]) -> str:
    seen = sum(c.segments for c in flows.values())
    retrans = sum(c.get("RetransSegs", 0) for c in kernel.values())
    return f"retransmitted segments: kernel {retrans}, retransmon {seen}"


def expected_seconds(opts: ChaosOptions) -> float:
    """How long the traffic should take: the duration, or ~1 s per connection per worker."""
    if opts.connections is None:
        return opts.duration
    return opts.connections / opts.flows


def drive(  # noqa: PLR0917 (one run's parts)
    net: TestBed,
    opts: ChaosOptions,
    measure: Measurement,
    gate: SignalGate,
    console: Console,
    provoke: Provocations,
) -> tuple[float, bool]:
    """Run the traffic (and its black hole) with a progress display; (seconds, interrupted)."""
    churn = opts.connections is not None
    what = f"{opts.connections} short connections" if churn else f"{opts.flows} flows for {opts.duration:g} s"
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    start = time.monotonic()
    proc = net.start_sender(opts.flows, opts.duration, connections=opts.connections)
    with gate.soft() as stop, progress:
        task = progress.add_task(what, total=None if churn else opts.duration, stats="")
        limit = start + expected_seconds(opts) + TRAFFIC_GRACE
        while proc.poll() is None and not stop.is_set() and time.monotonic() < limit:
            stop.wait(min(REFRESH, provoke.tick(time.monotonic() - start)))
            elapsed = time.monotonic() - start
            if progress.disable:
                continue
            flows, kernel = measure.now()
            progress.update(task, completed=min(elapsed, opts.duration), stats=_stats(flows, kernel))
    seconds = time.monotonic() - start
    interrupted = proc.poll() is None
    provoke.end()
    net.stop_sender()
    return seconds, interrupted


def run_chaos(
    options: ChaosOptions, out: Console, err: Console, as_json: bool = False, hooks: str = "auto"
) -> ChaosReport:
    """Build, drive, measure and tear down; the report of what was seen. Signals: see signals.py."""
    options.validate()
    require_netem(options)
    gate = SignalGate()
    gate.install()
    try:
        with contextlib.ExitStack() as stack:
            err.print("loading the BPF programs and building the test network ...", highlight=False)
            agent = build_agent(
                ServeOptions(labels=",".join(AGENT_LABELS), max_series=1_000_000, hooks=hooks)
            )
            stack.callback(agent.close)
            net = stack.enter_context(build_testbed(options))
            provoke = stack.enter_context(Provocations(net, options))
            stack.callback(gate.ignore)  # runs first on the way out: nothing interrupts the cleanup
            measure = Measurement(agent, net)
            seconds, interrupted = drive(net, options, measure, gate, err, provoke)
            flows, kernel = measure.settled()
            snap = agent.harvester.snapshot(harvest=False)
            dropped = [n for n in (net.dropped(), provoke.dropped() or None) if n is not None]
            return ChaosReport(
                loss_percent=options.loss_percent,
                method=net.method,
                seconds=seconds,
                interrupted=interrupted,
                namespaces=namespace_rows(
                    flows, {role: (ns.name, ns.inode) for role, ns in net.namespaces.items()}, kernel
                ),
                flows=flow_rows(flows),
                dropped_packets=sum(dropped) if dropped else None,
                traffic=None if interrupted else net.sender_result(),
                hooks=snap.hooks,
                counting="exact" if snap.exact else "per-event",
                notes=notes(options, net) + cause_notes(snap.hooks),
                unclassified_segments=measure.unclassified,
                blackhole=options.blackhole_window,
                drop_handshakes=options.drop_handshakes,
            )
    finally:
        gate.restore()
