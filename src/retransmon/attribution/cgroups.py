"""cgroup v2 ids (what the kernel stores per socket) to paths (what labels show)."""

from __future__ import annotations

import logging
import os
import re
import threading
import time

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where cgroup v2 is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts."""
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return parse_cgroup2_mount(lines)


def _unescape_mountinfo(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as 3-digit octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_cgroup2_mount(lines: list[str]) -> str | None:
    for line in lines:
        # mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        if right.split(" ", 1)[0] == "cgroup2":
            return _unescape_mountinfo(left.split(" ")[4])
    return None


class CgroupResolver:
    """Maps cgroup ids to paths relative to the cgroup2 mount, e.g. ``/system.slice/nginx.service``.

    The id of a cgroup v2 directory is its inode number. An id not found makes
    the hierarchy be scanned again: at once the first time it is seen (a new
    container's group must not read ``unknown``), then at most once per
    ``rescan_interval`` seconds (a group removed while its sockets live on).
    """

    MAX_MISSED = 65536

    def __init__(self, mount: str | None = None, rescan_interval: float = 10.0) -> None:
        self.mount = mount if mount is not None else cgroup2_mount()
        self.rescan_interval = rescan_interval
        self._paths: dict[int, str] = {}
        self._missed: dict[int, float] = {}  # id -> when it was first looked for in vain
        self._last_scan = -1e18  # when the last scan started
        self._lock = threading.Lock()

    def _scan(self) -> None:
        self._last_scan = time.monotonic()
        if self.mount is None:
            return
        paths: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.mount):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue  # removed while walking
            rel = os.path.relpath(dirpath, self.mount)
            paths[ino] = "/" if rel == "." else "/" + rel
        self._paths = paths

    def path(self, cgroup_id: int) -> str:
        if cgroup_id == 0:
            return UNKNOWN
        with self._lock:
            found = self._paths.get(cgroup_id)
            if found is None:
                now = time.monotonic()
                if len(self._missed) >= self.MAX_MISSED:
                    self._missed.clear()
                first_missed = self._missed.setdefault(cgroup_id, now)
                if self._last_scan < first_missed or now - self._last_scan >= self.rescan_interval:
                    self._scan()
                    found = self._paths.get(cgroup_id)
                    if found is not None:
                        del self._missed[cgroup_id]
        return found if found is not None else UNKNOWN
