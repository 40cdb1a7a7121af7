"""`retransmon check`: what this kernel and these privileges allow, and what to do about the rest."""

from __future__ import annotations

import os
from dataclasses import dataclass

from retransmon.bpf import libbpf
from retransmon.bpf.kernel_features import VMLINUX_BTF, KernelFeatures, probe
from retransmon.bpf.program import PRIVILEGE_FIX, ProgramOptions, RetransmonBPF
from retransmon.cgroups import cgroup2_mount
from retransmon.errors import RetransmonError

OK, WARN, FAIL = "ok", "warn", "FAIL"

CAPABILITIES = {21: "CAP_SYS_ADMIN", 38: "CAP_PERFMON", 39: "CAP_BPF", 12: "CAP_NET_ADMIN"}


@dataclass(frozen=True)
class Finding:
    status: str
    item: str
    detail: str
    fix: str = ""


def effective_capabilities(status_path: str = "/proc/self/status") -> set[str]:
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    eff = int(line.split()[1], 16)
                    return {name for bit, name in CAPABILITIES.items() if eff & (1 << bit)}
    except OSError:
        pass
    return set()


def _tracefs_mounted() -> bool:
    return any(
        os.path.isdir(p) for p in ("/sys/kernel/tracing/events/tcp", "/sys/kernel/debug/tracing/events/tcp")
    )


def run_checks(hooks: str = "auto") -> list[Finding]:
    out = [Finding(OK, "kernel", os.uname().release), Finding(OK, "libbpf", libbpf.version())]
    caps = effective_capabilities()
    if os.geteuid() == 0 or {"CAP_BPF", "CAP_PERFMON"} <= caps or "CAP_SYS_ADMIN" in caps:
        out.append(
            Finding(
                OK, "privileges", f"uid {os.geteuid()}, capabilities: {', '.join(sorted(caps)) or 'none'}"
            )
        )
    else:
        out.append(Finding(FAIL, "privileges", "neither root nor CAP_BPF+CAP_PERFMON", PRIVILEGE_FIX))

    if not os.path.exists(VMLINUX_BTF):
        out.append(
            Finding(
                FAIL, "BTF", f"{VMLINUX_BTF} missing", "a kernel with CONFIG_DEBUG_INFO_BTF=y (Linux 5.8+)"
            )
        )
        return out
    features: KernelFeatures = probe()
    out.append(Finding(OK, "BTF", VMLINUX_BTF))
    out.append(
        Finding(
            OK if features.tp_btf else WARN,
            "tp_btf tracepoints",
            "tcp_retransmit_skb, tcp_retransmit_synack"
            if features.tp_btf
            else "missing: classic tracepoints only",
        )
    )
    out.append(
        Finding(
            OK if features.tp_btf_sock_set_state else WARN,
            "socket lifecycle hook",
            "inet_sock_set_state (baselines, close reconciliation, listening ports)"
            if features.tp_btf_sock_set_state
            else "inet_sock_set_state missing: counting is per event",
        )
    )
    out.append(
        Finding(
            OK,
            "failed attempts",
            "tracepoint reports err; reconciled via total_retrans"
            if features.retransmit_has_err
            else "tracepoint fires for transmitted segments only",
        )
    )
    out.append(
        Finding(
            OK if features.sk_cgroup_pointer else WARN,
            "socket cgroup",
            "sock_cgroup_data.cgroup"
            if features.sk_cgroup_pointer
            else "unavailable: cgroup label reads 'unknown'",
        )
    )
    out.append(
        Finding(
            OK if features.iter_task_file else WARN,
            "segments sent",
            "iter/task_file: live sockets counted at every harvest, closed ones at close"
            if features.iter_task_file
            else "no task_file iterator: tcp_segments_sent_total grows only when sockets close",
        )
    )
    mount = cgroup2_mount()
    out.append(
        Finding(OK if mount else WARN, "cgroup v2", mount or "not mounted: cgroup label reads 'unknown'")
    )
    out.append(
        Finding(
            OK if _tracefs_mounted() else WARN,
            "tracefs",
            "mounted (classic tracepoint fallback possible)"
            if _tracefs_mounted()
            else "not mounted: the classic tracepoint fallback cannot attach",
            "" if _tracefs_mounted() else "mount -t tracefs nodev /sys/kernel/tracing",
        )
    )
    out.extend(_try_load(hooks))
    return out


def _try_load(hooks: str) -> list[Finding]:
    bpf = RetransmonBPF(ProgramOptions(hooks=hooks))
    try:
        bpf.start()
    except RetransmonError as exc:
        return [Finding(FAIL, "load and attach", exc.message, exc.fix or "")]
    try:
        plan = bpf.plan
        assert plan is not None
        found = [
            Finding(
                OK if bpf.exact else WARN,
                "load and attach",
                f"hooks {plan.name}: {', '.join(p.label for p in bpf.programs)}; counting "
                + ("exact (matches RetransSegs)" if bpf.exact else "per event (may differ from RetransSegs)"),
            )
        ]
        for name, why in bpf.rejected:
            found.append(Finding(WARN, f"hooks {name}", f"refused: {why}"))
        return found
    finally:
        bpf.close()


def render(findings: list[Finding]) -> str:
    width = max(len(f.item) for f in findings)
    lines = []
    for f in findings:
        line = f"{f.status:<4}  {f.item:<{width}}  {f.detail}"
        if f.fix:
            line += f"\n      {'':<{width}}  fix: {f.fix}"
        lines.append(line)
    return "\n".join(lines)


def ready(findings: list[Finding]) -> bool:
    return not any(f.status == FAIL for f in findings)
