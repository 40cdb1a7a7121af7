"""Podman containers for the image tests: run with the flags this kind of host needs, always removed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
SECCOMP = REPO / "deploy" / "image" / "seccomp.json"
# crun refuses a hybrid cgroup host; the default rlimits exceed a sandbox's.
RUN_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
# What deploy/kubernetes/daemonset.yaml grants.
AGENT_FLAGS = (
    "--cap-drop",
    "all",
    "--cap-add",
    "BPF,PERFMON",
    "--security-opt",
    f"seccomp={SECCOMP}",
    "--read-only",
)


def image_name() -> str:
    """The name `make image` gives the image (IMAGE in the Makefile)."""
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "print-image: ; @echo $(IMAGE)", "print-image"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout)


_count = 0


def container_name(role: str) -> str:
    global _count
    _count += 1
    return f"rmtest-{role}-{os.getpid()}-{_count}"


class Container:
    """`podman run -d`; close() removes it (`rm -f -t 0`), whatever happened."""

    def __init__(self, image: str, args: Sequence[str] = (), *, name: str, flags: Sequence[str] = ()) -> None:
        self.name = name
        argv = ["run", "-d", "--name", name, *RUN_FLAGS, *flags, image, *args]
        try:
            self.id = podman(*argv).stdout.strip()
        except BaseException:
            self.close()  # a half-created container too
            raise

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        return (
            podman("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout.strip()
            == "true"
        )

    def wait_for_log(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            logs = self.logs()
            if text in logs:
                return logs
            if not self.running() or time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {text!r} in its output:\n{logs}")
            time.sleep(0.2)

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            podman("rm", "-f", "-t", "0", self.name, check=False, timeout=60)

    def __enter__(self) -> Container:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
