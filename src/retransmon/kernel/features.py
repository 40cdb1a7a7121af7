"""What the running kernel offers, read from its BTF (no tracefs, no headers), and, for what BTF
cannot tell, asked of the verifier with a tiny program (bpfprobe.py). Read once per start; the
hook plans (plans.py) are chosen from it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from retransmon.errors import EnvironmentProblem
from retransmon.kernel import bpfprobe, libbpf

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"


@dataclass(frozen=True)
class KernelFeatures:
    release: str
    tp_btf_retransmit_skb: bool  # btf_trace_tcp_retransmit_skb exists
    tp_btf_retransmit_synack: bool
    tp_btf_sock_set_state: bool
    retransmit_has_err: bool  # tcp_retransmit_skb(sk, skb, err), Linux 6.x
    sk_cgroup_pointer: bool  # sock_cgroup_data.cgroup (5.15+)
    iter_task_file: bool = False  # iter/task_file (5.8+): live sockets' sent segments at harvest
    tp_btf_destroy_sock: bool = False  # tcp_destroy_sock (4.16+): a safety net for skipped closes
    sock_from_file: bool = False  # bpf_sock_from_file() (5.11+): the sent-segments iterator needs it
    # None: not known (the probe could not run); plans that need it are then tried and may be refused.
    bpf_atomics: bool | None = None  # compare-and-swap, fetch-and-add, atomic or (5.12+): tp_btf programs
    sk_storage_tracing: bool | None = None  # socket storage in tracing programs (5.11+): exact counting

    @property
    def tp_btf(self) -> bool:
        return self.tp_btf_retransmit_skb and self.tp_btf_retransmit_synack


def _tracepoint_nargs(btf: libbpf.Btf, name: str) -> int | None:
    """Arguments of a raw tracepoint, without the leading __data pointer."""
    tid = btf.find(f"btf_trace_{name}", libbpf.BTF_KIND_TYPEDEF)
    if tid is None:
        return None
    ptr = btf.type(btf.type(tid).size_or_type)  # typedef -> pointer
    proto = btf.type(ptr.size_or_type)  # pointer -> func proto
    if proto.kind != libbpf.BTF_KIND_FUNC_PROTO:
        return None
    return proto.vlen - 1


def _has_member(btf: libbpf.Btf, struct: str, member: str) -> bool:
    sid = btf.find(struct, libbpf.BTF_KIND_STRUCT)
    return sid is not None and any(m.name == member for m in btf.members(sid))


def _has_helper(btf: libbpf.Btf, name: str) -> bool:
    """Whether the kernel knows a BPF helper: its BPF_FUNC_ value in enum bpf_func_id."""
    eid = btf.find("bpf_func_id", libbpf.BTF_KIND_ENUM)
    return eid is not None and f"BPF_FUNC_{name}" in btf.enumerators(eid)


def _has_func(btf: libbpf.Btf, name: str) -> bool:
    return btf.find(name, libbpf.BTF_KIND_FUNC) is not None


def _sk_storage_tracing(marker: bool, atomics: bool | None) -> bool | None:
    """Socket storage in tracing programs (commit 8e4597c627fb, 5.11): the function that allows it is
    in BTF, or the kernel has the atomics of 5.12. Unknown rather than missing when neither can say."""
    if marker or atomics:
        return True
    return False if atomics is False else None


def probe() -> KernelFeatures:
    """Read the running kernel's BTF; EnvironmentProblem when there is none."""
    if not os.path.exists(VMLINUX_BTF):
        raise EnvironmentProblem(
            f"this kernel has no BTF ({VMLINUX_BTF} is missing), which CO-RE BPF programs need",
            fix="run a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.8+; Debian 11+ kernels have it)",
        )
    atomics = bpfprobe.atomics()
    with libbpf.Btf.vmlinux() as btf:
        retrans = _tracepoint_nargs(btf, "tcp_retransmit_skb")
        return KernelFeatures(
            release=os.uname().release,
            tp_btf_retransmit_skb=retrans is not None,
            tp_btf_retransmit_synack=_tracepoint_nargs(btf, "tcp_retransmit_synack") is not None,
            tp_btf_sock_set_state=_tracepoint_nargs(btf, "inet_sock_set_state") is not None,
            retransmit_has_err=(retrans or 0) >= 3,
            sk_cgroup_pointer=_has_member(btf, "sock_cgroup_data", "cgroup"),
            iter_task_file=btf.find("bpf_iter__task_file", libbpf.BTF_KIND_STRUCT) is not None,
            tp_btf_destroy_sock=_tracepoint_nargs(btf, "tcp_destroy_sock") is not None,
            sock_from_file=_has_helper(btf, "sock_from_file"),
            bpf_atomics=atomics,
            sk_storage_tracing=_sk_storage_tracing(_has_func(btf, "bpf_sk_storage_tracing_allowed"), atomics),
        )
