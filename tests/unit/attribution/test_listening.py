"""Listening ports from /proc/net/tcp{,6} and the map, for the service_port label."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retransmon.attribution.listening import ListeningPorts, parse_proc_net_tcp, scan_proc

PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21852 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 19231 1 0000000000000000 100 0 0 10 0
   2: 0100007F:0CEA 0100007F:D2F0 01 00000000:00000000 02:0009F3A6 00000000   101        0 45213 2 0000000000000000 20 4 30 10 -1
   3: 0A000001:9C40 0A000002:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 78001 1 0000000000000000 20 4 30 10 -1
   4: 0A000001:A000 0A000002:0050 02 00000001:00000000 01:00000064 00000002  1000        0 78002 1 0000000000000000 200 0 0 1 7
   5: 0A000001:0016 0A000009:C350 06 00000000:00000000 03:00000D1C 00000000     0        0 0 3 0000000000000000
   6: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21853 1 0000000000000000 100 0 0 10 0
"""  # noqa: E501

PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20112 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0840 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20113 1 0000000000000000 100 0 0 10 0
   2: 00000000000000000000000001000000:0840 00000000000000000000000001000000:E1A2 01 00000000:00000000 00:00000000 00000000     0        0 60001 1 0000000000000000 20 4 27 10 -1
   3: 0000000000000000FFFF00000100007F:1389 0000000000000000FFFF00000100007F:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20114 1 0000000000000000 100 0 0 10 0
"""  # noqa: E501


def test_parse_proc_net_tcp() -> None:
    # 0x1F90 = 8080, 0x0CEA = 3306, 0x0050 = 80; established/syn_sent/time_wait rows are ignored.
    assert parse_proc_net_tcp(PROC_NET_TCP) == {8080, 3306, 80}


def test_parse_proc_net_tcp6() -> None:
    # 0x0016 = 22, 0x0840 = 2112, 0x1389 = 5001
    assert parse_proc_net_tcp(PROC_NET_TCP6) == {22, 2112, 5001}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  sl  local_address rem_address   st\n",
        PROC_NET_TCP.splitlines()[0] + "\n   0: 0A000001:9C40 0A000002:01BB 01 0 0\n",
        "header\n\n   \n",  # blank lines
        "header\n   0: 0100007F:0050\n",  # truncated row
    ],
)
def test_parse_nothing_listening(text: str) -> None:
    assert parse_proc_net_tcp(text) == set()


def test_header_line_is_skipped_even_if_it_looks_like_a_row() -> None:
    text = "   0: 00000000:0050 00000000:0000 0A\n   1: 00000000:0051 00000000:0000 0A\n"
    assert parse_proc_net_tcp(text) == {0x51}


@pytest.mark.parametrize("port", [1, 80, 443, 2112, 32768, 65535])
def test_hex_ports(port: int) -> None:
    text = f"header\n   0: 00000000:{port:04X} 00000000:0000 0A 0 0\n"
    assert parse_proc_net_tcp(text) == {port}


def test_scan_proc_fake_tree(tmp_path: Path) -> None:
    # Two "processes" sharing a netns (the second is skipped), one in another netns.
    for pid in ("1", "2", "3"):
        (tmp_path / pid / "net").mkdir(parents=True)
        (tmp_path / pid / "ns").mkdir()
    ns_a = tmp_path / "nsA"
    ns_b = tmp_path / "nsB"
    ns_a.write_text("")
    ns_b.write_text("")
    os.symlink(ns_a, tmp_path / "1" / "ns" / "net")
    os.symlink(ns_a, tmp_path / "2" / "ns" / "net")
    os.symlink(ns_b, tmp_path / "3" / "ns" / "net")
    (tmp_path / "1" / "net" / "tcp").write_text(PROC_NET_TCP)
    (tmp_path / "1" / "net" / "tcp6").write_text(PROC_NET_TCP6)
    (tmp_path / "2" / "net" / "tcp").write_text("header\n   0: 00000000:0001 00000000:0000 0A\n")
    (tmp_path / "3" / "net" / "tcp").write_text("header\n   0: 00000000:01BB 00000000:0000 0A\n")
    (tmp_path / "self").mkdir()  # not a pid
    found = scan_proc(str(tmp_path))
    ino_a = os.stat(ns_a).st_ino
    ino_b = os.stat(ns_b).st_ino
    assert set(found) == {ino_a, ino_b}
    assert found[ino_b] == {443}
    # pid 1 or pid 2 may be read first for namespace A, depending on directory order.
    assert found[ino_a] in ({8080, 3306, 80, 22, 2112, 5001}, {1})


def test_scan_proc_missing_dir(tmp_path: Path) -> None:
    assert scan_proc(str(tmp_path / "nope")) == {}


def test_scan_real_proc_includes_own_netns() -> None:
    found = scan_proc()
    assert os.stat("/proc/self/ns/net").st_ino in found


# ---------------------------------------------------------------------------
# ListeningPorts
# ---------------------------------------------------------------------------


def test_empty() -> None:
    lp = ListeningPorts()
    assert lp(1, 80) is False


def test_seed() -> None:
    lp = ListeningPorts()
    lp.seed({100: {80, 443}, 200: {22}})
    assert lp(100, 80) is True
    assert lp(100, 443) is True
    assert lp(100, 22) is False  # listening in another netns does not count
    assert lp(200, 22) is True
    assert lp(300, 80) is False


def test_update_replaces_live_set() -> None:
    lp = ListeningPorts()
    lp.update({(100, 8080), (200, 9090)})
    assert lp(100, 8080) is True
    assert lp(200, 8080) is False
    lp.update({(200, 9090)})
    assert lp(100, 8080) is False  # gone from the map: no longer listening
    assert lp(200, 9090) is True
    lp.update(set())
    assert lp(200, 9090) is False


def test_seed_and_live_combine() -> None:
    lp = ListeningPorts()
    lp.seed({100: {80}})
    lp.update({(100, 8080)})
    assert lp(100, 80) is True  # seeded at start-up
    assert lp(100, 8080) is True  # learned from the map
    lp.update(set())
    assert lp(100, 80) is True  # updates replace only what came from the map
    assert lp(100, 8080) is False


def test_seed_replaces_previous_seed() -> None:
    lp = ListeningPorts()
    lp.seed({100: {80}})
    lp.seed({100: {81}})
    assert lp(100, 80) is False
    assert lp(100, 81) is True


def test_usable_as_projector_callback() -> None:
    from retransmon.attribution.flows import Flow
    from retransmon.attribution.labels import Projector

    lp = ListeningPorts()
    lp.update({(7, 8080)})
    p = Projector(("service_port",), lp, lambda _c: "/")
    flow = Flow(7, 0, 4, "10.0.0.1", "10.0.0.2", 8080, 50000, "established", "retransmit", False)
    assert p.project(flow) == ("8080",)
    lp.update(set())
    assert p.project(flow) == ("50000",)
