"""`retransmon chaos` causes without root: tallies per cause, checks against TcpExt, the report,
the black hole's schedule, the handshake drops' nft rules, and the options that ask for them."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

from retransmon.attribution.labels import sent_labels
from retransmon.chaos.loss import build_ruleset
from retransmon.chaos.measure import (
    AGENT_LABELS,
    REST_CAUSE,
    REST_COUNTER,
    CauseCheck,
    ChaosReport,
    Counts,
    FlowKey,
    cause_notes,
    flow_rows,
    growth,
    namespace_rows,
    tally,
)
from retransmon.chaos.options import ChaosOptions
from retransmon.chaos.provoke import hole_open, next_change
from retransmon.chaos.report import print_report
from retransmon.cli import main
from retransmon.errors import UsageError
from retransmon.export.series import Sample

CLIENT, SERVER = 4026532001, 4026532002
ROLES = {CLIENT: "client", SERVER: "server"}
A = FlowKey("client", "198.18.66.1:40000", "198.18.66.2:5001")


def retransmit(netns: int, port: int, segments: int, cause: str, kind: str = "retransmit") -> Sample:
    labels = ("4", "198.18.66.1", str(port), "198.18.66.2", "5001", kind, cause, str(netns))
    return Sample(labels, segments, segments)


def test_tally_splits_a_flows_segments_by_cause() -> None:
    flows = tally(
        [
            retransmit(CLIENT, 40000, 30, "fast"),
            retransmit(CLIENT, 40000, 7, "slow_start"),
            retransmit(CLIENT, 40000, 1, "timeout"),
            retransmit(CLIENT, 40000, 2, "syn", kind="synack"),
        ],
        [],
        AGENT_LABELS,
        sent_labels(AGENT_LABELS),
        ROLES,
    )
    assert flows[A].segments == 40
    assert flows[A].synack == 2
    assert flows[A].causes == {"fast": 30, "slow_start": 7, "timeout": 1, "syn": 2}


def test_growth_subtracts_causes_and_keeps_only_those_that_grew() -> None:
    before = {A: Counts(10, 10, 0, 0, {"fast": 9, "syn": 1})}
    after = {A: Counts(15, 15, 0, 0, {"fast": 12, "syn": 1, "timeout": 2})}
    assert growth(after, before)[A].causes == {"fast": 3, "timeout": 2}


def kernel(
    retrans: int, fast: int, slow: int, syn: int, *, timeouts: int = 0, probes: int = 0
) -> dict[str, int]:
    return {
        "RetransSegs": retrans,
        "OutSegs": 1000,
        "TCPFastRetrans": fast,
        "TCPSlowStartRetrans": slow,
        "TCPSynRetrans": syn,
        "TCPTimeouts": timeouts,
        "TCPLossProbes": probes,
    }


def make_report(causes: dict[str, int], counters: dict[str, int], unclassified: int = 0) -> ChaosReport:
    flows = {A: Counts(sum(causes.values()), 1, 0, 1000, causes)}
    rows = namespace_rows(
        flows,
        {"client": ("rmchaos-client-1-0", CLIENT), "server": ("rmchaos-server-1-1", SERVER)},
        {"client": counters, "server": kernel(0, 0, 0, 0)},
    )
    return ChaosReport(
        5.0,
        "nftables",
        6.0,
        False,
        rows,
        flow_rows(flows),
        hooks="tp_btf",
        counting="exact",
        unclassified_segments=unclassified,
        blackhole=(2.0, 4.0),
        drop_handshakes=2,
    )


EXACT = {"fast": 900, "slow_start": 80, "timeout": 6, "tail_loss_probe": 3, "syn": 4}


def test_cause_checks_pair_each_cause_with_its_counter_and_the_rest_with_retranssegs() -> None:
    client = make_report(EXACT, kernel(993, 900, 80, 4, timeouts=7, probes=5)).namespaces[0]
    assert client.causes == EXACT
    checks = client.cause_checks()
    assert [(c.cause, c.counter) for c in checks] == [
        ("fast", "TCPFastRetrans"),
        ("slow_start", "TCPSlowStartRetrans"),
        ("syn", "TCPSynRetrans"),
        (REST_CAUSE, REST_COUNTER),
    ]
    assert [(c.segments, c.kernel) for c in checks] == [(900, 900), (80, 80), (4, 4), (9, 9)]
    assert all(c.match(0) == "exact" for c in checks)


@pytest.mark.parametrize(
    ("check", "unclassified", "expected"),
    [
        (CauseCheck("fast", 10, "TCPFastRetrans", 10), 0, "exact"),
        (CauseCheck("fast", 8, "TCPFastRetrans", 10), 2, "within_unclassified"),
        (CauseCheck("fast", 7, "TCPFastRetrans", 10), 2, "off"),
        (CauseCheck("fast", 11, "TCPFastRetrans", 10), 5, "off"),  # unknown ones are never fast
        (CauseCheck(REST_CAUSE, 12, REST_COUNTER, 10), 2, "within_unclassified"),
        (CauseCheck(REST_CAUSE, 9, REST_COUNTER, 10), 5, "off"),  # ... and always timeout
        (CauseCheck(REST_CAUSE, 13, REST_COUNTER, 10), 2, "off"),
    ],
)
def test_a_cause_may_be_off_only_as_the_unclassified_segments_allow(
    check: CauseCheck, unclassified: int, expected: str
) -> None:
    assert check.match(unclassified) == expected


def test_json_report_has_causes_beside_the_kernel_counters() -> None:
    buf = io.StringIO()
    report = make_report(EXACT, kernel(993, 900, 80, 4, timeouts=7, probes=5))
    print_report(report, show=10, as_json=True, console=Console(file=buf, width=200))
    data = json.loads(buf.getvalue())
    assert data["causes_exact"] is True
    assert data["unclassified_segments"] == 0
    assert data["blackhole"] == [2.0, 4.0]
    assert data["drop_handshakes"] == 2
    client = data["namespaces"][0]
    assert client["causes"] == EXACT
    assert client["kernel_causes"]["TCPTimeouts"] == 7
    assert client["cause_checks"][0] == {
        "cause": "fast",
        "segments": 900,
        "counter": "TCPFastRetrans",
        "kernel": 900,
        "match": "exact",
    }
    assert client["cause_checks"][-1]["kernel"] == 9
    assert data["flows"][0]["causes"] == EXACT


def test_json_report_marks_a_cause_that_is_off() -> None:
    buf = io.StringIO()
    causes = {**EXACT, "fast": 899, "timeout": 7}  # one fast segment read as timeout
    report = make_report(causes, kernel(993, 900, 80, 4), unclassified=0)
    print_report(report, show=10, as_json=True, console=Console(file=buf, width=200))
    data = json.loads(buf.getvalue())
    assert data["exact"] is True  # the sum still is
    assert data["causes_exact"] is False
    matches = {c["cause"]: c["match"] for c in data["namespaces"][0]["cause_checks"]}
    assert matches == {"fast": "off", "slow_start": "exact", "syn": "exact", REST_CAUSE: "off"}


def render(report: ChaosReport, width: int = 160) -> str:
    buf = io.StringIO()
    print_report(report, show=10, as_json=False, console=Console(file=buf, width=width))
    return buf.getvalue()


def test_table_shows_causes_counters_bounds_and_the_unclassified_count() -> None:
    causes = {**EXACT, "fast": 898, "timeout": 8}  # 2 unknown segments, labelled timeout
    text = render(make_report(causes, kernel(993, 900, 80, 4, timeouts=7, probes=5), unclassified=2))
    assert "TCPFastRetrans" in text
    assert "TCPSlowStartRetrans" in text
    assert "TCPSynRetrans" in text
    assert "TCPTimeouts (firings)" in text
    assert "TCPLossProbes (probes sent)" in text
    assert "within unclassified by -2" in text
    assert "within unclassified by +2" in text
    assert "2 segments of unknown cause" in text
    assert "black hole: every packet to the server dropped from 2 s to 4 s" in text
    assert "the first 2 SYNs and the first 2 SYN-ACKs dropped" in text
    assert max(len(line) for line in text.splitlines()) <= 160


def test_table_leaves_out_the_unclassified_line_when_there_are_none() -> None:
    text = render(make_report(EXACT, kernel(993, 900, 80, 4)))
    assert "unknown cause" not in text
    assert "black hole" in text


def test_classic_tracepoints_get_a_note() -> None:
    assert cause_notes("tp_btf") == []
    assert "cannot tell causes apart" in cause_notes("tracepoint")[0]


def test_black_hole_is_centred_in_the_traffic() -> None:
    assert ChaosOptions(duration=10, blackhole=2).blackhole_window == (4.0, 6.0)
    assert ChaosOptions(duration=10).blackhole_window is None


def test_black_hole_schedule() -> None:
    window = (4.0, 6.0)
    assert [hole_open(t, window) for t in (0, 3.9, 4.0, 5.9, 6.0, 9)] == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]
    assert next_change(0, window) == 4.0
    assert next_change(4.5, window) == 1.5
    assert next_change(6.0, window) == math.inf
    assert not hole_open(5, None)
    assert next_change(5, None) == math.inf


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ChaosOptions(duration=4, blackhole=4), "--blackhole must be shorter than --duration"),
        (ChaosOptions(blackhole=-1), "--blackhole"),
        (ChaosOptions(blackhole=float("nan")), "--blackhole"),
        (ChaosOptions(blackhole=1, connections=100), "--blackhole needs bulk traffic"),
        (ChaosOptions(drop_handshakes=-1), "--drop-handshakes"),
        (ChaosOptions(drop_handshakes=101), "--drop-handshakes"),
    ],
)
def test_options_refuse_bad_provocations(options: ChaosOptions, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        options.validate()


@pytest.mark.parametrize(
    "argv",
    [
        ["chaos", "--blackhole", "soon"],
        ["chaos", "--blackhole", "-1"],
        ["chaos", "--blackhole", "10"],  # not shorter than the default --duration 10
        ["chaos", "--drop-handshakes", "many"],
        ["chaos", "--drop-handshakes", "1000"],
    ],
)
def test_cli_bad_provocations_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("retransmon: ")


def test_cli_takes_provocations() -> None:
    from retransmon.cli import build_parser

    args = build_parser().parse_args(["chaos", "--blackhole", "1.5s", "--drop-handshakes", "2"])
    assert (args.blackhole, args.drop_handshakes) == (1.5, 2)


def test_ruleset_drops_only_the_first_packets() -> None:
    text = build_ruleset("t", "output", 100, ports=[5001], tcp_flags="syn-ack", first=2)
    (rule,) = [line.strip() for line in text.splitlines() if line.endswith(" drop")]
    assert rule == "tcp flags & (syn|ack) == syn|ack numgen inc mod 1000000000 < 2 counter name drops drop"
    assert "numgen random" not in text
    none = build_ruleset("t", "input", 100, tcp_flags="syn", first=0)
    assert not [line for line in none.splitlines() if line.endswith(" drop")]
    with pytest.raises(ValueError, match="first"):
        build_ruleset("t", "input", 100, first=-1)
