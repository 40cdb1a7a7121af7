"""Which records `trace` and `top` show: --netns, --port, --host, --kind.

Each option may be given several times: a record passes if it matches any value
of every option given. A port or host matches either end of the connection.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from retransmon.live.decode import EventFlow

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
KINDS = ("retransmit", "synack")
NETNS_DIR = "/run/netns"
_NS_LINK = re.compile(r"^net:\[(\d+)\]$")


def parse_netns(text: str) -> int:
    """A network namespace: its inode number, `net:[N]`, a path (/proc/PID/ns/net), or an `ip netns` name."""
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    m = _NS_LINK.match(raw)
    if m:
        return int(m.group(1))
    path = raw if "/" in raw else os.path.join(NETNS_DIR, raw)
    try:
        return os.stat(path).st_ino
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a namespace inode number, net:[N], a path like /proc/PID/ns/net "
            f"or a name in {NETNS_DIR}, got {text!r} ({exc.strerror})"
        ) from None


def parse_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a TCP port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"a TCP port is 1..65535, got {value}")
    return value


def parse_host(text: str) -> Network:
    """An address (198.18.0.2, 2001:db8::1) or a network (198.18.0.0/15)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an IP address or network like 198.18.0.0/15, got {text!r}"
        ) from None


def _in(address: str, networks: Iterable[Network]) -> bool:
    addr = ipaddress.ip_address(address)
    return any(addr in net for net in networks)


@dataclass(frozen=True)
class EventFilter:
    netns: frozenset[int] = field(default_factory=frozenset)
    ports: frozenset[int] = field(default_factory=frozenset)
    hosts: tuple[Network, ...] = ()
    kinds: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_args(
        cls,
        netns: Iterable[int] | None = None,
        ports: Iterable[int] | None = None,
        hosts: Iterable[Network] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> EventFilter:
        return cls(frozenset(netns or ()), frozenset(ports or ()), tuple(hosts or ()), frozenset(kinds or ()))

    @property
    def empty(self) -> bool:
        return not (self.netns or self.ports or self.hosts or self.kinds)

    def matches(self, flow: EventFlow) -> bool:
        if self.netns and flow.netns not in self.netns:
            return False
        if self.kinds and flow.kind not in self.kinds:
            return False
        if self.ports and flow.src_port not in self.ports and flow.dst_port not in self.ports:
            return False
        return not self.hosts or _in(flow.src_ip, self.hosts) or _in(flow.dst_ip, self.hosts)


def add_filter_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--netns",
        type=parse_netns,
        action="append",
        metavar="NS",
        help="only this network namespace: inode number, net:[N], /proc/PID/ns/net or an `ip netns` name",
    )
    p.add_argument(
        "--port", type=parse_port, action="append", metavar="PORT", help="only connections with this port"
    )
    p.add_argument(
        "--host",
        type=parse_host,
        action="append",
        metavar="ADDR[/LEN]",
        help="only connections with an end in this address or network",
    )
    p.add_argument("--kind", choices=KINDS, action="append", help="only this kind of retransmit")


def filter_from_args(args: argparse.Namespace) -> EventFilter:
    return EventFilter.from_args(args.netns, args.port, args.host, args.kind)
