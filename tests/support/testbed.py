"""Two namespaces, a veth between them, optional loss, and a sink: a TCP test bed in one object."""

from __future__ import annotations

import contextlib
import subprocess
from types import TracebackType

from retransmon.chaos.loss import Impairment
from retransmon.chaos.netns import NetNamespace
from retransmon.chaos.traffic import run_sender, start_sink
from retransmon.chaos.veth import VethPair

SINK_PORT = 5001


class TestBed:
    """`client` --veth-- `server`, a sink listening in `server` on `port`.

    loss_percent > 0 adds an nftables/netem Impairment on the server's veth limited to
    `port`: "ingress" drops data arriving at the server (the client retransmits),
    "egress" drops what the server sends (ACKs; SYN-ACK retransmits on connect).
    offloads=False turns TSO/GSO/GRO off so loss and retransmits are per segment.
    Everything is built in the constructor and torn down by close(), in reverse order.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        loss_percent: float = 0,
        offloads: bool = True,
        ipv6: bool = False,
        loss_direction: str = "ingress",
        prefix: str = "rmtest",
    ) -> None:
        self.port = SINK_PORT
        self.impairment: Impairment | None = None
        self._stack = contextlib.ExitStack()
        try:
            self.client = self._stack.enter_context(NetNamespace(f"{prefix}-client"))
            self.server = self._stack.enter_context(NetNamespace(f"{prefix}-server"))
            self.veth = self._stack.enter_context(VethPair(self.client, self.server))
            if not offloads:
                self.veth.set_offloads(False)
            self.client_ip = self.veth.left_ip6 if ipv6 else self.veth.left_ip4
            self.server_ip = self.veth.right_ip6 if ipv6 else self.veth.right_ip4
            if loss_percent > 0:
                self.impairment = self._stack.enter_context(
                    Impairment(
                        self.server,
                        self.veth.right_ifname,
                        loss_percent,
                        direction=loss_direction,
                        ports=[self.port],
                    )
                )
            # Ended (by PID) when the server namespace closes.
            self.sink: subprocess.Popen[str] = start_sink(self.server, self.server_ip, self.port)
        except BaseException:
            self._stack.close()
            raise

    def send(
        self, flows: int, duration: float, nbytes: int | None = None, connections: int | None = None
    ) -> dict[str, object]:
        """Run the sender in `client` against the sink; returns its JSON summary."""
        return run_sender(self.client, self.server_ip, self.port, flows, duration, nbytes, connections)

    def close(self) -> None:
        """Tear everything down (sink, impairment, veth, namespaces). Idempotent."""
        self._stack.close()

    def __enter__(self) -> TestBed:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
