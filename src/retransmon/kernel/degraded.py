"""What a loaded hook plan lacks on this kernel, and what that costs: one line each.

`retransmon check` prints these and `serve` logs them at start, so both say the same
thing about a kernel that gives less than the full plan (e.g. Linux 5.10).
"""

from __future__ import annotations

from retransmon.kernel.features import KernelFeatures
from retransmon.kernel.plans import SENT_ITERATOR, HookPlan
from retransmon.kernel.skeleton import RetransmonBPF


def sent_segments_missing(plan: HookPlan, features: KernelFeatures) -> str | None:
    """Why tcp_segments_sent_total is partial or absent under plan, or None when it is complete."""
    if not plan.sk_storage:
        return (
            "segments sent: not counted (only the tp_btf plan with socket storage counts them): "
            "tcp_segments_sent_total is not exported, so there is no retransmission rate"
        )
    if SENT_ITERATOR in plan.iterators:
        return None
    why = (
        "bpf_sock_from_file() needs Linux 5.11"
        if not features.sock_from_file
        else "the kernel refused the iter/task_file program"
    )
    return (
        f"segments sent: counted only when sockets close ({why}): "
        "tcp_segments_sent_total lags for long-lived connections"
    )


def exact_plan_fate(bpf: RetransmonBPF) -> str:
    """Why the exact plan is not the one loaded, when it was skipped or refused: '; tp_btf ...'."""
    skipped, refused = dict(bpf.skipped), dict(bpf.rejected)
    if "tp_btf" in skipped:
        return f"; tp_btf {skipped['tp_btf']}"
    if "tp_btf" in refused:
        return f"; tp_btf refused: {refused['tp_btf']}"
    return ""


def missing(bpf: RetransmonBPF) -> list[str]:
    """One line per thing the attached plan does without, with its cost; empty when nothing is."""
    plan, features = bpf.plan, bpf.features
    if plan is None or features is None:
        return []
    out = []
    if not bpf.exact:
        out.append(
            f"exact counting: unavailable (hooks {plan.name}{exact_plan_fate(bpf)}): "
            "each retransmit event counts what it carried, so failed attempts and skipped runs "
            "make tcp_retransmitted_segments_total differ from RetransSegs"
        )
    if plan.sk_storage is False or "tp_btf_inet_sock_set_state" not in plan.programs:
        out.append(
            "socket lifecycle: inet_sock_set_state not attached: listeners opened after start are not "
            "seen (service_port may read the remote port) and accepted sockets have no owner process"
        )
    sent = sent_segments_missing(plan, features)
    if sent:
        out.append(sent)
    return out
