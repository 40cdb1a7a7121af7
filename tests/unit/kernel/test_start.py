"""RetransmonBPF.start: plans known to be refused are not tried; a refusal still falls through.

No root: the kernel's features are faked and loading is replaced by a recorder.
"""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest

from retransmon.errors import EnvironmentProblem
from retransmon.kernel import libbpf, skeleton
from retransmon.kernel.degraded import missing
from retransmon.kernel.features import KernelFeatures
from retransmon.kernel.plans import HookPlan
from retransmon.kernel.skeleton import AttachedProgram, ProgramOptions, RetransmonBPF
from tests.support.kernels import LINUX_5_10


class Loader:
    """Stands in for RetransmonBPF._load: records each plan tried, refuses those in *refuse*."""

    def __init__(self, refuse: set[str]) -> None:
        self.tried: list[str] = []
        self.refuse = refuse

    def install(self, monkeypatch: pytest.MonkeyPatch, features: KernelFeatures) -> None:
        monkeypatch.setattr(skeleton, "probe", lambda: features)
        monkeypatch.setattr(skeleton, "object_path", lambda: "/nonexistent/retransmon.bpf.o")

        def load(bpf: RetransmonBPF, path: str, plan: HookPlan) -> None:
            self.tried.append(plan.name)
            if plan.name in self.refuse:
                raise libbpf.LibbpfError("load BPF object", errno.EINVAL, ["BPF_STX uses reserved fields"])

        def attach(bpf: RetransmonBPF, plan: HookPlan) -> None:
            bpf.programs = [AttachedProgram(p, skeleton.PROGRAM_LABELS[p], -1, None) for p in plan.programs]

        monkeypatch.setattr(RetransmonBPF, "_load", load)
        monkeypatch.setattr(RetransmonBPF, "_attach", attach)


def test_on_5_10_the_object_is_loaded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = Loader(refuse={"tp_btf", "tp_btf-per-event"})
    loader.install(monkeypatch, LINUX_5_10)
    bpf = RetransmonBPF(ProgramOptions())
    bpf.start()
    assert loader.tried == ["tracepoint"]
    assert bpf.plan is not None and bpf.plan.name == "tracepoint"
    assert [name for name, _ in bpf.skipped] == ["tp_btf", "tp_btf-per-event"]
    assert bpf.rejected == []
    assert not bpf.exact
    # serve logs and check prints these: the exact plan's absence says why, once.
    lines = missing(bpf)
    assert [line.split(":")[0] for line in lines] == ["exact counting", "socket lifecycle", "segments sent"]
    assert "(hooks tracepoint; tp_btf needs BPF atomics (Linux 5.12), socket storage in tracing" in lines[0]


def test_when_the_probe_could_not_run_refusals_still_fall_through(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = Loader(refuse={"tp_btf", "tp_btf-per-event"})
    loader.install(monkeypatch, replace(LINUX_5_10, bpf_atomics=None, sk_storage_tracing=None))
    bpf = RetransmonBPF(ProgramOptions())
    bpf.start()
    assert loader.tried == ["tp_btf", "tp_btf-per-event", "tracepoint"]
    assert bpf.plan is not None and bpf.plan.name == "tracepoint"
    assert bpf.skipped == []
    assert [name for name, _ in bpf.rejected] == ["tp_btf", "tp_btf-per-event"]
    assert "tp_btf refused: load BPF object: BPF_STX uses reserved fields" in missing(bpf)[0]


def test_a_kernel_that_takes_everything_loads_the_exact_plan_first(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = Loader(refuse=set())
    loader.install(
        monkeypatch, replace(LINUX_5_10, sock_from_file=True, bpf_atomics=True, sk_storage_tracing=True)
    )
    bpf = RetransmonBPF(ProgramOptions())
    bpf.start()
    assert loader.tried == ["tp_btf"]
    assert bpf.exact
    assert bpf.skipped == [] and bpf.rejected == []


def test_tp_btf_hooks_on_5_10_fail_before_loading_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    loader = Loader(refuse=set())
    loader.install(monkeypatch, LINUX_5_10)
    with pytest.raises(EnvironmentProblem, match="BPF atomics"):
        RetransmonBPF(ProgramOptions(hooks="tp_btf")).start()
    assert loader.tried == []
