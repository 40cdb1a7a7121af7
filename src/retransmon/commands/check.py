"""`retransmon check`: what this kernel and these privileges allow, and what to do about the rest."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from retransmon.attribution.cgroups import cgroup2_mount
from retransmon.commands import args as common
from retransmon.errors import RetransmonError
from retransmon.kernel import capabilities, libbpf
from retransmon.kernel.degraded import missing, sent_segments_missing
from retransmon.kernel.features import VMLINUX_BTF, KernelFeatures, probe
from retransmon.kernel.plans import REQUIREMENTS, Requirement
from retransmon.kernel.skeleton import ProgramOptions, RetransmonBPF

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Finding:
    status: str
    item: str
    detail: str
    fix: str = ""


def _read_sysctl(name: str) -> str | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def privilege_findings(caps: capabilities.CapSets, uid: int) -> list[Finding]:
    """The capabilities held, and for each useful one missing, what it costs."""
    held = caps.effective_names()
    useful = [*capabilities.REQUIRED, *(c for c in capabilities.COSTS if c not in capabilities.REQUIRED)]
    shown = ", ".join(c for c in useful if c in held) or "none of " + ", ".join(useful)
    extra = len(held - set(useful))
    if extra:
        shown += f" (+{extra} more, not needed: serve drops them once attached)"
    out = []
    if capabilities.has_bpf_privileges(caps):
        out.append(Finding(OK, "privileges", f"uid {uid}, capabilities: {shown}"))
    else:
        out.append(
            Finding(
                FAIL,
                "privileges",
                f"uid {uid}, capabilities: {shown}: BPF needs more",
                capabilities.PRIVILEGE_FIX,
            )
        )
    covered_by_admin = "CAP_SYS_ADMIN" in held
    for cap, cost in capabilities.COSTS.items():
        if cap in held or (covered_by_admin and cap in capabilities.REQUIRED):
            continue
        status = FAIL if cap in capabilities.REQUIRED else WARN
        out.append(Finding(status, f"without {cap}", cost))
    for name, meaning in (
        ("kernel.unprivileged_bpf_disabled", "BPF without CAP_BPF is refused; retransmon holds CAP_BPF"),
        ("kernel.perf_event_paranoid", "not used: tracing programs attach with CAP_PERFMON"),
    ):
        value = _read_sysctl(name)
        if value is not None:
            out.append(Finding(OK, name, f"{value} ({meaning})"))
    return out


def _tracefs_mounted() -> bool:
    return any(
        os.path.isdir(p) for p in ("/sys/kernel/tracing/events/tcp", "/sys/kernel/debug/tracing/events/tcp")
    )


def run_checks(hooks: str = "auto") -> list[Finding]:
    out = [Finding(OK, "kernel", os.uname().release), Finding(OK, "libbpf", libbpf.version())]
    out.extend(privilege_findings(capabilities.current(), os.geteuid()))
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
            "tcp_retransmit_skb, tcp_retransmit_synack in the kernel's BTF"
            if features.tp_btf
            else "missing: classic tracepoints only",
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
    out.extend(requirement_finding(r, features) for r in REQUIREMENTS)
    out.extend(_try_load(hooks, features))
    return out


def requirement_finding(req: Requirement, features: KernelFeatures) -> Finding:
    """A BPF feature some hook plans need: present, missing with what that costs, or not known."""
    offered = req.offered(features)
    if offered:
        return Finding(OK, req.name, f"available ({req.since}+)")
    if offered is None:
        return Finding(WARN, req.name, "not known (the probe could not run): plans that need it are tried")
    return Finding(WARN, req.name, f"missing (needs {req.since}): {req.cost}")


def loaded_findings(bpf: RetransmonBPF) -> list[Finding]:
    """What the attached plan gives, from what actually loaded (not from what BTF promises)."""
    assert bpf.plan is not None and bpf.features is not None
    attached = {p.name for p in bpf.programs}
    out = []
    if "tp_btf_inet_sock_set_state" in attached and bpf.plan.sk_storage:
        out.append(Finding(OK, "socket lifecycle", "inet_sock_set_state: baselines, close reconciliation"))
    sent = sent_segments_missing(bpf.plan, bpf.features)
    if sent is None:
        out.append(
            Finding(
                OK, "segments sent", "iter/task_file: live sockets at every harvest, closed ones at close"
            )
        )
    for line in missing(bpf):
        item, _, detail = line.partition(": ")
        out.append(Finding(WARN, item, detail))
    return out


def _try_load(hooks: str, features: KernelFeatures) -> list[Finding]:
    bpf = RetransmonBPF(ProgramOptions(hooks=hooks), features)
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
        found.append(cause_finding(plan.name))
        for name, why in bpf.rejected:
            found.append(Finding(WARN, f"hooks {name}", f"refused: {why}"))
        return found + loaded_findings(bpf)
    finally:
        bpf.close()


def cause_finding(plan: str) -> Finding:
    """Whether the cause label can tell fast, slow_start, timeout and tail_loss_probe apart."""
    if plan.startswith("tp_btf"):
        return Finding(
            OK,
            "cause label",
            "fast, slow_start, timeout, tail_loss_probe, syn from the socket's state at each retransmit"
            + ("" if plan != "tp_btf-per-event" else " (per event: skipped runs are not caught up)"),
        )
    return Finding(
        WARN,
        "cause label",
        f'{plan} hooks cannot tell causes apart: SYN and SYN-ACK retransmits read cause="syn", '
        'every other retransmit cause="fast"',
        "a kernel that loads the tp_btf plan (tcp tracepoints in BTF, BPF atomics: Linux 5.12+) "
        "tells the other causes apart",
    )


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


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser("check", help="preflight: kernel, BTF, hooks, privileges")
    common.add_common(check)
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    findings = run_checks(args.hooks)
    print(render(findings))
    return 0 if ready(findings) else 1
