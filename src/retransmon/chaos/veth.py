"""A veth pair joining two network namespaces, with test addresses on both ends."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from types import TracebackType

from retransmon.chaos.netns import NetNamespace
from retransmon.chaos.process import run_command

# Offloads that turn one skb into many wire segments (TSO/GSO) or many into one (GRO).
OFFLOAD_FEATURES = ("tso", "gso", "gro")


@dataclass(frozen=True)
class Link:
    """One end of a veth pair: where it lives, its name and its addresses (no prefix length)."""

    ns: NetNamespace
    ifname: str
    ip4: str
    ip6: str


def link_addresses(index: int) -> tuple[tuple[str, str], tuple[str, str]]:
    """((left_ip4, left_ip6), (right_ip4, right_ip6)) for pair `index`, from the test ranges only."""
    if not 0 <= index <= 255:
        raise ValueError(f"veth index must be 0..255, not {index}")
    left4, right4 = f"198.18.{index}.1", f"198.18.{index}.2"
    # Canonical text (index 0 gives 2001:db8::1), the form metric labels use.
    left6, right6 = (str(ipaddress.IPv6Address(f"2001:db8:{index}::{host}")) for host in (1, 2))
    return (left4, left6), (right4, right6)


class VethPair:
    """veth `rmv{index}a` in `left` and `rmv{index}b` in `right`, addressed and up."""

    def __init__(self, left: NetNamespace, right: NetNamespace, index: int = 0) -> None:
        (l4, l6), (r4, r6) = link_addresses(index)
        self.left_link = Link(left, f"rmv{index}a", l4, l6)
        self.right_link = Link(right, f"rmv{index}b", r4, r6)
        self._closed = False
        try:
            # Created inside `left` with its peer placed straight into `right`: the host's
            # namespace never sees either name.
            run_command(
                ["ip", "-n", left.name, "link", "add", "name", self.left_ifname, "type", "veth",
                 "peer", "name", self.right_ifname, "netns", right.name]
            )  # fmt: skip
            for link in (self.left_link, self.right_link):
                ns = link.ns.name
                run_command(["ip", "-n", ns, "addr", "add", f"{link.ip4}/24", "dev", link.ifname])
                run_command(["ip", "-n", ns, "addr", "add", f"{link.ip6}/64", "dev", link.ifname, "nodad"])
            for link in (self.left_link, self.right_link):
                run_command(["ip", "-n", link.ns.name, "link", "set", link.ifname, "up"])
            self._add_static_neighbours()
        except BaseException:
            self.close()
            raise

    def _add_static_neighbours(self) -> None:
        # Without these, the first IPv6 connection waits ~1 s: the first neighbour
        # solicitation right after link-up goes unanswered. Static entries also keep
        # ARP/ND packets out of the tests entirely.
        macs = {}
        for link in (self.left_link, self.right_link):
            out = run_command(["ip", "-j", "-n", link.ns.name, "link", "show", "dev", link.ifname]).stdout
            macs[link.ifname] = str(json.loads(out)[0]["address"])
        for me, peer in ((self.left_link, self.right_link), (self.right_link, self.left_link)):
            for ip in (peer.ip4, peer.ip6):
                run_command(
                    ["ip", "-n", me.ns.name, "neigh", "replace", ip, "lladdr", macs[peer.ifname],
                     "dev", me.ifname, "nud", "permanent"]
                )  # fmt: skip

    @property
    def left_ifname(self) -> str:
        return self.left_link.ifname

    @property
    def right_ifname(self) -> str:
        return self.right_link.ifname

    @property
    def left_ip4(self) -> str:
        return self.left_link.ip4

    @property
    def right_ip4(self) -> str:
        return self.right_link.ip4

    @property
    def left_ip6(self) -> str:
        return self.left_link.ip6

    @property
    def right_ip6(self) -> str:
        return self.right_link.ip6

    def set_offloads(self, enabled: bool) -> None:
        """Turn TSO, GSO and GRO on or off on both ends."""
        state = "on" if enabled else "off"
        args = [word for feature in OFFLOAD_FEATURES for word in (feature, state)]
        for link in (self.left_link, self.right_link):
            link.ns.run(["ethtool", "-K", link.ifname, *args])

    def close(self) -> None:
        """Delete the pair if it still exists (deleting a namespace deletes it too). Idempotent."""
        if self._closed:
            return
        self._closed = True
        ip = ["ip", "-n", self.left_link.ns.name, "link"]
        if run_command([*ip, "show", "dev", self.left_ifname], check=False).returncode == 0:
            run_command([*ip, "del", "dev", self.left_ifname], check=False)

    def __enter__(self) -> VethPair:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
