"""Run the real `retransmon trace` as a child process, output in files, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from types import TracebackType

from retransmon.chaos.errors import TestbedError
from retransmon.chaos.process import signal_and_wait
from tests.support.agent import TIME_SCALE, retransmon_command

READY = "Tracing TCP retransmits"


class TraceProcess:
    """`retransmon trace ARGS` with stdout and stderr in files; ready once it says it is tracing.

    stop() sends SIGINT (Ctrl-C) and waits; stdout/stderr then hold everything it wrote.
    """

    def __init__(
        self,
        *args: str,
        ready_timeout: float = 30.0 * TIME_SCALE,
        directory: str | None = None,
        prefix: tuple[str, ...] = (),
        command: tuple[str, ...] = (),
    ) -> None:
        self._dir = tempfile.mkdtemp(prefix="rmtrace-", dir=directory)
        self.stdout_path = os.path.join(self._dir, "stdout")
        self.stderr_path = os.path.join(self._dir, "stderr")
        self.argv = [
            *prefix,
            *(command or retransmon_command()),
            "trace",
            *args,
        ]  # prefix: e.g. ("nice", "-n", "-5")
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.returncode: int | None = None
        self.started = time.monotonic()
        deadline = self.started + ready_timeout
        while READY not in self.stderr:
            if self.proc.poll() is not None:
                raise TestbedError(f"{' '.join(self.argv)} exited with {self.proc.returncode}: {self.stderr}")
            if time.monotonic() > deadline:
                self.stop()
                raise TestbedError(f"{' '.join(self.argv)} did not start tracing within {ready_timeout} s")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> str:
        with open(self.stdout_path, errors="replace") as f:
            return f.read()

    @property
    def stderr(self) -> str:
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Signal the process and wait; returns its exit code (killed after *timeout*)."""
        self.returncode = signal_and_wait(self.proc, sig, timeout)
        return self.returncode

    def wait(self, timeout: float) -> int:
        self.returncode = self.proc.wait(timeout=timeout)
        return self.returncode

    def remove_files(self) -> None:
        for path in (self.stdout_path, self.stderr_path):
            if os.path.exists(path):
                os.unlink(path)
        os.rmdir(self._dir)

    def __enter__(self) -> TraceProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self.remove_files()


# The keys of one `trace --json` record, in order: the documented record (docs/live-view.md).
JSON_KEYS = [
    "time",
    "ip_version",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "state",
    "kind",
    "cause",
    "segments",
    "srtt_us",
    "rto_ms",
    "backoff",
    "netns",
    "cgroup",
    "pid",
    "comm",
]
