"""Where cgroup v2 is mounted, and cgroup ids (inode numbers) to paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retransmon.attribution.cgroups import UNKNOWN, CgroupResolver, cgroup2_mount, parse_cgroup2_mount

PURE_V2 = [
    "22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
    "23 28 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw",
    "28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro",
    "26 23 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot",
    "27 23 0:25 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:5 - pstore pstore rw",
]

HYBRID = [
    "24 18 0:19 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755",
    "25 24 0:20 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 "
    "rw,nsdelegate",
    "26 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup "
    "rw,xattr,name=systemd",
    "29 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup "
    "rw,cpu,cpuacct",
]

V1_ONLY = [
    "24 18 0:19 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755",
    "26 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup "
    "rw,xattr,name=systemd",
    "30 24 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory",
]

# No optional fields; a container's own cgroup namespace root.
CONTAINER = ["1432 1420 0:33 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw"]
# Several optional fields before the separator.
OPTIONAL_FIELDS = [
    "40 30 0:40 / /mnt/cg2 rw,relatime shared:20 master:3 propagate_from:2 - cgroup2 none rw",
]
# A mount point with a space, escaped as \040.
ESCAPED = [r"41 30 0:41 / /mnt/my\040cgroup rw,relatime - cgroup2 cgroup2 rw"]
# A source or mount point named "cgroup2" is not the fstype.
DECOY = [
    "42 30 0:42 / /mnt/cgroup2 rw,relatime - tmpfs cgroup2 rw",
    "43 30 0:43 / /cgroup2 rw,relatime shared:7 - ext4 /dev/cgroup2 rw",
]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (PURE_V2, "/sys/fs/cgroup"),
        (HYBRID, "/sys/fs/cgroup/unified"),
        (V1_ONLY, None),
        ([], None),
        (["garbage", ""], None),
        (CONTAINER, "/sys/fs/cgroup"),
        (OPTIONAL_FIELDS, "/mnt/cg2"),
        (ESCAPED, "/mnt/my cgroup"),
        (DECOY, None),
        (DECOY + HYBRID, "/sys/fs/cgroup/unified"),
    ],
    ids=[
        "pure-v2",
        "hybrid",
        "v1-only",
        "empty",
        "garbage",
        "container",
        "optional",
        "escaped",
        "decoy",
        "decoy+",
    ],
)
def test_parse_cgroup2_mount(lines: list[str], expected: str | None) -> None:
    assert parse_cgroup2_mount(lines) == expected


def test_cgroup2_mount_reads_a_file(tmp_path: Path) -> None:
    f = tmp_path / "mountinfo"
    f.write_text("\n".join(HYBRID) + "\n")
    assert cgroup2_mount(str(f)) == "/sys/fs/cgroup/unified"


def test_cgroup2_mount_missing_file(tmp_path: Path) -> None:
    assert cgroup2_mount(str(tmp_path / "nope")) is None


# ---------------------------------------------------------------------------
# CgroupResolver over a directory tree standing in for /sys/fs/cgroup
# ---------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "system.slice" / "nginx.service").mkdir(parents=True)
    (tmp_path / "system.slice" / "sshd.service").mkdir()
    (tmp_path / "kubepods.slice" / "kubepods-pod1.slice" / "cri-containerd-abc.scope").mkdir(parents=True)
    (tmp_path / "cgroup.procs").write_text("")
    return tmp_path


def _ino(path: Path) -> int:
    return os.stat(path).st_ino


@pytest.mark.parametrize(
    "rel",
    [
        "system.slice",
        "system.slice/nginx.service",
        "system.slice/sshd.service",
        "kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope",
    ],
)
def test_nested_paths(tree: Path, rel: str) -> None:
    r = CgroupResolver(mount=str(tree), rescan_interval=3600)
    assert r.path(_ino(tree / rel)) == "/" + rel


def test_root_is_slash(tree: Path) -> None:
    assert CgroupResolver(mount=str(tree)).path(_ino(tree)) == "/"


def test_zero_is_unknown(tree: Path) -> None:
    assert CgroupResolver(mount=str(tree), rescan_interval=0).path(0) == UNKNOWN


def test_unknown_id(tree: Path) -> None:
    r = CgroupResolver(mount=str(tree), rescan_interval=0)
    assert r.path(2**62 + 12345) == UNKNOWN


def test_files_are_not_cgroups(tree: Path) -> None:
    r = CgroupResolver(mount=str(tree), rescan_interval=0)
    assert r.path(_ino(tree / "cgroup.procs")) == UNKNOWN


def test_rescan_picks_up_new_directory(tree: Path) -> None:
    r = CgroupResolver(mount=str(tree), rescan_interval=0)
    assert r.path(_ino(tree / "system.slice")) == "/system.slice"
    new = tree / "system.slice" / "late.service"
    new.mkdir()
    assert r.path(_ino(new)) == "/system.slice/late.service"


def test_known_ids_do_not_rescan(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = CgroupResolver(mount=str(tree), rescan_interval=0)
    ino = _ino(tree / "system.slice")
    assert r.path(ino) == "/system.slice"
    walks = 0
    real_walk = os.walk

    def counting_walk(top: str) -> object:
        nonlocal walks
        walks += 1
        return real_walk(top)

    monkeypatch.setattr(os, "walk", counting_walk)
    for _ in range(5):
        assert r.path(ino) == "/system.slice"
    assert walks == 0


def test_removed_directory(tree: Path) -> None:
    r = CgroupResolver(mount=str(tree), rescan_interval=0)
    gone = tree / "system.slice" / "sshd.service"
    ino = _ino(gone)
    assert r.path(ino) == "/system.slice/sshd.service"
    gone.rmdir()
    # The cached name may still be served; it must not raise.
    assert r.path(ino) in ("/system.slice/sshd.service", UNKNOWN)


def test_missing_mount_gives_unknown(tmp_path: Path) -> None:
    r = CgroupResolver(mount=str(tmp_path / "not-mounted"), rescan_interval=0)
    assert r.path(12345) == UNKNOWN


def test_default_mount_comes_from_mountinfo() -> None:
    assert CgroupResolver().mount == cgroup2_mount()
