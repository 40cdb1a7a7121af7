"""Bad input exits 2 with one line naming the problem; nothing here loads BPF."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from retransmon import __version__
from retransmon.cli import build_parser, main
from retransmon.errors import UsageError


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    # `serve` installs SIGTERM/SIGINT handlers before it validates --listen/--labels.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(autouse=True)
def _no_bpf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should validation ever let bad input through, fail instead of loading BPF."""
    import retransmon.export.agent

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("bad input reached build_agent (BPF would be loaded)")

    monkeypatch.setattr(retransmon.export.agent, "build_agent", refuse)


BAD_INPUT = [
    (["--bogus", "serve"], "unrecognized arguments: --bogus"),
    (["check", "--bogus"], "unrecognized arguments: --bogus"),
    (["serve", "--bogus"], "unrecognized arguments: --bogus"),
    (["bogus-command"], "invalid choice: 'bogus-command'"),
    ([], "required: COMMAND"),
    (["serve", "--max-series", "0"], "--max-series"),
    (["serve", "--max-series", "-5"], "--max-series"),
    (["serve", "--max-series", "abc"], "'abc'"),
    (["serve", "--max-series", "1.5"], "'1.5'"),
    (["serve", "--max-series"], "--max-series"),
    (["serve", "--flow-capacity", "0"], "--flow-capacity"),
    (["serve", "--harvest-interval", "0"], "--harvest-interval"),
    (["serve", "--harvest-interval", "-1"], "--harvest-interval"),
    (["serve", "--harvest-interval", "nan"], "--harvest-interval"),
    (["serve", "--harvest-interval", "soon"], "'soon'"),
    (["serve", "--labels", "bogus"], "'bogus'"),
    (["serve", "--labels", "src_ip,,dst_ip"], "empty label name"),
    (["serve", "--listen", "bad"], "'bad'"),
    (["serve", "--listen", ":70000"], "'70000'"),
    (["serve", "--listen", ":0"], "'0'"),
    (["serve", "--listen", ":http"], "'http'"),
    (["serve", "--listen", "::1:80"], "brackets"),
    (["serve", "--hooks", "kprobe"], "invalid choice: 'kprobe'"),
    (["serve", "--log-level", "loud"], "invalid choice: 'loud'"),
    (["check", "--hooks", "kprobe"], "invalid choice: 'kprobe'"),
    (["check", "--listen", ":1"], "unrecognized arguments"),
    (["trace", "--port", "0"], "--port"),
    (["trace", "--port", "http"], "'http'"),
    (["trace", "--host", "example.com"], "'example.com'"),
    (["trace", "--host", "10.0.0.0/33"], "--host"),
    (["trace", "--kind", "sent"], "invalid choice: 'sent'"),
    (["trace", "--netns", "no-such-netns-for-sure"], "--netns"),
    (["trace", "--netns", "/no/such/ns"], "/no/such/ns"),
    (["trace", "--duration", "0"], "--duration"),
    (["trace", "--duration", "soon"], "'soon'"),
    (["trace", "--labels", "flow"], "unrecognized arguments"),
    (["top", "--interval", "0"], "--interval"),
    (["top", "--sort", "bogus"], "invalid choice: 'bogus'"),
    (["top", "--rows", "0"], "--rows"),
    (["top", "--port", "70000"], "1..65535"),
    (["top", "--json"], "unrecognized arguments"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_INPUT, ids=[" ".join(a) or "<none>" for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("retransmon: ")
    assert needle in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve", "--max-series", "0"], "must be at least 1"),
        (["serve", "--max-series", "abc"], "expected a whole number"),
        (["serve", "--harvest-interval", "0"], "greater than 0"),
        (["serve", "--listen", ":70000"], "1 to 65535"),
        (["serve", "--labels", "bogus"], "unknown label"),
    ],
)
def test_messages_say_what_is_expected(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["serve", "--help"], ["check", "--help"], ["trace", "--help"], ["top", "--help"], ["-h"]],
)
def test_help_exits_0(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out, err = capsys.readouterr()
    assert "usage: retransmon" in out
    assert err == ""


def test_serve_help_lists_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in ("--listen", "--labels", "--max-series", "--harvest-interval", "--hooks", "--log-level"):
        assert option in out


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("trace", ("--json", "--count", "--duration", "--netns", "--port", "--host", "--kind", "--hooks")),
        ("top", ("--interval", "--sort", "--rows", "--duration", "--netns", "--port", "--host", "--kind")),
    ],
)
def test_live_view_help_lists_options(
    capsys: pytest.CaptureFixture[str], command: str, options: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    for option in options:
        assert option in out


def test_trace_filters_parse_repeated() -> None:
    args = build_parser().parse_args(
        [
            "trace",
            "--port",
            "80",
            "--port",
            "443",
            "--host",
            "198.18.0.0/15",
            "--kind",
            "synack",
            "--netns",
            "7",
        ]
    )
    assert args.port == [80, 443]
    assert [str(h) for h in args.host] == ["198.18.0.0/15"]
    assert args.kind == ["synack"] and args.netns == [7]
    assert args.log_level == "warning"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"retransmon {__version__}"


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.listen == [":2112"]
    assert args.labels == "default"
    assert args.max_series == 10000
    assert args.harvest_interval == 5.0
    assert args.hooks == "auto"
    assert args.log_level == "info"


@pytest.mark.parametrize(
    ("argv", "attr", "value"),
    [
        (["serve", "--max-series", "7"], "max_series", 7),
        (["serve", "--harvest-interval", "0.5"], "harvest_interval", 0.5),
        (["serve", "--listen", "[::1]:9000"], "listen", ["[::1]:9000"]),
        (["serve", "--web.listen-address", ":1", "--listen", ":2"], "listen", [":1", ":2"]),
        (["serve", "--web.telemetry-path", "/m"], "telemetry_path", "/m"),
        (["serve", "--labels=flow"], "labels", "flow"),
        (["serve", "--hooks", "tracepoint"], "hooks", "tracepoint"),
        (["check", "--hooks", "tp_btf"], "hooks", "tp_btf"),
    ],
)
def test_parser_accepts(argv: list[str], attr: str, value: object) -> None:
    assert getattr(build_parser().parse_args(argv), attr) == value


@pytest.mark.parametrize("interval", ["inf", "1e300"])
def test_harvest_interval_must_be_finite(interval: str) -> None:
    # threading.Event.wait() raises OverflowError for such timeouts, which would kill the harvest thread.
    with pytest.raises(UsageError, match="--harvest-interval"):
        build_parser().parse_args(["serve", "--harvest-interval", interval])


def test_serve_validates_before_binding(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import retransmon.export.agent

    def no_server(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("bound a port before validating --labels")

    monkeypatch.setattr(retransmon.export.agent, "MetricsServer", no_server)
    assert main(["serve", "--listen", "127.0.0.1:1", "--labels", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_unresolvable_listen_host_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--listen", "no-such-host.invalid:9"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("retransmon: --web.listen-address: cannot resolve 'no-such-host.invalid'")
