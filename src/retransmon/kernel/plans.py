"""The ways of loading the object (hook plans), best first, and which of them this kernel can take.

A plan the kernel is known to refuse (it lacks a BPF feature the plan's programs use)
is skipped, not tried: a refusal costs libbpf a full open, relocation and verifier run
of the object, tens of seconds on a slow machine. A plan whose needs are unknown (the
probe could not run) is tried; refusals then fall through to the next plan as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from retransmon import defaults
from retransmon.errors import EnvironmentProblem, UsageError
from retransmon.kernel.features import KernelFeatures

TP_BTF_PROGRAMS = (
    "tp_btf_tcp_retransmit_skb",
    "tp_btf_tcp_retransmit_synack",
    "tp_btf_inet_sock_set_state",
    "tp_btf_tcp_destroy_sock",  # settles a socket whose TCP_CLOSE run the kernel skipped
)
TRACEPOINT_PROGRAMS = ("tracepoint_tcp_retransmit_skb", "tracepoint_tcp_retransmit_synack")
SENT_ITERATOR = "iter_sent_segments"  # run at every harvest over every process's open sockets


@dataclass(frozen=True)
class Requirement:
    """A kernel BPF feature some plans need, the release that brought it, and what lacking it costs."""

    name: str
    since: str
    cost: str
    offered: Callable[[KernelFeatures], bool | None] = field(repr=False)  # None: not known

    def __str__(self) -> str:
        return self.name


ATOMICS = Requirement(
    "BPF atomics",
    "Linux 5.12",
    "the tp_btf plans are not tried (their programs use compare-and-swap and fetch-and-add)",
    lambda f: f.bpf_atomics,
)
SK_STORAGE_TRACING = Requirement(
    "socket storage in tracing",
    "Linux 5.11",
    "the exact tp_btf plan is not tried (it keeps per-socket state)",
    lambda f: f.sk_storage_tracing,
)
SOCK_FROM_FILE = Requirement(
    "bpf_sock_from_file",
    "Linux 5.11",
    "the sent-segments iterator is not tried (it finds open sockets through their files)",
    lambda f: f.sock_from_file,
)
REQUIREMENTS = (ATOMICS, SK_STORAGE_TRACING, SOCK_FROM_FILE)


@dataclass(frozen=True)
class HookPlan:
    """One way of loading the object."""

    name: str
    programs: tuple[str, ...]
    sk_storage: bool
    exact: bool
    iterators: tuple[str, ...] = ()  # SENT_ITERATOR, attached with attach_iter
    needs: tuple[Requirement, ...] = ()

    def lacking(self, features: KernelFeatures) -> list[Requirement]:
        """What this plan needs that the kernel is known not to have (unknown is not lacking)."""
        return [r for r in self.needs if r.offered(features) is False]


def plans_for(mode: str, features: KernelFeatures) -> list[HookPlan]:
    """Every plan for --hooks *mode* on a kernel whose BTF has its hooks, best first."""
    if mode not in defaults.HOOK_MODES:
        raise UsageError(f"unknown hook type {mode!r}; choose one of {', '.join(defaults.HOOK_MODES)}")
    plans: list[HookPlan] = []
    if mode in ("auto", "tp_btf") and features.tp_btf:
        optional = {
            "tp_btf_inet_sock_set_state": features.tp_btf_sock_set_state,
            "tp_btf_tcp_destroy_sock": features.tp_btf_sock_set_state and features.tp_btf_destroy_sock,
        }
        base = tuple(p for p in TP_BTF_PROGRAMS if optional.get(p, True))
        exact = features.tp_btf_sock_set_state
        # Not planned without bpf_sock_from_file (5.10): the plan keeps its name without the iterator.
        with_iterator = features.iter_task_file and features.sock_from_file and features.tp_btf_sock_set_state
        iterators = (SENT_ITERATOR,) if with_iterator else ()
        storage = (ATOMICS, SK_STORAGE_TRACING)
        plans.append(HookPlan("tp_btf", base, True, exact, iterators, storage))
        if iterators:
            # Should the kernel refuse the iterators: sent segments are then counted at close only.
            plans.append(HookPlan("tp_btf-no-iterators", base, True, exact, (), storage))
        plans.append(HookPlan("tp_btf-per-event", base, False, False, (), (ATOMICS,)))
    if mode in ("auto", "tracepoint"):
        plans.append(HookPlan("tracepoint", TRACEPOINT_PROGRAMS, False, False))
    if not plans:
        raise EnvironmentProblem(
            "this kernel has no BTF tracepoint for tcp_retransmit_skb/tcp_retransmit_synack (tp_btf)",
            fix="run with --hooks=tracepoint or --hooks=auto to use the classic tracepoints",
        )
    return plans


@dataclass(frozen=True)
class Choice:
    plans: list[HookPlan]  # to try, best first
    skipped: list[tuple[str, str]]  # (plan, why) known to be refused: not tried


def skip_reason(lacking: list[Requirement]) -> str:
    return "needs " + ", ".join(f"{r.name} ({r.since})" for r in lacking)


def choose(mode: str, features: KernelFeatures) -> Choice:
    """The plans worth trying on this kernel, and those skipped with why."""
    plans, skipped = [], []
    for plan in plans_for(mode, features):
        lacking = plan.lacking(features)
        if lacking:
            skipped.append((plan.name, skip_reason(lacking)))
        else:
            plans.append(plan)
    if not plans:
        raise EnvironmentProblem(
            f"this kernel cannot load the {mode} hooks: "
            + "; ".join(f"{name} {why}" for name, why in skipped),
            fix="run with --hooks=auto to use the classic tracepoints",
        )
    return Choice(plans, skipped)
