"""The nftables rule text and netem arguments built for an Impairment (no root needed)."""

from __future__ import annotations

import pytest

from retransmon.chaos import loss
from retransmon.chaos.errors import ImpairmentUnavailable
from retransmon.chaos.loss import TCP_FLAG_FILTERS, build_ruleset, loss_threshold, netem_args


def _chain(text: str, name: str) -> list[str]:
    """The rule lines of chain `name` in build_ruleset's output."""
    lines = text.splitlines()
    start = lines.index(f"\tchain {name} {{")
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 1 : end]]


@pytest.mark.parametrize(
    ("percent", "expected"), [(0, 0), (0.01, 1), (0.5, 50), (1, 100), (10, 1000), (33.33, 3333), (100, 10000)]
)
def test_loss_threshold(percent: float, expected: int) -> None:
    assert loss_threshold(percent) == expected


@pytest.mark.parametrize("percent", [-1, 100.5, float("nan"), float("inf")])
def test_loss_threshold_rejects(percent: float) -> None:
    with pytest.raises(ValueError, match="loss_percent"):
        loss_threshold(percent)


def test_ruleset_ingress_with_ports() -> None:
    text = build_ruleset("retransmon_loss_7", "input", 10, ports=[5001, 80, 5001])
    assert text.startswith("table inet retransmon_loss_7 {\n")
    assert "\tcounter drops {" in text
    assert _chain(text, "filter") == [
        "type filter hook input priority filter; policy accept;",
        "meta l4proto tcp tcp dport { 80, 5001 } goto loss",
        "meta l4proto tcp tcp sport { 80, 5001 } goto loss",
    ]
    assert _chain(text, "loss") == ["numgen random mod 10000 < 1000 counter name drops drop"]


def test_ruleset_egress_all_tcp() -> None:
    text = build_ruleset("t", "output", 2.5)
    assert _chain(text, "filter") == [
        "type filter hook output priority filter; policy accept;",
        "meta l4proto tcp goto loss",
    ]
    assert _chain(text, "loss") == ["numgen random mod 10000 < 250 counter name drops drop"]


def test_ruleset_full_and_zero_loss() -> None:
    assert _chain(build_ruleset("t", "input", 100), "loss") == ["counter name drops drop"]
    assert _chain(build_ruleset("t", "input", 0), "loss") == []


def test_ruleset_flag_filters() -> None:
    rules = _chain(build_ruleset("t", "input", 50, tcp_flags="syn"), "loss")
    assert rules == ["tcp flags & (syn|ack) == syn numgen random mod 10000 < 5000 counter name drops drop"]
    rules = _chain(build_ruleset("t", "input", 100, tcp_flags="handshake-ack"), "loss")
    assert len(rules) == 22  # doff 5..15, IPv4 and IPv6
    pure_ack = "tcp flags & (fin|syn|rst|psh|ack) == ack"
    assert (
        f"meta nfproto ipv4 {pure_ack} ip hdrlength 5 tcp doff 8 ip length 52 counter name drops drop"
        in rules
    )
    assert any("ip6 nexthdr tcp" in r and "tcp doff 8 ip6 length 32" in r for r in rules)


def test_every_flag_filter_builds() -> None:
    for name in TCP_FLAG_FILTERS:
        assert _chain(build_ruleset("t", "input", 1, tcp_flags=name), "loss")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hook": "forward"}, "hook"),
        ({"tcp_flags": "fin"}, "tcp_flags"),
        ({"ports": [0]}, "port"),
        ({"ports": [70000]}, "port"),
        ({"loss_percent": 101}, "loss_percent"),
    ],
)
def test_ruleset_rejects(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"table": "t", "hook": "input", "loss_percent": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_ruleset(**args)  # type: ignore[arg-type]


def test_netem_args() -> None:
    assert netem_args("rmv0a", 1.5) == ["tc", "qdisc", "add", "dev", "rmv0a", "root", "netem", "loss", "1.5%"]
    assert netem_args("eth0", 0, delay_ms=20, jitter_ms=5)[-4:] == ["netem", "delay", "20ms", "5ms"]
    with pytest.raises(ValueError, match="jitter"):
        netem_args("eth0", 0, jitter_ms=5)


def _choose(netem: bool, monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> str:
    monkeypatch.setattr(loss, "netem_available", lambda: netem)
    args: dict[str, object] = {
        "method": "auto",
        "delay_ms": 0.0,
        "jitter_ms": 0.0,
        "direction": "egress",
        "ports": None,
        "tcp_flags": None,
        **kwargs,
    }
    return loss.Impairment._choose(**args)  # type: ignore[arg-type]


def test_method_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _choose(True, monkeypatch) == "netem"
    assert _choose(False, monkeypatch) == "nftables"
    # netem only shapes egress and filters nothing: such requests go to nftables.
    assert _choose(True, monkeypatch, direction="ingress") == "nftables"
    assert _choose(True, monkeypatch, ports=[5001]) == "nftables"
    assert _choose(True, monkeypatch, tcp_flags="syn") == "nftables"
    assert _choose(True, monkeypatch, method="nftables") == "nftables"
    assert _choose(True, monkeypatch, delay_ms=10) == "netem"


def test_delay_needs_netem(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImpairmentUnavailable, match="does not have"):
        _choose(False, monkeypatch, delay_ms=10)
    with pytest.raises(ImpairmentUnavailable, match="egress"):
        _choose(True, monkeypatch, delay_ms=10, direction="ingress")
    with pytest.raises(ImpairmentUnavailable, match="only drop"):
        _choose(True, monkeypatch, delay_ms=10, method="nftables")
    with pytest.raises(ImpairmentUnavailable, match="does not have"):
        _choose(False, monkeypatch, method="netem")
