"""Two namespaces, a veth between them, optional loss, and a sink: the private TCP network that
`retransmon chaos`, the tests, bench/ and scripts/ all build, in one object.

client (<prefix>-client-<pid>-<n>) --veth rmv<i>a/rmv<i>b-- server (<prefix>-server-<pid>-<n>),
the sink listening in server on SINK_PORT. Nothing is created in the host's namespace: the veth
is made inside client with its peer placed straight into server, and the nftables table or
netem qdisc lives in one of the two, so deleting the namespaces removes it all.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from dataclasses import dataclass
from types import TracebackType

from retransmon.chaos.loss import Impairment
from retransmon.chaos.netns import TEST_PREFIX, NetNamespace, tcp_counters
from retransmon.chaos.process import signal_and_wait
from retransmon.chaos.traffic import module_env, run_sender, sender_argv, start_sink
from retransmon.chaos.veth import VethPair

SINK_PORT = 5001


@dataclass(frozen=True)
class Netem:
    """Shape with a netem qdisc on the client's veth instead: loss and delay on all it sends.

    Like the blog's `tc qdisc add dev ... netem`. Needs the kernel's sch_netem.
    """

    delay_ms: float = 0
    jitter_ms: float = 0
    reorder_percent: float = 0


class TestBed:
    """`client` --veth-- `server`, a sink listening in `server` on `port`.

    loss_percent > 0 adds an Impairment. By default it is an nftables table on the server's
    veth limited to `port`: loss_direction "ingress" drops data arriving at the server (the
    client retransmits), "egress" drops what the server sends (ACKs; SYN-ACK retransmits on
    connect). With `netem`, a netem qdisc on the client's veth does the loss (and the delay).
    offloads=False turns TSO/GSO/GRO off so loss and retransmits are per segment.
    Namespace names start with `prefix`: "rmtest" for tests, "rmchaos" for `chaos`, whose
    --cleanup looks for that. Everything is built in the constructor and torn down by close(),
    in reverse order; an error half-way through the constructor removes what was built.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        loss_percent: float = 0,
        offloads: bool = True,
        ipv6: bool = False,
        loss_direction: str = "ingress",
        prefix: str = TEST_PREFIX,
        *,
        netem: Netem | None = None,
        veth_index: int = 0,
    ) -> None:
        self.port = SINK_PORT
        self.impairment: Impairment | None = None
        self._sender: subprocess.Popen[str] | None = None
        self._stack = contextlib.ExitStack()
        try:
            self.client = self._stack.enter_context(NetNamespace(f"{prefix}-client"))
            self.server = self._stack.enter_context(NetNamespace(f"{prefix}-server"))
            self.veth = self._stack.enter_context(VethPair(self.client, self.server, index=veth_index))
            if not offloads:
                self.veth.set_offloads(False)
            self.client_ip = self.veth.left_ip6 if ipv6 else self.veth.left_ip4
            self.server_ip = self.veth.right_ip6 if ipv6 else self.veth.right_ip4
            if netem is not None:
                self.impairment = self._stack.enter_context(
                    Impairment(
                        self.client,
                        self.veth.left_ifname,
                        loss_percent,
                        delay_ms=netem.delay_ms,
                        jitter_ms=netem.jitter_ms,
                        reorder_percent=netem.reorder_percent,
                        direction="egress",
                        method="netem",
                    )
                )
            elif loss_percent > 0:
                self.impairment = self._stack.enter_context(
                    Impairment(
                        self.server,
                        self.veth.right_ifname,
                        loss_percent,
                        direction=loss_direction,
                        ports=[self.port],
                        method="nftables",
                    )
                )
            # Ended (by PID) when the server namespace closes.
            self.sink: subprocess.Popen[str] = start_sink(self.server, self.server_ip, self.port)
        except BaseException:
            self._stack.close()
            raise

    @property
    def method(self) -> str:
        """How packets are dropped: "netem", "nftables", or "none"."""
        return self.impairment.method_used if self.impairment else "none"

    @property
    def namespaces(self) -> dict[str, NetNamespace]:
        return {"client": self.client, "server": self.server}

    def kernel_counters(self) -> dict[str, dict[str, int]]:
        """The kernel's Tcp: counters (RetransSegs, OutSegs, ...) of each namespace, by role."""
        return {role: tcp_counters(ns) for role, ns in self.namespaces.items()}

    def dropped(self) -> int | None:
        """Packets the impairment dropped so far; None without one."""
        return self.impairment.dropped_packets() if self.impairment else None

    def send(
        self, flows: int, duration: float, nbytes: int | None = None, connections: int | None = None
    ) -> dict[str, object]:
        """Run the sender in `client` against the sink and wait; returns its JSON summary."""
        return run_sender(self.client, self.server_ip, self.port, flows, duration, nbytes, connections)

    def start_sender(
        self, flows: int, duration: float, connections: int | None = None
    ) -> subprocess.Popen[str]:
        """Start the sender in `client` without waiting (bulk flows, or churn with `connections`)."""
        argv = sender_argv(self.server_ip, self.port, flows, duration, connections=connections)
        self._sender = self.client.popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=module_env(),
        )
        return self._sender

    def sender_result(self) -> dict[str, object] | None:
        """The started sender's JSON summary once it has ended by itself, else None."""
        proc = self._sender
        if proc is None or proc.poll() is None or proc.returncode != 0 or proc.stdout is None:
            return None
        lines = proc.stdout.read().strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else None
        except ValueError:
            return None
        return result if isinstance(result, dict) else None

    def stop_sender(self) -> None:
        """End the started sender (by PID) if it still runs."""
        if self._sender is not None:
            signal_and_wait(self._sender, signal.SIGTERM, timeout=5)

    def close(self) -> None:
        """Tear everything down (sender, sink, impairment, veth, namespaces). Idempotent."""
        self.stop_sender()
        self._stack.close()

    def __enter__(self) -> TestBed:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
