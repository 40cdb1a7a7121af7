"""`retransmon serve`: load, attach, serve /metrics until SIGTERM/SIGINT, detach."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from retransmon import defaults
from retransmon.attribution.labels import LABEL_NAMES
from retransmon.commands import args as common

log = logging.getLogger("retransmon")


class ListenAddresses(argparse.Action):
    """Repeatable, as in node_exporter: the first address given replaces the default."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest)
        addresses = [] if current is self.default else list(current)
        addresses.append(values)
        setattr(namespace, self.dest, addresses)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="serve Prometheus metrics until SIGTERM/SIGINT")
    serve.add_argument(
        "--web.listen-address",
        "--listen",
        dest="listen",
        action=ListenAddresses,
        default=[defaults.LISTEN_ADDRESS],
        metavar="[HOST]:PORT",
        help="address to serve on; repeat it to serve on several (default "
        f"{defaults.LISTEN_ADDRESS}); --listen is an alias",
    )
    serve.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default=defaults.TELEMETRY_PATH,
        metavar="PATH",
        help=f"path under which to serve the metrics (default {defaults.TELEMETRY_PATH})",
    )
    serve.add_argument(
        "--labels",
        default=defaults.LABELS,
        help="labels of the retransmit series: 'default', 'flow' (the original blog's set), "
        f"or a comma list of {', '.join(LABEL_NAMES)}",
    )
    serve.add_argument(
        "--max-series",
        type=common.positive_int,
        default=defaults.MAX_SERIES,
        metavar="N",
        help="series per metric; more are folded into `other` series, totals unchanged "
        f"(default {defaults.MAX_SERIES})",
    )
    serve.add_argument(
        "--series-ttl",
        type=common.duration,
        default=None,
        metavar="DURATION",
        help="drop series that have not grown for this long, e.g. 1h; they restart from 0 "
        "if they grow again (default: off)",
    )
    serve.add_argument(
        "--harvest-interval",
        type=common.positive_float,
        default=defaults.HARVEST_INTERVAL,
        metavar="SECONDS",
        help="how often the kernel's flow table is drained besides every scrape "
        f"(default {defaults.HARVEST_INTERVAL:g})",
    )
    serve.add_argument(
        "--flow-capacity",
        type=common.positive_int,
        default=defaults.FLOW_CAPACITY,
        metavar="N",
        help="distinct flows the kernel table holds per harvest before folding "
        f"(default {defaults.FLOW_CAPACITY})",
    )
    serve.add_argument(
        "--socket-capacity",
        type=common.positive_int,
        default=defaults.SOCKET_CAPACITY,
        metavar="N",
        help="TCP sockets whose segments sent the kernel tracks at once; memory is used only "
        f"per socket tracked (default {defaults.SOCKET_CAPACITY})",
    )
    common.add_drop_capabilities_option(serve)
    serve.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        metavar="FILE",
        help="TLS, basic auth, response headers and a rate limit, in Prometheus exporter-toolkit's "
        "web config format (see docs/deployment.md)",
    )
    common.add_common(serve)
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from retransmon.export.agent import ServeOptions, serve

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    options = ServeOptions(
        listen=list(args.listen),
        telemetry_path=args.telemetry_path,
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
