"""`retransmon chaos`: a private lossy test network, TCP traffic through it, and what was caught."""

from __future__ import annotations

import argparse

from retransmon.commands import args as common
from retransmon.live.filter import parse_port


def seconds(text: str) -> float:
    """A number of seconds, 0 or more (0: off)."""
    try:
        value = float(text.strip().lower().removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds like 1.5 or 2s, got {text!r}") from None
    if not 0 <= value <= common.MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be between 0 and {common.MAX_SECONDS:g} seconds, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chaos = sub.add_parser("chaos", help="lossy private test network, TCP traffic, and what was caught")
    chaos.description = (
        "Build a private test network (two network namespaces and a veth pair on 198.18.66.0/24 and "
        "2001:db8:66::/64), drop packets on it, drive TCP traffic through it and compare what "
        "retransmon counted with the kernel's RetransSegs, and each cause with its TcpExt counter. "
        "Nothing outside the namespaces is touched."
    )
    chaos.add_argument(
        "--loss", type=common.percent, default=5.0, metavar="PCT", help="packet loss (default 5)"
    )
    chaos.add_argument(
        "--delay", type=common.milliseconds, default=0.0, metavar="MS", help="delay (needs netem)"
    )
    chaos.add_argument(
        "--jitter", type=common.milliseconds, default=0.0, metavar="MS", help="delay jitter (needs netem)"
    )
    chaos.add_argument(
        "--reorder",
        type=common.percent,
        default=0.0,
        metavar="PCT",
        help="packets sent early, reordered (needs netem)",
    )
    chaos.add_argument(
        "--flows", type=common.positive_int, default=4, metavar="N", help="parallel connections (default 4)"
    )
    chaos.add_argument(
        "--duration",
        type=common.positive_float,
        default=10.0,
        metavar="S",
        help="seconds of bulk traffic (default 10)",
    )
    chaos.add_argument(
        "--connections",
        type=common.positive_int,
        default=None,
        metavar="N",
        help="short-connection churn: N connections of 8 KiB, --flows at a time (instead of bulk)",
    )
    chaos.add_argument(
        "--blackhole",
        type=seconds,
        default=0.0,
        metavar="S",
        help="drop every packet to the server for S seconds in the middle of the traffic, then go back "
        "to --loss: the RTO fires (cause timeout, then slow_start)",
    )
    chaos.add_argument(
        "--drop-handshakes",
        type=int,
        default=0,
        metavar="N",
        help="drop the first N SYNs and the first N SYN-ACKs: both ends retransmit their handshake "
        "(cause syn)",
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
    common.add_common(chaos)
    chaos.set_defaults(func=run, log_level="warning")


def run(args: argparse.Namespace) -> int:
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
        blackhole=args.blackhole,
        drop_handshakes=args.drop_handshakes,
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
