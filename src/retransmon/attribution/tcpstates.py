"""TCP states as the kernel numbers them (include/net/tcp_states.h), and label text."""

from __future__ import annotations

TCP_STATES = {
    1: "established",
    2: "syn_sent",
    3: "syn_recv",
    4: "fin_wait1",
    5: "fin_wait2",
    6: "time_wait",
    7: "close",
    8: "close_wait",
    9: "last_ack",
    10: "listen",
    11: "closing",
    12: "new_syn_recv",
    13: "bound_inactive",
}

TCP_ESTABLISHED = 1
TCP_SYN_RECV = 3
TCP_LISTEN = 10


def state_name(state: int) -> str:
    """Lower-case name of a TCP state; unknown numbers read ``state_<n>``."""
    return TCP_STATES.get(state, f"state_{state}")
