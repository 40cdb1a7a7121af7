"""Hook plans: which ways of loading the object exist for a kernel, and which are worth trying.

No root: the kernel's features are faked (what features.probe() and bpfprobe would read).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from retransmon.defaults import HOOK_MODES
from retransmon.errors import EnvironmentProblem, UsageError
from retransmon.kernel.features import KernelFeatures
from retransmon.kernel.plans import (
    ATOMICS,
    SENT_ITERATOR,
    SK_STORAGE_TRACING,
    TP_BTF_PROGRAMS,
    TRACEPOINT_PROGRAMS,
    HookPlan,
    choose,
    plans_for,
)
from retransmon.kernel.skeleton import PROGRAM_LABELS
from tests.support.kernels import LINUX_5_10, MODERN

NO_STATE_HOOK = replace(MODERN, tp_btf_sock_set_state=False)
NO_TP_BTF = replace(MODERN, tp_btf_retransmit_skb=False, tp_btf_retransmit_synack=False)
HALF_TP_BTF = replace(MODERN, tp_btf_retransmit_synack=False)


def test_tp_btf_property() -> None:
    assert MODERN.tp_btf
    assert not NO_TP_BTF.tp_btf
    assert not HALF_TP_BTF.tp_btf
    assert not replace(MODERN, tp_btf_retransmit_skb=False).tp_btf


def test_auto_on_modern_kernel() -> None:
    plans = plans_for("auto", MODERN)
    assert [p.name for p in plans] == ["tp_btf", "tp_btf-per-event", "tracepoint"]
    first = plans[0]
    assert first.sk_storage is True
    assert first.exact is True
    assert first.programs == TP_BTF_PROGRAMS
    assert "tp_btf_inet_sock_set_state" in first.programs
    assert first.needs == (ATOMICS, SK_STORAGE_TRACING)
    assert plans[1] == HookPlan("tp_btf-per-event", TP_BTF_PROGRAMS, False, False, (), (ATOMICS,))
    assert plans[2] == HookPlan("tracepoint", TRACEPOINT_PROGRAMS, False, False)


def test_only_the_first_plan_is_exact() -> None:
    for mode in ("auto", "tp_btf", "tracepoint"):
        for features in (MODERN, NO_STATE_HOOK, NO_TP_BTF):
            try:
                plans = plans_for(mode, features)
            except EnvironmentProblem:
                continue
            assert all(not p.exact for p in plans[1:])
            assert all(p.sk_storage == (p.name == "tp_btf") for p in plans)


def test_tp_btf_mode() -> None:
    plans = plans_for("tp_btf", MODERN)
    assert [p.name for p in plans] == ["tp_btf", "tp_btf-per-event"]
    assert plans[0].sk_storage and plans[0].exact


def test_the_iterator_is_planned_only_with_bpf_sock_from_file() -> None:
    with_iter = replace(MODERN, iter_task_file=True, sock_from_file=True)
    assert plans_for("auto", with_iter)[0].iterators == (SENT_ITERATOR,)
    # Linux 5.10: the iterator exists but bpf_sock_from_file() does not (5.11), so it is not tried.
    linux_5_10 = replace(with_iter, sock_from_file=False)
    assert [p.iterators for p in plans_for("auto", linux_5_10)] == [(), (), ()]


def test_tracepoint_mode_only_tracepoints() -> None:
    for features in (MODERN, NO_TP_BTF):
        plans = plans_for("tracepoint", features)
        assert plans == [HookPlan("tracepoint", TRACEPOINT_PROGRAMS, False, False)]


def test_without_destroy_hook_the_close_alone_settles_sockets() -> None:
    plans = plans_for("auto", replace(MODERN, tp_btf_destroy_sock=False))
    assert plans[0].exact is True
    assert "tp_btf_tcp_destroy_sock" not in plans[0].programs
    assert "tp_btf_inet_sock_set_state" in plans[0].programs


def test_without_sock_set_state_counting_is_per_event() -> None:
    plans = plans_for("auto", NO_STATE_HOOK)
    assert plans[0].name == "tp_btf"
    assert plans[0].exact is False
    assert "tp_btf_inet_sock_set_state" not in plans[0].programs
    assert set(plans[0].programs) == {"tp_btf_tcp_retransmit_skb", "tp_btf_tcp_retransmit_synack"}


@pytest.mark.parametrize("features", [NO_TP_BTF, HALF_TP_BTF])
def test_auto_without_tp_btf_falls_back(features: KernelFeatures) -> None:
    assert [p.name for p in plans_for("auto", features)] == ["tracepoint"]


@pytest.mark.parametrize("features", [NO_TP_BTF, HALF_TP_BTF])
def test_tp_btf_mode_without_tp_btf(features: KernelFeatures) -> None:
    with pytest.raises(EnvironmentProblem) as info:
        plans_for("tp_btf", features)
    assert info.value.exit_code == 1
    assert info.value.fix is not None
    assert "--hooks=tracepoint" in info.value.fix


@pytest.mark.parametrize("mode", ["kprobe", "", "TP_BTF", "fentry"])
def test_unknown_mode(mode: str) -> None:
    with pytest.raises(UsageError) as info:
        plans_for(mode, MODERN)
    assert repr(mode) in info.value.message
    for known in HOOK_MODES:
        assert known in info.value.message


def test_every_program_has_a_label() -> None:
    for name in (*TP_BTF_PROGRAMS, *TRACEPOINT_PROGRAMS):
        assert name in PROGRAM_LABELS
    # Both hook types report under the same program label.
    assert PROGRAM_LABELS["tp_btf_tcp_retransmit_skb"] == PROGRAM_LABELS["tracepoint_tcp_retransmit_skb"]
    assert (
        PROGRAM_LABELS["tp_btf_tcp_retransmit_synack"] == PROGRAM_LABELS["tracepoint_tcp_retransmit_synack"]
    )


# ---------------------------------------------------------------------------
# choosing: plans the kernel is known to refuse are skipped, not tried
# ---------------------------------------------------------------------------

LINUX_6_1 = replace(
    MODERN, iter_task_file=True, sock_from_file=True, bpf_atomics=True, sk_storage_tracing=True
)


def test_on_5_10_only_the_classic_tracepoints_are_tried() -> None:
    choice = choose("auto", LINUX_5_10)
    assert [p.name for p in choice.plans] == ["tracepoint"]
    assert [name for name, _ in choice.skipped] == ["tp_btf", "tp_btf-per-event"]
    for _, why in choice.skipped:
        assert "BPF atomics (Linux 5.12)" in why
    assert "socket storage in tracing (Linux 5.11)" in choice.skipped[0][1]
    assert "socket storage" not in choice.skipped[1][1]  # per event: no socket storage used


def test_a_kernel_with_everything_skips_nothing() -> None:
    choice = choose("auto", LINUX_6_1)
    assert choice.skipped == []
    assert choice.plans == plans_for("auto", LINUX_6_1)
    assert [p.name for p in choice.plans] == [
        "tp_btf",
        "tp_btf-no-iterators",
        "tp_btf-per-event",
        "tracepoint",
    ]


def test_what_could_not_be_probed_is_tried() -> None:
    # No privilege to run the probe, no marker in BTF: the plans are tried, refusals fall through.
    unknown = replace(LINUX_5_10, bpf_atomics=None, sk_storage_tracing=None)
    choice = choose("auto", unknown)
    assert choice.skipped == []
    assert [p.name for p in choice.plans] == ["tp_btf", "tp_btf-per-event", "tracepoint"]


def test_atomics_without_socket_storage_in_tracing_counts_per_event_with_tp_btf() -> None:
    backport = replace(LINUX_6_1, sk_storage_tracing=False)
    choice = choose("auto", backport)
    assert [p.name for p in choice.plans] == ["tp_btf-per-event", "tracepoint"]
    assert [name for name, _ in choice.skipped] == ["tp_btf", "tp_btf-no-iterators"]
    assert all("BPF atomics" not in why for _, why in choice.skipped)


def test_tp_btf_mode_on_5_10_says_what_is_missing_and_what_to_run() -> None:
    with pytest.raises(EnvironmentProblem) as info:
        choose("tp_btf", LINUX_5_10)
    assert "BPF atomics (Linux 5.12)" in info.value.message
    assert info.value.fix is not None and "--hooks=auto" in info.value.fix


def test_tracepoint_mode_on_5_10_skips_nothing() -> None:
    choice = choose("tracepoint", LINUX_5_10)
    assert [p.name for p in choice.plans] == ["tracepoint"]
    assert choice.skipped == []


def test_only_known_absence_is_lacking() -> None:
    plan = plans_for("auto", LINUX_5_10)[0]
    assert plan.lacking(LINUX_5_10) == [ATOMICS, SK_STORAGE_TRACING]
    assert plan.lacking(replace(LINUX_5_10, bpf_atomics=None)) == [SK_STORAGE_TRACING]
    assert plan.lacking(LINUX_6_1) == []
