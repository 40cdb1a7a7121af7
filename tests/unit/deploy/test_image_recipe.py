"""The image's seccomp profile, and why one py3-none-any wheel serves every architecture."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROFILE = ROOT / "deploy" / "image" / "seccomp.json"
PODMAN_DEFAULT = Path("/usr/share/containers/seccomp.json")


def _rules(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def test_profile_allows_bpf_and_perf_event_open_only_with_their_capabilities() -> None:
    profile = json.loads(PROFILE.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    for name, cap in (("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")):
        rules = _rules(profile, name)
        assert all(r["names"] == [name] for r in rules), "given rules of their own"
        allowed = [r["includes"]["caps"] for r in rules if r["action"] == "SCMP_ACT_ALLOW"]
        assert sorted(allowed) == [[cap], ["CAP_SYS_ADMIN"]]
        (refused,) = [r for r in rules if r["action"] == "SCMP_ACT_ERRNO"]
        assert sorted(refused["excludes"]["caps"]) == sorted([cap, "CAP_SYS_ADMIN"])
        assert refused["errnoRet"] == 1  # EPERM, as without the profile
        assert not any(r.get("args") for r in rules)


def test_profile_is_the_runtime_default_plus_bpf(tmp_path: Path) -> None:
    """Regenerated from podman's installed default, the shipped profile is unchanged."""
    if not PODMAN_DEFAULT.exists():
        pytest.fail(f"{PODMAN_DEFAULT} is missing: apt-get install podman (make setup does)")
    out = tmp_path / "seccomp.json"
    script = ROOT / "scripts" / "seccomp_profile.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True)
    assert json.loads(out.read_text()) == json.loads(PROFILE.read_text())
    default = json.loads(PODMAN_DEFAULT.read_text())
    others = {n for r in default["syscalls"] for n in r["names"]} - {"bpf", "perf_event_open"}
    assert {n for r in json.loads(PROFILE.read_text())["syscalls"] for n in r["names"]} >= others


def test_bpf_object_does_not_depend_on_the_target_architecture(tmp_path: Path) -> None:
    """The object holds tp_btf, tracepoint and iterator programs only: no PT_REGS access, so
    __TARGET_ARCH changes nothing and one object (little-endian BPF) serves x86_64 and arm64."""
    clang = shutil.which("clang")
    vmlinux = ROOT / "build" / "vmlinux.h"
    if clang is None or not vmlinux.exists():
        pytest.fail("needs clang and build/vmlinux.h: run make setup")
    objects = []
    for arch in ("x86", "arm64"):
        obj = tmp_path / f"{arch}.o"
        subprocess.run(
            [clang, "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-mcpu=v3", f"-D__TARGET_ARCH_{arch}",
             f"-I{vmlinux.parent}", f"-I{ROOT / 'bpf'}", "-c", str(ROOT / "bpf" / "retransmon.bpf.c"),
             "-o", str(obj)],
            check=True,
        )  # fmt: skip
        objects.append(obj.read_bytes())
    assert objects[0] == objects[1]
    assert objects[0][5] == 1, "ELFDATA2LSB: little-endian BPF"
