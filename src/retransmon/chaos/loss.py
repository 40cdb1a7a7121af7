"""Packet loss (and, where netem exists, delay) on one interface of a test namespace.

Two mechanisms:

* netem: a root qdisc on the interface; acts on what the interface *sends* (egress).
  Supports loss, delay and jitter, but filters nothing: every packet is eligible.
* nftables: a table hooked on `input` ("ingress") or `output` ("egress") of the
  namespace, dropping TCP packets with `numgen random`. Loss only, but it can be
  limited to ports and TCP flag patterns. Many kernels (this project's CI VM among
  them) ship without the netem module, so this is the usual path.

Both act on skbs, not wire segments: with TSO/GSO/GRO on, one drop can lose a whole
64 KiB super-packet. Turn offloads off (VethPair.set_offloads) for per-segment loss.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import threading
from collections.abc import Sequence
from types import TracebackType

from retransmon.chaos.errors import ImpairmentUnavailable, TestbedError
from retransmon.chaos.netns import NetNamespace

DIRECTIONS = {"ingress": "input", "egress": "output"}
METHODS = ("auto", "netem", "nftables")
COUNTER_NAME = "drops"
PROBE_PREFIX = "rmprobe"  # netem_available's scratch namespace: rmprobe-<pid>-<n> (chaos --cleanup)
_RANDOM_MOD = 10000  # loss resolution: 0.01 %
_INC_MOD = 1_000_000_000  # `first`: numgen inc counts eligible packets, wrapping after this many

_PURE_ACK = "tcp flags & (fin|syn|rst|psh|ack) == ack"


def _pure_ack_without_payload() -> list[str]:
    # nft cannot compare two header fields, so enumerate every TCP header length
    # (doff 5..15) with the packet length that leaves zero payload bytes. IPv4 options
    # and IPv6 extension headers are not handled: such packets are never dropped.
    v4 = [
        f"meta nfproto ipv4 {_PURE_ACK} ip hdrlength 5 tcp doff {doff} ip length {20 + 4 * doff}"
        for doff in range(5, 16)
    ]
    v6 = [
        f"meta nfproto ipv6 ip6 nexthdr tcp {_PURE_ACK} tcp doff {doff} ip6 length {4 * doff}"
        for doff in range(5, 16)
    ]
    return v4 + v6


# Accepted `tcp_flags` values, each a list of nft match expressions (a packet is eligible
# for dropping if it matches any of them).
TCP_FLAG_FILTERS: dict[str, list[str]] = {
    # SYN without ACK: the client's connection requests (causes SYN retransmits).
    "syn": ["tcp flags & (syn|ack) == syn"],
    # SYN+ACK: the server's handshake replies (causes SYN and SYN-ACK retransmits).
    "syn-ack": ["tcp flags & (syn|ack) == syn|ack"],
    # ACK without SYN: every segment after the handshake.
    "ack": ["tcp flags & (syn|ack) == ack"],
    # ACK-only segments with no payload. With no data flowing, that is the handshake's
    # final ACK, so the server keeps retransmitting its SYN-ACK.
    "handshake-ack": _pure_ack_without_payload(),
}


def loss_threshold(loss_percent: float) -> int:
    """The `numgen random mod 10000 < N` bound for loss_percent (0..100, 0.01 resolution)."""
    if not (math.isfinite(loss_percent) and 0 <= loss_percent <= 100):
        raise ValueError(f"loss_percent must be between 0 and 100, not {loss_percent}")
    return round(loss_percent * _RANDOM_MOD / 100)


def build_ruleset(
    table: str,
    hook: str,
    loss_percent: float,
    ports: Sequence[int] | None = None,
    tcp_flags: str | None = None,
    *,
    first: int | None = None,
) -> str:
    """The `nft -f` text for one loss table (family inet). Pure; see module docstring.

    first: drop only the first N eligible packets (then none) instead of loss_percent of them.
    """
    if hook not in DIRECTIONS.values():
        raise ValueError(f"hook must be one of {sorted(DIRECTIONS.values())}, not {hook!r}")
    if tcp_flags is not None and tcp_flags not in TCP_FLAG_FILTERS:
        raise ValueError(f"tcp_flags must be None or one of {sorted(TCP_FLAG_FILTERS)}, not {tcp_flags!r}")
    for port in ports or ():
        if not 0 < port < 65536:
            raise ValueError(f"invalid port {port}")
    threshold = loss_threshold(loss_percent)
    if first is not None and not 0 <= first < _INC_MOD:
        raise ValueError(f"first must be between 0 and {_INC_MOD - 1}, not {first}")

    if first is not None:
        # numgen last, so it counts only the packets the filters let through: 0, 1, 2, ...
        # (one count per rule: a filter of several expressions counts each separately).
        limit = f"numgen inc mod {_INC_MOD} < {first}" if first > 0 else None
    elif threshold > 0:
        # numgen last, so each packet draws one random number at most.
        limit = f"numgen random mod {_RANDOM_MOD} < {threshold}" if threshold < _RANDOM_MOD else ""
    else:
        limit = None
    drop_rules = [
        " ".join(filter(None, [match, limit, f"counter name {COUNTER_NAME} drop"]))
        for match in (TCP_FLAG_FILTERS[tcp_flags] if tcp_flags else [""])
        if limit is not None
    ]

    # `goto` (not `jump`): a packet whose sport and dport both match is still only
    # considered once, and falls through to the base chain's accept policy.
    if ports:
        port_set = "{ " + ", ".join(str(p) for p in sorted(set(ports))) + " }"
        dispatch = [
            f"meta l4proto tcp tcp dport {port_set} goto loss",
            f"meta l4proto tcp tcp sport {port_set} goto loss",
        ]
    else:
        dispatch = ["meta l4proto tcp goto loss"]

    lines = [
        f"table inet {table} {{",
        f"\tcounter {COUNTER_NAME} {{",
        "\t}",
        "\tchain loss {",
        *(f"\t\t{rule}" for rule in drop_rules),
        "\t}",
        "\tchain filter {",
        f"\t\ttype filter hook {hook} priority filter; policy accept;",
        *(f"\t\t{rule}" for rule in dispatch),
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def netem_args(
    ifname: str, loss_percent: float, delay_ms: float = 0, jitter_ms: float = 0, reorder_percent: float = 0
) -> list[str]:
    """`tc qdisc add` argv for a root netem qdisc on ifname."""
    loss_threshold(loss_percent)  # validates
    loss_threshold(reorder_percent)
    if delay_ms < 0 or jitter_ms < 0:
        raise ValueError("delay_ms and jitter_ms must not be negative")
    if jitter_ms > 0 and delay_ms <= 0:
        raise ValueError("jitter_ms needs delay_ms > 0")
    if reorder_percent > 0 and delay_ms <= 0:
        raise ValueError(
            "reorder_percent needs delay_ms > 0 (netem reorders by sending some packets undelayed)"
        )
    argv = ["tc", "qdisc", "add", "dev", ifname, "root", "netem"]
    if loss_percent > 0:
        argv += ["loss", f"{loss_percent:g}%"]
    if delay_ms > 0:
        argv += ["delay", f"{delay_ms:g}ms"]
        if jitter_ms > 0:
            argv.append(f"{jitter_ms:g}ms")
        if reorder_percent > 0:
            argv += ["reorder", f"{reorder_percent:g}%"]
    return argv


@functools.cache
def netem_available() -> bool:
    """Whether the netem qdisc can be created (probed once, on `lo` of a scratch namespace)."""
    with NetNamespace(PROBE_PREFIX) as ns:
        return (
            ns.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "loss", "1%"], check=False).returncode
            == 0
        )


_table_ids = itertools.count()
_table_lock = threading.Lock()


class Impairment:
    """Drop (or, with netem, delay) packets on `ifname` in `ns` until closed.

    direction: "ingress" (packets the namespace receives) or "egress" (packets it sends).
    ports: only TCP packets whose source or destination port is listed.
    tcp_flags: None (any TCP packet) or one of TCP_FLAG_FILTERS: "syn", "syn-ack",
        "ack", "handshake-ack".
    method: "auto" uses netem when it can do what is asked (egress, no port or flag
        filter) and the kernel has it, else nftables; "netem" or "nftables" forces one.
    reorder_percent: with netem, send this share of packets without the delay (needs delay_ms).
    first: drop only the first N packets that pass the filters, not loss_percent (nftables).
    Delay, jitter or reordering need netem: ImpairmentUnavailable is raised when it cannot be used.
    """

    def __init__(  # noqa: PLR0917 (the documented signature)
        self,
        ns: NetNamespace,
        ifname: str,
        loss_percent: float,
        delay_ms: float = 0,
        jitter_ms: float = 0,
        direction: str = "ingress",
        ports: list[int] | None = None,
        tcp_flags: str | None = None,
        method: str = "auto",
        reorder_percent: float = 0,
        first: int | None = None,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'ingress' or 'egress', not {direction!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        self.ns = ns
        self.ifname = ifname
        self.loss_percent = loss_percent
        self.direction = direction
        self._closed = False
        self._table: str | None = None
        # May probe netem (a scratch namespace) or raise ImpairmentUnavailable; nothing to undo yet.
        self._method = self._choose(
            method=method,
            delay_ms=delay_ms,
            jitter_ms=jitter_ms + reorder_percent,  # reordering, like jitter, needs netem
            direction=direction,
            ports=ports,
            tcp_flags=tcp_flags,
            first=first,
        )
        try:
            if self._method == "netem":
                ns.run(netem_args(ifname, loss_percent, delay_ms, jitter_ms, reorder_percent))
            else:
                with _table_lock:
                    table = f"retransmon_loss_{next(_table_ids)}"
                hook = DIRECTIONS[direction]
                text = build_ruleset(table, hook, loss_percent, ports, tcp_flags, first=first)
                self._table = table
                ns.run(["nft", "-f", "-"], input=text)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _choose(
        *,
        method: str,
        delay_ms: float,
        jitter_ms: float,
        direction: str,
        ports: list[int] | None,
        tcp_flags: str | None,
        first: int | None = None,
    ) -> str:
        wants_delay = delay_ms > 0 or jitter_ms > 0
        # What netem cannot express, and why.
        netem_limits = []
        if direction != "egress":
            netem_limits.append("netem only acts on egress")
        if ports:
            netem_limits.append("netem cannot filter by port")
        if tcp_flags is not None:
            netem_limits.append("netem cannot filter by TCP flags")
        if first is not None:
            netem_limits.append("netem cannot drop only the first packets")
        if method == "nftables":
            if wants_delay:
                raise ImpairmentUnavailable("delay and jitter need the netem qdisc; nftables can only drop")
            return "nftables"
        if method == "netem" or wants_delay:
            if netem_limits:
                raise ImpairmentUnavailable("cannot use netem: " + "; ".join(netem_limits))
            if not netem_available():
                what = "delay and jitter need" if wants_delay else "method 'netem' needs"
                raise ImpairmentUnavailable(
                    f"{what} the netem qdisc, which this kernel does not have",
                    fix="load sch_netem (modprobe sch_netem; package linux-modules-extra on some distros)",
                )
            return "netem"
        return "netem" if not netem_limits and netem_available() else "nftables"

    @property
    def method_used(self) -> str:
        """The mechanism in use: "netem" or "nftables"."""
        return self._method

    @property
    def table(self) -> str | None:
        """The nft table's name (family inet), or None with netem."""
        return self._table

    def dropped_packets(self) -> int:
        """Packets dropped so far (skbs: a GSO/GRO super-packet counts once)."""
        if self._closed:
            raise TestbedError("impairment already removed")
        if self._method == "netem":
            out = self.ns.run(["tc", "-s", "-j", "qdisc", "show", "dev", self.ifname]).stdout
            for qdisc in json.loads(out):
                if qdisc.get("kind") == "netem":
                    return int(qdisc.get("drops", 0))
            raise TestbedError(f"no netem qdisc on {self.ifname} in {self.ns.name}")
        out = self.ns.run(["nft", "-j", "list", "counter", "inet", str(self._table), COUNTER_NAME]).stdout
        for item in json.loads(out).get("nftables", []):
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise TestbedError(f"no counter {COUNTER_NAME} in nft table {self._table} in {self.ns.name}")

    def close(self) -> None:
        """Remove the qdisc or table (a no-op if the namespace is already gone). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.ns.closed:
            return
        if self._method == "netem":
            self.ns.run(["tc", "qdisc", "del", "dev", self.ifname, "root"], check=False)
        elif self._table is not None:
            self.ns.run(["nft", "delete", "table", "inet", self._table], check=False)

    def __enter__(self) -> Impairment:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
