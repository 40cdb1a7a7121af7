"""`retransmon trace`: one line per retransmit, like bcc's tcpretrans; --json for JSON lines."""

from __future__ import annotations

import argparse
import sys

from retransmon.commands import args as common


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    trace = sub.add_parser("trace", help="one line per retransmit, like tcpretrans; --json for JSON lines")
    trace.add_argument("--json", action="store_true", help="print JSON lines instead of columns")
    trace.add_argument(
        "--count",
        action="store_true",
        help="print retransmits per flow when tracing ends instead of one line each",
    )
    trace.add_argument(
        "--duration",
        type=common.positive_float,
        metavar="SECONDS",
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    common.add_live_options(trace)
    trace.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from retransmon.live.filter import filter_from_args
    from retransmon.live.trace import TraceOptions, render_stats, run_trace

    stop = common.stop_on_signals()
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
