"""Command line: parse the arguments, dispatch to the subcommand's module, turn errors into one line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from retransmon import __version__
from retransmon.commands import chaos, check, serve, top, trace
from retransmon.errors import RetransmonError, UsageError

SUBCOMMANDS = (serve, trace, top, chaos, check)


class OneLineParser(argparse.ArgumentParser):
    """Bad input: one line naming the problem, exit 2 (argparse prints the whole usage)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="retransmon", description="TCP retransmission monitor for Linux (eBPF).")
    parser.add_argument("--version", action="version", version=f"retransmon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "debug":
        # libbpf's informational chatter only when asked for.
        logging.getLogger("retransmon.libbpf").setLevel(logging.ERROR)


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
