"""Kernel feature sets the unit tests describe kernels with, written once."""

from __future__ import annotations

from dataclasses import replace

from retransmon.kernel.features import KernelFeatures

# Every tp_btf hook in BTF; iterator, atomics and socket storage left unprobed.
MODERN = KernelFeatures(
    release="6.12.0",
    tp_btf_retransmit_skb=True,
    tp_btf_retransmit_synack=True,
    tp_btf_sock_set_state=True,
    retransmit_has_err=True,
    sk_cgroup_pointer=True,
    tp_btf_destroy_sock=True,
)

# Debian 11's 5.10: tp_btf hooks in BTF, but no atomics (5.12), no socket storage in tracing
# programs (5.11), no bpf_sock_from_file (5.11).
LINUX_5_10 = replace(
    MODERN,
    release="5.10.0-32-amd64",
    retransmit_has_err=False,
    sk_cgroup_pointer=False,
    iter_task_file=True,
    sock_from_file=False,
    bpf_atomics=False,
    sk_storage_tracing=False,
)
