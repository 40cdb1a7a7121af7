"""`retransmon chaos` without root: options, the measurement arithmetic, the report, cleanup names."""

from __future__ import annotations

import io
import json
import os
import signal

import pytest
from rich.console import Console

from retransmon.attribution.labels import sent_labels
from retransmon.chaos.cleanup import owner_pid
from retransmon.chaos.measure import (
    AGENT_LABELS,
    ChaosReport,
    Counts,
    FlowKey,
    endpoint,
    flow_rows,
    growth,
    namespace_rows,
    tally,
)
from retransmon.chaos.network import describe_netem_missing
from retransmon.chaos.options import ChaosOptions
from retransmon.chaos.report import print_report
from retransmon.chaos.signals import SignalGate
from retransmon.cli import main
from retransmon.errors import UsageError
from retransmon.export.series import Sample

CLIENT, SERVER, OTHER = 4026532001, 4026532002, 4026531840
ROLES = {CLIENT: "client", SERVER: "server"}


def retransmit(netns: int, src_port: int, segments: int, events: int, kind: str = "retransmit") -> Sample:
    labels = ("4", "198.18.66.1", str(src_port), "198.18.66.2", "5001", kind, "", str(netns))
    return Sample(labels, events, segments)


def sent(netns: int, src_port: int, segments: int) -> Sample:
    return Sample(("4", "198.18.66.1", str(src_port), "198.18.66.2", "5001", str(netns)), 0, segments)


def test_tally_sums_per_flow_and_ignores_other_namespaces() -> None:
    flows = tally(
        [
            retransmit(CLIENT, 40000, 30, 2),
            retransmit(CLIENT, 40000, 1, 1, kind="synack"),
            retransmit(CLIENT, 40001, 5, 5),
            retransmit(OTHER, 40000, 999, 9),
        ],
        [sent(CLIENT, 40000, 600), sent(OTHER, 40000, 5000)],
        AGENT_LABELS,
        sent_labels(AGENT_LABELS),
        ROLES,
    )
    key = FlowKey("client", "198.18.66.1:40000", "198.18.66.2:5001")
    assert flows[key] == Counts(segments=31, events=3, synack=1, sent=600)
    assert flows[FlowKey("client", "198.18.66.1:40001", "198.18.66.2:5001")] == Counts(5, 5, 0, 0)
    assert len(flows) == 2


def test_tally_ignores_folded_other_series() -> None:
    folded = Sample(("4", "other", "other", "other", "other", "retransmit", "fast", "other"), 1, 1)
    assert tally([folded], [], AGENT_LABELS, sent_labels(AGENT_LABELS), ROLES) == {}


def test_growth_subtracts_the_baseline_and_drops_flows_that_did_not_move() -> None:
    a, b = FlowKey("client", "x:1", "y:2"), FlowKey("client", "x:3", "y:2")
    before = {a: Counts(10, 2, 0, 100), b: Counts(1, 1, 0, 10)}
    after = {
        a: Counts(15, 3, 0, 150),
        b: Counts(1, 1, 0, 10),
        FlowKey("server", "y:2", "x:1"): Counts(0, 0, 0, 7),
    }
    assert growth(after, before) == {
        a: Counts(5, 1, 0, 50),
        FlowKey("server", "y:2", "x:1"): Counts(0, 0, 0, 7),
    }


def test_endpoint_brackets_ipv6() -> None:
    assert endpoint("198.18.66.1", "5001") == "198.18.66.1:5001"
    assert endpoint("2001:db8:66::1", "5001") == "[2001:db8:66::1]:5001"


def make_report() -> ChaosReport:
    flows = {
        FlowKey("client", "198.18.66.1:40000", "198.18.66.2:5001"): Counts(30, 3, 0, 600),
        FlowKey("client", "198.18.66.1:40001", "198.18.66.2:5001"): Counts(10, 2, 0, 400),
        FlowKey("server", "198.18.66.2:5001", "198.18.66.1:40000"): Counts(0, 0, 0, 50),
    }
    kernel = {
        "client": {"RetransSegs": 40, "OutSegs": 960},
        "server": {"RetransSegs": 1, "OutSegs": 50},
    }
    rows = namespace_rows(
        flows, {"client": ("rmchaos-client-1-0", CLIENT), "server": ("rmchaos-server-1-1", SERVER)}, kernel
    )
    return ChaosReport(
        5.0,
        "nftables",
        3.2,
        False,
        rows,
        flow_rows(flows),
        dropped_packets=17,
        hooks="tp_btf",
        counting="exact",
    )


def test_namespace_rows_compare_with_the_kernel() -> None:
    report = make_report()
    client, server = report.namespaces
    assert (client.segments, client.events, client.sent) == (40, 5, 1000)
    assert client.equal and report.namespace_exact(client)
    assert client.kernel_sent == 1000  # OutSegs does not include retransmissions
    assert client.rate == pytest.approx(0.04)
    assert client.kernel_rate == pytest.approx(0.04)
    assert not server.equal  # the kernel saw one the agent did not
    assert not report.exact


def per_event_report() -> ChaosReport:
    """What 5.10 gives: classic tracepoints counting per event, and here sums that happen to agree."""
    report = make_report()
    report.hooks, report.counting = "tracepoint", "per-event"
    for ns in report.namespaces:
        ns.segments = ns.kernel_retrans_segs
    return report


def test_per_event_counting_is_never_exact_even_when_the_sums_agree() -> None:
    report = per_event_report()
    assert all(ns.equal for ns in report.namespaces)
    assert not any(report.namespace_exact(ns) for ns in report.namespaces)
    assert report.exact is False
    assert report.causes_exact is False
    buf = io.StringIO()
    print_report(report, show=10, as_json=True, console=Console(file=buf, width=200))
    data = json.loads(buf.getvalue())
    assert (data["exact"], data["causes_exact"], data["counting"]) == (False, False, "per-event")
    assert [(ns["exact"], ns["equal"]) for ns in data["namespaces"]] == [(False, True), (False, True)]


def test_per_event_table_says_equal_not_exact() -> None:
    buf = io.StringIO()
    print_report(per_event_report(), show=0, as_json=False, console=Console(file=buf, width=200))
    text = buf.getvalue()
    assert text.count("equal (per event)") == 2
    namespace_table = text.split("by cause")[0]
    assert "exact" not in namespace_table.replace("(per-event)", "")


def test_flow_rows_put_the_worst_first() -> None:
    rows = make_report().flows
    assert [r.counts.segments for r in rows] == [30, 10, 0]
    assert rows[0].rate == pytest.approx(0.05)


def test_json_report_has_the_numbers() -> None:
    buf = io.StringIO()
    print_report(make_report(), show=10, as_json=True, console=Console(file=buf, width=200))
    data = json.loads(buf.getvalue())
    assert data["exact"] is False
    assert data["namespaces"][0]["kernel_retrans_segs"] == 40
    assert data["namespaces"][0]["rate"] == pytest.approx(0.04)
    assert data["flows"][0] == {
        "role": "client",
        "src": "198.18.66.1:40000",
        "dst": "198.18.66.2:5001",
        "segments": 30,
        "events": 3,
        "synack": 0,
        "sent": 600,
        "causes": {},
        "rate": 0.05,
    }


def test_table_report_shows_match_mismatch_and_hidden_flows() -> None:
    buf = io.StringIO()
    print_report(make_report(), show=1, as_json=False, console=Console(file=buf, width=200))
    text = buf.getvalue()
    assert "RetransSegs" in text
    assert "exact" in text
    assert "off by -1" in text
    assert "4.00%" in text
    assert "2 more" in text
    assert "17 packets dropped" in text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ChaosOptions(loss_percent=101), "--loss"),
        (ChaosOptions(loss_percent=float("nan")), "--loss"),
        (ChaosOptions(flows=0), "--flows"),
        (ChaosOptions(duration=0), "--duration"),
        (ChaosOptions(connections=0), "--connections"),
        (ChaosOptions(jitter_ms=5), "need --delay"),
        (ChaosOptions(delay_ms=10, reorder_percent=200), "--reorder"),
        (ChaosOptions(show=-1), "--show"),
    ],
)
def test_options_refuse_bad_values(options: ChaosOptions, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        options.validate()


def test_options_know_what_needs_netem() -> None:
    assert not ChaosOptions(loss_percent=5).wants_netem
    opts = ChaosOptions(delay_ms=50, jitter_ms=5)
    assert opts.wants_netem
    assert opts.netem_flags == ["--delay", "--jitter"]
    problem = describe_netem_missing(opts.netem_flags)
    assert problem.exit_code == 1
    assert "--delay, --jitter need the netem qdisc" in problem.render()
    assert "fix:" in problem.render()


@pytest.mark.parametrize(
    "argv",
    [
        ["chaos", "--loss", "abc"],
        ["chaos", "--loss", "150%"],
        ["chaos", "--delay", "-5"],
        ["chaos", "--flows", "0"],
        ["chaos", "--prometheus-port", "70000"],
        ["chaos", "--jitter", "3"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("retransmon: ")


def test_cli_accepts_percent_and_millisecond_suffixes() -> None:
    from retransmon.cli import build_parser

    args = build_parser().parse_args(["chaos", "--loss", "2.5%", "--delay", "40ms", "--jitter", "5"])
    assert (args.loss, args.delay, args.jitter) == (2.5, 40.0, 5.0)
    assert args.log_level == "warning"


def test_owner_pid_reads_only_chaos_names() -> None:
    assert owner_pid("rmchaos-client-1234-0") == 1234
    assert owner_pid("rmchaos-server-77-13") == 77
    assert owner_pid("rmprobe-1234-0") == 1234
    assert owner_pid("rmtest-client-1234-0") is None
    assert owner_pid("rmchaos-1234") is None
    assert owner_pid("production") is None


def test_signal_gate_first_signal_stops_softly_second_raises() -> None:
    gate = SignalGate()
    gate.install()
    try:
        with gate.soft() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.wait(2)
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                stop.wait(2)  # the handler runs here at the latest
        os.kill(os.getpid(), signal.SIGINT)  # aborting already: ignored, the test goes on
        gate.ignore()
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: the test goes on
    finally:
        gate.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
