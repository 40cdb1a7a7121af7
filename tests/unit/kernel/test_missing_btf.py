"""A kernel without BTF: `check` and `serve` say so and what to do, and serve loads nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from retransmon.cli import main
from retransmon.commands import check
from retransmon.errors import EnvironmentProblem
from retransmon.kernel import features as kernel_features
from tests.support.agent import free_port


@pytest.fixture
def no_btf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = str(tmp_path / "vmlinux")
    monkeypatch.setattr(kernel_features, "VMLINUX_BTF", missing)
    monkeypatch.setattr(check, "VMLINUX_BTF", missing)


@pytest.mark.usefixtures("no_btf")
def test_probe_explains() -> None:
    with pytest.raises(EnvironmentProblem) as info:
        kernel_features.probe()
    assert "no BTF" in info.value.message
    assert info.value.fix is not None and "CONFIG_DEBUG_INFO_BTF=y" in info.value.fix


@pytest.mark.usefixtures("no_btf")
def test_check_fails_on_btf_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    findings = check.run_checks()
    btf = [f for f in findings if f.item == "BTF"]
    assert len(btf) == 1 and btf[0].status == check.FAIL
    assert "CONFIG_DEBUG_INFO_BTF=y" in btf[0].fix
    assert not check.ready(findings)
    assert main(["check"]) == 1
    assert "CONFIG_DEBUG_INFO_BTF" in capsys.readouterr().out


@pytest.mark.usefixtures("no_btf")
def test_serve_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--listen", f"127.0.0.1:{free_port()}", "--no-drop-capabilities"])
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("retransmon: ")]
    assert len(lines) == 1
    assert "no BTF" in lines[0] and "CONFIG_DEBUG_INFO_BTF=y" in lines[0]
