"""Linux capabilities: which this process holds, and dropping them once BPF programs are attached.

Capabilities belong to each thread, not to the process: :func:`drop_after_attach`
must run while the agent has a single thread, so that every thread started
afterwards (HTTP server, harvester) inherits the reduced set. It uses the two
system calls ``capget``/``capset`` and ``prctl`` through ctypes (see
docs/dependencies.md for why no library).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# capability(7) numbers, Linux 5.9.
CAP_NAMES: dict[int, str] = {
    0: "CAP_CHOWN",
    1: "CAP_DAC_OVERRIDE",
    2: "CAP_DAC_READ_SEARCH",
    3: "CAP_FOWNER",
    4: "CAP_FSETID",
    5: "CAP_KILL",
    6: "CAP_SETGID",
    7: "CAP_SETUID",
    8: "CAP_SETPCAP",
    9: "CAP_LINUX_IMMUTABLE",
    10: "CAP_NET_BIND_SERVICE",
    11: "CAP_NET_BROADCAST",
    12: "CAP_NET_ADMIN",
    13: "CAP_NET_RAW",
    14: "CAP_IPC_LOCK",
    15: "CAP_IPC_OWNER",
    16: "CAP_SYS_MODULE",
    17: "CAP_SYS_RAWIO",
    18: "CAP_SYS_CHROOT",
    19: "CAP_SYS_PTRACE",
    20: "CAP_SYS_PACCT",
    21: "CAP_SYS_ADMIN",
    22: "CAP_SYS_BOOT",
    23: "CAP_SYS_NICE",
    24: "CAP_SYS_RESOURCE",
    25: "CAP_SYS_TIME",
    26: "CAP_SYS_TTY_CONFIG",
    27: "CAP_MKNOD",
    28: "CAP_LEASE",
    29: "CAP_AUDIT_WRITE",
    30: "CAP_AUDIT_CONTROL",
    31: "CAP_SETFCAP",
    32: "CAP_MAC_OVERRIDE",
    33: "CAP_MAC_ADMIN",
    34: "CAP_SYSLOG",
    35: "CAP_WAKE_ALARM",
    36: "CAP_BLOCK_SUSPEND",
    37: "CAP_AUDIT_READ",
    38: "CAP_PERFMON",
    39: "CAP_BPF",
    40: "CAP_CHECKPOINT_RESTORE",
}
CAP_BY_NAME = {name: bit for bit, name in CAP_NAMES.items()}
CAP_SETPCAP = 8
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
REQUIRED = ("CAP_BPF", "CAP_PERFMON")

# What the agent loses without each capability it can use. Everything else it never needs.
COSTS: dict[str, str] = {
    "CAP_BPF": "cannot create maps or load BPF programs (CAP_SYS_ADMIN covers it, and is "
    "the only way on kernels before 5.8): nothing is counted",
    "CAP_PERFMON": "cannot attach tracing programs nor read socket fields in them (CAP_SYS_ADMIN "
    "covers it): nothing is counted",
    "CAP_SYS_PTRACE": "the start-up scan of listening ports skips other users' processes and "
    "processes holding more capabilities than the agent: service_port may read the remote port "
    "for listeners opened before the agent started, in namespaces only such processes use",
    "CAP_NET_BIND_SERVICE": "--listen on a port below 1024 is refused",
}

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


@dataclass(frozen=True)
class CapSets:
    """The calling thread's capability sets as bit masks."""

    effective: int
    permitted: int
    inheritable: int
    bounding: int = 0
    ambient: int = 0

    def effective_names(self) -> set[str]:
        return names(self.effective)


def names(mask: int) -> set[str]:
    return {name for bit, name in CAP_NAMES.items() if mask & (1 << bit)} | {
        f"cap_{bit}" for bit in range(len(CAP_NAMES), 64) if mask & (1 << bit)
    }


def mask_of(*cap_names: str) -> int:
    out = 0
    for name in cap_names:
        out |= 1 << CAP_BY_NAME[name]
    return out


def parse_status(text: str) -> CapSets:
    """Capability masks from the text of /proc/<pid>/status (or /proc/<pid>/task/<tid>/status)."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            fields[key] = int(value.strip(), 16)
    return CapSets(
        effective=fields.get("CapEff", 0),
        permitted=fields.get("CapPrm", 0),
        inheritable=fields.get("CapInh", 0),
        bounding=fields.get("CapBnd", 0),
        ambient=fields.get("CapAmb", 0),
    )


def current(status_path: str = "/proc/thread-self/status") -> CapSets:
    """This thread's capabilities; all zero if /proc cannot be read."""
    try:
        with open(status_path) as f:
            return parse_status(f.read())
    except OSError:
        return CapSets(0, 0, 0)


# What to do when has_bpf_privileges() is false.
PRIVILEGE_FIX = (
    "run as root, or grant CAP_BPF and CAP_PERFMON (Linux 5.8+), e.g. "
    "setpriv --inh-caps=+bpf,+perfmon --ambient-caps=+bpf,+perfmon, "
    "or AmbientCapabilities=CAP_BPF CAP_PERFMON in the systemd unit"
)


def has_bpf_privileges(caps: CapSets | None = None) -> bool:
    """The one privilege check: CAP_BPF and CAP_PERFMON in this thread's effective set, or
    CAP_SYS_ADMIN, which covers both (and is the only way before Linux 5.8)."""
    eff = (caps or current()).effective
    want = mask_of(*REQUIRED)
    return eff & want == want or bool(eff & (1 << CAP_SYS_ADMIN))


# -- changing them -------------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) for the calling thread; the 64-bit masks go in two 32-bit halves."""
    libc = _libc()
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _prctl(option: int, arg2: int = 0) -> int:
    libc = _libc()
    result: int = libc.prctl(
        option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)
    )
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return result


@dataclass(frozen=True)
class DropResult:
    before: CapSets
    after: CapSets
    kept: set[str]


def drop_after_attach(still_works: Callable[[], bool]) -> DropResult:
    """Give up every capability once the BPF programs are attached.

    Reading and updating maps through file descriptors already open needs no
    capability on Linux 6.5+; older kernels with ``kernel.unprivileged_bpf_disabled``
    set refuse every bpf() call without CAP_BPF. So CAP_BPF is first removed from
    the effective set only (reversible), *still_works* tries a map access, and
    only if that works is it removed for good; otherwise CAP_BPF alone is kept.

    Also clears the inheritable and ambient sets, the bounding set where allowed
    (it needs CAP_SETPCAP), and sets no_new_privs, so no child can regain anything.
    """
    if threading.active_count() != 1:
        raise RuntimeError("capabilities must be dropped before any thread starts (they are per thread)")
    before = current()
    if before.effective & (1 << CAP_SETPCAP):
        for bit in range(64):
            if before.bounding & (1 << bit):
                try:
                    _prctl(PR_CAPBSET_DROP, bit)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # beyond the kernel's last capability
                        raise
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    # The capability that allows bpf() calls: CAP_BPF, or CAP_SYS_ADMIN on kernels before 5.8.
    keep = before.permitted & (1 << CAP_BPF) or before.permitted & (1 << CAP_SYS_ADMIN)
    _capset(0, keep, 0)
    if keep and not _safely(still_works):
        _capset(keep, keep, 0)
        log.warning(
            "this kernel refuses BPF map access without %s (kernel.unprivileged_bpf_disabled "
            "on Linux before 6.5): keeping it, every other capability dropped",
            " ".join(sorted(names(keep))),
        )
    elif keep:
        _capset(0, 0, 0)
    after = current()
    return DropResult(before, after, names(after.permitted))


def _safely(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except OSError:
        return False


def drop_and_log(still_works: Callable[[], bool]) -> DropResult | None:
    """drop_after_attach, logged; with threads already running, keep everything and say why."""
    if threading.active_count() != 1:
        log.warning("not dropping capabilities: %d threads are running already", threading.active_count())
        return None
    result = drop_after_attach(still_works)
    dropped = sorted(names(result.before.permitted) - result.kept)
    shown = [c for c in dropped if c in COSTS]
    others = len(dropped) - len(shown)
    log.info(
        "dropped capabilities: %s%s; kept: %s",
        ", ".join(shown) or ("none held" if not dropped else ""),
        f"{', ' if shown else ''}{others} others" if others else "",
        ", ".join(sorted(result.kept)) or "none",
    )
    return result
