"""The BPF atomics probe and how its answer, with BTF, becomes KernelFeatures. No root: the
verifier's answers are faked."""

from __future__ import annotations

import errno

import pytest

from retransmon.kernel import bpfprobe, features, libbpf

# What llvm-mc -triple bpfel -mcpu=v3 -show-encoding gives for the same instructions.
EXPECTED = [
    "7a0af8ff00000000",  # *(u64 *)(r10 - 8) = 0
    "b701000001000000",  # r1 = 1
    "b700000000000000",  # r0 = 0
    "db1af8ff40000000",  # lock *(u64 *)(r10 - 8) |= r1
    "db1af8fff1000000",  # r0 = cmpxchg_64(r10 - 8, r0, r1)
    "b700000000000000",  # r0 = 0
    "9500000000000000",  # exit
]


def test_the_probe_program_is_what_clang_emits_for_the_objects_atomics() -> None:
    program = bpfprobe.ATOMICS_PROGRAM
    assert [program[i : i + 8].hex() for i in range(0, len(program), 8)] == EXPECTED


@pytest.mark.parametrize(
    ("err", "expected"),
    [(0, True), (errno.EINVAL, False), (errno.EPERM, None), (errno.EACCES, None), (errno.ENOMEM, None)],
)
def test_only_a_verifier_refusal_means_missing(
    monkeypatch: pytest.MonkeyPatch, err: int, expected: bool | None
) -> None:
    loaded: list[tuple[int, bytes]] = []

    def fake_load(prog_type: int, insns: bytes) -> int:
        loaded.append((prog_type, insns))
        return err

    monkeypatch.setattr(libbpf, "prog_load_errno", fake_load)
    assert bpfprobe.atomics() is expected
    assert loaded == [(libbpf.BPF_PROG_TYPE_SOCKET_FILTER, bpfprobe.ATOMICS_PROGRAM)]


def test_without_bpf_prog_load_in_libbpf_nothing_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libbpf, "has", lambda symbol: symbol != "bpf_prog_load")
    assert bpfprobe.atomics() is None


def test_raw_programs_are_whole_instructions() -> None:
    with pytest.raises(ValueError, match="8 bytes each"):
        libbpf.prog_load_errno(libbpf.BPF_PROG_TYPE_SOCKET_FILTER, b"\x95\0\0")


@pytest.mark.parametrize(
    ("marker", "atomics", "expected"),
    [
        (True, False, True),  # 5.11: the function that allows it is in BTF, no atomics yet
        (True, None, True),
        (False, True, True),  # 5.12+ has both, whatever the function is called now
        (False, False, False),  # 5.10
        (False, None, None),  # nothing to go by: try it
    ],
)
def test_socket_storage_in_tracing(marker: bool, atomics: bool | None, expected: bool | None) -> None:
    assert features._sk_storage_tracing(marker, atomics) is expected
