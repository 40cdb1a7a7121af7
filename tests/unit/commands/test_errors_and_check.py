"""Error kinds and exit codes, and `retransmon check`'s pure parts."""

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
from retransmon.kernel.plans import ATOMICS
from tests.support.kernels import LINUX_5_10

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


@pytest.mark.parametrize(
    ("offered", "status", "says"),
    [
        (True, check_command.OK, "available (Linux 5.12+)"),
        (False, check_command.WARN, "missing (needs Linux 5.12): the tp_btf plans are not tried"),
        (None, check_command.WARN, "not known"),
    ],
)
def test_check_gives_each_bpf_feature_one_line_with_its_release_and_cost(
    offered: bool | None, status: str, says: str
) -> None:
    features = replace(LINUX_5_10, bpf_atomics=offered)
    finding = check_command.requirement_finding(ATOMICS, features)
    assert (finding.status, finding.item) == (status, "BPF atomics")
    assert says in finding.detail
    assert not finding.fix
