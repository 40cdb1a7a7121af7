"""`retransmon top`: a live view of the flows retransmitting the most."""

from __future__ import annotations

import argparse

from retransmon.commands import args as common
from retransmon.live.topmodel import SORT_KEYS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top = sub.add_parser("top", help="live view of the flows retransmitting the most")
    top.add_argument(
        "--interval",
        type=common.positive_float,
        default=2.0,
        metavar="SECONDS",
        help="refresh interval; rates are over the last interval (default 2)",
    )
    top.add_argument(
        "--sort",
        choices=SORT_KEYS,
        default="rate",
        help="initial sort order (keys in the live view: r, e, t, p, o; default: rate)",
    )
    top.add_argument(
        "--rows", type=common.positive_int, default=20, metavar="N", help="flows shown when not a terminal"
    )
    top.add_argument(
        "--duration",
        type=common.positive_float,
        metavar="SECONDS",
        help="stop after this many seconds (default: until q or Ctrl-C)",
    )
    common.add_live_options(top)
    top.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from retransmon.live.filter import filter_from_args
    from retransmon.live.top import TopOptions, run_top

    stop = common.stop_on_signals()
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
