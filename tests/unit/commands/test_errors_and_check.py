"""Error kinds and exit codes, `retransmon check`'s pure parts, and choosing hook plans."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from retransmon import cli
from retransmon.commands import check as check_command
from retransmon.commands.check import FAIL, OK, WARN, Finding, ready, render
from retransmon.defaults import HOOK_MODES
from retransmon.errors import EnvironmentProblem, RetransmonError, UsageError
from retransmon.kernel.capabilities import current, has_bpf_privileges
from retransmon.kernel.features import KernelFeatures
from retransmon.kernel.skeleton import (
    PROGRAM_LABELS,
    SENT_ITERATOR,
    TP_BTF_PROGRAMS,
    TRACEPOINT_PROGRAMS,
    HookPlan,
    plans_for,
)

# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_exit_codes() -> None:
    assert UsageError("x").exit_code == 2
    assert EnvironmentProblem("x").exit_code == 1
    assert RetransmonError("x").exit_code == 1
    assert issubclass(UsageError, RetransmonError)
    assert issubclass(EnvironmentProblem, RetransmonError)


@pytest.mark.parametrize(
    ("error", "rendered"),
    [
        (UsageError("bad flag"), "bad flag"),
        (EnvironmentProblem("no BTF", fix="upgrade the kernel"), "no BTF; fix: upgrade the kernel"),
        (EnvironmentProblem("no BTF", fix=""), "no BTF"),
    ],
)
def test_render(error: RetransmonError, rendered: str) -> None:
    assert error.render() == rendered
    assert str(error) == error.message


def test_details_default_empty() -> None:
    assert EnvironmentProblem("x").details == []
    assert EnvironmentProblem("x", details=["a", "b"]).details == ["a", "b"]


def _raise_from_subcommand(exc: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_check(_args: object) -> int:
        raise exc

    monkeypatch.setattr(check_command, "run", fake_check)


def test_environment_problem_exits_1_with_fix_and_details(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _raise_from_subcommand(
        EnvironmentProblem(
            "not allowed to load BPF programs", fix="run as root", details=["line 1", "line 2"]
        ),
        monkeypatch,
    )
    assert cli.main(["check"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "retransmon: not allowed to load BPF programs; fix: run as root",
        "  line 1",
        "  line 2",
    ]


def test_usage_error_from_subcommand_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _raise_from_subcommand(UsageError("--x: bad"), monkeypatch)
    assert cli.main(["check"]) == 2
    assert capsys.readouterr().err == "retransmon: --x: bad\n"


def test_keyboard_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    _raise_from_subcommand(KeyboardInterrupt(), monkeypatch)
    assert cli.main(["check"]) == 130


# ---------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------

STATUS = """\
Name:\tpython3
Umask:\t0022
State:\tR (running)
Uid:\t1000\t1000\t1000\t1000
CapInh:\t0000000000000000
CapPrm:\t{prm}
CapEff:\t{eff}
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t0
"""


@pytest.mark.parametrize(
    ("eff", "privileged"),
    [
        ("0000000000000000", False),
        ("000001ffffffffff", True),
        ("000000c000000000", True),  # CAP_PERFMON and CAP_BPF (bits 38, 39)
        ("0000008000000000", False),  # CAP_BPF alone
        ("0000000000200000", True),  # CAP_SYS_ADMIN (bit 21) covers both
        ("0000000000001000", False),  # CAP_NET_ADMIN
        ("00000000a80425fb", False),  # Docker's default set
    ],
)
def test_privilege_check_reads_the_effective_set(tmp_path: Path, eff: str, privileged: bool) -> None:
    status = tmp_path / "status"
    # CapPrm holds everything: only the effective set counts.
    status.write_text(STATUS.format(prm="000001ffffffffff", eff=eff))
    assert has_bpf_privileges(current(str(status))) is privileged


def test_privilege_check_without_status_or_capeff_line(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapPrm:\t000001ffffffffff\n")
    assert not has_bpf_privileges(current(str(status)))
    assert not has_bpf_privileges(current(str(tmp_path / "nope")))


def test_render_aligns_and_shows_fixes() -> None:
    findings = [
        Finding(OK, "kernel", "6.1.0"),
        Finding(WARN, "tp_btf tracepoints", "missing: classic tracepoints only"),
        Finding(FAIL, "BTF", "/sys/kernel/btf/vmlinux missing", "a kernel with BTF"),
    ]
    assert render(findings).splitlines() == [
        "ok    kernel              6.1.0",
        "warn  tp_btf tracepoints  missing: classic tracepoints only",
        "FAIL  BTF                 /sys/kernel/btf/vmlinux missing",
        "                          fix: a kernel with BTF",
    ]


def test_render_fix_lines_line_up_with_details() -> None:
    text = render([Finding(FAIL, "privileges", "none", "run as root"), Finding(OK, "x", "y")])
    detail_line, fix_line, _ = text.splitlines()
    assert detail_line.index("none") == fix_line.index("fix:")


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [([OK, OK], True), ([OK, WARN], True), ([WARN, FAIL], False), ([FAIL], False), ([], True)],
)
def test_ready(statuses: list[str], expected: bool) -> None:
    assert ready([Finding(s, f"item{i}", "d") for i, s in enumerate(statuses)]) is expected


# ---------------------------------------------------------------------------
# hook plans
# ---------------------------------------------------------------------------

MODERN = KernelFeatures(
    release="6.12.0",
    tp_btf_retransmit_skb=True,
    tp_btf_retransmit_synack=True,
    tp_btf_sock_set_state=True,
    retransmit_has_err=True,
    sk_cgroup_pointer=True,
    tp_btf_destroy_sock=True,
)
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
    assert plans[1] == HookPlan("tp_btf-per-event", TP_BTF_PROGRAMS, False, False)
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


def test_cli_hook_choices_match_program_modes() -> None:
    parser = cli.build_parser()
    for mode in HOOK_MODES:
        assert parser.parse_args(["check", "--hooks", mode]).hooks == mode


@pytest.mark.parametrize(
    ("plan", "status", "says"),
    [
        ("tp_btf", check_command.OK, "tail_loss_probe"),
        ("tp_btf-no-iterators", check_command.OK, "timeout"),
        ("tp_btf-per-event", check_command.OK, "skipped runs are not caught up"),
        ("tracepoint", check_command.WARN, 'every other retransmit cause="fast"'),
    ],
)
def test_check_says_where_causes_cannot_be_told_apart(plan: str, status: str, says: str) -> None:
    finding = check_command.cause_finding(plan)
    assert finding.item == "cause label"
    assert finding.status == status
    assert says in finding.detail
    assert bool(finding.fix) == (status == check_command.WARN)
