"""The private network of one chaos run: two namespaces, a veth, loss (and delay), a sink.

client (rmchaos-<pid>-<n>) --veth rmv66a/rmv66b-- server (rmchaos-<pid>-<n+1>), the sink
listening in server. Nothing is created in the host's namespace: the veth is made
inside client with its peer placed straight into server, and the nftables table
or netem qdisc lives in one of the two namespaces, so deleting them removes it all.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from types import TracebackType

from retransmon.chaos.loss import Impairment, netem_available
from retransmon.chaos.netns import NetNamespace, tcp_counters
from retransmon.chaos.options import PREFIX, SINK_PORT, VETH_INDEX, ChaosOptions
from retransmon.chaos.traffic import module_env, sender_argv, start_sink
from retransmon.chaos.veth import VethPair
from retransmon.errors import EnvironmentProblem

NETEM_FIX = (
    "load the netem qdisc (modprobe sch_netem; Debian/Ubuntu ship it in linux-modules-extra), "
    "or leave out {flags}: --loss alone works without netem"
)


def describe_netem_missing(flags: list[str]) -> EnvironmentProblem:
    verb = "needs" if len(flags) == 1 else "need"
    return EnvironmentProblem(
        f"{', '.join(flags)} {verb} the netem qdisc, which this kernel does not have",
        fix=NETEM_FIX.format(flags=" and ".join(flags)),
    )


def require_netem(options: ChaosOptions) -> None:
    """Fail (exit 1, nothing built) when an option needs netem and the kernel has none."""
    if options.wants_netem and not netem_available():
        raise describe_netem_missing(options.netem_flags)


class ChaosNetwork:
    """Built in the constructor, removed by close() in reverse order (also on errors)."""

    def __init__(self, options: ChaosOptions, prefix: str = PREFIX, veth_index: int = VETH_INDEX) -> None:
        self.options = options
        self.port = SINK_PORT
        self.impairment: Impairment | None = None
        self.notes: list[str] = []
        self._sender: subprocess.Popen[str] | None = None
        self._stack = contextlib.ExitStack()
        try:
            self._build(prefix, veth_index)
        except BaseException:
            self._stack.close()
            raise

    def _build(self, prefix: str, veth_index: int) -> None:
        opts = self.options
        # Decided before anything is created: a missing netem fails without side effects.
        has_netem = netem_available() if (opts.wants_netem or opts.loss_percent > 0) else False
        if opts.wants_netem and not has_netem:
            raise describe_netem_missing(opts.netem_flags)
        self.client = self._stack.enter_context(NetNamespace(f"{prefix}-client"))
        self.server = self._stack.enter_context(NetNamespace(f"{prefix}-server"))
        self.veth = self._stack.enter_context(VethPair(self.client, self.server, index=veth_index))
        if not opts.offloads:
            self.veth.set_offloads(False)
        self.client_ip = self.veth.left_ip6 if opts.ipv6 else self.veth.left_ip4
        self.server_ip = self.veth.right_ip6 if opts.ipv6 else self.veth.right_ip4
        if has_netem:
            # Like the blog's `tc qdisc add ... netem`: on what the client sends.
            self.impairment = self._stack.enter_context(
                Impairment(
                    self.client,
                    self.veth.left_ifname,
                    opts.loss_percent,
                    delay_ms=opts.delay_ms,
                    jitter_ms=opts.jitter_ms,
                    reorder_percent=opts.reorder_percent,
                    direction="egress",
                    method="netem",
                )
            )
        elif opts.loss_percent > 0:
            # What arrives at the server's port, so the client retransmits.
            self.impairment = self._stack.enter_context(
                Impairment(
                    self.server,
                    self.veth.right_ifname,
                    opts.loss_percent,
                    direction="ingress",
                    ports=[self.port],
                    method="nftables",
                )
            )
            self.notes.append(
                "netem is not available on this kernel: loss is made with nftables (numgen random); "
                "delay, jitter and reordering are unavailable"
            )
        self.sink = start_sink(self.server, self.server_ip, self.port)

    @property
    def method(self) -> str:
        return self.impairment.method_used if self.impairment else "none"

    @property
    def namespaces(self) -> dict[str, NetNamespace]:
        return {"client": self.client, "server": self.server}

    def kernel_counters(self) -> dict[str, dict[str, int]]:
        """The kernel's Tcp: counters (RetransSegs, OutSegs, ...) of each namespace."""
        return {role: tcp_counters(ns) for role, ns in self.namespaces.items()}

    def dropped(self) -> int | None:
        if self.impairment is None:
            return None
        return self.impairment.dropped_packets()

    def start_traffic(self) -> subprocess.Popen[str]:
        """Start the sender in client (bulk flows, or churn with --connections)."""
        opts = self.options
        argv = sender_argv(self.server_ip, self.port, opts.flows, opts.duration, connections=opts.connections)
        self._sender = self.client.popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=module_env(),
        )
        return self._sender

    def traffic_result(self) -> dict[str, object] | None:
        """The sender's JSON summary once it has ended by itself, else None."""
        proc = self._sender
        if proc is None or proc.poll() is None or proc.returncode != 0 or proc.stdout is None:
            return None
        lines = proc.stdout.read().strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else None
        except ValueError:
            return None
        return result if isinstance(result, dict) else None

    def stop_traffic(self) -> None:
        """End the sender (by PID) if it still runs."""
        proc = self._sender
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Remove everything (sender, sink, impairment, veth, namespaces). Idempotent."""
        self.stop_traffic()
        self._stack.close()

    def __enter__(self) -> ChaosNetwork:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
