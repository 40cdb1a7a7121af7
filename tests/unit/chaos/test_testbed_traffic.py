"""Command line of the traffic generator and the test bed's pure helpers (no root needed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from retransmon.chaos import traffic
from retransmon.chaos.veth import link_addresses


def test_parse_sink() -> None:
    args = traffic.parse_args(["sink", "--bind", "198.18.0.2", "--port", "5001", "--ready-file", "/tmp/r"])
    assert (args.command, args.bind, args.port, args.ready_file) == ("sink", "198.18.0.2", 5001, "/tmp/r")


def test_parse_send_bulk() -> None:
    args = traffic.parse_args(
        ["send", "--host", "198.18.0.2", "--port", "5001", "--flows", "4", "--duration", "3"]
    )
    assert (args.flows, args.duration, args.nbytes, args.connections, args.json) == (
        4,
        3.0,
        None,
        None,
        False,
    )


def test_parse_send_churn() -> None:
    args = traffic.parse_args(
        ["send", "--host", "2001:db8::2", "--port", "5001", "--connections", "100", "--bytes", "10", "--json"]
    )
    assert (args.flows, args.connections, args.nbytes, args.json) == (1, 100, 10, True)


def test_parse_hold() -> None:
    args = traffic.parse_args(
        ["hold", "--host", "198.18.0.2", "--port", "5001", "--count", "3", "--hold", "2.5"]
    )
    assert (args.count, args.hold) == (3, 2.5)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["send", "--port", "5001"],
        ["send", "--host", "h", "--port", "0"],
        ["send", "--host", "h", "--port", "5001", "--flows", "0"],
        ["send", "--host", "h", "--port", "5001", "--duration", "-1"],
        ["sink", "--bind", "198.18.0.2", "--port", "x"],
    ],
)
def test_parse_rejects(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        traffic.parse_args(argv)
    assert exc.value.code == 2


def test_sender_argv_round_trips() -> None:
    argv = traffic.sender_argv("198.18.0.2", 5001, 4, 3, nbytes=1000, connections=None)
    assert argv[:3] == [sys.executable, "-m", "retransmon.chaos.traffic"]
    args = traffic.parse_args(argv[3:])
    assert (args.host, args.port, args.flows, args.duration, args.nbytes, args.json) == (
        "198.18.0.2",
        5001,
        4,
        3.0,
        1000,
        True,
    )


def test_module_env_makes_package_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    paths = traffic.module_env()["PYTHONPATH"].split(os.pathsep)
    assert Path(paths[0], "retransmon", "chaos", "traffic.py").is_file()
    assert paths[1] == "/somewhere"


def test_link_addresses() -> None:
    assert link_addresses(0) == (("198.18.0.1", "2001:db8::1"), ("198.18.0.2", "2001:db8::2"))
    assert link_addresses(12) == (("198.18.12.1", "2001:db8:12::1"), ("198.18.12.2", "2001:db8:12::2"))
    with pytest.raises(ValueError, match="index"):
        link_addresses(256)
