"""The test bed of one chaos run, as its options ask: netem where the kernel has it, else nftables.

With netem (like the blog's `tc qdisc add ... netem`), loss and delay act on all the client
sends. Without it, --loss alone still works: nftables drops what arrives at the server's port,
so the client retransmits; --delay, --jitter and --reorder then fail before anything is built.
"""

from __future__ import annotations

from retransmon.chaos.loss import netem_available
from retransmon.chaos.options import PREFIX, VETH_INDEX, ChaosOptions
from retransmon.chaos.testbed import Netem, TestBed
from retransmon.errors import EnvironmentProblem

NETEM_FIX = (
    "load the netem qdisc (modprobe sch_netem; Debian/Ubuntu ship it in linux-modules-extra), "
    "or leave out {flags}: --loss alone works without netem"
)
NFTABLES_NOTE = (
    "netem is not available on this kernel: loss is made with nftables (numgen random); "
    "delay, jitter and reordering are unavailable"
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


def build_testbed(options: ChaosOptions, prefix: str = PREFIX, veth_index: int = VETH_INDEX) -> TestBed:
    """The run's namespaces (rmchaos-<role>-<pid>-<n>), veth, impairment and sink."""
    # Decided before anything is created: a missing netem fails without side effects.
    use_netem = (options.wants_netem or options.loss_percent > 0) and netem_available()
    if options.wants_netem and not use_netem:
        raise describe_netem_missing(options.netem_flags)
    netem = Netem(options.delay_ms, options.jitter_ms, options.reorder_percent) if use_netem else None
    return TestBed(
        options.loss_percent,
        offloads=options.offloads,
        ipv6=options.ipv6,
        prefix=prefix,
        netem=netem,
        veth_index=veth_index,
    )


def notes(options: ChaosOptions, bed: TestBed) -> list[str]:
    """What the report should say about how the loss was made."""
    return [NFTABLES_NOTE] if options.loss_percent > 0 and bed.method == "nftables" else []
