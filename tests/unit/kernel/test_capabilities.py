"""Capabilities: reading them, dropping them (in a child process), and what `check` says about them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retransmon.commands.check import FAIL, OK, WARN, privilege_findings
from retransmon.kernel import capabilities
from retransmon.kernel.capabilities import CapSets, has_bpf_privileges, mask_of, names, parse_status
from retransmon.kernel.skeleton import verifier_message

STATUS = """Name:\tpython3
CapInh:\t0000000000000000
CapPrm:\t000000c000000000
CapEff:\t000000c000000000
CapBnd:\t000000c000000000
CapAmb:\t0000000000000000
NoNewPrivs:\t0
"""


def test_parse_status() -> None:
    caps = parse_status(STATUS)
    assert caps.effective_names() == {"CAP_BPF", "CAP_PERFMON"}
    assert caps.permitted == caps.bounding == mask_of("CAP_BPF", "CAP_PERFMON")
    assert caps.inheritable == caps.ambient == 0


@given(st.integers(min_value=0, max_value=(1 << 41) - 1))
def test_names_and_mask_round_trip(mask: int) -> None:
    assert mask_of(*names(mask)) == mask


def test_unknown_bits_are_named_by_number() -> None:
    assert names(1 << 45) == {"cap_45"}


@pytest.mark.parametrize(
    ("held", "ok"),
    [
        (("CAP_BPF", "CAP_PERFMON"), True),
        (("CAP_SYS_ADMIN",), True),
        (("CAP_BPF",), False),
        (("CAP_PERFMON", "CAP_NET_ADMIN"), False),
        ((), False),
    ],
)
def test_has_bpf_privileges(held: tuple[str, ...], ok: bool) -> None:
    mask = mask_of(*held)
    assert has_bpf_privileges(CapSets(mask, mask, 0)) is ok


def test_current_reads_this_thread() -> None:
    with open("/proc/thread-self/status") as f:
        expected = parse_status(f.read())
    assert capabilities.current() == expected


def _findings(*held: str) -> dict[str, tuple[str, str]]:
    mask = mask_of(*held)
    return {f.item: (f.status, f.detail) for f in privilege_findings(CapSets(mask, mask, 0), 1000)}


def test_check_with_exactly_bpf_and_perfmon() -> None:
    found = _findings("CAP_BPF", "CAP_PERFMON")
    assert found["privileges"][0] == OK
    assert "CAP_BPF, CAP_PERFMON" in found["privileges"][1]
    assert found["without CAP_SYS_PTRACE"][0] == WARN
    assert "service_port" in found["without CAP_SYS_PTRACE"][1]
    assert found["without CAP_NET_BIND_SERVICE"][0] == WARN
    assert "without CAP_BPF" not in found and "without CAP_PERFMON" not in found


def test_check_without_perfmon_says_what_it_costs() -> None:
    found = _findings("CAP_BPF")
    assert found["privileges"][0] == FAIL
    assert found["without CAP_PERFMON"][0] == FAIL
    assert "attach" in found["without CAP_PERFMON"][1]


def test_check_with_sys_admin_needs_neither() -> None:
    found = _findings("CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_NET_BIND_SERVICE")
    assert found["privileges"][0] == OK
    assert not [item for item in found if item.startswith("without")]
    assert "+1 more" in found["privileges"][1]


def test_drop_refuses_with_threads_running() -> None:
    script = textwrap.dedent(
        """
        import threading, time
        from retransmon.kernel import capabilities
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        try:
            capabilities.drop_after_attach(lambda: True)
        except RuntimeError as exc:
            print("refused:", exc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert "refused: capabilities must be dropped before any thread starts" in proc.stdout


VERIFIER_LOG = [
    "libbpf: prog 'iter_sent_segments': BPF program load failed: Permission denied",
    "libbpf: prog 'iter_sent_segments': -- BEGIN PROG LOAD LOG --",
    "0: R1=ctx() R10=fp0",
    "32: (85) call bpf_sk_storage_get#107",
    "R2 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_",
    "processed 32 insns (limit 1000000) max_states_per_insn 0 total_states 3 peak_states 3 mark_read 0",
    "-- END PROG LOAD LOG --",
    "libbpf: prog 'iter_sent_segments': failed to load: -13",
    "libbpf: failed to load object 'retransmon.bpf.o'",
]


def test_verifier_message_names_program_and_reason() -> None:
    assert verifier_message(VERIFIER_LOG) == (
        "the verifier refused iter_sent_segments: "
        "R2 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_"
    )


def test_verifier_message_absent_without_a_verifier_log() -> None:
    assert verifier_message(["libbpf: failed to open object: -2"]) is None
