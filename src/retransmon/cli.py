"""Command line: argument parsing and one function per subcommand."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import NoReturn

from retransmon import __version__
from retransmon.errors import RetransmonError, UsageError
from retransmon.eventfilter import add_filter_options, parse_port
from retransmon.events import DEFAULT_RING_BUFFER_BYTES
from retransmon.labels import LABEL_NAMES
from retransmon.topmodel import SORT_KEYS

log = logging.getLogger("retransmon")

LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_SECONDS = 86400.0  # a day: longer intervals are a typo, and overflow Event.wait()


class OneLineParser(argparse.ArgumentParser):
    """Bad input: one line naming the problem, exit 2 (argparse prints the whole usage)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and at most {MAX_SECONDS:g}, got {text}")
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float | None:
    """Seconds, or a number with s/m/h/d; 0 or 'off' turns the feature off (None)."""
    raw = text.strip().lower()
    if raw == "off":
        return None
    scale = _DURATION_UNITS.get(raw[-1:], 0)
    number = raw[:-1] if scale else raw
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90s, 15m, 2h or off, got {text!r}"
        ) from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive duration or off, got {text!r}")
    return value or None


def _percent(text: str) -> float:
    raw = text.strip().removesuffix("%")
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage like 5 or 0.5%, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {text}")
    return value


def _milliseconds(text: str) -> float:
    raw = text.strip().lower().removesuffix("ms")
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds like 50 or 50ms, got {text!r}") from None
    if not 0 <= value <= 10000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 10000 ms, got {text}")
    return value


def _add_common(p: argparse.ArgumentParser, log_level: str = "info") -> None:
    p.add_argument(
        "--log-level", choices=LOG_LEVELS, default=log_level, help=f"log verbosity (default: {log_level})"
    )
    p.add_argument(
        "--hooks",
        choices=("auto", "tp_btf", "tracepoint"),
        default="auto",
        help="which kernel hooks to use: auto picks tp_btf where the kernel has it (default: auto)",
    )


MAX_RING_BUFFER_KIB = 1 << 20  # 1 GiB: the kernel's limit is higher, memory is not


def _ring_buffer_kib(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_RING_BUFFER_KIB:
        raise argparse.ArgumentTypeError(f"at most {MAX_RING_BUFFER_KIB} KiB, got {value}")
    return value


def _add_ring_buffer_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ring-buffer-kib",
        type=_ring_buffer_kib,
        default=DEFAULT_RING_BUFFER_BYTES // 1024,
        metavar="KIB",
        help="ring buffer size, rounded up to a power of two pages; records that do not fit are "
        f"counted as lost (default {DEFAULT_RING_BUFFER_BYTES // 1024})",
    )


def _add_drop_capabilities_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--drop-capabilities",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give up every capability once the BPF programs are attached (default: on)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="retransmon", description="TCP retransmission monitor for Linux (eBPF).")
    parser.add_argument("--version", action="version", version=f"retransmon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True

    serve = sub.add_parser("serve", help="serve Prometheus metrics until SIGTERM/SIGINT")
    serve.add_argument(
        "--listen", default=":2112", metavar="[HOST]:PORT", help="address to serve on (default :2112)"
    )
    serve.add_argument(
        "--labels",
        default="default",
        help="labels of the retransmit series: 'default', 'flow' (the original blog's set), "
        f"or a comma list of {', '.join(LABEL_NAMES)}",
    )
    serve.add_argument(
        "--max-series",
        type=_positive_int,
        default=10000,
        metavar="N",
        help="series per metric; more are folded into `other` series, totals unchanged (default 10000)",
    )
    serve.add_argument(
        "--series-ttl",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="drop series that have not grown for this long, e.g. 1h; they restart from 0 "
        "if they grow again (default: off)",
    )
    serve.add_argument(
        "--harvest-interval",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how often the kernel's flow table is drained besides every scrape (default 5)",
    )
    serve.add_argument(
        "--flow-capacity",
        type=_positive_int,
        default=16384,
        metavar="N",
        help="distinct flows the kernel table holds per harvest before folding (default 16384)",
    )
    serve.add_argument(
        "--socket-capacity",
        type=_positive_int,
        default=262144,
        metavar="N",
        help="TCP sockets whose segments sent the kernel tracks at once; memory is used only "
        "per socket tracked (default 262144)",
    )
    _add_drop_capabilities_option(serve)
    serve.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        metavar="FILE",
        help="TLS, basic auth and response headers, in Prometheus exporter-toolkit's web config "
        "format (see docs/deployment.md)",
    )
    _add_common(serve)
    serve.set_defaults(func=cmd_serve)

    trace = sub.add_parser("trace", help="one line per retransmit, like tcpretrans; --json for JSON lines")
    trace.add_argument("--json", action="store_true", help="print JSON lines instead of columns")
    trace.add_argument(
        "--count",
        action="store_true",
        help="print retransmits per flow when tracing ends instead of one line each",
    )
    trace.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    add_filter_options(trace)
    _add_ring_buffer_option(trace)
    _add_drop_capabilities_option(trace)
    _add_common(trace, log_level="warning")
    trace.set_defaults(func=cmd_trace)

    top = sub.add_parser("top", help="live view of the flows retransmitting the most")
    top.add_argument(
        "--interval",
        type=_positive_float,
        default=2.0,
        metavar="SECONDS",
        help="refresh interval; rates are over the last interval (default 2)",
    )
    top.add_argument(
        "--sort",
        choices=SORT_KEYS,
        default="rate",
        help="initial sort order (keys in the live view: r, e, t, p; default: rate)",
    )
    top.add_argument(
        "--rows", type=_positive_int, default=20, metavar="N", help="flows shown when not a terminal"
    )
    top.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after this many seconds (default: until q or Ctrl-C)",
    )
    add_filter_options(top)
    _add_ring_buffer_option(top)
    _add_drop_capabilities_option(top)
    _add_common(top, log_level="warning")
    top.set_defaults(func=cmd_top)
    _add_chaos(sub.add_parser("chaos", help="lossy private test network, TCP traffic, and what was caught"))

    check = sub.add_parser("check", help="preflight: kernel, BTF, hooks, privileges")
    _add_common(check)
    check.set_defaults(func=cmd_check)
    return parser


def _add_chaos(chaos: argparse.ArgumentParser) -> None:
    chaos.description = (
        "Build a private test network (two network namespaces and a veth pair on 198.18.66.0/24 and "
        "2001:db8:66::/64), drop packets on it, drive TCP traffic through it and compare what "
        "retransmon counted with the kernel's RetransSegs. Nothing outside the namespaces is touched."
    )
    chaos.add_argument("--loss", type=_percent, default=5.0, metavar="PCT", help="packet loss (default 5)")
    chaos.add_argument("--delay", type=_milliseconds, default=0.0, metavar="MS", help="delay (needs netem)")
    chaos.add_argument(
        "--jitter", type=_milliseconds, default=0.0, metavar="MS", help="delay jitter (needs netem)"
    )
    chaos.add_argument(
        "--reorder",
        type=_percent,
        default=0.0,
        metavar="PCT",
        help="packets sent early, reordered (needs netem)",
    )
    chaos.add_argument(
        "--flows", type=_positive_int, default=4, metavar="N", help="parallel connections (default 4)"
    )
    chaos.add_argument(
        "--duration",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds of bulk traffic (default 10)",
    )
    chaos.add_argument(
        "--connections",
        type=_positive_int,
        default=None,
        metavar="N",
        help="short-connection churn: N connections of 8 KiB, --flows at a time (instead of bulk)",
    )
    chaos.add_argument("--ipv6", action="store_true", help="use IPv6 (2001:db8:66::/64) instead of IPv4")
    chaos.add_argument(
        "--no-offloads", action="store_true", help="turn TSO/GSO/GRO off on the veth: loss per segment"
    )
    chaos.add_argument(
        "--show", type=int, default=10, metavar="N", help="flow rows in the table (default 10)"
    )
    chaos.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    chaos.add_argument(
        "--cleanup", action="store_true", help="only remove what a killed chaos run left behind, then exit"
    )
    chaos.add_argument(
        "--prometheus",
        action="store_true",
        help="also run Prometheus on 127.0.0.1 scraping --scrape (a running `retransmon serve`) "
        "and keep it up after the run until Ctrl-C",
    )
    chaos.add_argument(
        "--prometheus-port",
        type=parse_port,
        default=9090,
        metavar="PORT",
        help="Prometheus port (default 9090)",
    )
    chaos.add_argument(
        "--scrape",
        default="127.0.0.1:2112",
        metavar="HOST:PORT",
        help="the agent Prometheus scrapes (default 127.0.0.1:2112)",
    )
    _add_common(chaos)
    chaos.set_defaults(func=cmd_chaos, log_level="warning")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "debug":
        # libbpf's informational chatter only when asked for.
        logging.getLogger("retransmon.libbpf").setLevel(logging.ERROR)


def cmd_serve(args: argparse.Namespace) -> int:
    from retransmon.serve import ServeOptions, serve

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    options = ServeOptions(
        listen=args.listen,
        labels=args.labels,
        max_series=args.max_series,
        harvest_interval=args.harvest_interval,
        flow_capacity=args.flow_capacity,
        socket_capacity=args.socket_capacity,
        hooks=args.hooks,
        series_ttl=args.series_ttl,
        drop_capabilities=args.drop_capabilities,
        web_config_file=args.web_config_file,
    )
    serve(options, stop)
    return 0


def _stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM set the returned event (Ctrl-C ends trace and top normally)."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def cmd_trace(args: argparse.Namespace) -> int:
    from retransmon.eventfilter import filter_from_args
    from retransmon.trace import TraceOptions, render_stats, run_trace

    stop = _stop_on_signals()
    options = TraceOptions(
        json=args.json,
        count=args.count,
        duration=args.duration,
        event_filter=filter_from_args(args),
        hooks=args.hooks,
        ring_buffer_bytes=args.ring_buffer_kib * 1024,
        drop_capabilities=args.drop_capabilities,
    )
    stats = run_trace(options, stop, sys.stdout, sys.stderr)
    print(render_stats(stats), file=sys.stderr)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from retransmon.eventfilter import filter_from_args
    from retransmon.top import TopOptions, run_top

    stop = _stop_on_signals()
    options = TopOptions(
        interval=args.interval,
        sort=args.sort,
        rows=args.rows,
        duration=args.duration,
        event_filter=filter_from_args(args),
        hooks=args.hooks,
        ring_buffer_bytes=args.ring_buffer_kib * 1024,
        drop_capabilities=args.drop_capabilities,
    )
    run_top(options, stop)
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    from rich.console import Console

    from retransmon.chaos.options import ChaosOptions, require_root

    out, err = Console(), Console(stderr=True)
    if not out.is_terminal:
        out = Console(width=160)  # a log file or pipe: room for the whole table
    if args.cleanup:
        from retransmon.chaos.cleanup import cleanup

        require_root()
        done = cleanup()
        for name in done.kept:
            err.print(f"left {name} alone: its chaos run is still running", highlight=False)
        out.print(
            f"removed {len(done.namespaces)} namespaces, ended {len(done.processes)} traffic processes",
            highlight=False,
        )
        return 0
    options = ChaosOptions(
        loss_percent=args.loss,
        delay_ms=args.delay,
        jitter_ms=args.jitter,
        reorder_percent=args.reorder,
        flows=args.flows,
        duration=args.duration,
        connections=args.connections,
        ipv6=args.ipv6,
        offloads=not args.no_offloads,
        show=args.show,
    )
    options.validate()
    require_root()
    from retransmon.chaos import demo
    from retransmon.chaos.report import print_report
    from retransmon.chaos.run import run_chaos

    prometheus = demo.start(args.scrape, args.prometheus_port) if args.prometheus else None
    try:
        report = run_chaos(options, out, err, hooks=args.hooks)
        print_report(report, options.show, args.json, out)
        if prometheus is not None:
            demo.hold(prometheus, err)
    finally:
        if prometheus is not None:
            prometheus.close()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from retransmon.check import ready, render, run_checks

    findings = run_checks(args.hooks)
    print(render(findings))
    return 0 if ready(findings) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _configure_logging(args.log_level)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except RetransmonError as exc:
        print(f"retransmon: {exc.render()}", file=sys.stderr)
        for line in exc.details:
            print(f"  {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into something that stopped reading (| head): end quietly. Point stdout
        # at /dev/null so that flushing it at exit fails neither loudly nor with status 120.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        sys.stderr.close()
        return 0
