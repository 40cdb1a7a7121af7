"""What the kernel's BPF verifier accepts, asked with a tiny program before the real object is tried.

The tp_btf programs use the atomic instructions of Linux 5.12 (compare-and-swap,
fetch-and-add, atomic or: clang emits them with ``-mcpu=v3``); older verifiers refuse
them (``BPF_STX uses reserved fields``), but only after libbpf has opened, relocated
and loaded the whole object, which takes tens of seconds on a slow machine. A
seven-instruction socket filter answers the same question at once.
"""

from __future__ import annotations

import errno
import struct

from retransmon.kernel import libbpf

# Opcode parts (include/uapi/linux/bpf.h, bpf_common.h).
BPF_ST, BPF_STX, BPF_ALU64, BPF_JMP = 0x02, 0x03, 0x07, 0x05
BPF_MEM, BPF_ATOMIC, BPF_DW = 0x60, 0xC0, 0x18
BPF_MOV, BPF_K, BPF_EXIT = 0xB0, 0x00, 0x90
BPF_OR, BPF_FETCH, BPF_CMPXCHG = 0x40, 0x01, 0xF0 | 0x01
R0, R1, R10 = 0, 1, 10


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn (little-endian: dst_reg in the low nibble)."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


# An 8-byte stack slot set to 0, then an atomic or and a compare-and-swap on it.
# The or (BPF_OR without BPF_FETCH) is what clang makes of __sync_fetch_and_add(p, 0).
ATOMICS_PROGRAM = b"".join(
    (
        insn(BPF_ST | BPF_MEM | BPF_DW, dst=R10, off=-8, imm=0),
        insn(BPF_ALU64 | BPF_MOV | BPF_K, dst=R1, imm=1),
        insn(BPF_ALU64 | BPF_MOV | BPF_K, dst=R0, imm=0),
        insn(BPF_STX | BPF_ATOMIC | BPF_DW, dst=R10, src=R1, off=-8, imm=BPF_OR),
        insn(BPF_STX | BPF_ATOMIC | BPF_DW, dst=R10, src=R1, off=-8, imm=BPF_CMPXCHG),
        insn(BPF_ALU64 | BPF_MOV | BPF_K, dst=R0, imm=0),
        insn(BPF_JMP | BPF_EXIT),
    )
)

# The verifier's answer for an instruction it does not know; anything else (no privilege,
# no memory) says nothing about the instructions.
REFUSED = (errno.EINVAL,)


def verdict(err: int) -> bool | None:
    """Accepted (True), refused for what it is (False), or unknown (None: try the object itself)."""
    if err == 0:
        return True
    return False if err in REFUSED else None


def atomics() -> bool | None:
    """Whether the verifier takes BPF atomics (Linux 5.12); None when it cannot be asked."""
    if not libbpf.has("bpf_prog_load"):
        return None
    return verdict(libbpf.prog_load_errno(libbpf.BPF_PROG_TYPE_SOCKET_FILTER, ATOMICS_PROGRAM))
