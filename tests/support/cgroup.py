"""cgroup v2 groups for tests: created under the cgroup2 mount, removed when done.

A process is put into a group by starting it through :meth:`TestCgroup.wrap`,
a shell that writes its own PID to the group's ``cgroup.procs`` and then
execs the command: everything the command creates (sockets included) belongs
to the group from its first instruction.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from types import TracebackType

from retransmon.attribution.cgroups import cgroup2_mount
from retransmon.chaos.errors import TestbedError

EMPTY_TIMEOUT = 10.0  # seconds to wait for a group's processes to end before removing it


class TestCgroup:
    """The group `relpath` (e.g. ``/rmtest-1/docker-<id>.scope``) under the cgroup2 mount.

    Missing parent directories are created too; close() removes every directory
    it created, deepest first, after the processes in them (started by the test
    through wrap()) have ended.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, relpath: str, mount: str | None = None) -> None:
        root = mount if mount is not None else cgroup2_mount()
        if root is None:
            raise TestbedError(
                "cgroup v2 is not mounted (looked for a cgroup2 entry in /proc/self/mountinfo)"
            )
        self.relpath = "/" + relpath.strip("/")
        self.path = os.path.join(root, self.relpath.lstrip("/"))
        self._created: list[str] = []
        try:
            parts = self.relpath.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                d = os.path.join(root, *parts[:i])
                if not os.path.isdir(d):
                    os.mkdir(d)
                    self._created.append(d)
        except BaseException:
            self.close()
            raise

    @property
    def id(self) -> int:
        """The cgroup id the kernel gives sockets of its processes (the directory's inode)."""
        return os.stat(self.path).st_ino

    def wrap(self, argv: list[str]) -> list[str]:
        """argv, started inside this group. Wrap `ip netns exec NS ...` rather than be wrapped by
        it: inside, /sys is a fresh sysfs without the cgroup2 mount."""
        procs = os.path.join(self.path, "cgroup.procs")
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def pids(self, path: str | None = None) -> list[int]:
        try:
            with open(os.path.join(path or self.path, "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def close(self) -> None:
        """Remove the directories created here; processes left in them (ours) are ended first."""
        for d in reversed(self._created):
            deadline = time.monotonic() + EMPTY_TIMEOUT
            while self.pids(d) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in self.pids(d):  # only a process this test started can be in its group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY until the killed processes are gone
                    time.sleep(0.05)
        self._created.clear()

    def __enter__(self) -> TestCgroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
