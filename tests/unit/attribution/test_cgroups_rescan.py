"""cgroup ids to paths: a new group resolves at once, an unknown id is not rescanned on every lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retransmon.attribution.cgroups import UNKNOWN, CgroupResolver, parse_cgroup2_mount


def test_mount_found_on_unified_and_hybrid_hosts() -> None:
    unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw"
    hybrid = "35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate"
    v1 = "36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory"
    assert parse_cgroup2_mount([v1, unified]) == "/sys/fs/cgroup"
    assert parse_cgroup2_mount([v1, hybrid]) == "/sys/fs/cgroup/unified"
    assert parse_cgroup2_mount([v1]) is None


def test_a_group_created_after_a_scan_resolves_at_first_sight(tmp_path: Path) -> None:
    (tmp_path / "system.slice" / "a.service").mkdir(parents=True)
    resolver = CgroupResolver(str(tmp_path), rescan_interval=3600)
    assert resolver.path(os.stat(tmp_path / "system.slice" / "a.service").st_ino) == "/system.slice/a.service"
    new = tmp_path / "system.slice" / "docker-abc.scope"
    new.mkdir()  # created just after a scan, well within rescan_interval
    assert resolver.path(os.stat(new).st_ino) == "/system.slice/docker-abc.scope"
    assert resolver.path(os.stat(tmp_path).st_ino) == "/"


def test_an_unknown_id_is_rescanned_only_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = CgroupResolver(str(tmp_path), rescan_interval=3600)
    scans = 0
    real_scan = resolver._scan

    def counting_scan() -> None:
        nonlocal scans
        scans += 1
        real_scan()

    monkeypatch.setattr(resolver, "_scan", counting_scan)
    for _ in range(5):
        assert resolver.path(987654321) == UNKNOWN
    assert scans == 1
    assert resolver.path(0) == UNKNOWN
    assert scans == 1
